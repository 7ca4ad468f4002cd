"""`mnist-kit serve RUN`: the draw page, POST /predict, and the Open Inference Protocol (v2), on FastAPI + uvicorn.

- `GET /` the draw page; `POST /predict` with an image file as the body (the page sends its canvas as PNG): the top 3
  and the 28x28 input the model saw (a PNG data URL), through the same preprocessing as `mnist-kit predict`.
- v2, as KServe, Triton and Seldon speak it: `GET /v2/health/live`, `/v2/health/ready`, `/v2`,
  `GET /v2/models/{name}` (inputs, outputs, datatypes, shapes), `/v2/models/{name}/ready`, and
  `POST /v2/models/{name}/infer` with JSON tensors: input `image` (FP32, [N, 1, 28, 28], MNIST-like pixels in
  [0, 1]: white ink on black, centred) or `image_file` (BYTES, [N], each an image file in base64, preprocessed
  here); outputs `probabilities` (FP32, [N, classes]) and `label` (INT64, [N]).
- `/docs`: the OpenAPI page. Bodies are capped as they arrive (not only by their announced length) and must
  arrive within BODY_SECONDS; `Host` must name the address served (or an --allow-host); a POST from a page of
  another origin is refused; beyond `limit_concurrency` connections uvicorn answers 503.

FastAPI and uvicorn are the [serve] extra.
"""

import asyncio
import base64
import binascii
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch

from mnist_kit.errors import UserError
from mnist_kit.invocation import install_hint
from mnist_kit.predict import SERVE_MAX_PIXELS, classify, decode_gray, gray_png, mnist_like, normalize_image

PAGE = Path(__file__).parent / "static" / "draw.html"
MAX_REQUEST = 8 * 2**20  # bytes: a canvas PNG is a few KiB, a JSON batch of 256 28x28 images about 2 MiB
BODY_SECONDS = 10.0  # a request's body must arrive within this
MAX_BATCH = 512  # images in one v2 infer request
LIMIT_CONCURRENCY = 64  # connections and tasks at once; uvicorn answers 503 beyond
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
HTTP_PROTOCOL = "mnist_kit.http_deadline:HeaderDeadlineH11"  # uvicorn's h11, with a deadline for headers
RUN_ENV = "MNIST_KIT_SERVE"  # what uvicorn's worker processes read to build the app (--workers > 1)


@dataclass
class Served:
    """A run's model ready to answer: the model, its classes and normalization, its v2 name."""

    run: object
    model: torch.nn.Module
    name: str
    mean: float
    std: float
    input_shape: tuple[int, ...]
    classes: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock)  # one forward pass at a time: it uses every core


def load_served(run_path: Path | str, name: str | None = None) -> Served:
    """The run's model for serving; `name` (the v2 model name) defaults to the recipe's name."""
    from mnist_kit.runs import build_run_model, find_run

    run = find_run(run_path)
    data = run.metadata["data"]
    return Served(run, build_run_model(run), name or run.recipe.name, data["mean"], data["std"],
                  tuple(run.metadata.get("input_shape") or (1, 28, 28)), run.classes)


def png_data_url(image: np.ndarray) -> str:
    """A [0, 1] grey image as a PNG data URL."""
    return "data:image/png;base64," + base64.b64encode(gray_png(image)).decode()


def predict_canvas(served: Served, body: bytes, top_k: int = 3) -> dict:
    """What the draw page shows for an image file: the top k and the 28x28 input the model saw."""
    seen = mnist_like(decode_gray(body, "image", SERVE_MAX_PIXELS), "image")  # a phone's JPEG: decoded at 1/8
    with served.lock, torch.inference_mode():
        (answer,) = classify(served.model, normalize_image(seen, served.mean, served.std), served.classes, top_k)
    return {"top": answer["top_k"], "input": png_data_url(seen)}


def model_metadata(served: Served) -> dict:
    """v2 model metadata: the two ways in, the two answers."""
    return {"name": served.name, "versions": ["1"], "platform": "pytorch_safetensors",
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, *served.input_shape]},
                       {"name": "image_file", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(served.classes)]},
                        {"name": "label", "datatype": "INT64", "shape": [-1]}]}


def tensor_input(served: Served, tensor: dict) -> torch.Tensor:
    """A v2 request's input tensor as a normalized model batch."""
    name, datatype, shape, data = (tensor.get(k) for k in ("name", "datatype", "shape", "data"))
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise UserError(f"input {name!r}: shape must be a list of sizes")
    if shape[0] > MAX_BATCH:
        raise UserError(f"input {name!r}: at most {MAX_BATCH} images a request, got {shape[0]}")
    if not isinstance(data, list):
        raise UserError(f"input {name!r}: data must be a JSON list (binary tensors are not accepted here)")
    if name == "image":
        per_image = int(np.prod(served.input_shape))
        if datatype != "FP32" or int(np.prod(shape[1:])) != per_image:
            raise UserError(f"input 'image': expected FP32 of shape [N, {', '.join(map(str, served.input_shape))}], "
                            f"got {datatype} {shape}")
        try:
            values = np.asarray(data, dtype=np.float32).reshape(-1)
        except (ValueError, TypeError):
            raise UserError("input 'image': data must be numbers") from None
        if values.size != shape[0] * per_image or not np.isfinite(values).all():
            raise UserError(f"input 'image': {values.size} finite values expected {shape[0] * per_image}")
        images = torch.from_numpy(values).view(shape[0], *served.input_shape)
        return (images - served.mean) / served.std
    if name == "image_file":
        if datatype != "BYTES" or len(shape) != 1 or len(data) != shape[0]:
            raise UserError(f"input 'image_file': expected BYTES of shape [N] with N base64 strings, got {datatype} "
                            f"{shape} with {len(data)} items")
        batch = []
        for i, item in enumerate(data):
            try:
                raw = base64.b64decode(item, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise UserError(f"input 'image_file' item {i}: not base64 text") from None
            seen = mnist_like(decode_gray(raw, f"image_file {i}", SERVE_MAX_PIXELS), f"image_file {i}")
            batch.append(normalize_image(seen, served.mean, served.std))
        return torch.cat(batch) if batch else torch.zeros(0, *served.input_shape)
    raise UserError(f"unknown input {name!r}; this model takes 'image' (FP32) or 'image_file' (BYTES)")


def infer(served: Served, request: dict) -> dict:
    """A v2 inference request (JSON tensors) and its response."""
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
        raise UserError("a v2 request has 'inputs': a list of exactly one tensor ('image' or 'image_file')")
    if not isinstance(request["inputs"][0], dict):
        raise UserError("each input is a JSON object with name, datatype, shape and data")
    batch = tensor_input(served, request["inputs"][0])
    wanted = [o.get("name") if isinstance(o, dict) else None for o in request.get("outputs") or []] or \
        ["probabilities", "label"]
    unknown = [n for n in wanted if n not in ("probabilities", "label")]
    if unknown:
        raise UserError(f"unknown output {unknown[0]!r}; this model answers 'probabilities' and 'label'")
    with served.lock, torch.inference_mode():
        probabilities = served.model(batch).float().softmax(dim=1) if len(batch) else torch.zeros(0, len(
            served.classes))
    outputs = {"probabilities": {"name": "probabilities", "datatype": "FP32", "shape": list(probabilities.shape),
                                 "data": probabilities.flatten().tolist()},
               "label": {"name": "label", "datatype": "INT64", "shape": [len(batch)],
                         "data": probabilities.argmax(dim=1).tolist()}}
    answer = {"model_name": served.name, "model_version": "1", "outputs": [outputs[n] for n in wanted]}
    if "id" in request:
        answer["id"] = request["id"]
    return answer


class Guard:
    """ASGI middleware in front of every request: `Host` must be one served, a POST from another origin is refused,
    and a body is read here, capped at `max_body` bytes as it arrives and within `body_seconds`, then handed on."""

    def __init__(self, app, hosts: list[str], max_body: int = MAX_REQUEST, body_seconds: float = BODY_SECONDS):
        self.app, self.hosts, self.max_body, self.body_seconds = app, [h.lower() for h in hosts], max_body, body_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if "*" not in self.hosts and split_host(host) not in self.hosts:
            return await answer(send, 421, f"Host {host!r} is not served here (see --allow-host)")
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin and urlsplit(origin).netloc != host:
            return await answer(send, 403, f"a page from {origin} may not post here")
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        announced = headers.get("content-length")
        if announced and (not announced.isdigit() or int(announced) > self.max_body):
            return await answer(send, 413, f"the body must be at most {self.max_body:,} bytes, got {announced}")
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_seconds
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return await answer(send, 408, f"the body did not arrive within {self.body_seconds:g} s")
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_body:
                await drain(receive, message, deadline)
                return await answer(send, 413, f"the body must be at most {self.max_body:,} bytes")
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


async def drain(receive, message: dict, deadline: float, limit: int = 8 * MAX_REQUEST) -> None:
    """Read and drop the rest of a refused body (bounded in bytes and time) before answering, so closing the
    connection does not reset it before the client has read the answer (uvicorn reads nothing after a response)."""
    loop, dropped = asyncio.get_running_loop(), 0
    while message.get("more_body") and dropped < limit:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            return
        dropped += len(message.get("body", b""))


def split_host(host: str) -> str:
    """The host part of a Host header ('127.0.0.1:8000' -> '127.0.0.1', '[::1]:80' -> '[::1]')."""
    host = host.lower()
    if host.startswith("["):
        return host[:host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def answer(send, status: int, error: str) -> None:
    """A JSON error answer straight from the middleware (the connection then closes)."""
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def require_fastapi():
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError(f"mnist-kit serve needs FastAPI and uvicorn: {install_hint('serve')}") from None


def make_app(served: Served, hosts: list[str], body_seconds: float = BODY_SECONDS):
    """The FastAPI app for one served model, behind the Guard."""
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse

    import mnist_kit

    app = FastAPI(title="mnist-kit", version=mnist_kit.__version__,
                  description=f"The model of {served.run.run_dir}: the draw page, /predict, and the Open Inference "
                              f"Protocol (v2) as model {served.name!r}.")
    app.state.model_name = served.name
    page = PAGE.read_bytes()

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError):
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    def draw_page():
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.post("/predict", summary="The top 3 for an image file (the draw page's canvas PNG)",
              openapi_extra={"requestBody": {"required": True, "content": {"image/png": {"schema": {
                  "type": "string", "format": "binary"}}}}})
    async def predict(request: Request) -> dict:
        return await run_in_threadpool(predict_canvas, served, await request.body())  # decoding: off the loop

    @app.get("/v2/health/live", summary="v2: the server is up")
    def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", summary="v2: the server can answer")
    def ready() -> dict:
        return {"ready": True}

    @app.get("/v2", summary="v2: server metadata")
    def server_metadata() -> dict:
        return {"name": "mnist-kit", "version": mnist_kit.__version__, "extensions": []}

    def check_name(name: str) -> None:
        if name != served.name:
            raise ModelNotFound(name)

    @app.exception_handler(ModelNotFound)
    async def unknown_model(request: Request, error: ModelNotFound):
        return JSONResponse({"error": f"no model {error.args[0]!r} here; this server has {served.name!r}"},
                            status_code=404)

    @app.get("/v2/models/{name}", summary="v2: model metadata")
    @app.get("/v2/models/{name}/versions/{version}", include_in_schema=False)
    def metadata(name: str, version: str = "1") -> dict:
        check_name(name)
        return model_metadata(served)

    @app.get("/v2/models/{name}/ready", summary="v2: the model can answer")
    def model_ready(name: str) -> dict:
        check_name(name)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", summary="v2: a batch of images in, probabilities and labels out",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "type": "object", "example": {"inputs": [{"name": "image", "datatype": "FP32",
                                                            "shape": [1, *served.input_shape],
                                                            "data": [0.0] * int(np.prod(served.input_shape))}]}}}}}})
    @app.post("/v2/models/{name}/versions/{version}/infer", include_in_schema=False)
    async def model_infer(name: str, request: Request, version: str = "1") -> dict:
        check_name(name)
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise UserError("the body is not JSON (a v2 request: {\"inputs\": [...]})") from None
        return await run_in_threadpool(infer, served, body)

    return Guard(app, hosts, body_seconds=body_seconds)


class ModelNotFound(KeyError):
    """A v2 path names a model this server does not have (404)."""


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """The Host header values accepted: the address served (every name of the loopback for a loopback address;
    anything for 0.0.0.0 / ::), plus --allow-host."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    served = list(LOCAL_HOSTS) if host in LOCAL_HOSTS else [host, f"[{host}]" if ":" in host else host]
    return [*served, *(h.lower() for h in extra)]


def app_from_env():
    """The app in a uvicorn worker process (--workers > 1): the run and options come in RUN_ENV."""
    options = json.loads(os.environ[RUN_ENV])
    return make_app(load_served(options["run"], options["name"]), options["hosts"])


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket (port 0: any free one), or a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, or asyncio leaves Nagle on for the connections it accepts: every answer on a kept-alive
    # connection then waits ~40 ms for the client's delayed ACK (measured: 44 ms a request instead of 1 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets (Linux)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from error
    return sock


def make_server(run_path: Path | str, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
                allow_hosts: list[str] = (), limit_concurrency: int = LIMIT_CONCURRENCY, backlog: int = 2048,
                body_seconds: float = BODY_SECONDS):
    """A uvicorn server for a run in this process, and its bound socket: `server.run(sockets=[sock])` serves
    (tests run it in a thread and set `server.should_exit` to stop it)."""
    require_fastapi()
    import uvicorn

    app = make_app(load_served(run_path, name), allowed_hosts(host, list(allow_hosts)), body_seconds)
    sock = listening_socket(host, port)
    config = uvicorn.Config(app, limit_concurrency=limit_concurrency, backlog=backlog, timeout_keep_alive=5,
                            http=HTTP_PROTOCOL, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.model_name = app.app.state.model_name
    return server, sock


def serve_workers(run_path: Path | str, host: str, port: int, workers: int, name: str | None,
                  allow_hosts: list[str], limit_concurrency: int = LIMIT_CONCURRENCY) -> None:
    """Serve with several uvicorn worker processes (each loads the model; uvicorn shares the socket)."""
    require_fastapi()
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    load_served(run_path, name)  # a bad run is one line here, not a crash in every worker
    os.environ[RUN_ENV] = json.dumps({"run": str(Path(run_path).resolve()), "name": name,
                                      "hosts": allowed_hosts(host, allow_hosts)})
    config = uvicorn.Config("mnist_kit.serve:app_from_env", factory=True, workers=workers,
                            limit_concurrency=limit_concurrency, backlog=2048, timeout_keep_alive=5,
                            http=HTTP_PROTOCOL, log_level="warning", access_log=False)
    sock = listening_socket(host, port)  # ours, not uvicorn's bind_socket(): that one leaves Nagle on
    sock.set_inheritable(True)
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


def ray_deployment():
    """The Ray Serve deployment class: each replica loads the run and answers through the same guarded app."""
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 1})
    class MnistKitServer:
        def __init__(self, run_path: str, name: str | None, hosts: list[str]):
            torch.set_num_threads(1)  # one image at a time: a thread per replica, replicas for more
            self.app = make_app(load_served(run_path, name), hosts)

        async def __call__(self, request):
            from starlette.responses import Response

            start, body = {}, []

            async def send(message):
                if message["type"] == "http.response.start":
                    start.update(message)
                elif message["type"] == "http.response.body":
                    body.append(message.get("body", b""))

            await self.app(request.scope, request.receive, send)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", [])
                       if k.lower() not in (b"content-length", b"connection")}
            return Response(b"".join(body), status_code=start.get("status", 500), headers=headers)

    return MnistKitServer


def serve_on_ray(run_path: Path | str, address: str | None, replicas: int, host: str, port: int,
                 name: str | None = None, allow_hosts: list[str] = ()):
    """Deploy the app on a Ray cluster with Ray Serve (its HTTP proxy on host:port, `replicas` copies of the
    model); returns the Serve handle once it answers. The run folder must be readable on every node."""
    require_fastapi()
    try:
        import ray
        from ray import serve
    except ImportError as error:
        raise UserError(f"--backend ray needs Ray Serve: {install_hint('cluster')} ({error})") from None
    run_path = Path(run_path).resolve()
    load_served(run_path, name)  # a bad run is one line here, not a failing replica
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, ignore_reinit_error=True,
             include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    deployment = ray_deployment().options(num_replicas=replicas)
    return serve.run(deployment.bind(str(run_path), name, allowed_hosts(host, list(allow_hosts))),
                     name="mnist-kit", route_prefix="/")


def stop_ray_serve() -> None:
    """Tear the Serve application and this driver's Ray connection down (nothing if Ray never started)."""
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()

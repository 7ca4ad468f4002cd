"""`mnist-kit serve RUN`: the app (FastAPI) and its launchers: uvicorn in this process, uvicorn's worker processes,
and Ray Serve. What it answers is mnist_kit.protocol over a mnist_kit.inference.Predictor; what guards it is
mnist_kit.http_guard (bodies, Host, Origin) and mnist_kit.http_deadline (headers).

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

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mnist_kit.errors import UserError
from mnist_kit.http_guard import BODY_SECONDS, Guard, allowed_hosts
from mnist_kit.inference import Predictor, not_calibrated_note, open_predictor
from mnist_kit.invocation import install_hint
from mnist_kit.protocol import infer_body, model_metadata, predict_canvas

PAGE = Path(__file__).parent / "static" / "draw.html"
LIMIT_CONCURRENCY = 64  # connections and tasks at once; uvicorn answers 503 beyond
HEADER_SECONDS = 10.0  # a request's headers must arrive within this (mnist_kit.http_deadline)
SEND_SECONDS = 30.0  # a client that reads nothing of its answer for this long is disconnected (http_deadline)
HTTP_PROTOCOL = "mnist_kit.http_deadline:HeaderDeadlineH11"  # uvicorn's h11, with a deadline for headers
RUN_ENV = "MNIST_KIT_SERVE"  # what uvicorn's worker processes read to build the app (--workers > 1)


def require_fastapi():
    try:
        import fastapi  # noqa: F401
        import fastapi_offline  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError(f"mnist-kit serve needs FastAPI and uvicorn: {install_hint('serve')}") from None


def make_app(served: Predictor, hosts: list[str], body_seconds: float = BODY_SECONDS):
    """The FastAPI app for one served model, behind the Guard."""
    from fastapi import Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi_offline import FastAPIOffline

    import mnist_kit

    # /docs with Swagger UI's files from the installed fastapi-offline, not a CDN (no machine here reaches one)
    app = FastAPIOffline(title="mnist-kit", version=mnist_kit.__version__, redoc_url=None,
                         description=f"The model of {served.source.name}: the draw page, /predict, and the Open "
                                     f"Inference Protocol (v2) as model {served.name!r}.")
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
    async def predict(request: Request, explain: bool = False) -> dict:
        # decoding and the map: off the loop
        return await run_in_threadpool(predict_canvas, served, await request.body(), 3, explain)

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
        return await run_in_threadpool(infer_body, served, await request.body())  # JSON parsed off the loop

    return Guard(app, hosts, body_seconds=body_seconds)


class ModelNotFound(KeyError):
    """A v2 path names a model this server does not have (404)."""


def app_from_env():
    """The app in a uvicorn worker process (--workers > 1): the run and options come in RUN_ENV (uvicorn loads the
    protocol class by its import string in each worker, so the header deadline is set here too)."""
    options = json.loads(os.environ[RUN_ENV])
    set_deadlines(options["header_seconds"], options["send_seconds"])
    return make_app(open_predictor(options["run"], options["name"]), options["hosts"])


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


def set_deadlines(header_seconds: float, send_seconds: float) -> None:
    """How long a request's headers may take to arrive, and how long a client may read nothing of its answer
    (mnist_kit.http_deadline), for the servers this process runs."""
    from mnist_kit.http_deadline import HeaderDeadlineH11

    HeaderDeadlineH11.header_seconds, HeaderDeadlineH11.send_seconds = header_seconds, send_seconds


def make_server(run_path: Path | str, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
                allow_hosts: list[str] = (), limit_concurrency: int = LIMIT_CONCURRENCY, backlog: int = 2048,
                body_seconds: float = BODY_SECONDS, header_seconds: float = HEADER_SECONDS,
                send_seconds: float = SEND_SECONDS):
    """A uvicorn server for a run in this process, and its bound socket: `server.run(sockets=[sock])` serves
    (tests run it in a thread and set `server.should_exit` to stop it). Bodies must arrive within `body_seconds`,
    headers within `header_seconds`; a client that reads nothing of its answer for `send_seconds` is cut off."""
    require_fastapi()
    import uvicorn

    set_deadlines(header_seconds, send_seconds)

    predictor = open_predictor(run_path, name)
    app = make_app(predictor, allowed_hosts(host, list(allow_hosts)), body_seconds)
    sock = listening_socket(host, port)
    config = uvicorn.Config(app, limit_concurrency=limit_concurrency, backlog=backlog, timeout_keep_alive=5,
                            http=HTTP_PROTOCOL, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.model_name = app.app.state.model_name
    server.note = not_calibrated_note(predictor)  # said once when it starts; the draw page says it under the bars
    return server, sock


def serve_workers(run_path: Path | str, host: str, port: int, workers: int, name: str | None,
                  allow_hosts: list[str], limit_concurrency: int = LIMIT_CONCURRENCY,
                  header_seconds: float = HEADER_SECONDS, send_seconds: float = SEND_SECONDS) -> None:
    """Serve with several uvicorn worker processes (each loads the model; uvicorn shares the socket)."""
    require_fastapi()
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    open_predictor(run_path, name)  # a bad run is one line here, not a crash in every worker
    os.environ[RUN_ENV] = json.dumps({"run": str(Path(run_path).resolve()), "name": name,
                                      "hosts": allowed_hosts(host, allow_hosts), "header_seconds": header_seconds,
                                      "send_seconds": send_seconds})
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
            self.app = make_app(open_predictor(run_path, name), hosts)

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
    open_predictor(run_path, name)  # a bad run is one line here, not a failing replica
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, ignore_reinit_error=True,
             include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    deployment = ray_deployment().options(num_replicas=replicas)
    return serve.run(deployment.bind(str(run_path), name, allowed_hosts(host, list(allow_hosts))),
                     name="mnist-kit", route_prefix="/")


def serve_on_ray_until_stopped(run_path: Path | str, address: str | None, replicas: int, host: str, port: int,
                              name: str | None = None, allow_hosts: list[str] = (),
                              on_ready: Callable[[], None] | None = None) -> None:
    """Serve on Ray Serve until Ctrl-C (`on_ready` once it answers); Ctrl-C while deploying or serving ends in the
    same clean teardown, which a second Ctrl-C does not cut short."""
    try:
        serve_on_ray(run_path, address, replicas, host, port, name, allow_hosts)
        if on_ready:
            on_ready()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stop_ray_serve()
        finally:
            signal.signal(signal.SIGINT, previous)


def stop_ray_serve() -> None:
    """Tear the Serve application and this driver's Ray connection down (nothing if Ray never started)."""
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()

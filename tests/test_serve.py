"""The server on FastAPI + uvicorn: the draw page end to end in a real headless Chromium, the Open Inference
Protocol (v2) through Triton's own client, and the answers to bad, oversized, slow, foreign and excess requests."""

import base64
import http.client
import io
import json
import re
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mnist_kit.cli import app
from tests.conftest import one_line_error

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
from mnist_kit.http_guard import MAX_REQUEST  # noqa: E402
from mnist_kit.serve import make_server  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextmanager
def serving(run_dir, **options):
    """A real uvicorn server for the run in a thread, on a free loopback port; yields its URL."""
    server, sock = make_server(run_dir, port=0, **options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def url(trained_run):
    with serving(trained_run.run_dir, body_seconds=1.0) as address:
        yield address


def post(url, body: bytes, headers=None):
    request = urllib.request.Request(url + "/predict", data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_bad_requests_get_400s_not_tracebacks(url):
    status, answer = post(url, b"not a png")
    assert status == 400 and "not an image" in answer["error"]
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)  # announces too much, sends nothing
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Length", str(MAX_REQUEST + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "bytes" in json.loads(response.read())["error"]
    connection.close()
    blank = io.BytesIO()
    Image.new("RGB", (280, 280), "white").save(blank, format="PNG")
    status, answer = post(url, blank.getvalue())
    assert status == 400 and "no ink" in answer["error"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(url + "/nothing", timeout=10)
    assert missing.value.code == 404


def stroke(page, box, points, steps=12):
    """Press, move through `points` (fractions of the canvas), release: one pen stroke."""
    (x, y), *rest = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(x, y)
    page.mouse.down()
    for x, y in rest:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium here (apt-get install chromium; .ci/run does)")
def test_drawing_a_digit_shows_the_prediction(url):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            box = page.locator("#pad").bounding_box()
            stroke(page, box, [(0.28, 0.18), (0.72, 0.18)])  # a 7: the bar...
            stroke(page, box, [(0.72, 0.18), (0.6, 0.5), (0.45, 0.85)])  # ...then the stem, stroke by stroke
            page.wait_for_function("document.querySelectorAll('#bars .bar').length === 3")
            page.wait_for_timeout(600)  # the answer to the last stroke's release
            assert page.locator("#digit").inner_text() == "7"
            assert page.locator("#seen").get_attribute("src").startswith("data:image/png;base64,")
            assert page.locator("#message").inner_text() == ""
            page.click("#clear")
            assert page.locator("#digit").inner_text() == ""
            page.wait_for_timeout(400)  # an answer still on its way about the cleared drawing must not show
            assert page.locator("#digit").inner_text() == "" and page.locator("#message").inner_text() == ""
        finally:
            browser.close()


def raw_request(url, text: bytes, read_seconds=10) -> bytes:
    """Send bytes as they are on a fresh connection; what comes back before the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_seconds) as conn:
        conn.sendall(text)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_is_capped_as_it_streams_and_must_arrive_in_time(url):
    # chunked: no length announced; the cap applies to what arrives
    chunk = b"x" * 2**20
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_REQUEST // len(chunk) + 1))
    answer = raw_request(url, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + body + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413")
    # announces 1,000 bytes, sends 10, then nothing: answered 408 after the body time (1 s here), not hung forever
    start = time.monotonic()
    answer = raw_request(url, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
                              b"0123456789")
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 5


def test_host_and_origin_are_checked(url):
    port = url.rsplit(":", 1)[1]
    for host in ("localhost", "127.0.0.1"):
        request = f"GET /v2/health/live HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        assert raw_request(url, request.encode()).startswith(b"HTTP/1.1 200")
    foreign = raw_request(url, b"GET / HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n")
    assert foreign.startswith(b"HTTP/1.1 421") and b"--allow-host" in foreign
    status, answer = post(url, b"x", headers={"Origin": "http://attacker.example"})
    assert status == 403 and "attacker.example" in answer["error"]
    request = f"HEAD /?from=bookmark HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    head = raw_request(url, request.encode())
    assert head.startswith(b"HTTP/1.1 200")


def test_the_api_docs_work_without_the_internet(url, trained_run):
    """Issue 26: /docs loaded Swagger UI from a CDN, a blank page on every machine here; its files now come from the
    installed fastapi-offline. The page names the run, not the path it was given."""
    with urllib.request.urlopen(url + "/docs", timeout=10) as response:
        page = response.read().decode()
    scripts = re.findall(r'src="([^"]+)"', page) + re.findall(r'href="([^"]+\.css)"', page)
    assert scripts and all(src.startswith("/") for src in scripts), scripts  # served here, none from a CDN
    for src in scripts:
        with urllib.request.urlopen(url + src, timeout=10) as response:
            assert response.status == 200 and len(response.read()) > 1000
    with urllib.request.urlopen(url + "/openapi.json", timeout=10) as response:
        description = json.loads(response.read())["info"]["description"]
    assert description.startswith(f"The model of {trained_run.run_dir.name}:")


def mnist_pixels(splits, count):
    """The first test images as the v2 'image' input wants them: [N, 1, 28, 28] floats in [0, 1]."""
    return (splits.test_images[:count].float() / 255).numpy().reshape(count, 1, 28, 28), \
        splits.test_labels[:count].numpy()


def test_v2_through_tritons_own_client(url, splits, trained_run):
    http_client = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the dev extra")
    client = http_client.InferenceServerClient(url=url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("quick")
    metadata = client.get_model_metadata("quick")
    assert {i["name"]: (i["datatype"], i["shape"]) for i in metadata["inputs"]} == {
        "image": ("FP32", [-1, 1, 28, 28]), "image_file": ("BYTES", [-1])}
    images, labels = mnist_pixels(splits, 64)
    request = http_client.InferInput("image", list(images.shape), "FP32")
    request.set_data_from_numpy(images, binary_data=False)
    outputs = [http_client.InferRequestedOutput(n, binary_data=False) for n in ("probabilities", "label")]
    result = client.infer("quick", inputs=[request], outputs=outputs)
    probabilities, predicted = result.as_numpy("probabilities"), result.as_numpy("label")
    assert probabilities.shape == (64, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert (predicted == probabilities.argmax(axis=1)).all()
    assert (predicted == labels).mean() > 0.85  # the trained run scores about 95% on the test split
    with pytest.raises(Exception, match="no model 'other'"):
        client.get_model_metadata("other")


def test_v2_takes_image_files_in_base64(url, splits):
    images, labels = mnist_pixels(splits, 4)
    files = []
    for image in images:  # black ink on white paper, 3x the size: the server makes them MNIST-like
        buffer = io.BytesIO()
        Image.fromarray((255 - image[0] * 255).astype(np.uint8)).resize((84, 84)).save(buffer, format="PNG")
        files.append(base64.b64encode(buffer.getvalue()).decode())
    body = {"id": "r1", "inputs": [{"name": "image_file", "datatype": "BYTES", "shape": [4], "data": files}],
            "outputs": [{"name": "label"}]}
    request = urllib.request.Request(url + "/v2/models/quick/infer", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert answer["id"] == "r1" and [o["name"] for o in answer["outputs"]] == ["label"]
    assert sum(p == t for p, t in zip(answer["outputs"][0]["data"], labels)) >= 3
    wrong_shape = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 5], "data": [0] * 5}]}
    not_base64 = {"inputs": [{"name": "image_file", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}
    image = {"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0.0] * 784}
    for bad, fragment in (({"inputs": []}, "exactly one"), (wrong_shape, "shape"), (not_base64, "base64"),
                          ('{"a": ' * 100_000, "not JSON"),  # issue 26 row 8: each of these was a 500 in plain text
                          ("[" * 100_000, "over the 65,536 a request may"),  # row 11: 8 MiB of them, 3.8 s of CPU
                          ({"inputs": [{**image, "data": [10**400] + [0] * 783}]}, "data must be numbers"),
                          ({"inputs": [image], "outputs": 5}, "'outputs' must be a list"),
                          ({"inputs": [{**image, "shape": [True, 1, 28, 28]}]}, "shape must be a list of sizes"),
                          ({"inputs": [{**image, "data": [3e38] * 784}]}, "in [0, 1]"),  # row 9: was all null
                          ({"inputs": [{**image, "shape": [1, 784]}]}, "expected FP32 of shape"),  # row 10
                          ({"inputs": [{**image, "data": ["0.5"] * 784}]}, "data must be numbers"),
                          ({"inputs": [{**image, "data": [True] + [0.5] * 783}]}, "true or false among them")):
        body = bad.encode() if isinstance(bad, str) else json.dumps(bad).encode()
        request = urllib.request.Request(url + "/v2/models/quick/infer", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=30)
        assert error.value.code == 400 and fragment in json.loads(error.value.read())["error"]


def test_beyond_the_concurrency_limit_it_answers_503(trained_run):
    with serving(trained_run.run_dir, limit_concurrency=2) as address:
        host, port = address.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]  # held open
        time.sleep(0.3)
        try:
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(address + "/v2/health/live", timeout=10)
            assert refused.value.code == 503
        finally:
            for conn in idle:
                conn.close()


def test_without_fastapi_serve_says_how_to_install_it(trained_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = CliRunner().invoke(app, ["serve", str(trained_run.run_dir), "--port", "0"])
    one_line_error(result, "pip install -e", "[serve]'")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ray_serve_deploys_the_same_app(trained_run, data_root, splits):
    pytest.importorskip("ray.serve", reason="Ray Serve is the [cluster] extra (ray[serve])")
    import os
    import signal
    import subprocess

    from tests.conftest import REPO

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "mnist_kit", "serve", str(trained_run.run_dir), "--backend",
                                "ray", "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "RAY_ADDRESS": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1][-2000:]
            try:
                with urllib.request.urlopen(url + "/v2/health/ready", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        images, labels = mnist_pixels(splits, 8)
        body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(images.shape),
                            "data": images.flatten().tolist()}]}
        request = urllib.request.Request(url + "/v2/models/quick/infer", data=json.dumps(body).encode(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            (probabilities, label) = json.loads(response.read())["outputs"]
        assert label["shape"] == [8] and sum(p == t for p, t in zip(label["data"], labels)) >= 6
        foreign = urllib.request.Request(url + "/v2/health/live", headers={"Host": "attacker.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(foreign, timeout=10)
        assert refused.value.code == 421  # the same guard behind Ray's proxy
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0 and "stopped" in out, err[-2000:]


def test_the_listening_socket_turns_nagle_off_for_every_connection():
    # asyncio turns Nagle off only for sockets made with IPPROTO_TCP named; without it every answer on a kept-alive
    # connection waited for the client's delayed ACK (44 ms a request, measured, instead of 1 ms)
    from mnist_kit.serve import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        sock.close()


def test_the_header_deadline_still_fits_uvicorns_h11_protocol():
    """HeaderDeadlineH11 subclasses uvicorn's internal H11Protocol (pinned in pyproject): if a newer uvicorn renames
    what it overrides or reads, this fails here instead of the deadline silently doing nothing."""
    import inspect

    from uvicorn.protocols.http.h11_impl import H11Protocol

    from mnist_kit.http_deadline import HeaderDeadlineH11

    for hook in ("connection_made", "handle_events", "on_response_complete", "connection_lost", "pause_writing",
                 "resume_writing"):
        assert callable(getattr(H11Protocol, hook, None)), f"uvicorn's H11Protocol has no {hook} any more"
    source = inspect.getsource(H11Protocol)
    for attribute in ("self.cycle", "self.loop", "self.transport", "response_complete"):
        assert attribute in source, f"uvicorn's H11Protocol no longer uses {attribute}"
    assert {"header_seconds", "send_seconds"} <= set(vars(HeaderDeadlineH11))


def test_a_request_whose_headers_never_finish_is_closed(trained_run):
    # uvicorn alone keeps such a connection (and a concurrency slot) open forever: a few dozen would lock users out
    with serving(trained_run.run_dir, header_seconds=1.0) as address:
        host, port = address.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as slow:
            slow.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1")  # and nothing more
            start = time.monotonic()
            assert slow.recv(100) == b"" and time.monotonic() - start < 5  # closed by the server
        with urllib.request.urlopen(address + "/v2/health/live", timeout=10) as response:
            assert response.status == 200  # a prompt request on a new connection is answered as ever


def test_a_client_that_never_reads_its_answer_is_cut_off(trained_run):
    """Issue 26 row 2: three clients that sent a v2 request with a 7 MB id (echoed back) and never read held their
    slots forever, and everyone else got 503. A write that stays paused for send_seconds now ends the connection."""
    body = json.dumps({"id": "x" * 7_000_000, "inputs": [{"name": "image", "datatype": "FP32",
                                                          "shape": [1, 1, 28, 28], "data": [0.0] * 784}]}).encode()
    with serving(trained_run.run_dir, limit_concurrency=4, send_seconds=1.0) as address:
        host, port = address.removeprefix("http://").split(":")
        stuck = []
        for _ in range(3):
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect((host, int(port)))
            client.sendall(b"POST /v2/models/quick/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                           b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            stuck.append(client)  # and never read
        try:
            deadline, status = time.monotonic() + 20, None
            while time.monotonic() < deadline and status != 200:
                time.sleep(0.5)
                try:
                    with urllib.request.urlopen(address + "/v2/health/live", timeout=5) as response:
                        status = response.status
                except urllib.error.HTTPError as error:
                    status = error.code  # 503 while the slots are held
            assert status == 200
        finally:
            for client in stuck:
                client.close()

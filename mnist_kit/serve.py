"""`mnist-kit serve RUN`: a local page to draw a digit and watch the model's top 3 as you draw.

The standard library's ThreadingHTTPServer serves one static page (static/draw.html) and one endpoint:
POST /predict with the canvas as a PNG body; the answer is JSON with the top 3 and the 28x28 input the model
saw (a PNG data URL). The image goes through the same preprocessing as `mnist-kit predict`.
"""

import base64
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch

from mnist_kit.errors import UserError
from mnist_kit.predict import SERVE_MAX_PIXELS, classify, decode_gray, gray_png, mnist_like, normalize_image
from mnist_kit.runs import build_run_model, find_run

PAGE = Path(__file__).parent / "static" / "draw.html"
MAX_REQUEST = 2 * 2**20  # bytes: a 280x280 canvas PNG is a few KiB


def png_data_url(image: np.ndarray) -> str:
    """A [0, 1] grey image as a PNG data URL."""
    return "data:image/png;base64," + base64.b64encode(gray_png(image)).decode()


def make_predictor(run_path: Path | str, top_k: int = 3):
    """A function from image bytes to the answer the page shows (model loaded once, calls serialized)."""
    run = find_run(run_path)
    model = build_run_model(run)
    data = run.metadata["data"]
    lock = threading.Lock()

    def predict(body: bytes) -> dict:
        seen = mnist_like(decode_gray(body, "canvas", SERVE_MAX_PIXELS, SERVE_MAX_PIXELS), "canvas")
        with lock, torch.inference_mode():
            (answer,) = classify(model, normalize_image(seen, data["mean"], data["std"]), run.classes, top_k)
        return {"top": answer["top_k"], "input": png_data_url(seen)}

    return predict


def make_handler(predict, page: bytes):
    """The request handler class for one predictor and page."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "mnist-kit"

        def send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, status: int, obj: dict) -> None:
            self.send(status, json.dumps(obj).encode(), "application/json")

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self.send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            else:
                self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {self.path}"})

        def do_POST(self):
            if self.path != "/predict":
                return self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self.send_json(HTTPStatus.BAD_REQUEST, {"error": "Content-Length is required"})
            if not 0 < length <= MAX_REQUEST:
                self.close_connection = True
                return self.send_json(HTTPStatus.BAD_REQUEST if length <= 0 else HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                      {"error": f"the body must be 1 to {MAX_REQUEST:,} bytes, got {length:,}"})
            body = self.rfile.read(length)
            try:
                self.send_json(HTTPStatus.OK, predict(body))
            except UserError as error:
                self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})

        def log_message(self, format, *args):  # quiet: the page polls as you draw
            pass

    return Handler


def make_server(run_path: Path | str, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server for a run (port 0 picks a free one: server.server_address says which)."""
    handler = make_handler(make_predictor(run_path), PAGE.read_bytes())
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from error

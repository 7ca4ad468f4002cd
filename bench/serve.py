"""Requests per second and latency (p50, p99) of `mnist-kit serve`, over loopback, with the images users send.

    python bench/serve.py [--run RUN] [--seconds 10] [--results bench/results]
    python bench/serve.py --verdict [--run RUN]   # the draw page's canvas of a calibrated run, with and without the map

Trains `fast` first unless --run names a run. For each server (one uvicorn process; two workers) and each request
kind (a 28x28 PNG, the draw page's 280x280 canvas PNG, a 3000x4000 JPEG photo, all on POST /predict; and a 28x28
image as a v2 JSON tensor, batch of 1, on POST /v2/models/NAME/infer), 1 and 8 client threads send requests
back to back on kept-alive connections for --seconds (a bounded loop that stops by itself); every answer must be
200. The clients run on the same 2 cores as the server: the figures are what one machine does, client included.
Writes <results>/<machine>/serve.json. With --verdict: the draw page's canvas request to one process with one
client, for a calibrated run (trains `fast` with 5,000 images held out and outlier exposure, and calibrates it,
unless --run names one): the answer with its verdict, and with the integrated-gradients map (?explain=true);
writes serve-verdict.json.
"""

import argparse
import http.client
import io
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from record import machine_folder, run_folders, write_results

REPO = Path(__file__).resolve().parent.parent
SERVERS = {"uvicorn, 1 process": [], "uvicorn, 2 workers": ["--workers", "2"]}
VERDICT_RECIPE = ["--set", "data.validation=5000", "--set",
                  'train.outliers={sets=["fashion-mnist","shapes","scribbles"]}']


def digit_image(width: int, height: int) -> Image.Image:
    """A dark 7 on light paper, the stroke scaled to the image."""
    image = Image.new("L", (width, height), 235)
    draw, s = ImageDraw.Draw(image), min(width, height)
    line = max(1, s // 14)
    draw.line([(width / 2 - s * 0.25, height / 2 - s * 0.3), (width / 2 + s * 0.25, height / 2 - s * 0.3),
               (width / 2 - s * 0.05, height / 2 + s * 0.35)], fill=20, width=line)
    return image


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    (image.convert("RGB") if fmt == "JPEG" else image).save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


def requests_to_send(name: str) -> dict[str, tuple[str, bytes, str]]:
    """kind -> (path, body, content type)."""
    pixels = (255 - np.asarray(digit_image(28, 28), dtype=np.float32)) / 255
    tensor = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28],
                          "data": pixels.round(4).flatten().tolist()}]}
    return {"28x28 PNG": ("/predict", encoded(digit_image(28, 28), "PNG"), "image/png"),
            "280x280 canvas PNG": ("/predict", encoded(digit_image(280, 280), "PNG"), "image/png"),
            "3000x4000 photo JPEG": ("/predict", encoded(digit_image(3000, 4000), "JPEG"), "image/jpeg"),
            "28x28 v2 tensor, batch 1": (f"/v2/models/{name}/infer", json.dumps(tensor).encode(),
                                         "application/json")}


def connect(port: int) -> http.client.HTTPConnection:
    """A kept-alive connection with Nagle off, as browsers, curl and urllib3 do (http.client sends the headers and
    the body in two writes: with Nagle on, each request would wait for the server's delayed ACK, about 40 ms)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def client(port: int, path: str, body: bytes, content_type: str, until: float, latencies: list, failures: list):
    conn = connect(port)
    headers = {"Content-Type": content_type, "Host": f"127.0.0.1:{port}"}
    while time.perf_counter() < until:
        start = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            failures.append(response.status)
            conn.close()
            conn = connect(port)
            continue
        latencies.append(time.perf_counter() - start)
    conn.close()


def load(port: int, request: tuple[str, bytes, str], clients: int, seconds: float) -> dict:
    latencies, failures = [], []
    client(port, *request, time.perf_counter() + 0.5, [], [])  # warm up
    until = time.perf_counter() + seconds
    threads = [threading.Thread(target=client, args=(port, *request, until, latencies, failures))
               for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies) or [float("nan")]
    return {"clients": clients, "requests": len(latencies), "failures": len(failures),
            "failed_statuses": sorted(set(failures)), "requests_per_second": len(latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


def wait_ready(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server stopped: {process.stderr.read()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    sys.exit("the server did not get ready in 2 minutes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--verdict", action="store_true", help="a calibrated run's canvas, with and without the map")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        run = args.run
        if run is None:
            extra = VERDICT_RECIPE if args.verdict else []
            subprocess.run([sys.executable, "-m", "mnist_kit", "train", "fast", *extra, "--out", out, "--quiet"],
                           check=True, cwd=REPO, stdout=subprocess.DEVNULL)
            (run,) = run_folders(Path(out))
            if args.verdict:
                subprocess.run([sys.executable, "-m", "mnist_kit", "calibrate", str(run)], check=True, cwd=REPO,
                               stdout=subprocess.DEVNULL)
        name = json.loads((run / "metadata.json").read_text())["recipe"]["name"]
        requests, rows = requests_to_send(name), []
        servers, counts = SERVERS, (1, 8)
        if args.verdict:
            canvas = requests["280x280 canvas PNG"]
            requests = {"280x280 canvas PNG, with its verdict": canvas,
                        "280x280 canvas PNG, verdict and map": ("/predict?explain=true", *canvas[1:])}
            servers, counts = {"uvicorn, 1 process": []}, (1,)
        for server, flags in servers.items():
            process = subprocess.Popen([sys.executable, "-m", "mnist_kit", "serve", str(run), "--port",
                                        str(args.port), *flags], cwd=REPO, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
            try:
                wait_ready(args.port, process)
                for kind, request in requests.items():
                    for clients in counts:
                        row = {"server": server, "request": kind, "bytes": len(request[1]),
                               **load(args.port, request, clients, args.seconds)}
                        rows.append(row)
                        print(f"{server:20} {kind:26} {clients} clients: {row['requests_per_second']:7.1f}/s, "
                              f"p50 {row['p50_ms']:7.1f} ms, p99 {row['p99_ms']:7.1f} ms"
                              + (f", {row['failures']} failed" if row["failures"] else ""), flush=True)
            finally:
                process.terminate()
                process.wait(timeout=30)
    path = machine_folder(args.results) / ("serve-verdict.json" if args.verdict else "serve.json")
    write_results(path, ["python", *sys.argv], {"seconds_per_point": args.seconds, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

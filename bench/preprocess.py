"""Preprocessing cost of the images users send to predict and serve: decode + MNIST-style 28x28, time and memory.

    python bench/preprocess.py [--repeat 30] [--results bench/results | --json FILE]

Images made here (deterministic): a 28x28 PNG, the draw page's 280x280 transparent canvas, a 3000x4000 phone
photo (JPEG), and the memory cases: a 6000x6600 RGBA PNG of 170 KB, the largest PNG accepted, an 8000x8000 JPEG.
Time: the median of `--repeat` calls of decode + mnist_like on the file's bytes, in this process. Memory: the
growth of peak RSS (Linux VmHWM, reset first) while one image is prepared, in a fresh process that has imported
everything (the image's cost, not torch's).
"""

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw
from record import machine_folder, write_results

SEVEN = [(0.15, 0.1), (0.85, 0.1), (0.4, 0.92)]


def seven(size: tuple[int, int], width: int, mode: str, ink, paper) -> Image.Image:
    """A hand-drawn-looking 7 filling the middle of an image of `size`."""
    image = Image.new(mode, size, paper)
    side = min(size) * 0.6
    left, top = (size[0] - side) / 2, (size[1] - side) / 2
    ImageDraw.Draw(image).line([(left + x * side, top + y * side) for x, y in SEVEN], fill=ink, width=width,
                               joint="curve")
    return image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


CASES = {  # name -> how to make the file's bytes
    "28x28 PNG": lambda: encoded(seven((28, 28), 3, "L", 255, 0), "PNG"),
    "280x280 canvas PNG (RGBA, transparent)": lambda: encoded(seven((280, 280), 18, "RGBA", (0, 0, 0, 255),
                                                                    (0, 0, 0, 0)), "PNG"),
    "3000x4000 phone photo JPEG": lambda: encoded(seven((3000, 4000), 60, "RGB", (40, 40, 60), (235, 232, 225)),
                                                  "JPEG", quality=90),
    "6000x6600 RGBA PNG": lambda: encoded(seven((6000, 6600), 120, "RGBA", (0, 0, 0, 255), (0, 0, 0, 0)), "PNG",
                                          optimize=True),
    "4000x4000 RGBA PNG (largest accepted PNG)": lambda: encoded(seven((4000, 4000), 80, "RGBA", (0, 0, 0, 255),
                                                                       (0, 0, 0, 0)), "PNG", optimize=True),
    "8000x8000 JPEG": lambda: encoded(seven((8000, 8000), 160, "RGB", (40, 40, 60), (235, 232, 225)), "JPEG",
                                      quality=90),
}


def prepare(data: bytes, name: str):
    from mnist_kit.predict import decode_gray, mnist_like

    return mnist_like(decode_gray(data, name), name)


def seconds(data: bytes, name: str, repeat: int) -> float:
    """Median wall time of one decode + mnist_like."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        prepare(data, name)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


PROBE = """
import sys
import torch, numpy, PIL.Image
import mnist_kit.predict
from mnist_kit.predict import decode_gray, mnist_like


def status(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])


data = open(sys.argv[1], "rb").read()
try:
    open("/proc/self/clear_refs", "w").write("5")  # Linux: the peak (VmHWM) starts again from the current RSS
except OSError:
    pass  # the peak then counts from the imports' own peak: a lower bound
before = status("VmRSS:")
try:
    mnist_like(decode_gray(data, "probe"), "probe")
    outcome = "accepted"
except Exception as error:
    outcome = f"refused: {error}"
print(f"{(status('VmHWM:') - before) / 1024:.1f}\t{outcome}")
"""


def peak_memory_mb(data: bytes) -> tuple[float, str]:
    """Growth of peak RSS (MiB) while a fresh process prepares the image, and whether it was accepted."""
    with tempfile.NamedTemporaryFile(suffix=".img") as file:
        file.write(data)
        file.flush()
        out = subprocess.run([sys.executable, "-c", PROBE, file.name], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    growth, outcome = out.stdout.strip().split("\t", 1)
    return float(growth), outcome


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--results", type=Path, help="also write them to <this folder>/<machine>/preprocess.json")
    args = parser.parse_args()
    import mnist_kit.predict

    rows = []
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"code: {Path(mnist_kit.predict.__file__).parent}")
    print(f"{'image':42} {'bytes':>10} {'ms (median)':>12} {'peak MiB':>9}  outcome")
    for name, make in CASES.items():
        data = make()
        growth, outcome = peak_memory_mb(data)
        repeat = args.repeat if len(data) < 300_000 and "6000" not in name and "4000x4000" not in name else 3
        ms = 1000 * seconds(data, name, repeat) if outcome == "accepted" else None
        rows.append({"image": name, "bytes": len(data), "ms": ms, "peak_mib": growth, "outcome": outcome})
        print(f"{name:42} {len(data):>10,} {ms if ms is not None else float('nan'):12.2f} {growth:9.1f}  "
              f"{outcome[:80]}")
    path = args.json or (machine_folder(args.results) / "preprocess.json" if args.results else None)
    if path:
        write_results(path, ["python", "bench/preprocess.py", "--repeat", str(args.repeat)], {"rows": rows})


if __name__ == "__main__":
    main()

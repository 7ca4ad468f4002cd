"""ONNX export, float and INT8: each file's size and its test accuracy under onnxruntime, against PyTorch's.

    python bench/int8.py RUN [RUN ...] [--results bench/results]

For each run (e.g. the ones `make bench-ensemble` and `make bench-seeds RECIPE=best` keep in runs/bench), writes
RUN/model.onnx and RUN/model-int8.onnx (`mnist-kit export RUN --int8`: static QDQ quantization, per-channel,
calibrated on 1,000 training images) and scores both on the 10,000 test images with onnxruntime (CPU), beside the
run's own PyTorch test accuracy. Writes <results>/<machine>/onnx-int8.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
from record import machine_folder, write_results

from mnist_kit.data import normalize
from mnist_kit.runs import export_run, find_run, run_dataset


def onnx_accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Test accuracy and milliseconds per 1,000 images (batches of 1,000) under onnxruntime."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session.run(None, {"image": images[:1000]})  # warm up
    start = time.perf_counter()
    scores = np.concatenate([session.run(None, {"image": images[i:i + 1000]})[0] for i in range(0, len(images), 1000)])
    seconds = time.perf_counter() - start
    return float((scores.argmax(axis=1) == labels).mean()), 1000 * seconds / (len(images) / 1000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    rows = []
    for run_path in args.runs:
        int8 = export_run(run_path, int8=True)
        run = find_run(run_path)
        splits = run_dataset(run)
        images = normalize(splits.test_images, splits.mean, splits.std).numpy()
        labels = splits.test_labels.numpy()
        row = {"run": run_path.name, "recipe": run.recipe.name, "pytorch_test_accuracy": run.metadata["test_accuracy"]}
        for kind, path in (("float", run.run_dir / "model.onnx"), ("int8", int8)):
            accuracy, ms = onnx_accuracy(path, images, labels)
            row[kind] = {"bytes": path.stat().st_size, "test_accuracy": accuracy, "thousand_images_ms": ms}
        row["size_ratio"] = row["float"]["bytes"] / row["int8"]["bytes"]
        row["accuracy_change_points"] = 100 * (row["int8"]["test_accuracy"] - row["float"]["test_accuracy"])
        rows.append(row)
        print(json.dumps(row))
    path = machine_folder(args.results) / "onnx-int8.json"
    write_results(path, ["python", *sys.argv], {"rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

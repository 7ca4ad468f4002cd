"""One run on two processes (torchrun) against one, and a sweep on each backend: whole commands, start to written
run, on this machine. What docs/cluster.md's "Measured here" tables quote.

    python bench/cluster.py [--results bench/results]

Training rows: `mnist-kit train RECIPE` as one process (all cores) and as `torchrun --standalone --nproc_per_node 2`
with OMP_NUM_THREADS=1 (gloo). Sweep rows: recipes/sweeps/fast-lr.toml (6 points of `fast`, 5,000 images held
out) one point at a time, `--workers 2`, and `--backend ray` (a local Ray instance started by the sweep, counted).
Writes <results>/<machine>/cluster.json.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import machine_folder, run_folders, write_results

REPO = Path(__file__).resolve().parent.parent
TRAININGS = [("fast", []), ("baseline", ["train.epochs=5"]), ("cnn", ["train.epochs=1"])]
SWEEP = REPO / "recipes" / "sweeps" / "fast-lr.toml"
SWEEP_BACKENDS = {"local": [], "local --workers 2": ["--workers", "2"], "ray": ["--backend", "ray"]}


def timed(command: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                   env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def training(recipe: str, overrides: list[str], processes: int) -> dict:
    """One training command's wall time and its run's accuracies."""
    with tempfile.TemporaryDirectory() as out:
        args = ["train", recipe, *(x for o in overrides for x in ("--set", o)), "--out", out, "--quiet",
                "--no-fallback"]
        if processes == 1:
            command, env = [sys.executable, "-m", "mnist_kit", *args], None
        else:
            command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node",
                       str(processes), "-m", "mnist_kit", *args]
            env = {"OMP_NUM_THREADS": "1"}
        seconds = timed(command, env)
        (run,) = run_folders(Path(out))
        meta = json.loads((run / "metadata.json").read_text())
    return {"recipe": recipe, "overrides": overrides, "processes": processes, "seconds": seconds,
            "test_accuracy": meta["test_accuracy"], "world_size": meta.get("world_size", 1)}


def sweep(backend: str, flags: list[str]) -> dict:
    """One sweep command's wall time, every point's accuracies and the point chosen on validation."""
    with tempfile.TemporaryDirectory() as out:
        seconds = timed([sys.executable, "-m", "mnist_kit", "sweep", str(SWEEP), "--out", out, *flags])
        rows = list(csv.DictReader((Path(out) / "summary.csv").open()))
    points = [{"point": int(r["point"]), "lr": float(r["optimizer.lr"]), "batch_size": int(r["data.batch_size"]),
               "validation_accuracy": float(r["validation_accuracy"]), "test_accuracy": float(r["test_accuracy"])}
              for r in rows]
    (best,) = [p for p, r in zip(points, rows) if r["best"] == "*"]
    return {"backend": backend, "flags": flags, "seconds": seconds, "points": points, "best": best}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    trainings = []
    for recipe, overrides in TRAININGS:
        for processes in (1, 2):
            trainings.append(row := training(recipe, overrides, processes))
            print(f"{recipe} {' '.join(overrides):16} {processes} process(es) {row['seconds']:7.1f} s "
                  f"{row['test_accuracy']:.2%}", flush=True)
    sweeps = []
    for backend, flags in SWEEP_BACKENDS.items():
        sweeps.append(row := sweep(backend, flags))
        print(f"sweep {backend:18} {row['seconds']:7.1f} s, best on validation: lr {row['best']['lr']}, batch "
              f"{row['best']['batch_size']}: validation {row['best']['validation_accuracy']:.2%}, test "
              f"{row['best']['test_accuracy']:.2%}", flush=True)
    path = machine_folder(args.results) / "cluster.json"
    write_results(path, ["python", *sys.argv], {"trainings": trainings, "sweeps": sweeps})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""A 24-trial Optuna study against a grid sweep given about the same wall time: the best validation accuracy
each finds, its test accuracy (reported, never used to choose), and the study's per-trial bookkeeping.

    python bench/tune.py [--results bench/results]

Runs `mnist-kit tune recipes/studies/fast-3ep.toml` (TPE, median pruning) into a fresh folder, then `mnist-kit
sweep bench/sweeps/fast-3ep-grid.toml` (12 points over the same base), each as one whole command, one after the
other. Bookkeeping: each complete trial's time as Optuna recorded it (start to end, sampling and database
writes included) minus the run's own wall seconds; and the command's wall time minus every trial's time
(start-up, the study's creation, the summary and pictures). Writes <results>/<machine>/tune.json.
"""

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import machine_folder, write_results

REPO = Path(__file__).resolve().parent.parent
STUDY = REPO / "recipes" / "studies" / "fast-3ep.toml"
GRID = REPO / "bench" / "sweeps" / "fast-3ep-grid.toml"


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return time.perf_counter() - start


def number(text: str) -> float | None:
    return float(text) if text else None


def study_figures(out: Path, seconds: float) -> dict:
    rows = list(csv.DictReader((out / "summary.csv").open()))
    complete = [r for r in rows if r["state"] == "complete"]
    best = next(r for r in rows if r["best"] == "*")
    overheads = [float(r["trial_seconds"]) - float(r["seconds"]) for r in complete]
    trial_total = sum(number(r["trial_seconds"]) or 0 for r in rows)
    return {"command_seconds": seconds, "trials": len(rows), "complete": len(complete),
            "pruned": sum(r["state"] == "pruned" for r in rows),
            "best": {"trial": int(best["trial"]), "validation_accuracy": float(best["validation_accuracy"]),
                     "test_accuracy": float(best["test_accuracy"]),
                     "values": {k: best[k] for k in best if "." in k}},
            "bookkeeping_seconds_per_trial_median": statistics.median(overheads),
            "outside_trials_seconds": seconds - trial_total,
            "rows": [{k: v for k, v in r.items() if k != "run"} for r in rows]}


def grid_figures(out: Path, seconds: float) -> dict:
    rows = list(csv.DictReader((out / "summary.csv").open()))
    best = next(r for r in rows if r["best"] == "*")
    return {"command_seconds": seconds, "points": len(rows),
            "best": {"point": int(best["point"]), "validation_accuracy": float(best["validation_accuracy"]),
                     "test_accuracy": float(best["test_accuracy"]),
                     "values": {k: best[k] for k in best if "." in k}},
            "rows": [{k: v for k, v in r.items() if k not in ("run", "error")} for r in rows]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        study_out, grid_out = Path(folder) / "study", Path(folder) / "grid"
        seconds = timed([sys.executable, "-m", "mnist_kit", "tune", str(STUDY), "--out", str(study_out)])
        study = study_figures(study_out, seconds)
        print(f"study: {study['trials']} trials ({study['pruned']} pruned) in {seconds:.0f} s, best validation "
              f"{study['best']['validation_accuracy']:.2%} (test {study['best']['test_accuracy']:.2%})")
        seconds = timed([sys.executable, "-m", "mnist_kit", "sweep", str(GRID), "--out", str(grid_out)])
        grid = grid_figures(grid_out, seconds)
        print(f"grid: {grid['points']} points in {seconds:.0f} s, best validation "
              f"{grid['best']['validation_accuracy']:.2%} (test {grid['best']['test_accuracy']:.2%})")
    path = machine_folder(args.results) / "tune.json"
    write_results(path, ["python", *sys.argv], {"study_file": str(STUDY.relative_to(REPO)), "study": study,
                                                "grid_file": str(GRID.relative_to(REPO)), "grid": grid})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

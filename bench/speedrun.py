"""Whole training processes of a recipe over seeds: wall time and accuracy, one results file per seed.

    python bench/speedrun.py [--recipe fast] [--seeds 0 1 2 3 4] [--target 0.99] [--budget 10] [--set KEY=VALUE]
    python bench/speedrun.py --recipe baseline --seeds 0 1 2 --results bench/results

Each seed runs `python -m mnist_kit train RECIPE --set train.seed=S` as a fresh process (imports, data loading and
verification, model building, training, final evaluation, writing the run: all counted), with the data already
fetched. Prints each run, then the median, min and max of time and accuracy.

With --keep DIR, each seed's run folder is kept as DIR/<recipe>[-<overrides>]-seed-<S> (for `bench/ensemble.py`);
without it the run is written to a temporary folder and removed.

With --results DIR, each seed's measurement goes to DIR/<machine>/<recipe>/seed-<S>.json (command, recipe hash,
seed, figures, where the time went, CPU model, cores, torch version, date, git commit) and the distribution to
summary.json beside them. A seed whose file holds the same recipe hash is not run again, so long recipes can be
measured over several sittings; a changed recipe runs again, and so does every seed with --again. Figures from
another machine land in that machine's folder.
"""

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from record import machine_folder, run_folders

from mnist_kit.atomic import write_json_atomic
from mnist_kit.data import data_root
from mnist_kit.fetch import fetch_mnist


def one_run(recipe: str, seed: int, out: Path, extra: list[str]) -> tuple[float, dict]:
    """Seconds of the whole process, and the run's metadata."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mnist_kit", "train", recipe, "--set", f"train.seed={seed}",
                    "--out", str(out), "--quiet", "--no-fallback", *extra], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    (run_dir,) = run_folders(out)
    return seconds, json.loads((run_dir / "metadata.json").read_text())


def spread(values: list[float]) -> dict:
    """Median, min and max; mean and sample standard deviation (seed-to-seed noise) where there are 2 or more."""
    figures = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    if len(values) > 1:
        figures |= {"mean": statistics.fmean(values), "stdev": statistics.stdev(values)}
    return figures


def recipe_hash_for(recipe: str, seed: int, overrides: list[str]) -> str:
    from mnist_kit.recipe import load_recipe, recipe_hash

    return recipe_hash(load_recipe(recipe, [*overrides, f"train.seed={seed}"]))


def import_seconds() -> float:
    """Seconds of a fresh interpreter that imports what `train` imports, and exits: the start-up part of a run."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import mnist_kit.cli, mnist_kit.train"], check=True)
    return time.perf_counter() - start


def where_the_time_went(process_seconds: float, imports: float, meta: dict) -> dict:
    """The whole process split: interpreter + imports (measured apart), the run's own phases (data, build, train,
    evaluate, checkpoint, export; from its metadata) and the rest (recipe check, CLI, metadata.json, exit)."""
    phases = {"interpreter_and_imports": imports, **meta.get("phase_seconds", {})}
    return {**phases, "rest": process_seconds - sum(phases.values())}


def kept_name(recipe: str, overrides: list[str], seed: int) -> str:
    """'fast', [], 3 -> 'fast-seed-3'; 'baseline', ['train.epochs=5'], 0 -> 'baseline-train.epochs=5-seed-0'."""
    return "-".join([recipe, *(re.sub(r"[^A-Za-z0-9.=_]+", "_", o) for o in overrides), f"seed-{seed}"])


def measure(recipe: str, seed: int, overrides: list[str], keep: Path | None = None) -> dict:
    """One seed's results record; with `keep`, the run folder is moved to keep/<recipe>-seed-<seed>."""
    extra = [item for override in overrides for item in ("--set", override)]
    imports = import_seconds()
    with tempfile.TemporaryDirectory(dir=keep) as out:
        seconds, meta = one_run(recipe, seed, Path(out), extra)
        if keep:
            (run_dir,) = run_folders(Path(out))
            target = keep / kept_name(recipe, overrides, seed)
            if target.exists():
                shutil.rmtree(target)
            run_dir.rename(target)
    return {"recipe": recipe, "overrides": overrides, "seed": seed, "recipe_hash": meta["recipe_hash"],
            "command": ["mnist-kit", "train", recipe, "--set", f"train.seed={seed}", *extra],
            "test_accuracy": meta["test_accuracy"], "validation_accuracy": meta.get("validation_accuracy"),
            "process_seconds": seconds, "train_seconds": meta["wall_seconds"], "epochs": len(meta["history"]),
            "phase_seconds": where_the_time_went(seconds, imports, meta),
            "machine": meta["machine"], "precision": meta["precision"], "threads": meta["threads"],
            "torch": meta["versions"]["torch"], "git_commit": meta["git_commit"],
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--target", type=float, default=0.99, help="accuracy to reach")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds allowed per run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="passed to train --set")
    parser.add_argument("--again", action="store_true", help="measure seeds that have a results file again")
    parser.add_argument("--keep", type=Path, help="keep each seed's run folder under this folder")
    parser.add_argument("--results", type=Path, help="write one file per seed (and summary.json) under this folder")
    args = parser.parse_args()
    fetch_mnist(data_root())  # data already fetched and verified before the clock starts
    folder = None
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    if args.results:
        folder = machine_folder(args.results) / args.recipe
        folder.mkdir(parents=True, exist_ok=True)
    records = []
    print(f"{'seed':>4} {'seconds':>8} {'test acc':>9}")
    for seed in args.seeds:
        path = folder / f"seed-{seed}.json" if folder else None
        if path and path.exists() and not args.again:
            known = json.loads(path.read_text())
            if known.get("recipe_hash") == recipe_hash_for(args.recipe, seed, args.overrides):
                records.append(known)
                print(f"{seed:>4} {known['process_seconds']:8.2f} {known['test_accuracy']:9.2%}  (measured before)")
                continue
        record = measure(args.recipe, seed, args.overrides, args.keep)
        if path:
            write_json_atomic(path, record)
        records.append(record)
        print(f"{seed:>4} {record['process_seconds']:8.2f} {record['test_accuracy']:9.2%}", flush=True)
    times, accuracies = [r["process_seconds"] for r in records], [r["test_accuracy"] for r in records]
    print(f"{args.recipe}: {len(records)} seeds; time median {statistics.median(times):.2f} s, min {min(times):.2f}, "
          f"max {max(times):.2f}; accuracy median {statistics.median(accuracies):.2%}, min {min(accuracies):.2%}, "
          f"max {max(accuracies):.2%} (target {args.target:.2%} within {args.budget:.0f} s: "
          f"{'met' if max(times) <= args.budget and min(accuracies) >= args.target else 'NOT met'} by every seed)")
    if folder:  # every seed measured so far of this very recipe, whichever sitting measured it
        kept = [r for r in map(json.loads, map(Path.read_text, sorted(folder.glob("seed-*.json"))))
                if r["recipe_hash"] == recipe_hash_for(args.recipe, r["seed"], args.overrides)]
        kept.sort(key=lambda r: r["seed"])
        summary = {"recipe": args.recipe, "overrides": args.overrides, "seeds": [r["seed"] for r in kept],
                   "test_accuracy": spread([r["test_accuracy"] for r in kept]),
                   "process_seconds": spread([r["process_seconds"] for r in kept]),
                   "train_seconds": spread([r["train_seconds"] for r in kept]),
                   "phase_seconds": {phase: statistics.median(r["phase_seconds"][phase] for r in kept)
                                     for phase in kept[-1].get("phase_seconds", {})
                                     if all(phase in r.get("phase_seconds", {}) for r in kept)},
                   "machine": kept[0]["machine"], "torch": kept[0]["torch"],
                   "date": datetime.now(UTC).isoformat(timespec="seconds")}
        write_json_atomic(folder / "summary.json", summary)


if __name__ == "__main__":
    main()

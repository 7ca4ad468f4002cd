"""Wall time of a whole training process, from its start to its final evaluation, over several seeds.

    python bench/speedrun.py [--recipe fast] [--seeds 0 1 2 3 4] [--target 0.99] [--budget 10]

Each seed runs `python -m mnist_kit train RECIPE --set train.seed=S` as a fresh process (imports, data
loading and verification, model building, training, final evaluation, writing the run: all counted), with
the data already fetched. Prints each run, then the median and worst time and accuracy.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnist_kit.data import data_root
from mnist_kit.fetch import fetch_mnist


def one_run(recipe: str, seed: int, out: Path, extra: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mnist_kit", "train", recipe, "--set", f"train.seed={seed}",
                    "--out", str(out), "--quiet", *extra], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    accuracy = json.loads((run_dir / "metadata.json").read_text())["test_accuracy"]
    return seconds, accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--target", type=float, default=0.99, help="accuracy to reach")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds allowed per run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="passed to train --set")
    args = parser.parse_args()
    fetch_mnist(data_root())  # data already fetched and verified before the clock starts
    extra = [item for override in args.overrides for item in ("--set", override)]
    rows = []
    print(f"{'seed':>4} {'seconds':>8} {'test acc':>9}")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            seconds, accuracy = one_run(args.recipe, seed, Path(out), extra)
        rows.append((seconds, accuracy))
        print(f"{seed:>4} {seconds:8.2f} {accuracy:9.2%}", flush=True)
    times, accuracies = [r[0] for r in rows], [r[1] for r in rows]
    print(f"{args.recipe}: median {statistics.median(times):.2f} s, worst {max(times):.2f} s; "
          f"accuracy median {statistics.median(accuracies):.2%}, worst {min(accuracies):.2%} "
          f"(target {args.target:.2%} within {args.budget:.0f} s: "
          f"{'met' if max(times) <= args.budget and min(accuracies) >= args.target else 'NOT met'} by every seed)")


if __name__ == "__main__":
    main()

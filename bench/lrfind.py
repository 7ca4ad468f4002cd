"""Does lr-find's suggestion train as well as the recipe's own learning rate? The range test over a few seeds, then
the recipe trained for a few epochs with the shipped learning rate and with the suggestion, over seeds.

    python bench/lrfind.py --recipe baseline --epochs 3 --seeds 0 1 2 [--results bench/results]

Writes <results>/<machine>/lr-find-<recipe>.json: each seed's suggestion, each run's test accuracy, the medians.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from record import machine_folder, write_results

from mnist_kit.lrfind import lr_range_test, rounded
from mnist_kit.recipe import load_recipe
from mnist_kit.train import train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="baseline")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100, help="the range test's steps (lr-find --steps)")
    parser.add_argument("--name", help="the results file's name [default: lr-find-RECIPE]")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    tests = {}
    for seed in args.seeds:  # the range test's own seed: how steady is the suggestion?
        start = time.perf_counter()
        result = lr_range_test(load_recipe(args.recipe, [f"train.seed={seed}"]), steps=args.steps)
        tests[seed] = {"suggestion": result.suggestion, "rounded": rounded(result.suggestion), "steps": len(result.lrs),
                       "stopped": result.stopped, "seconds": time.perf_counter() - start}
        print(f"range test seed {seed}: {tests[seed]}", flush=True)
    suggested = rounded(statistics.median(t["suggestion"] for t in tests.values()))
    shipped = float(load_recipe(args.recipe).config["optimizer"]["lr"])
    runs = {"shipped": {}, "suggested": {}}
    with tempfile.TemporaryDirectory() as out:
        for label, lr in (("shipped", shipped), ("suggested", suggested)):
            for seed in args.seeds:
                recipe = load_recipe(args.recipe, [f"train.epochs={args.epochs}", f"train.seed={seed}",
                                                   f"optimizer.lr={lr}"])
                runs[label][seed] = train(recipe, out_dir=out, quiet=True).test_accuracy
                print(f"{label} lr {lr:g} seed {seed}: {runs[label][seed]:.2%}", flush=True)
    medians = {label: statistics.median(accuracies.values()) for label, accuracies in runs.items()}
    figures = {"recipe": args.recipe, "epochs": args.epochs, "steps": args.steps, "range_tests": tests,
               "shipped_lr": shipped, "suggested_lr": suggested, "test_accuracy": runs, "median_test_accuracy": medians,
               "difference_points": 100 * (medians["suggested"] - medians["shipped"])}
    path = machine_folder(args.results) / f"{args.name or 'lr-find-' + args.recipe}.json"
    write_results(path, ["python", *sys.argv], figures)
    print(f"shipped {shipped:g}: {medians['shipped']:.2%}; suggested {suggested:g}: {medians['suggested']:.2%}; "
          f"wrote {path}")


if __name__ == "__main__":
    main()

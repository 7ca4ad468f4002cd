"""The corruption report over seeds: recipes trained (or runs given) and scored by `mnist-kit robustness` on the
test split as it is and under the 15 MNIST-C-style corruptions generated here.

    python bench/robustness.py --recipe fast --seeds 0 1 2 3 4 [--set KEY=VALUE ...] [--name NAME]
    python bench/robustness.py --runs runs/bench/best-validation/seed-*/2* --name best-validation

--runs scores runs already trained (one per seed, e.g. those bench/verdict.py --keep kept) instead of training.

Writes <results>/<machine>/robustness/<name>.json: per seed the clean accuracy, each corruption's and their mean;
the medians over seeds.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from record import machine_folder, write_results
from rich.console import Console

from mnist_kit.corrupt import CORRUPTIONS
from mnist_kit.recipe import load_recipe, recipe_hash
from mnist_kit.robustness import robustness_of_runs
from mnist_kit.runs import find_run
from mnist_kit.train import train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", help="the results file's name [default: the recipe's]")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--runs", type=Path, nargs="+", help="score these runs instead of training")
    args = parser.parse_args()
    rows = []
    for row in robustness_of_runs(args.runs) if args.runs else []:
        metadata = find_run(row["run"]).metadata
        rows.append({**row, "run": Path(row["run"]).name, "recipe_hash": metadata["recipe_hash"],
                     "test_accuracy": metadata["test_accuracy"]})
        print(f"{row['recipe']} seed {row['seed']}: clean {row['clean']:.2%}, mean corrupted {row['mean']:.2%}",
              flush=True)
    if args.runs:
        args.recipe, args.overrides = rows[0]["recipe"], ["(runs given: each row's recipe_hash says which recipe)"]
    with tempfile.TemporaryDirectory() as out:
        for seed in [] if args.runs else args.seeds:
            recipe = load_recipe(args.recipe, [*args.overrides, f"train.seed={seed}"])
            run = train(recipe, out_dir=Path(out), quiet=True, console=Console(quiet=True))
            (row,) = robustness_of_runs([run.run_dir])
            rows.append({**row, "run": run.run_dir.name, "recipe_hash": recipe_hash(recipe),
                         "test_accuracy": run.test_accuracy})
            print(f"{args.recipe} seed {seed}: clean {row['clean']:.2%}, mean corrupted {row['mean']:.2%}", flush=True)
    summary = {"clean_accuracy": statistics.median(r["clean"] for r in rows),
               "mean_corrupted_accuracy": statistics.median(r["mean"] for r in rows),
               "corruption_accuracy": {name: statistics.median(r["corruptions"][name] for r in rows)
                                       for name in CORRUPTIONS}}
    path = machine_folder(args.results) / "robustness" / f"{args.name or args.recipe}.json"
    write_results(path, ["python", *sys.argv], {"recipe": args.recipe, "overrides": args.overrides,
                                                 "seeds": rows, "summary": summary})
    print(f"median over {len(rows)} seeds: clean {summary['clean_accuracy']:.2%}, mean corrupted "
          f"{summary['mean_corrupted_accuracy']:.2%}; wrote {path}")


if __name__ == "__main__":
    main()

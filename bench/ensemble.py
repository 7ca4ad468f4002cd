"""Test-time augmentation and ensembles: each run's test accuracy plain and with `--tta`, then the runs as one
ensemble, plain and with `--tta`. Nothing here chooses anything: every run given is scored, every run is kept.

    python bench/ensemble.py --name fast-5-seeds runs/bench/fast-seed-{0,1,2,3,4} --results bench/results

Writes <results>/<machine>/ensemble/<name>.json. The runs come from `bench/speedrun.py --keep runs/bench`
(`make bench-ensemble` trains and scores the sets the docs quote).
"""

import argparse
import sys
from pathlib import Path

from record import machine_folder, write_results

from mnist_kit.recipe import recipe_hash
from mnist_kit.runs import evaluate_ensemble, evaluate_run, find_run


def member(path: Path) -> dict:
    """One run's seed and recipe, and its test accuracy plain and with TTA."""
    recipe = find_run(path).recipe
    plain, tta = (evaluate_run(path, write=False, tta=tta)["accuracy"] for tta in (False, True))
    return {"run": path.name, "recipe": recipe.name, "overrides": recipe.overrides,
            "seed": recipe.config["train"]["seed"], "recipe_hash": recipe_hash(recipe),
            "test_accuracy": plain, "tta_test_accuracy": tta}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--name", required=True, help="the results file's name")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    members = [member(path) for path in args.runs]
    for m in members:
        print(f"{m['run']:40} {m['test_accuracy']:8.2%} {m['tta_test_accuracy']:8.2%} (tta)")
    figures = {"members": members}
    if len(args.runs) > 1:
        figures["ensemble_test_accuracy"] = evaluate_ensemble(args.runs)["accuracy"]
        figures["ensemble_tta_test_accuracy"] = evaluate_ensemble(args.runs, tta=True)["accuracy"]
        print(f"{'ensemble of ' + str(len(members)):40} {figures['ensemble_test_accuracy']:8.2%} "
              f"{figures['ensemble_tta_test_accuracy']:8.2%} (tta)")
    path = machine_folder(args.results) / "ensemble" / f"{args.name}.json"
    write_results(path, ["python", *sys.argv], figures)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

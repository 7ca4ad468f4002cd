"""Choose a more robust variant of a recipe on validation only: each candidate (a set of --set values) is trained
with 5,000 training images held out, over seeds, and scored on those images as they are and under the 15
MNIST-C-style corruptions; the test split is not read. The chosen candidate has the highest median corrupted
accuracy among those whose median clean validation accuracy is within --clean-cost points of the base's.

    python bench/robust_choice.py --recipe fast --seeds 0 1 2 [--clean-cost 0.05]
    python bench/robust_choice.py --recipe best --candidates background --keep runs/bench/best-validation

--candidates limits the candidates tried (the base is always one; `background` keeps the recipe's own augmentations
and adds it after them). --keep DIR keeps the runs: the base as DIR/seed-S (the layout bench/verdict.py --keep
writes, so best's calibrated runs are reused), a candidate as DIR/NAME/seed-S; a kept run of the very recipe is
reused, an interrupted one resumed. Writes <results>/<machine>/robustness/choice-<recipe>.json (candidates already
in it, with the same --set values, however spelt, and seeds, are reused); measure the chosen one on the test split with
bench/robustness.py --set ... --name NAME, or --runs with the kept runs.
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from record import keep_folder, kept_run, machine_folder, write_results

from mnist_kit.recipe import load_recipe, parse_overrides, toml_value
from mnist_kit.robustness import robustness_of_runs
from mnist_kit.runs import find_run

AFFINE = 'augment=[{name="affine", degrees=10.0, scale=0.1, shift=2.0, shear=5.0}]'  # fast-995's
STRONG = 'augment=[{name="affine", degrees=20.0, scale=0.15, shift=3.0, shear=10.0}]'
BACKGROUND = {"name": "background", "level": 2.0, "p": 0.5}
CANDIDATES = {  # name -> --set values on top of the base recipe (the first is the base itself)
    "base": [],
    "affine": [AFFINE],
    "affine-2-epochs": [AFFINE, "train.epochs=2"],
    "strong-affine-2-epochs": [STRONG, "train.epochs=2"],
    "background": None,  # the base recipe's own augmentations, then BACKGROUND: see candidate_overrides
    "affine-background-2-epochs": [AFFINE.replace("}]", "}, " + toml_value(BACKGROUND) + "]"), "train.epochs=2"],
}


def candidate_overrides(name: str, recipe: str) -> list[str]:
    """A candidate's --set values; `background` keeps the recipe's own augment tables and adds BACKGROUND after."""
    if name == "background":
        return ["augment=" + toml_value([*load_recipe(recipe).config["augment"], BACKGROUND])]
    return CANDIDATES[name]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--clean-cost", type=float, default=0.05, help="points of clean validation accuracy allowed")
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--keep", type=Path, help="keep the runs in KEEP/seed-S and KEEP/NAME/seed-S")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    names = ["base", *(name for name in args.candidates if name != "base")]
    path = machine_folder(args.results) / "robustness" / f"choice-{args.recipe}.json"
    before = json.loads(path.read_text())["candidates"] if path.is_file() else {}
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            overrides = candidate_overrides(name, args.recipe)
            if name in before and parse_overrides(before[name]["overrides"]) == parse_overrides(overrides) and \
                    [s["seed"] for s in before[name]["seeds"]] == args.seeds:
                rows[name] = before[name]  # measured before, the same recipe and seeds (the weights are seeded)
                continue
            seeds = []
            kept = keep_folder(args.keep, scratch, None if name == "base" else name)
            for seed in args.seeds:
                recipe = load_recipe(args.recipe, ["data.validation=5000", *overrides, f"train.seed={seed}"])
                run = find_run(kept_run(recipe, kept / f"seed-{seed}"))
                (row,) = robustness_of_runs([run.run_dir], split="validation")
                seeds.append({"seed": seed, "validation_clean_accuracy": row["clean"],
                              "validation_corrupted_accuracy": row["mean"],
                              "validation_corruptions_accuracy": row["corruptions"],
                              "train_seconds": run.metadata["wall_seconds"]})
                print(f"{name} seed {seed}: clean {row['clean']:.2%}, corrupted {row['mean']:.2%}", flush=True)
            rows[name] = {"overrides": overrides, "seeds": seeds,
                          "median_validation_clean_accuracy": statistics.median(
                              s["validation_clean_accuracy"] for s in seeds),
                          "median_validation_corrupted_accuracy": statistics.median(
                              s["validation_corrupted_accuracy"] for s in seeds)}
    floor = rows["base"]["median_validation_clean_accuracy"] - args.clean_cost / 100
    allowed = [name for name, row in rows.items() if row["median_validation_clean_accuracy"] >= floor - 1e-12]
    chosen = max(allowed, key=lambda name: rows[name]["median_validation_corrupted_accuracy"])
    write_results(path, ["python", *sys.argv], {"recipe": args.recipe, "clean_cost_points": args.clean_cost,
                                                "candidates": rows, "allowed": allowed, "chosen": chosen})
    print(f"chosen on validation: {chosen} {rows[chosen]['overrides']}; wrote {path}")


if __name__ == "__main__":
    main()

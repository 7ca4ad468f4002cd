"""Calibration and verdicts, measured over seeds: a recipe trained with 5,000 training images held out, calibrated
(`mnist-kit calibrate`: the temperature and the verdict rule chosen on the validation digits and drawn shapes), then
judged on data that chose nothing: the MNIST test split (accuracy, NLL/ECE/Brier before and after, coverage and
selective accuracy) and outlier sets made with other seeds (AUROC of each score, digits vs each set; the share of
each set the rule calls a digit, unsure, not a digit), the letters also one letter at a time; and, for more than one
seed, the seeds' runs as one deep ensemble (their mean calibrated probability; their mean energy).

    python bench/verdict.py fast --seeds 0 1 2 3 4 --name fast-validation
    python bench/verdict.py fast --seeds 0 1 2 3 4 --name fast-outliers \
        --set 'train.outliers={sets=["fashion-mnist","shapes","scribbles"]}'
    python bench/verdict.py best --seeds 0 1 2 --name best-validation --keep runs/bench/best-validation

--keep DIR keeps each seed's run as DIR/seed-N (bench/robustness.py --runs can then score them).

Writes <results>/<machine>/verdict/<name>.json (`make bench-verdict` measures the sets the docs quote).
"""

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from record import kept_run, machine_folder, write_results

from mnist_kit.confidence import calibrate_run, outputs_on_images
from mnist_kit.data import load_dataset
from mnist_kit.outliers import cached_outliers, letter_at
from mnist_kit.recipe import load_recipe, recipe_hash, recipe_path
from mnist_kit.runs import build_run_model_from, find_run, run_dataset
from mnist_kit.verdict import SCORES, VERDICTS, auroc, digit_scores, has_logits, verdicts

MEASURING_SEED = 2  # outlier sets drawn with seeds nothing trained (1) or chose (0) on
MEASURED_SETS = {"letters": 1080, "letters-dejavu": 1080, "photos": 1000, "scribbles": 1000, "shapes": 1000}
VALIDATION = 5000


def outlier_sets(data_dir=None) -> dict[str, torch.Tensor]:
    """The sets measured on, as uint8 pixels: drawn ones (made once, cached) and Fashion-MNIST's test split."""
    from mnist_kit.data import data_root

    sets = {name: cached_outliers(name, count, MEASURING_SEED, data_root(data_dir))
            for name, count in MEASURED_SETS.items()}
    sets["fashion-mnist test"] = load_dataset("fashion-mnist", data_dir).test_images
    return sets


def seen_families(recipe, sets) -> list[str]:
    """The measured sets whose family the recipe's outlier exposure trains on (other images of it: seed 1, not 2)."""
    trained_on = (recipe.config["train"].get("outliers") or {}).get("sets", [])
    return [name for name in sets if name in trained_on]


def measure(recipe_name: str, seed: int, overrides: list[str], sets: dict, out: Path) -> tuple[dict, "Member"]:
    """Train (or reuse a kept run), calibrate and judge one seed: its figures, and what it answered."""
    recipe = load_recipe(recipe_path(recipe_name), [f"data.validation={VALIDATION}", f"train.seed={seed}",
                                                    *overrides])
    run_dir = kept_run(recipe, out)
    calibrated = calibrate_run(run_dir)
    run = find_run(run_dir)
    model, _ = build_run_model_from(run)
    splits = run_dataset(run)
    digits = outputs_on_images(run, model, splits.test_images, splits)
    temperature = calibrated["temperature"]
    member = Member(temperature, digits, splits.test_labels, {})
    said = {}
    for name, pixels in sets.items():
        member.sets[name] = outputs_on_images(run, model, pixels, splits)
        verdict, _ = verdicts(member.sets[name], temperature, calibrated["verdict"])
        said[name] = {v: verdict.count(v) / len(verdict) for v in VERDICTS}
    row = {"seed": seed, "recipe_hash": recipe_hash(recipe), "wall_seconds": run.metadata["wall_seconds"],
           "test_accuracy": calibrated["test_before"]["accuracy"], "temperature": temperature,
           "test_before": calibrated["test_before"], "test_after": calibrated["test_after"],
           "verdict": calibrated["verdict"], "test_verdicts": calibrated["test_verdicts"],
           **separations([member]), "outlier_verdicts": said}
    return row, member


@dataclass
class Member:
    """What one seed's calibrated run answered: its temperature, its outputs on the test digits and on each set."""

    temperature: float
    digits: torch.Tensor
    labels: torch.Tensor
    sets: dict[str, torch.Tensor]


def mean_calibrated_probability(members: list[Member], outputs: list[torch.Tensor]) -> torch.Tensor:
    """(N, classes): the runs' softmax(outputs / temperature), averaged (in probability space, not log space as
    mnist_kit.evaluate.mean_probability, so that one run's is exactly its own)."""
    return torch.stack([(o.float() / m.temperature).softmax(dim=1) for m, o in zip(members, outputs)]).mean(0)


def ensemble_scores(members: list[Member], outputs: list[torch.Tensor], score: str) -> torch.Tensor:
    """A score of several runs as one: the top of their mean calibrated probability (confidence), or their mean
    energy (each run's own temperature); one run's is its own score."""
    if score == "confidence":
        return mean_calibrated_probability(members, outputs).max(dim=1).values
    return torch.stack([digit_scores(o, m.temperature, score) for m, o in zip(members, outputs)]).mean(0)


def separations(members: list[Member]) -> dict:
    """AUROC of test digits against each set, per score, and against each letter of the letters set alone."""
    names = [name for name in SCORES if name != "energy" or has_logits(members[0].digits)]
    digits = {score: ensemble_scores(members, [m.digits for m in members], score) for score in names}
    found = {"auroc": {}, "auroc_by_letter": {}}
    for name in members[0].sets:
        outliers = {score: ensemble_scores(members, [m.sets[name] for m in members], score) for score in names}
        found["auroc"][name] = {score: auroc(digits[score], outliers[score]) for score in names}
    if "letters" in members[0].sets:
        letters = [letter_at(i) for i in range(len(members[0].sets["letters"]))]
        for letter in dict.fromkeys(letters):
            shown = torch.tensor([said == letter for said in letters])
            found["auroc_by_letter"][letter] = {
                score: auroc(digits[score], ensemble_scores(members, [m.sets["letters"][shown] for m in members],
                                                            score)) for score in names}
    return found


def ensemble_figures(members: list[Member]) -> dict:
    """The seeds' runs as one deep ensemble (mean calibrated probability): its test accuracy and how well it tells
    digits from each set (a measurement of what averaging buys here; `predict` judges one run)."""
    predicted = mean_calibrated_probability(members, [m.digits for m in members]).argmax(dim=1)
    accuracy = (predicted == members[0].labels).float().mean().item()
    return {"members": len(members), "test_accuracy": accuracy, **separations(members)}


def summary(rows: list[dict]) -> dict:
    """Median, min and max over seeds of each figure the docs quote."""
    def spread(values: list[float]) -> dict:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    figures = {"test_accuracy": spread([r["test_accuracy"] for r in rows]),
               "temperature": spread([r["temperature"] for r in rows])}
    for when in ("before", "after"):
        for key in ("nll", "ece", "brier"):
            figures[f"{key}_{when}"] = spread([r[f"test_{when}"][key] for r in rows])
    for key in ("coverage", "selective_accuracy", "unsure", "not a digit"):
        figures[key] = spread([r["test_verdicts"][key] for r in rows])
    figures["auroc"] = {name: {score: spread([r["auroc"][name][score] for r in rows]) for score in scores}
                        for name, scores in rows[0]["auroc"].items()}
    figures["auroc_by_letter"] = {letter: {score: spread([r["auroc_by_letter"][letter][score] for r in rows])
                                           for score in scores}
                                  for letter, scores in rows[0]["auroc_by_letter"].items()}
    figures["outlier_verdicts"] = {name: {v: spread([r["outlier_verdicts"][name][v] for r in rows]) for v in VERDICTS}
                                   for name in rows[0]["outlier_verdicts"]}
    figures["chosen_scores"] = sorted({r["verdict"]["score"] for r in rows})
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", required=True, help="the results file's name")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--keep", type=Path, help="keep each seed's run as KEEP/seed-N")
    args = parser.parse_args()
    sets = outlier_sets()
    rows, members = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            out = args.keep / f"seed-{seed}" if args.keep else Path(scratch)
            row, member = measure(args.recipe, seed, args.overrides, sets, out)
            rows.append(row)
            members.append(member)
            r = rows[-1]
            aurocs = "  ".join(f"{name} {max(v.values()):.4f}" for name, v in r["auroc"].items())
            print(f"seed {seed}: test {r['test_accuracy']:.2%}, ECE {r['test_before']['ece']:.2%} -> "
                  f"{r['test_after']['ece']:.2%}, coverage {r['test_verdicts']['coverage']:.2%} at "
                  f"{r['test_verdicts']['selective_accuracy']:.2%}, {r['verdict']['score']}; AUROC {aurocs}",
                  flush=True)
    figures = {"recipe": args.recipe, "overrides": [f"data.validation={VALIDATION}", *args.overrides],
               "seen_families": seen_families(load_recipe(recipe_path(args.recipe), args.overrides), sets),
               "seeds": rows, "summary": summary(rows)}
    if len(members) > 1:
        figures["ensemble"] = ensemble_figures(members)
        e = figures["ensemble"]
        print(f"the {len(members)} seeds as one ensemble: test {e['test_accuracy']:.2%}; AUROC "
              + "  ".join(f"{name} {max(v.values()):.4f}" for name, v in e["auroc"].items()))
    path = machine_folder(args.results) / "verdict" / f"{args.name}.json"
    write_results(path, ["python", *sys.argv], figures)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

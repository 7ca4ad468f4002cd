"""What removing the audit's suspected training labels does: a recipe trained with 5,000 images held out, without the
first N of the audit's ranked training issues (N = 0 is the recipe as it is), over seeds. Validation accuracy
chooses N; the test split only reports the change.

    python bench/exclude.py --recipe fast --issues audits/fast/train-issues.txt --drop 0 15 30 62 --seeds 0 1 2 3 4

Writes <results>/<machine>/exclude-<recipe>.json.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from record import machine_folder, write_results
from rich.console import Console

from mnist_kit.audit import write_index_file
from mnist_kit.exclude import parse_indices, read_exclude_bytes
from mnist_kit.recipe import load_recipe
from mnist_kit.train import train

VALIDATION = 5000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--issues", type=Path, required=True, help="the audit's train-issues.txt")
    parser.add_argument("--drop", type=int, nargs="+", default=[0, 15, 30, 62])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    ranked = [int(i) for i in args.issues.read_text().split("\n", 1)[1].split()]  # the file's order: most suspect first
    assert sorted(ranked) == parse_indices(read_exclude_bytes(args.issues), args.issues)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for drop in args.drop:
            listed = write_index_file(Path(out) / f"drop-{drop}.txt", ranked[:drop], f"the audit's first {drop}")
            for seed in args.seeds:
                overrides = [f"data.validation={VALIDATION}", f"train.seed={seed}"]
                if drop:
                    overrides.append(f'data.exclude="{listed}"')
                run = train(load_recipe(args.recipe, overrides), out_dir=Path(out) / "runs", quiet=True,
                            console=Console(quiet=True))
                rows.append({"drop": drop, "seed": seed, "validation_accuracy": run.validation_accuracy,
                             "test_accuracy": run.test_accuracy,
                             "left_out": (run.metadata["data"].get("excluded") or {}).get("left_out", 0)})
                print(f"drop {drop:3} seed {seed}: validation {run.validation_accuracy:.2%}, test "
                      f"{run.test_accuracy:.2%}", flush=True)
    summary = {}
    for drop in args.drop:
        chosen = [r for r in rows if r["drop"] == drop]
        summary[str(drop)] = {key: {"median": statistics.median(r[key] for r in chosen),
                                    "mean": statistics.mean(r[key] for r in chosen)}
                              for key in ("validation_accuracy", "test_accuracy")}
    best = max(args.drop, key=lambda d: (summary[str(d)]["validation_accuracy"]["mean"], -d))
    figures = {"recipe": args.recipe, "issues": str(args.issues), "validation": VALIDATION, "rows": rows,
               "summary": summary, "chosen_drop": best,
               "test_accuracy_change_mean": summary[str(best)]["test_accuracy"]["mean"]
               - summary["0"]["test_accuracy"]["mean"] if "0" in summary else None}
    path = machine_folder(args.results) / f"exclude-{args.recipe}.json"
    write_results(path, ["python", *sys.argv], figures)
    print(f"validation chooses dropping {best}; wrote {path}")


if __name__ == "__main__":
    main()

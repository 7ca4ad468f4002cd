"""What removing the audit's suspected training labels does: a recipe trained with 5,000 images held out, without the
first N of the audit's ranked training issues (N = 0 is the recipe as it is), over seeds. Validation accuracy
chooses N; the test split only reports the change.

    python bench/exclude.py --recipe fast --issues audits/fast/train-issues.txt --drop 0 15 30 62 --seeds 0 1 2 3 4
    python bench/exclude.py --recipe best --issues audits/fast/train-issues.txt --drop 0 62 --seeds 0 1 2 \
        --keep runs/bench/best-validation

--keep DIR keeps the runs: the recipe as it is (N = 0) as DIR/seed-S, the layout bench/verdict.py --keep writes, so
its runs are reused; without the first N as DIR/drop-N/seed-S, beside the list it was trained without. A kept run of
the same resolved recipe (the list's content included) is reused, an interrupted one resumed.

Writes <results>/<machine>/exclude-<recipe>.json.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from record import keep_folder, kept_run, machine_folder, write_results

from mnist_kit.audit import write_index_file
from mnist_kit.exclude import parse_indices, read_exclude_bytes
from mnist_kit.recipe import load_recipe
from mnist_kit.runs import find_run

VALIDATION = 5000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--issues", type=Path, required=True, help="the audit's train-issues.txt")
    parser.add_argument("--drop", type=int, nargs="+", default=[0, 15, 30, 62])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--keep", type=Path, help="keep the runs in KEEP/seed-S and KEEP/drop-N/seed-S")
    args = parser.parse_args()
    ranked = [int(i) for i in args.issues.read_text().split("\n", 1)[1].split()]  # the file's order: most suspect first
    assert sorted(ranked) == parse_indices(read_exclude_bytes(args.issues), args.issues)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for drop in args.drop:
            kept = keep_folder(args.keep, scratch, f"drop-{drop}" if drop else None)
            kept.mkdir(parents=True, exist_ok=True)
            listed = write_index_file(kept / f"drop-{drop}.txt", ranked[:drop], f"the audit's first {drop}") if drop \
                else None
            for seed in args.seeds:
                overrides = [f"data.validation={VALIDATION}", f"train.seed={seed}"]
                if listed:
                    overrides.append(f'data.exclude="{listed}"')
                run = find_run(kept_run(load_recipe(args.recipe, overrides), kept / f"seed-{seed}"))
                rows.append({"drop": drop, "seed": seed, "validation_accuracy": run.metadata["validation_accuracy"],
                             "test_accuracy": run.metadata["test_accuracy"],
                             "left_out": (run.metadata["data"].get("excluded") or {}).get("left_out", 0)})
                print(f"drop {drop:3} seed {seed}: validation {rows[-1]['validation_accuracy']:.2%}, test "
                      f"{rows[-1]['test_accuracy']:.2%}", flush=True)
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

"""The label audit of a recipe over the whole of MNIST: how many training and test labels it suspects, the top of
its ranking, and how long it takes (K folds trained, or reused from an earlier audit of the same recipe).

    python bench/audit.py --recipe fast --folds 5 [--out audits/fast] [--results bench/results]

Writes <results>/<machine>/audit-<recipe>.json (the docs' figures) and OUT's report and contact sheet.
"""

import argparse
import sys
import time
from pathlib import Path

from record import machine_folder, write_results

from mnist_kit.audit import audit, contact_sheet


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    start = time.perf_counter()
    report = audit(args.recipe, args.folds, "both", out=args.out or Path("audits") / args.recipe,
                   on_fold=lambda k, n, status: print(f"fold {k + 1} of {n}: {status}", flush=True))
    seconds = time.perf_counter() - start
    sheet = contact_sheet(report, Path(report["out"]))
    figures = {"recipe": args.recipe, "folds": args.folds, "audit_seconds": seconds,
               "folds_trained": sum(r["status"] == "trained" for r in report["runs"]),
               "fold_temperatures": [r["temperature"] for r in report["runs"]],
               "suspected": report["counts"], "out_of_sample_accuracy": report["accuracy_out_of_sample"],
               "top_50": report["issues"][:50]}
    path = machine_folder(args.results) / f"audit-{args.recipe}.json"
    write_results(path, ["python", *sys.argv], figures)
    print(f"suspected: {report['counts']}; {seconds:.0f} s; wrote {path} and {sheet}")


if __name__ == "__main__":
    main()

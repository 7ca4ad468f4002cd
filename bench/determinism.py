"""The same recipe and seed twice on one machine: are the weights bit-identical?

    python bench/determinism.py --recipe fast-995 [--seed 0] [--results bench/results]
    python bench/determinism.py --recipe best --seed 1 --against runs/bench/best-seed-1

Trains the recipe twice, each as a fresh `mnist-kit train` process (or once, and compares with a run trained
before: --against, e.g. one that `make bench-seeds` kept), and compares the SHA-256 of the two model.safetensors
files (and the test accuracies; a run kept from before compares by its header written as mnist-kit writes it
now). Writes <results>/<machine>/determinism-<recipe>.json.
"""

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from record import machine_folder, write_results
from speedrun import one_run

from mnist_kit.export import canonical_safetensors


def described(run: Path) -> dict:
    """sha256: the file's bytes; canonical_sha256: the same with the header's keys sorted (what mnist-kit writes
    since the header order was found to vary between processes), so a run kept from before compares too."""
    meta, blob = json.loads((run / "metadata.json").read_text()), (run / "model.safetensors").read_bytes()
    return {"sha256": hashlib.sha256(blob).hexdigest(),
            "canonical_sha256": hashlib.sha256(canonical_safetensors(blob)).hexdigest(),
            "test_accuracy": meta["test_accuracy"],
            "recipe_hash": meta["recipe_hash"], "seed": meta["seed"], "started": meta["started"]}


def train_once(recipe: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        one_run(recipe, seed, Path(out), [])
        (run,) = [p for p in Path(out).iterdir() if p.is_dir()]
        return described(run)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--against", type=Path, help="a run of the same recipe and seed trained before")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    runs = [described(args.against) if args.against else train_once(args.recipe, args.seed),
            train_once(args.recipe, args.seed)]
    if runs[0]["recipe_hash"] != runs[1]["recipe_hash"] or runs[0]["seed"] != runs[1]["seed"]:
        sys.exit(f"{args.against} is not a run of {args.recipe} with seed {args.seed} as it is now")
    identical = runs[0]["canonical_sha256"] == runs[1]["canonical_sha256"]
    print(f"{args.recipe} seed {args.seed}: {'identical' if identical else 'DIFFERENT'} weights files "
          f"({runs[0]['canonical_sha256'][:16]}..., {runs[1]['canonical_sha256'][:16]}...), test "
          f"{runs[0]['test_accuracy']:.2%} and "
          f"{runs[1]['test_accuracy']:.2%}")
    path = machine_folder(args.results) / f"determinism-{args.recipe}.json"
    write_results(path, ["python", *sys.argv], {"recipe": args.recipe, "seed": args.seed, "runs": runs,
                                                 "identical_weights": identical})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

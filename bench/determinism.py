"""The same recipe and seed twice on one machine: are the weights bit-identical?

    python bench/determinism.py --recipe fast-995 [--seed 0] [--results bench/results]
    python bench/determinism.py --recipe best --seed 1 --against runs/bench/best-seed-1 [--keep runs/determinism]
    python bench/determinism.py --recipe best --seed 1 --compare runs/bench/best-seed-1 runs/determinism/best-...

Trains the recipe twice, each as a fresh `mnist-kit train` process (or once, and compares with a run trained
before: --against, e.g. one that `make bench-seeds` kept): the SHA-256 of the weights alone (every tensor), of the
model.safetensors files (header included: the same only when the recipe's description is too, since the header
quotes the recipe), the test accuracies, and the first epoch whose training loss differs. --keep DIR keeps the
runs it trains.
Writes <results>/<machine>/determinism-<recipe>.json.
"""

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import safetensors.torch
import torch
from record import machine_folder, run_folders, write_results
from speedrun import one_run

from mnist_kit.export import canonical_safetensors


def tensors_sha256(blob: bytes) -> str:
    """SHA-256 of the weights alone: every tensor's name, dtype, shape and bytes, in name order (the header's
    metadata, which quotes the recipe's description, left out)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(safetensors.torch.load(blob).items()):
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def described(run: Path) -> dict:
    """sha256: the file's bytes; canonical_sha256: the same with the header's keys sorted (what mnist-kit writes
    since the header order was found to vary between processes); tensors_sha256: the weights alone, so a run kept
    from before (whose header may quote an older description) compares too."""
    meta, blob = json.loads((run / "metadata.json").read_text()), (run / "model.safetensors").read_bytes()
    return {"sha256": hashlib.sha256(blob).hexdigest(),
            "canonical_sha256": hashlib.sha256(canonical_safetensors(blob)).hexdigest(),
            "tensors_sha256": tensors_sha256(blob),
            "test_accuracy": meta["test_accuracy"],
            "recipe_hash": meta["recipe_hash"], "seed": meta["seed"], "started": meta["started"],
            "git_commit": meta.get("git_commit"), "train_loss": [row["train_loss"] for row in meta["history"]]}


def train_once(recipe: str, seed: int, keep: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as out:
        one_run(recipe, seed, keep or Path(out), [])
        (run,) = sorted(run_folders(keep or Path(out)), key=lambda p: p.stat().st_mtime)[-1:]
        return described(run) | {"kept": str(run) if keep else None}


def first_difference(a: list[float], b: list[float]) -> int | None:
    """The first epoch whose training loss differs between two runs (None: every epoch alike)."""
    return next((epoch for epoch, (x, y) in enumerate(zip(a, b), start=1) if x != y), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--against", type=Path, help="a run of the same recipe and seed trained before")
    parser.add_argument("--keep", type=Path, help="keep the run(s) trained here in this folder")
    parser.add_argument("--compare", type=Path, nargs=2, metavar="RUN",
                        help="train nothing: compare two runs of the recipe and seed trained before")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.compare:
        runs = [described(run) for run in args.compare]
    else:
        runs = [described(args.against) if args.against else train_once(args.recipe, args.seed, args.keep),
                train_once(args.recipe, args.seed, args.keep)]
    if runs[0]["recipe_hash"] != runs[1]["recipe_hash"] or runs[0]["seed"] != runs[1]["seed"]:
        sys.exit(f"{args.against} is not a run of {args.recipe} with seed {args.seed} as it is now")
    identical = runs[0]["tensors_sha256"] == runs[1]["tensors_sha256"]
    same_file = runs[0]["canonical_sha256"] == runs[1]["canonical_sha256"]
    print(f"{args.recipe} seed {args.seed}: {'identical' if identical else 'DIFFERENT'} weights "
          f"({runs[0]['tensors_sha256'][:16]}..., {runs[1]['tensors_sha256'][:16]}...), "
          f"{'the same' if same_file else 'other'} model.safetensors bytes, test "
          f"{runs[0]['test_accuracy']:.2%} and "
          f"{runs[1]['test_accuracy']:.2%}")
    path = machine_folder(args.results) / f"determinism-{args.recipe}.json"
    differs = first_difference(runs[0]["train_loss"], runs[1]["train_loss"])
    if differs:
        print(f"the training loss first differs at epoch {differs} of {len(runs[0]['train_loss'])}")
    write_results(path, ["python", *sys.argv], {"recipe": args.recipe, "seed": args.seed, "runs": runs,
                                                 "identical_weights": identical,
                                                 "identical_files": same_file,
                                                 "first_epoch_with_other_training_loss": differs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

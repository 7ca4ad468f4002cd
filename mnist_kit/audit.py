"""`mnist-kit audit`: labels that are probably wrong, found by confident learning (Northcutt et al.; cleanlab, the
[audit] extra) from out-of-sample probabilities.

The training split is cut into K folds; fold k's model is the recipe trained without fold k (data.exclude, so the
fold's run is matched by its resolved recipe and reused when the audit runs again) and predicts fold k, its
probabilities calibrated by one temperature fitted on that fold. The test split is predicted by the mean of the K
models' calibrated probabilities, none of which saw it. cleanlab then ranks the images whose given
label the probabilities disagree with. Nothing here reads a published list of label errors: that list judges an
audit, it never builds or tunes one.
"""

import csv
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mnist_kit.atomic import write_bytes_atomic, write_json_atomic
from mnist_kit.calibration import fit_temperature
from mnist_kit.data import data_root, load_dataset, normalize
from mnist_kit.errors import UserError
from mnist_kit.evaluate import predict_logits
from mnist_kit.invocation import install_hint
from mnist_kit.recipe import load_recipe, parse_overrides, recipe_hash
from mnist_kit.runs import build_run_model_from, find_run
from mnist_kit.sweep import Backend, Point, local_backend

SPLITS = ("train", "test", "both")
FOLD_SEED = 0  # which images fall in which fold: fixed, so that a second audit reuses the first one's folds


def require_cleanlab():
    """cleanlab's ranking functions, or a one-line error that says how to install them."""
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise UserError(f"mnist-kit audit needs cleanlab: {install_hint('audit')}") from None
    return find_label_issues, get_label_quality_scores


def fold_indices(count: int, folds: int, seed: int = FOLD_SEED) -> list[torch.Tensor]:
    """`folds` disjoint sorted sets of indices covering 0..count-1, by a seeded permutation."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return [part.sort().values for part in order.chunk(folds)]


def write_index_file(path: Path, indices: list[int], comment: str) -> Path:
    """A data.exclude file: a comment line, then one index a line (written atomically)."""
    return write_bytes_atomic(path, (f"# {comment}\n" + "".join(f"{i}\n" for i in indices)).encode())


def fold_outputs(run_dir: Path, images: list[torch.Tensor], splits) -> list[torch.Tensor]:
    """A fold model's outputs (logits or log-probabilities) for sets of uint8 images."""
    model, _ = build_run_model_from(find_run(run_dir))
    return [predict_logits(model, normalize(pixels, splits.mean, splits.std)).float() for pixels in images]


def fold_points(recipe: str | Path, overrides: list[str], parts: list[torch.Tensor], folder: Path) -> list[Point]:
    """Each fold as a sweep point: the recipe without the fold (data.exclude: its index file, written here), trained
    into folder/fold-K; a point whose recipe trained there before is reused, as a sweep's is."""
    points = []
    for k, part in enumerate(parts):
        index_file = write_index_file(folder / f"fold-{k}.txt", part.tolist(), f"fold {k} of {len(parts)} (seed "
                                      f"{FOLD_SEED}): the images fold {k}'s model never saw")
        values = {**parse_overrides(overrides), "data.exclude": str(index_file)}
        digest = recipe_hash(load_recipe(recipe, values))
        points.append(Point(k, {"fold": k}, values, folder / f"fold-{k}", digest))
    return points


def train_folds(base: Path, points: list[Point], data_dir, backend: Backend | None,
                on_fold: Callable[[int, int, str], None] | None) -> dict[int, dict]:
    """Every fold's row (run folder, status) from the backend (default: this machine, one fold at a time); one
    UserError naming the folds that failed."""
    rows = {}

    def report(row: dict) -> None:
        rows[row["point"]] = row
        if on_fold:
            on_fold(row["point"], len(points), row["status"] if "error" not in row else f"failed: {row['error']}")

    (backend or local_backend())(str(base), points, data_root(data_dir).resolve(), report)
    failed = [f"fold {k}: {row['error']}" for k, row in sorted(rows.items()) if "error" in row]
    if failed:
        raise UserError(f"{len(failed)} of {len(points)} folds did not train ({'; '.join(failed)}); run the audit "
                        f"again to train them (the others are reused)")
    return rows


def audit(recipe: str | Path, folds: int = 5, images: str = "train", overrides: list[str] | None = None,
          out: Path | str | None = None, data_dir=None,
          on_fold: Callable[[int, int, str], None] | None = None, backend: Backend | None = None) -> dict:
    """Rank the suspected label issues of the training split, the test split or both (see the module's text);
    writes OUT/label-issues.csv and .json, OUT/train-issues.txt (a data.exclude file of the suspected training
    images, most suspect first) and the folds' runs under OUT/folds. The folds train through a sweep backend
    (mnist_kit.sweep.local_backend by default, mnist_kit.cluster.ray_backend on Ray; OUT must then be a folder
    every node reaches). `on_fold(k, folds, "trained" | "done before" | "failed: ...")` as each fold ends."""
    if images not in SPLITS:
        raise UserError(f"--images must be train, test or both, got {images!r}")
    if not 2 <= folds <= 20:
        raise UserError(f"--folds must be 2 to 20, got {folds}")
    find_label_issues, get_label_quality_scores = require_cleanlab()
    base = load_recipe(recipe, overrides or [])
    out = Path(out) if out else Path("audits") / base.name
    splits = load_dataset(base.config["data"]["dataset"], data_dir)
    parts = fold_indices(len(splits.train_labels), folds)
    train_probabilities = torch.zeros(len(splits.train_labels), splits.num_classes)
    test_probabilities = torch.zeros(len(splits.test_labels), splits.num_classes)
    runs = []
    points = fold_points(base.path, overrides or [], parts, (out / "folds").resolve())
    rows = train_folds(base.path, points, data_dir, backend, on_fold)
    for k, part in enumerate(parts):
        run_dir, status = Path(rows[k]["run"]), rows[k]["status"]
        held_out, test = fold_outputs(run_dir, [splits.train_images[part], splits.test_images], splits)
        # calibrated on the fold it predicts (one scalar by NLL): a label-smoothed model is underconfident, and
        # confident learning's per-class thresholds then let almost nothing through (fast: 9 suspects, not 51)
        temperature = fit_temperature(held_out, splits.train_labels[part])
        train_probabilities[part] = (held_out / temperature).softmax(dim=1)
        test_probabilities += (test / temperature).softmax(dim=1) / folds
        runs.append({"fold": k, "run": str(run_dir), "status": status, "images": len(part),
                     "temperature": temperature})
    rows = []
    for split, probabilities, labels in (("train", train_probabilities, splits.train_labels),
                                         ("test", test_probabilities, splits.test_labels)):
        if images not in (split, "both"):
            continue
        given, pred = labels.numpy(), probabilities.double().numpy()
        # n_jobs=1: cleanlab's own worker pool forks this process, which deadlocks where Ray's threads run (a Ray
        # audit's driver); one process ranks 70,000 images in well under a second anyway
        ranked = find_label_issues(labels=given, pred_probs=pred, return_indices_ranked_by="self_confidence",
                                   n_jobs=1)
        quality = get_label_quality_scores(given, pred)
        rows += [{"index": int(i), "split": split, "given": splits.classes[given[i]],
                  "suggested": splits.classes[int(pred[i].argmax())], "quality": float(quality[i])}
                 for i in ranked]
    rows.sort(key=lambda row: row["quality"])  # one ranking over both splits: the least likely label first
    report = {"recipe": base.name, "recipe_path": str(base.path), "dataset": splits.name,
              "overrides": overrides or [], "folds": folds, "fold_seed": FOLD_SEED,
              "images": images, "runs": runs, "issues": rows,
              "counts": {split: sum(r["split"] == split for r in rows) for split in ("train", "test")},
              "accuracy_out_of_sample": {
                  "train": float(train_probabilities.argmax(dim=1).eq(splits.train_labels).float().mean()),
                  "test": float(test_probabilities.argmax(dim=1).eq(splits.test_labels).float().mean())}}
    write_report(out, report)
    for split, probabilities in (("train", train_probabilities), ("test", test_probabilities)):
        buffer = io.BytesIO()  # the out-of-sample probabilities, for a second look (np.load, no pickle)
        np.save(buffer, probabilities.numpy(), allow_pickle=False)
        write_bytes_atomic(out / f"probabilities-{split}.npy", buffer.getvalue())
    return {**report, "out": str(out)}


def write_report(out: Path, report: dict) -> None:
    """OUT/label-issues.json and .csv (most suspect first) and OUT/train-issues.txt (a data.exclude file)."""
    write_json_atomic(out / "label-issues.json", report)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["rank", "index", "split", "given", "suggested", "quality"])
    writer.writeheader()
    for rank, row in enumerate(report["issues"], start=1):
        writer.writerow({"rank": rank, **row})
    write_bytes_atomic(out / "label-issues.csv", text.getvalue().encode())
    train_rows = [r["index"] for r in report["issues"] if r["split"] == "train"]
    write_index_file(out / "train-issues.txt", train_rows,
                     f"{len(train_rows)} training images whose labels the audit suspects, most suspect first; "
                     f"use the first N as data.exclude")


def contact_sheet(report: dict, out: Path, data_dir=None, count: int = 50) -> Path:
    """OUT/contact-sheet.png: the `count` most suspect images, titled with the given and the suggested label."""
    from mnist_kit.plots import image_grid, save_png

    splits = load_dataset(report["dataset"], data_dir)
    rows = report["issues"][:count]
    pixels = [(splits.train_images if r["split"] == "train" else splits.test_images)[r["index"]] for r in rows]
    images = torch.stack(pixels).numpy() if pixels else torch.zeros(0, 28, 28, dtype=torch.uint8).numpy()
    titles = [f"{r['split']} {r['index']}\n{r['given']} -> {r['suggested']}?" for r in rows]
    figure = image_grid(images, titles, columns=10,
                        suptitle=f"the {len(rows)} most suspect labels: given -> suggested (mnist-kit audit)")
    return save_png(figure, out / "contact-sheet.png")

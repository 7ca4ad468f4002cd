"""A run's confidence made honest: its temperature fitted, and its verdict rule chosen, on the training images it
held out (never the test split), both recorded in its metadata and measured on the test split. The measures are
mnist_kit.calibration's and mnist_kit.verdict's; the non-digits that choose, mnist_kit.outliers'."""

from pathlib import Path

import torch
from torch import nn

from mnist_kit.calibration import fit_temperature, scores
from mnist_kit.data import Splits, data_root, normalize
from mnist_kit.device import precision_context
from mnist_kit.errors import UserError
from mnist_kit.evaluate import predict_logits
from mnist_kit.outliers import cached_outliers
from mnist_kit.record import METADATA, write_metadata
from mnist_kit.runs import Run, build_run_model_from, find_run, outputs_on_split, run_dataset, split_of
from mnist_kit.verdict import CHOOSING_IMAGES, CHOOSING_SEED, CHOOSING_SET, VERDICTS, choose_verdict, verdicts


def outputs_on_images(run: Run, model: nn.Module, pixels: torch.Tensor, splits: Splits) -> torch.Tensor:
    """The model's outputs on uint8 images (N, 28, 28) from elsewhere (outlier sets), as on a split."""
    with precision_context(run.metadata.get("precision", "fp32"), torch.device("cpu")):
        return predict_logits(model, normalize(pixels, splits.mean, splits.std))


def calibrate_run(path: Path | str, data_dir: Path | str | None = None) -> dict:
    """Fit the run's temperature on the training images it held out (never the test split), record it in its
    metadata.json (`calibration`), and score the test split before and after: NLL, ECE, Brier score. A run with
    nothing held out cannot be calibrated honestly: a UserError says so."""
    run = find_run(path)
    if not (run.metadata.get("data") or {}).get("validation_images"):
        raise UserError(f"{run.run_dir} was trained on every training image (its recipe has no data.validation): "
                        f"nothing it did not train on is left to fit a temperature on but the test split, which "
                        f"never chooses; train with --set data.validation=5000 to calibrate")
    model, _ = build_run_model_from(run)
    splits = run_dataset(run, data_dir)
    validation, validation_labels = outputs_on_split(run, model, splits, split="validation"), \
        split_of(run, splits, "validation")[1]
    temperature = fit_temperature(validation, validation_labels)
    test, test_labels = outputs_on_split(run, model, splits), split_of(run, splits)[1]
    calibration = {"temperature": temperature, "fitted_on": "validation", "images": len(validation),
                   "validation": scores(validation, validation_labels, temperature),
                   "test_before": scores(test, test_labels), "test_after": scores(test, test_labels, temperature)}
    # the choosing shapes are drawn once and kept in the data folder, as the training and measuring sets are
    shapes = cached_outliers(CHOOSING_SET, CHOOSING_IMAGES, CHOOSING_SEED, data_root(data_dir))
    choosing = outputs_on_images(run, model, shapes, splits)
    rule = choose_verdict(validation, choosing, temperature)
    try:
        write_metadata(run.run_dir, {**run.metadata, "calibration": calibration, "verdict": rule})
    except OSError as error:
        raise UserError(f"cannot write {run.run_dir / METADATA}: {error.strerror or error}") from None
    return {"run": str(run.run_dir), **calibration, "verdict": rule,
            "test_verdicts": verdict_report(test, test_labels, temperature, rule)}


def verdict_report(outputs: torch.Tensor, labels: torch.Tensor, temperature: float, rule: dict) -> dict:
    """What a verdict rule does to labelled digits (measured, never used to choose): how many it calls a digit
    (coverage), the accuracy on those (selective accuracy), and the share of each verdict."""
    said, _ = verdicts(outputs, temperature, rule)
    accepted = torch.tensor([v == "digit" for v in said])
    right = outputs.argmax(dim=1).eq(labels)
    return {"coverage": float(accepted.float().mean()), "selective_accuracy": float(right[accepted].float().mean())
            if accepted.any() else None, "accuracy": float(right.float().mean()),
            **{verdict: said.count(verdict) / max(1, len(said)) for verdict in VERDICTS}}

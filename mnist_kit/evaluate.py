"""Metrics of a model on a split: pure functions of tensors, run in large batches without autograd."""

import torch
import torch.nn.functional as F
from torch import nn

from mnist_kit.distributed import ALONE, World, share, sum_in_place

EVAL_BATCH = 2000  # images per forward pass: large batches, the model is small


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """The model's outputs (log-probabilities or logits) for normalized images, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(chunk) for chunk in images.split(batch_size)])
    finally:
        model.train(was_training)


# Test-time augmentation: the image and its 8 one-pixel shifts (measured on the `fast` CNN: +0.07 to +0.13 points).
TTA_SHIFTS = tuple((dy, dx) for dy in (0, 1, -1) for dx in (0, 1, -1))


def shifted(images: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """Images (N, C, H, W) moved `dy` rows down and `dx` columns right (at most one pixel), `fill` moved in."""
    height, width = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), value=fill)
    return padded[..., 1 - dy:1 - dy + height, 1 - dx:1 - dx + width]


def predict_with_tta(model: nn.Module, images: torch.Tensor, fill: float, temperature: float = 1.0) -> torch.Tensor:
    """Log of the mean class probability, softmax(outputs / temperature), over each image and its 8 one-pixel shifts
    (`fill` moved in): a calibrated run's views are averaged as calibrated probabilities."""
    probabilities = sum((predict_logits(model, shifted(images, dy, dx, fill)).float() / temperature).softmax(dim=1)
                        for dy, dx in TTA_SHIFTS)
    return (probabilities / len(TTA_SHIFTS)).log()


def mean_probability(log_probabilities: list[torch.Tensor]) -> torch.Tensor:
    """An ensemble's log probabilities: the log of its members' mean probability."""
    stacked = torch.stack(log_probabilities)
    return stacked.logsumexp(dim=0) - torch.log(torch.tensor(float(len(log_probabilities))))


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted] as an int64 (classes x classes) tensor."""
    flat = labels.to(torch.int64) * num_classes + predicted.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def counts(outputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What metrics are made of: the confusion counts and the summed cross-entropy (float64)."""
    confusion = confusion_matrix(outputs.argmax(dim=1), labels, num_classes)
    loss_sum = F.cross_entropy(outputs.float(), labels, reduction="sum").double()
    return confusion, loss_sum


def metrics_from_counts(confusion: torch.Tensor, loss_sum: torch.Tensor) -> dict:
    """Loss (cross-entropy, mean), accuracy and per-class accuracy from summed counts."""
    confusion = confusion.cpu()
    per_class_total = confusion.sum(dim=1)
    correct, total = int(confusion.diag().sum()), int(per_class_total.sum())
    return {
        "loss": loss_sum.item() / total,
        "accuracy": correct / total,
        "correct": correct,
        "total": total,
        "per_class_accuracy": (confusion.diag() / per_class_total.clamp(min=1)).tolist(),
        "confusion": confusion.tolist(),
    }


def metrics_from_outputs(outputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Loss (cross-entropy, mean), accuracy and per-class accuracy from model outputs."""
    return metrics_from_counts(*counts(outputs, labels, num_classes))


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
             world: World = ALONE) -> dict:
    """Metrics of `model` on normalized `images` with their `labels`.

    On several processes (the same weights on each) every process evaluates its share and the counts are summed.
    """
    confusion, loss_sum = counts(predict_logits(model, share(images, world)), share(labels, world), num_classes)
    return metrics_from_counts(sum_in_place(confusion, world), sum_in_place(loss_sum, world))


def class_report(confusion: list[list[int]], classes: list[str]) -> dict[str, dict]:
    """Per class: accuracy (= recall), precision and support, from a confusion matrix counts[true][pred]."""
    counts = torch.tensor(confusion, dtype=torch.float64)
    hits, actual, predicted = counts.diag(), counts.sum(dim=1), counts.sum(dim=0)
    return {
        name: {"accuracy": (hits[i] / max(actual[i], 1)).item(), "recall": (hits[i] / max(actual[i], 1)).item(),
               "precision": (hits[i] / max(predicted[i], 1)).item(), "support": int(actual[i])}
        for i, name in enumerate(classes)
    }


def most_confused(confusion: list[list[int]], classes: list[str], top: int = 5) -> list[dict]:
    """The largest off-diagonal counts: which true class was taken for which, how often."""
    pairs = [(count, t, p) for t, row in enumerate(confusion) for p, count in enumerate(row) if t != p and count]
    return [{"true": classes[t], "predicted": classes[p], "count": count}
            for count, t, p in sorted(pairs, key=lambda item: (-item[0], item[1], item[2]))[:top]]


def full_report(outputs: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """Everything `mnist-kit eval` shows: overall and per-class metrics, confusion, most confused pairs."""
    metrics = metrics_from_outputs(outputs, labels, len(classes))
    return {
        "accuracy": metrics["accuracy"], "loss": metrics["loss"], "correct": metrics["correct"],
        "total": metrics["total"], "per_class": class_report(metrics["confusion"], classes),
        "confusion": metrics["confusion"], "most_confused": most_confused(metrics["confusion"], classes),
    }

"""Metrics of a model on a split: pure functions of tensors, run in large batches without autograd."""

import torch
import torch.nn.functional as F
from torch import nn

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


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted] as an int64 (classes x classes) tensor."""
    flat = labels.to(torch.int64) * num_classes + predicted.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def metrics_from_outputs(outputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Loss (cross-entropy, mean), accuracy and per-class accuracy from model outputs."""
    predicted = outputs.argmax(dim=1)
    confusion = confusion_matrix(predicted, labels, num_classes).cpu()
    per_class_total = confusion.sum(dim=1)
    correct = int(confusion.diag().sum())
    return {
        "loss": F.cross_entropy(outputs.float(), labels).item(),
        "accuracy": correct / len(labels),
        "correct": correct,
        "total": len(labels),
        "per_class_accuracy": (confusion.diag() / per_class_total.clamp(min=1)).tolist(),
        "confusion": confusion.tolist(),
    }


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Metrics of `model` on normalized `images` with their `labels`."""
    return metrics_from_outputs(predict_logits(model, images), labels, num_classes)

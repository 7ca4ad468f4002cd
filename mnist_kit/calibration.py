"""Calibration: one temperature T fitted on images the model did not train on, and the measures that judge it.

softmax(outputs / T) keeps every prediction's class (T > 0 scales all of an image's scores alike) and moves its
confidence: T > 1 for an overconfident model, T < 1 for an underconfident one (label smoothing makes `fast` one).
Outputs may be logits or log-probabilities (a model ending in LogSoftmax): dividing either by T is the same model.
"""

import torch
import torch.nn.functional as F

from mnist_kit.errors import UserError
from mnist_kit.optim import without_dynamo_import

LBFGS = without_dynamo_import(torch.optim.LBFGS)
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0  # a fitted one is near 1 (fast: 0.45); outside, a file is wrong
BINS = 15  # expected calibration error over 15 equal-width confidence bins, as Guo et al. (2017) and torchmetrics


def fit_temperature(outputs: torch.Tensor, labels: torch.Tensor, steps: int = 100) -> float:
    """The T minimizing the mean negative log-likelihood of softmax(outputs / T), by LBFGS on log T (so T > 0)."""
    outputs, log_t = outputs.float().clone(), torch.zeros(1, requires_grad=True)  # a normal tensor, not inference
    solver = LBFGS([log_t], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        solver.zero_grad()
        loss = F.cross_entropy(outputs / log_t.exp(), labels)
        loss.backward()
        return loss

    solver.step(closure)
    return float(log_t.detach().exp())


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> float:
    """Sum over confidence bins of |accuracy - mean confidence| weighted by the bin's share of the images (L1).
    Bins as torchmetrics makes them: b/bins <= c < (b+1)/bins, and c = 1.0 (common in float32) a bin of its own."""
    confidence, predicted = probabilities.float().max(dim=1)
    correct = predicted.eq(labels).float()
    index = torch.bucketize(confidence, torch.linspace(0, 1, bins + 1), right=True) - 1
    gap = torch.zeros(bins + 1).index_add_(0, index, confidence - correct)
    return float(gap.abs().sum() / max(1, len(labels)))


def reliability_bins(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> dict[str, list]:
    """Per equal-width confidence bin (as the ECE's): its images, their mean confidence and their accuracy (None
    for an empty bin); what a reliability diagram draws."""
    confidence, predicted = probabilities.float().max(dim=1)
    index = (torch.bucketize(confidence, torch.linspace(0, 1, bins + 1), right=True) - 1).clamp(max=bins - 1)
    count = torch.bincount(index, minlength=bins)
    confidence_sum = torch.zeros(bins).index_add_(0, index, confidence)
    correct_sum = torch.zeros(bins).index_add_(0, index, predicted.eq(labels).float())
    return {"edges": torch.linspace(0, 1, bins + 1).tolist(), "count": count.tolist(),
            "confidence": [float(c / n) if n else None for c, n in zip(confidence_sum, count)],
            "accuracy": [float(a / n) if n else None for a, n in zip(correct_sum, count)]}


def brier_score(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over images of the squared distance between the probabilities and the one-hot label (0 is perfect, 2 the
    worst)."""
    one_hot = F.one_hot(labels, probabilities.shape[1]).float()
    return float((probabilities.float() - one_hot).pow(2).sum(dim=1).mean())


def scores(outputs: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict:
    """NLL, ECE, Brier score and accuracy of softmax(outputs / temperature) on labelled images."""
    scaled = outputs.detach().float() / temperature
    probabilities = scaled.softmax(dim=1)
    return {"nll": float(F.cross_entropy(scaled, labels)),
            "ece": expected_calibration_error(probabilities, labels),
            "brier": brier_score(probabilities, labels),
            "accuracy": float(probabilities.argmax(dim=1).eq(labels).float().mean()),
            "mean_confidence": float(probabilities.max(dim=1).values.mean())}


def recorded_temperature(metadata: dict, run_dir) -> float:
    """The temperature `mnist-kit calibrate` recorded in a run's metadata (1.0: none), checked: a run folder may come
    from anywhere."""
    calibration = metadata.get("calibration") or {}
    temperature = calibration.get("temperature", 1.0) if isinstance(calibration, dict) else None
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        raise UserError(f"{run_dir}: calibration.temperature is {str(temperature)[:40]!r} in its metadata; a "
                        f"calibrated run records a number in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]: "
                        f"calibrate it again")
    return float(temperature)

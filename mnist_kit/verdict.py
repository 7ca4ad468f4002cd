"""Verdicts: a digit, unsure (could be two digits), or not a digit, from a calibrated model's outputs.

Two scores say how digit-like an image is, higher for digits: `confidence`, the calibrated top probability, and
`energy`, T * logsumexp(outputs / T) (the negative free energy of Liu et al. 2020), which uses every class's logit.
Energy needs logits: a model that ends in LogSoftmax outputs log-probabilities, whose logsumexp is 0, so only the
confidence is offered for it. `mnist-kit calibrate` chooses the score and its threshold on data the test split never
touches: the run's validation digits and an outlier set made for choosing (mnist_kit.outliers, `shapes`); the
threshold accepts all but REJECTED_DIGITS of the validation digits. "Unsure" is an image split between digits: an
accepted one whose calibrated top probability is under UNSURE_BELOW (more than 30% for other digits), or one the score
rejects whose two top digits still hold TWO_DIGITS of the probability (a low top probability there means two digits,
not none: without this, a rule that thresholds the confidence above UNSURE_BELOW could never say "unsure").
"""

import math

import torch

from mnist_kit.errors import UserError

VERDICTS = ("digit", "unsure", "not a digit")
SCORES = ("confidence", "energy")
REJECTED_DIGITS = 0.005  # the share of validation digits the threshold may call "not a digit"
UNSURE_BELOW = 0.7  # a calibrated top probability under this: unsure (at least 30% for the other digits)
TWO_DIGITS = 0.9  # a rejected image whose two top digits hold this much: unsure between them, not "not a digit"
CHOOSING_SET, CHOOSING_IMAGES, CHOOSING_SEED = "shapes", 500, 0


def digit_scores(outputs: torch.Tensor, temperature: float, name: str) -> torch.Tensor:
    """The score `name` of each image (higher: more like a digit) from the model's outputs."""
    scaled = outputs.float() / temperature
    if name == "confidence":
        return scaled.softmax(dim=1).max(dim=1).values
    if name == "energy":
        return temperature * scaled.logsumexp(dim=1)
    raise ValueError(name)


def has_logits(outputs: torch.Tensor) -> bool:
    """Whether outputs are logits (energy has a meaning) rather than log-probabilities (every row's logsumexp 0)."""
    return bool((outputs.float().logsumexp(dim=1).abs() > 1e-3).any())


def auroc(inliers: torch.Tensor, outliers: torch.Tensor) -> float:
    """The probability that a random inlier scores above a random outlier (ties count half): the area under the ROC
    curve of telling them apart by the score."""
    scores = torch.cat([inliers, outliers]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    _, inverse, counts = scores.unique(return_inverse=True, return_counts=True)  # tied scores share their mean rank
    ranks = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, ranks)[inverse] / counts[inverse]
    n, m = len(inliers), len(outliers)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * m))


def choose_verdict(digits: torch.Tensor, outliers: torch.Tensor, temperature: float) -> dict:
    """The score that best tells validation digits from the choosing outliers (outputs of each), and its threshold:
    all but REJECTED_DIGITS of the digits score at or above it."""
    names = [name for name in SCORES if name != "energy" or has_logits(digits)]
    separation = {name: auroc(digit_scores(digits, temperature, name), digit_scores(outliers, temperature, name))
                  for name in names}
    score = max(names, key=lambda name: separation[name])
    threshold = float(digit_scores(digits, temperature, score).quantile(REJECTED_DIGITS))
    return {"score": score, "threshold": threshold, "unsure_below": UNSURE_BELOW, "two_digits": TWO_DIGITS,
            "auroc_on_choosing": separation,
            "chosen_on": {"digits": f"validation ({len(digits):,} images)",
                          "outliers": f"{CHOOSING_SET} ({len(outliers):,} images, seed {CHOOSING_SEED})"}}


def verdicts(outputs: torch.Tensor, temperature: float, rule: dict) -> tuple[list[str], torch.Tensor]:
    """Each image's verdict and its score under a recorded rule (from choose_verdict)."""
    score = digit_scores(outputs, temperature, rule["score"])
    top, runner_up = (outputs.float() / temperature).softmax(dim=1).topk(2, dim=1).values.unbind(dim=1)
    accepted = score >= rule["threshold"]
    unsure = torch.where(accepted, top < rule["unsure_below"], top + runner_up >= rule["two_digits"])
    return ["unsure" if u else "digit" if a else "not a digit"
            for a, u in zip(accepted.tolist(), unsure.tolist())], score


def recorded_verdict(metadata: dict, where) -> dict | None:
    """A run's verdict rule as `mnist-kit calibrate` recorded it (None: none), checked: a run may come from anywhere."""
    rule = metadata.get("verdict")
    if rule is None:
        return None
    keys = ("threshold", "unsure_below", "two_digits")
    if isinstance(rule, dict):
        rule = {"two_digits": TWO_DIGITS, **rule}  # runs calibrated before it was recorded get today's value
    fine = isinstance(rule, dict) and rule.get("score") in SCORES and all(
        isinstance(rule.get(key), (int, float)) and not isinstance(rule.get(key), bool) and math.isfinite(rule[key])
        for key in keys)
    if not fine or not 0 <= rule["unsure_below"] <= 1 or not 0 <= rule["two_digits"] <= 1:
        raise UserError(f"{where}: its verdict rule is not one `mnist-kit calibrate` writes (a score in "
                        f"{', '.join(SCORES)}, a finite threshold, unsure_below and two_digits in [0, 1]): "
                        f"calibrate it again")
    return {"score": rule["score"], **{key: float(rule[key]) for key in keys}}

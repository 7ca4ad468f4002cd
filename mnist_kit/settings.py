"""The recipe's fixed sections ([data], [train], [fallback]): their keys, types, defaults and rules, and the small
frozen records the code reads them into once (`settings.epochs`, not `config["train"]["epochs"]`). No torch here.

The factory sections ([model], [optimizer], [scheduler], [[augment]], train.loss) are not read here: they travel as
they are to their factories, which check them against their own signatures (mnist_kit.registry).
"""

import re
from dataclasses import dataclass, fields
from typing import Any

LOGGERS = ("tensorboard", "mlflow")  # train.log: trackers beside history.csv (which every run writes)
OUTLIER_SOURCES = ("fashion-mnist", "shapes", "scribbles", "glyphs", "letters")  # train.outliers: not digits
# (photographs and letters in other fonts are left to measure with, never trained on; a run trained on letters makes
# them a family it saw, and bench/verdict.py's results say so)


def outliers_rule(value: dict) -> bool:
    """train.outliers: {sets = [...], weight = w, images = n}, each key checked."""
    sets, weight, images = value.get("sets"), value.get("weight", 0.5), value.get("images", 5000)  # defaults: recipe.py
    return (set(value) <= {"sets", "weight", "images"} and isinstance(sets, list) and bool(sets)
            and all(name in OUTLIER_SOURCES for name in sets) and len(set(sets)) == len(sets)
            and isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0 < weight <= 10
            and isinstance(images, int) and not isinstance(images, bool) and 1 <= images <= 60_000)

# The fixed sections: key -> (accepted types, default, check on the value or None). `None` default = optional.
POSITIVE = (lambda v: v > 0, "must be > 0")
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any, tuple | None]]] = {
    "data": {
        "dataset": ((str,), "mnist", None),
        "batch_size": ((int,), 64, POSITIVE),
        "validation": ((int,), 0, (lambda v: v >= 0, "must be >= 0")),  # hold out N training images to choose on
        "split_seed": ((int,), 0, (lambda v: 0 <= v < 2**32, "must be in [0, 2**32)")),  # which ones: its own seed
        "limit": ((int,), None, POSITIVE),  # train on the first N of the remaining training images only
        "exclude": ((str,), None, None),  # a file of training image indices to leave out (mnist_kit.exclude)
    },
    "train": {
        "epochs": ((int,), 25, POSITIVE),
        "seed": ((int,), 0, (lambda v: 0 <= v < 2**32, "must be in [0, 2**32) (what numpy and torch both accept)")),
        "device": ((str,), "auto", (lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v),
                                    "must be auto, cpu, cuda, cuda:N or mps")),
        "loss": ((str, dict), "cross_entropy", None),  # right for logits and log-probabilities alike
        "precision": ((str,), "fp32", (lambda v: v in ("fp32", "bf16", "auto"), "must be fp32, bf16 or auto")),
        "ema": ((int, float), 0.0, (lambda v: 0 <= v < 1, "must be in [0, 1) (0 turns it off)")),
        "channels_last": ((bool,), False, None),
        "sync_bn": ((bool,), False, None),  # under torchrun on CUDA: BatchNorm statistics over the global batch
        "keep": ((str,), "last", (lambda v: v in ("last", "best"), "must be last or best (by validation)")),
        "patience": ((int,), 0, (lambda v: v >= 0, "must be >= 0 (0: no early stopping)")),
        "log": ((list,), None, (lambda v: all(x in LOGGERS for x in v),  # where the run reports as it goes
                                f"must list loggers out of: {', '.join(LOGGERS)}")),
        # outlier exposure (Hendrycks et al. 2019): each step also pushes a batch of non-digits towards the uniform
        # answer, so that "not a digit" can be told from a digit (mnist_kit.verdict)
        "outliers": ((dict,), None, (outliers_rule, f"must be {{ sets = [names out of {', '.join(OUTLIER_SOURCES)}], "
                                                    f"weight = a number in (0, 10] (0.5), images = 1 to 60000 "
                                                    f"drawn of each drawn set (5000) }}")),
    },
    "fallback": {
        "min_test_accuracy": ((int, float), None, (lambda v: 0 <= v <= 1, "must be between 0 and 1")),
        "recipe": ((str,), None, None),
    },
}


@dataclass(frozen=True)
class DataSettings:
    """[data]: which images, how many at a time, how many held out to choose on."""

    dataset: str
    batch_size: int
    validation: int  # training images held out (0: none); choices read them, never the test split
    split_seed: int  # which ones
    limit: int | None  # train on the first N of the rest only
    exclude: str | None  # a file listing training images (indices into the original split) to leave out


@dataclass(frozen=True)
class TrainSettings:
    """[train]: how long, on what, in which precision, what is kept and what is reported."""

    epochs: int
    seed: int
    device: str
    loss: Any  # a factory table: built by mnist_kit.assemble
    precision: str
    ema: float
    channels_last: bool
    sync_bn: bool
    keep: str  # "last", or "best" by validation accuracy
    patience: int  # epochs without a better validation accuracy before stopping (0: never)
    log: tuple[str, ...]  # loggers beside history.csv
    outliers: dict | None  # outlier exposure: {sets, weight, images}; None: none


@dataclass(frozen=True)
class FallbackSettings:
    """[fallback]: the original pipeline's rule, train `recipe` when a run falls short of `min_test_accuracy`."""

    min_test_accuracy: float | None
    recipe: str | None


def read_section(config: dict, section: str, cls: type):
    """One resolved section as its settings record (keys the resolved recipe leaves out are None)."""
    table = config.get(section) or {}
    values = {f.name: table.get(f.name) for f in fields(cls)}
    return cls(**values)


def data_settings(config: dict) -> DataSettings:
    return read_section(config, "data", DataSettings)


def train_settings(config: dict) -> TrainSettings:
    settings = read_section(config, "train", TrainSettings)
    return TrainSettings(**{**settings.__dict__, "log": tuple(settings.log or ())})


def fallback_settings(config: dict) -> FallbackSettings:
    return read_section(config, "fallback", FallbackSettings)

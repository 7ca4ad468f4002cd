"""`mnist-kit lr-find`: the learning-rate range test (Smith 2017, "Cyclical Learning Rates"; fastai's lr_find).

From the recipe's freshly built model and optimizer, one mini-batch a step, the learning rate grows exponentially
from `start` to `end`; the loss is smoothed by an exponential moving average and the test stops once it diverges
(the smoothed loss over `stop_factor` times its best, or not a finite number). The suggestion is the middle of the
descent: half way, in log learning rate, between where the smoothed loss starts to fall and where it is lowest.
The recipe's scheduler is built (so the optimizer is as the recipe makes it) but never stepped; the EMA and outlier
exposure do not take part: the loss is the digits' loss as the recipe computes it.
"""

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mnist_kit.assemble import build_parts, check_recipe
from mnist_kit.atomic import write_json_atomic
from mnist_kit.data import batch_order
from mnist_kit.device import machine, precision_context, resolve_precision, select_device
from mnist_kit.distributed import ALONE
from mnist_kit.errors import UserError
from mnist_kit.recipe import Recipe, recipe_hash, recipe_to_dict
from mnist_kit.settings import data_settings, train_settings
from mnist_kit.train import augmented, descend, load_tensors, seed_everything  # the loop's own pieces

SMOOTHING = 0.9  # EMA weight of the past: ~10 batches averaged; more lags the curve behind the learning rate
BEGINS = 0.1  # the descent begins where the smoothed loss has fallen this share of its whole drop


@dataclass(frozen=True)
class RangeTest:
    """What one range test measured: each step's learning rate, loss and smoothed loss, and the suggestion."""

    recipe: str
    shipped_lr: float  # the recipe's optimizer.lr, for comparison
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None  # None: no clear descent in the range (widen it, or take more steps)
    stopped: str  # why it ended: "diverged at step N" or "reached the end"
    precision: str  # fp32 or bf16, as training would run
    machine: dict  # where it ran (mnist_kit.device.machine)


def schedule(start: float, end: float, steps: int) -> list[float]:
    """`steps` learning rates from start to end, evenly spaced in log scale."""
    ratio = (end / start) ** (1 / max(steps - 1, 1))
    return [start * ratio**i for i in range(steps)]


def ema_step(average: float, loss: float, i: int, beta: float = SMOOTHING) -> tuple[float, float]:
    """The moving average after the i-th loss (1-based), and its bias-corrected value (the first values are not
    pulled to zero)."""
    average = beta * average + (1 - beta) * loss
    return average, average / (1 - beta**i)


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """The exponential moving average of the losses, bias-corrected."""
    average, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average, value = ema_step(average, loss, i, beta)
        out.append(value)
    return out


def suggest(lrs: list[float], smoothed: list[float], begins: float = BEGINS) -> float | None:
    """The learning rate half way (in log scale) through the smoothed loss's descent to its lowest point.

    The descent starts at the last point before the lowest where the loss was still within `begins` of its whole
    drop from the highest point before it. None when the loss never falls by 5% of its highest value: the range
    (or the step count) missed the descent."""
    finite = [i for i, value in enumerate(smoothed) if math.isfinite(value)]
    if len(finite) < 3:
        return None
    lowest = min(finite, key=lambda i: smoothed[i])
    top = max(smoothed[i] for i in finite if i <= lowest)
    drop = top - smoothed[lowest]
    if drop <= 0.05 * abs(top):
        return None
    start = max(i for i in finite if i <= lowest and smoothed[i] >= top - begins * drop)
    return math.sqrt(lrs[start] * lrs[lowest])


def check_range(start: float, end: float, steps: int, stop_factor: float) -> None:
    """Refuse a range the test cannot run, in one line."""
    if not 0 < start < end:
        raise UserError(f"the learning rates must grow: 0 < --start ({start:g}) < --end ({end:g})")
    if steps < 10:
        raise UserError(f"--steps {steps}: a range test needs at least 10 steps to see a curve")
    if stop_factor <= 1:
        raise UserError(f"--stop-factor {stop_factor:g}: it must be over 1 (the loss over that many times its best)")


def check_lr_recipe(recipe: Recipe) -> None:
    """Refuse a recipe whose optimizer takes no single learning rate, or that runs on several processes."""
    optimizer = recipe.config["optimizer"]
    if not isinstance(optimizer.get("lr"), int | float):
        raise UserError(f"{recipe.name}: optimizer {optimizer['name']!r} has no `lr` for a range test to set")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("lr-find runs in one process: run it without torchrun")


def lr_range_test(recipe: Recipe, *, data_dir: Path | str | None = None, start: float = 1e-7, end: float = 10.0,
                  steps: int = 100, stop_factor: float = 4.0,
                  on_step: Callable[[int, int, float, float], None] | None = None) -> RangeTest:
    """Run the range test on the recipe's training split (validation images and data.exclude left out, as
    training leaves them); `on_step(step, steps, lr, smoothed loss)` after each step."""
    check_range(start, end, steps, stop_factor)
    check_lr_recipe(recipe)
    check_recipe(recipe)
    settings, data = train_settings(recipe.config), data_settings(recipe.config)
    device = select_device(settings.device)
    splits, tensors = load_tensors(data, settings, data_dir, ALONE, device, recipe.path.parent)
    generator = seed_everything(settings.seed)
    steps_per_epoch = -(-len(tensors.train_y) // data.batch_size)
    parts = build_parts(recipe.config, splits.spec, steps_per_epoch, device, fill=splits.fill)
    precision = resolve_precision(settings.precision, device)
    parts.model.train()
    lrs, losses, curve, best, stopped, average = [], [], [], math.inf, "reached the end", 0.0
    order = iter(())
    for step, lr in enumerate(schedule(start, end, steps), start=1):
        index = next(order, None)
        if index is None:  # a new shuffled epoch when the split runs out
            order = batch_order(len(tensors.train_y), data.batch_size, generator, device)
            index = next(order)
        for group in parts.optimizer.param_groups:
            group["lr"] = lr
        x, y = augmented(parts.augment, tensors.train_x[index]), tensors.train_y[index]
        with precision_context(precision, device):
            loss = parts.loss(parts.model(x), y)
        descend(parts.optimizer, loss)
        lrs.append(lr)
        losses.append(loss.item())
        average, smoothed = ema_step(average, losses[-1], step)
        curve.append(smoothed)
        if on_step:
            on_step(step, steps, lr, smoothed)
        if not math.isfinite(smoothed) or smoothed > stop_factor * best:
            stopped = f"diverged at step {step}"
            break
        best = min(best, smoothed)
    return RangeTest(recipe.name, float(recipe.config["optimizer"]["lr"]), lrs, losses, curve,
                     suggest(lrs, curve), stopped, precision, machine(device))


def rounded(lr: float) -> float:
    """Two significant figures: what a person would write in a recipe (0.0012, not 0.00123456)."""
    return float(f"{lr:.2g}")


def write_range_test(result: RangeTest, recipe: Recipe, out: Path) -> list[Path]:
    """OUT/lr-find.png (loss against learning rate, the suggestion marked) and OUT/lr-find.json, written atomically."""
    from mnist_kit.plots import lr_find_figure, save_png

    record = {**asdict(result), "suggestion_rounded": rounded(result.suggestion) if result.suggestion else None,
              "recipe_config": recipe_to_dict(recipe), "recipe_hash": recipe_hash(recipe)}
    try:
        return [save_png(lr_find_figure(result.lrs, result.losses, result.smoothed, result.suggestion,
                                        result.shipped_lr, result.recipe), out / "lr-find.png"),
                write_json_atomic(out / "lr-find.json", record)]
    except OSError as error:
        raise UserError(f"cannot write into {out}: {error.strerror or error}") from None

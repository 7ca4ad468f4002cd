"""What a run reports to TensorBoard while and after it trains, when the recipe asks (`train.log = ["tensorboard"]`);
history.csv, which every run writes, is part of the run record (mnist_kit.record).

Event files are a log that TensorBoard's writer appends as it goes (like last.pth, not an atomic export); the
x axis of every chart is the optimizer step, so epochs and steps share one axis and a resumed run continues it.
"""

from pathlib import Path

import torch
from torch import nn

from mnist_kit.errors import UserError
from mnist_kit.invocation import install_hint

EVENTS_DIR = "tensorboard"  # inside the run folder: `tensorboard --logdir runs` finds every run's
WORST = 32  # mistakes shown at the end, the most confident first


def check_loggers(names: list[str]) -> None:
    """Raise UserError before anything trains when a logger the recipe names is not installed."""
    if "tensorboard" in names:
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
        except ImportError:
            hint = install_hint("tensorboard")
            raise UserError(f'train.log = ["tensorboard"] needs the tensorboard package: {hint}') from None


def open_events(run_dir: Path, done_steps: int):
    """A SummaryWriter into RUN/tensorboard; a resumed run drops what was logged after its last checkpoint."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / EVENTS_DIR), purge_step=done_steps + 1 if done_steps else None)


def log_steps(writer, epoch: int, steps_per_epoch: int, losses: torch.Tensor, lrs: list[float]) -> None:
    """Every step's training loss and learning rate of one epoch (kept on the way, written after it)."""
    first = (epoch - 1) * steps_per_epoch
    for step, (loss, lr) in enumerate(zip(losses.float().cpu().tolist(), lrs), start=first + 1):
        writer.add_scalar("step/train_loss", loss, step)
        writer.add_scalar("step/lr", lr, step)


def log_epoch(writer, row: dict, steps_per_epoch: int) -> None:
    """An epoch's row of the history: loss and accuracy per split, the epoch's seconds, at its last step."""
    step = row["epoch"] * steps_per_epoch
    for split, prefix in (("train", "train_"), ("validation", "val_"), ("test", "test_")):
        for metric in ("loss", "accuracy"):
            if f"{prefix}{metric}" in row:
                writer.add_scalar(f"{metric}/{split}", row[f"{prefix}{metric}"], step)
    writer.add_scalar("epoch/seconds", row["seconds"], step)
    writer.flush()


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """The recipe as HParams: dotted keys, numbers, strings and booleans as they are, lists and tables as text."""
    flat = {}
    for key, value in config.items():
        if key == "description":
            continue
        if isinstance(value, dict):
            flat |= flat_hparams(value, f"{prefix}{key}.")
        elif isinstance(value, bool | int | float | str):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def worst_mistakes(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float,
                   classes: list[str]):
    """A figure of the test images the model gets wrong with the most confidence."""
    from mnist_kit.evaluate import predict_logits
    from mnist_kit.plots import predictions_figure

    with torch.no_grad():
        probabilities = predict_logits(model, images).float().softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)
    wrong = (predicted != labels).nonzero().flatten()
    chosen = wrong[confidence[wrong].argsort(descending=True)[:WORST]].cpu()
    pixels = (images[chosen].float().cpu() * std + mean).clamp(0, 1).squeeze(1).numpy()
    return predictions_figure(pixels, labels[chosen].cpu().numpy(), predicted[chosen].cpu().numpy(),
                              confidence[chosen].cpu().numpy(), classes,
                              title=f"worst mistakes ({len(chosen)} of {len(wrong)} wrong)")


def log_end(writer, metadata: dict, recipe_toml: str, model: nn.Module, test_x: torch.Tensor, test_y: torch.Tensor,
            last_step: int) -> None:
    """The confusion matrix and the worst mistakes as images, the resolved recipe as text, and the recipe's values
    with the final metrics in the HParams tab."""
    from torch.utils.tensorboard.summary import hparams

    from mnist_kit.plots import confusion_figure

    classes, data = metadata["classes"], metadata["data"]
    writer.add_figure("test/confusion", confusion_figure(metadata["confusion"], classes), last_step)
    writer.add_figure("test/worst_mistakes",
                      worst_mistakes(model, test_x, test_y, data["mean"], data["std"], classes), last_step)
    writer.add_text("recipe", "    " + recipe_toml.replace("\n", "\n    "), last_step)  # indented: shown as code
    metrics = {"final/test_accuracy": metadata["test_accuracy"], "final/test_loss": metadata["test_loss"]}
    if metadata["validation_accuracy"] is not None:
        metrics |= {"final/validation_accuracy": metadata["validation_accuracy"],
                    "final/validation_loss": metadata["validation_loss"]}
    experiment, start, end = hparams(flat_hparams(metadata["recipe"]["config"]), metrics)
    for summary in (experiment, start, end):
        writer.file_writer.add_summary(summary)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, last_step)
    writer.flush()


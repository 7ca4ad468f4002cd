"""What a run reports to trackers while and after it trains, when the recipe asks: TensorBoard
(`train.log = ["tensorboard"]`) and MLflow (`train.log = ["mlflow"]`). history.csv, which every run writes, is part
of the run record (mnist_kit.record).

Each tracker has the same three calls, made by the loop on rank 0: `epoch(row, trained)` after an epoch's checkpoint,
`end(final)` once the run's files are written, `close(status)` whatever happened. Event files are a log that
TensorBoard's writer appends as it goes (like last.pth, not an atomic export); the x axis of every chart is the
optimizer step, so epochs and steps share one axis and a resumed run continues it. MLflow's store is whatever
MLFLOW_TRACKING_URI names, else MLflow's default (a SQLite file, ./mlflow.db, with artifacts in ./mlruns); a resumed
run continues the MLflow run it started (its id is kept in last.pth).
"""

import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from mnist_kit.errors import UserError
from mnist_kit.invocation import install_hint
from mnist_kit.record import EVENTS, HISTORY, METADATA, PLOTS, SAFETENSORS

WORST = 32  # mistakes shown at the end, the most confident first
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # logger -> the module it needs (and the extra's name)
ARTIFACTS = (SAFETENSORS, METADATA, HISTORY)  # a run's files MLflow keeps, with RUN/plots/*.png


def check_loggers(names: list[str]) -> None:
    """Raise UserError before anything trains when a logger the recipe names is not installed."""
    import importlib.util

    for name in names:
        if importlib.util.find_spec(PACKAGES[name]) is None:  # torch.utils.tensorboard needs the tensorboard package
            raise UserError(f'train.log = ["{name}"] needs the {PACKAGES[name]} package: {install_hint(name)}')


class Final(NamedTuple):
    """What a finished run gives its trackers."""

    metadata: dict
    recipe_toml: str
    model: nn.Module
    test_x: torch.Tensor
    test_y: torch.Tensor
    run_dir: Path


def open_events(run_dir: Path, done_steps: int):
    """A SummaryWriter into RUN/tensorboard; a resumed run drops what was logged after its last checkpoint."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / EVENTS), purge_step=done_steps + 1 if done_steps else None)


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


class TensorBoard:
    """Event files in RUN/tensorboard: every step's loss and learning rate, each epoch's row, and at the end the
    confusion matrix, the worst mistakes, the recipe and the HParams."""

    def __init__(self, run_dir: Path, done_epochs: int, steps_per_epoch: int):
        self.writer = open_events(run_dir, done_epochs * steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch

    def epoch(self, row: dict, trained) -> None:
        log_steps(self.writer, row["epoch"], self.steps_per_epoch, trained.step_losses, trained.lrs)
        log_epoch(self.writer, row, self.steps_per_epoch)

    def end(self, final: Final) -> None:
        log_end(self.writer, final.metadata, final.recipe_toml, final.model, final.test_x, final.test_y,
                len(final.metadata["history"]) * self.steps_per_epoch)

    def close(self, status: str) -> None:
        self.writer.close()


class MLflow:
    """One MLflow run per training run: the resolved recipe as parameters (dotted keys), tags (recipe, seed, git
    commit, machine), each epoch's row as metrics (step = epoch), and at the end the final figures and the run's
    files as artifacts. Logged through MlflowClient with an explicit run id: no global active run to leak."""

    def __init__(self, recipe_name: str, config: dict, run_dir: Path, tags: dict, experiment: str | None,
                 run_id: str | None = None):
        import os

        from mlflow import MlflowClient

        self.client = MlflowClient()  # MLFLOW_TRACKING_URI, else MLflow's default store
        if run_id and self.existing(run_id):  # a resumed run goes on where it stopped
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or recipe_name
        run = self.client.create_run(self.experiment_id(name), run_name=run_dir.name,
                                     tags={key: str(value) for key, value in tags.items() if value is not None})
        self.run_id = run.info.run_id
        params = [(key, str(value)[:6000]) for key, value in flat_hparams(config).items()]  # MLflow's value limit
        for start in range(0, len(params), 100):  # log_batch takes at most 100 parameters a call
            self.log(params=params[start:start + 100])

    def existing(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created if new (by another process at the same moment too: a sweep's workers)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:
            return self.client.get_experiment_by_name(name).experiment_id

    def log(self, metrics: dict | None = None, step: int = 0, params: list | None = None) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), now, step)
                                                    for key, value in (metrics or {}).items()],
                              params=[Param(key, value) for key, value in params or []])

    def epoch(self, row: dict, trained) -> None:
        self.log({key: value for key, value in row.items() if key != "epoch"}, step=row["epoch"])

    def end(self, final: Final) -> None:
        meta = final.metadata
        figures = {key: meta.get(key) for key in ("test_accuracy", "test_loss", "validation_accuracy",
                                                   "validation_loss", "wall_seconds")}
        self.log({f"final_{key}": value for key, value in figures.items() if value is not None},
                 step=len(meta["history"]))
        for name in ARTIFACTS:
            if (final.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(final.run_dir / name))
        for plot in sorted((final.run_dir / PLOTS).glob("*.png")):
            self.client.log_artifact(self.run_id, str(plot), artifact_path=PLOTS)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


def open_trackers(names: tuple[str, ...], run_dir: Path, done_epochs: int, steps_per_epoch: int, recipe_name: str,
                  config: dict, tags: dict, experiment: str | None, tracked: dict) -> list:
    """The trackers a recipe's train.log names, opened; `tracked` holds the ids a resumed run's trackers had."""
    trackers = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoard(run_dir, done_epochs, steps_per_epoch))
        elif name == "mlflow":
            trackers.append(MLflow(recipe_name, config, run_dir, tags, experiment, tracked.get("mlflow")))
            tracked["mlflow"] = trackers[-1].run_id
    return trackers


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


"""The training loop, written out by hand: recipe in, run folder with weights and metadata out.

Read `fit` first: set up (one call), then per epoch train, evaluate, record, and the short list of what happens
after an epoch (`after_epoch`); the end scores and writes the run. Failures become typed exceptions at one place
(`failures_as_errors`), carrying the facts (run folder, epoch kept) that the CLI turns into words and commands.
"""

import math
import random
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mnist_kit import export
from mnist_kit.assemble import Parts, build_parts, check_last_batch, check_recipe, check_registered
from mnist_kit.checkpoint import load_last, remove_last, restore_rng, rng_state, save_last
from mnist_kit.data import Splits, batch_order, data_root, load_dataset, normalize, validation_split
from mnist_kit.device import machine, precision_context, resolve_precision
from mnist_kit.distributed import (
    World,
    barrier,
    buffers_from_rank0,
    check_batch,
    check_sync_bn,
    join,
    share,
    sum_in_place,
)
from mnist_kit.errors import Diverged, Interrupted, Unwritten, UserError
from mnist_kit.evaluate import evaluate
from mnist_kit.exclude import exclude_digest, exclude_path, parse_indices, read_exclude_bytes
from mnist_kit.models import count_parameters
from mnist_kit.progress import make_display
from mnist_kit.recipe import Recipe, recipe_from_dict, recipe_hash, recipe_to_dict, to_toml
from mnist_kit.record import (
    HISTORY,
    LAST,
    METADATA,
    SCHEMA_VERSION,
    new_run_dir,
    point_latest,
    write_history,
    write_metadata,
)
from mnist_kit.settings import DataSettings, TrainSettings, data_settings, train_settings
from mnist_kit.track import Final, check_loggers, open_trackers

OnEpoch = Callable[[dict], None]  # called with each epoch's history row (see train)


@dataclass(frozen=True)
class RunResult:
    """Where a run was written and how it scored."""

    run_dir: Path
    recipe: str
    test_accuracy: float
    metadata: dict

    @property
    def validation_accuracy(self) -> float | None:
        """Accuracy on the held-out training images (None without data.validation): what choices read."""
        return self.metadata.get("validation_accuracy")


@dataclass(frozen=True)
class Tensors:
    """A data set's splits as normalized tensors on the training device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor  # data.validation images held out of the training split (may be empty)
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    outliers_x: torch.Tensor | None = None  # train.outliers: non-digit images for outlier exposure
    excluded: dict | None = None  # data.exclude: how many training images were left out, and the list's SHA-256


@dataclass(frozen=True)
class Loop:
    """What every step uses: the parts, the module that steps (DDP-wrapped under torchrun), the batches' source."""

    parts: Parts
    stepped: nn.Module
    data: Tensors
    batch_size: int
    precision: str
    world: World
    generator: torch.Generator  # orders the batches
    outlier_weight: float = 0.0  # train.outliers.weight: of the loss that pushes non-digits to the uniform answer

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.data.train_y) // self.batch_size)


class Trained(NamedTuple):
    """One epoch of training as measured on the way: the means, and each step's loss and learning rate."""

    loss: float
    accuracy: float
    step_losses: torch.Tensor
    lrs: list[float]


@dataclass
class Run:
    """A run set up to train: its recipe and settings, the loop's parts, where it is written, what is done."""

    recipe: Recipe
    settings: TrainSettings
    data_settings: DataSettings
    loop: Loop
    splits: Splits
    device: torch.device
    data_dir: Path | str | None
    run_dir: Path | None  # None on torchrun processes other than rank 0, which write nothing
    started: str
    elapsed: float  # seconds spent in earlier processes (a resumed run)
    history: list[dict] = field(default_factory=list)  # one row per finished epoch
    best: dict | None = None  # the best validation epoch so far (see best_so_far)
    kept: int = 0  # epochs safe in last.pth
    phases: dict[str, float] = field(default_factory=dict)  # seconds this process spent in each part (metadata)
    tracked: dict[str, str] = field(default_factory=dict)  # trackers' run ids (MLflow's), kept for a resumed run

    @property
    def world(self) -> World:
        return self.loop.world


def train(recipe: Recipe, *, data_dir: Path | str | None = None, out_dir: Path | str = "runs",
          quiet: bool = False, console: Console | None = None, on_epoch: OnEpoch | None = None,
          experiment: str | None = None) -> RunResult:
    """Train one recipe; write model.pth, model.safetensors and metadata.json into a new run folder.

    `on_epoch(row)` is called with each epoch's history row once its checkpoint is written; what it raises ends
    the run there (a search's pruning), with last.pth kept as after an interruption. `experiment`: the MLflow
    experiment, when the recipe logs to MLflow (default: $MLFLOW_EXPERIMENT_NAME, else the recipe's name)."""
    return fit(recipe, data_dir=data_dir, out_dir=Path(out_dir), quiet=quiet, console=console, on_epoch=on_epoch,
               experiment=experiment)


def resume(run_dir: Path | str, *, data_dir: Path | str | None = None, quiet: bool = False,
           console: Console | None = None, on_epoch: OnEpoch | None = None,
           experiment: str | None = None) -> RunResult:
    """Continue an interrupted run from RUN/last.pth; it ends as the uninterrupted run would have. Plugins its
    recipe names are not imported from it: import them first (the CLI's --plugin)."""
    state = load_last(run_dir)
    recipe = recipe_from_dict(state["recipe"])
    check_registered(recipe.config, str(run_dir))  # its plugins are the user's to give: a run is data
    return fit(recipe, data_dir=data_dir, run_dir=Path(run_dir), state=state, quiet=quiet, console=console,
               on_epoch=on_epoch, experiment=experiment)


def fit(recipe: Recipe, *, data_dir: Path | str | None = None, out_dir: Path = Path("runs"),
        run_dir: Path | None = None, state: dict | None = None, quiet: bool = False,
        console: Console | None = None, on_epoch: OnEpoch | None = None, experiment: str | None = None) -> RunResult:
    """The loop behind train and resume: epochs from the state's next one (or 1), a checkpoint after each."""
    clock = time.perf_counter()
    run = set_up(recipe, data_dir, out_dir, run_dir, state)
    loop, settings, history = run.loop, run.settings, run.history
    quiet, console = (quiet, console or Console()) if run.world.main else (True, Console(quiet=True))
    trackers = open_trackers(settings.log, run.run_dir, len(history), loop.steps_per_epoch, recipe.name,
                             recipe.config, run_tags(run), experiment, run.tracked) \
        if settings.log and run.world.main else []  # the tags ask git and the CPU: only for a run that is tracked
    scores, status = None, "FAILED"
    try:
        with stop_signals() as signals, failures_as_errors(run, signals), \
                make_display(console, quiet, len(loop.data.val_y) > 0) as display:
            display.start(title(run, state is not None), settings.epochs, loop.steps_per_epoch)
            for row in history:
                display.epoch(row)
            callbacks = after_epoch(run, clock, trackers, display, on_epoch)
            for epoch in range(len(history) + 1, settings.epochs + 1):
                if settings.patience and run.best and epoch - 1 - run.best["epoch"] >= settings.patience:
                    break  # early stopping: no better validation accuracy for `patience` epochs
                epoch_clock, lr = time.perf_counter(), loop.parts.optimizer.param_groups[0]["lr"]
                with timing(run.phases, "train"):
                    trained = train_epoch(loop, display, epoch)
                with timing(run.phases, "evaluate"):
                    scores = evaluate_final(loop, run.splits, epoch)
                history.append(history_row(epoch, trained, scores, lr, time.perf_counter() - epoch_clock))
                run.best = best_so_far(run.best, scores, loop.parts, epoch, settings.keep)
                for callback in callbacks:
                    callback(trained)
            with timing(run.phases, "evaluate"):
                scores = final_scores(loop, run.splits, scores, run.best, settings.keep, len(history))
            metadata = run_metadata(run, scores, wall_seconds=run.elapsed + time.perf_counter() - clock)
            if run.world.main:
                save_run(run.run_dir, loop.parts.final, recipe, metadata)
                point_latest(run.run_dir)
            for tracker in trackers:
                tracker.end(Final(metadata, to_toml(recipe.config), loop.parts.final, loop.data.test_x,
                                  loop.data.test_y, run.run_dir))
            barrier(run.world)
        status = "FINISHED"
    except Interrupted:
        status = "KILLED"  # MLflow's word for a run stopped on purpose; last.pth continues it
        raise
    finally:
        for tracker in trackers:
            tracker.close(status)
    if run.world.main:
        remove_last(run.run_dir)
    return RunResult(run_dir=run.run_dir, recipe=recipe.name, test_accuracy=scores["test"]["accuracy"],
                     metadata=metadata)


def after_epoch(run: Run, clock: float, trackers: list, display,
                on_epoch: OnEpoch | None) -> list[Callable[[Trained], None]]:
    """What happens once an epoch is measured, in this order: its checkpoint and history.csv (rank 0), the trackers
    (TensorBoard, MLflow: when the recipe logs to them), the display (once the epoch is safe on disk), the caller's
    on_epoch (a search's pruning, which may end the run)."""

    def checkpoint(trained: Trained) -> None:
        if run.world.main:
            with timing(run.phases, "checkpoint"):
                writing(run.run_dir / LAST, save_last, run.run_dir,
                        training_state(run, run.elapsed + time.perf_counter() - clock))
            writing(run.run_dir / HISTORY, write_history, run.run_dir, run.history)
        run.kept = len(run.history)

    def tracked(trained: Trained) -> None:
        for tracker in trackers:
            tracker.epoch(run.history[-1], trained)

    callbacks = [checkpoint, *([tracked] if trackers else []), lambda trained: display.epoch(run.history[-1])]
    return callbacks + ([lambda trained: on_epoch(run.history[-1])] if on_epoch else [])


def set_up(recipe: Recipe, data_dir, out_dir: Path, run_dir: Path | None, state: dict | None) -> Run:
    """Everything the loop needs, made once: the process group, the data as device tensors, the seeded parts (DDP-
    wrapped under torchrun), the precision, and the run folder (new, or the resumed one with its state put back)."""
    if state is None:
        check_recipe(recipe)  # every part built on the CPU once, before any data: a mistake costs seconds
    settings, data = train_settings(recipe.config), data_settings(recipe.config)
    world, device = join(settings.device)
    check_batch(data.batch_size, world)
    check_sync_bn(settings.sync_bn, world, device)
    check_loggers(list(settings.log))
    phases: dict[str, float] = {}
    with timing(phases, "data"):
        splits, tensors = load_tensors(data, settings, data_dir, world, device, recipe.path.parent)
    with timing(phases, "build"):
        generator = seed_everything(settings.seed)
        steps = -(-len(tensors.train_y) // data.batch_size)
        parts = build_parts(recipe.config, splits.spec, steps, device, fill=splits.fill,
                            sync_bn=settings.sync_bn and world.size > 1)
        check_last_batch(parts.model, len(tensors.train_y), data.batch_size, world.size)
        stepped = DistributedDataParallel(parts.model) if world.size > 1 else parts.model  # synced gradients
        loop = Loop(parts, stepped, tensors, data.batch_size, resolve_precision(settings.precision, device), world,
                    generator, (settings.outliers or {}).get("weight", 0.5))
    if state:
        history, started, elapsed = restore(parts, state, generator)
        best = state.get("best")
    else:
        run_dir = new_run_dir(out_dir, recipe.name) if world.main else None
        history, started, elapsed, best = [], datetime.now(UTC).isoformat(timespec="seconds"), 0.0, None
    return Run(recipe, settings, data, loop, splits, device, data_dir, run_dir, started, elapsed, history, best,
               kept=len(history), phases=phases, tracked=dict((state or {}).get("tracked") or {}))


def run_tags(run: Run) -> dict:
    """What a tracker tags a run with: the recipe, the seed, the source's git commit, the machine kind, the folder."""
    return {"mnist_kit.recipe": run.recipe.name, "mnist_kit.seed": run.settings.seed,
            "mlflow.source.git.commit": export.git_commit(), "mnist_kit.machine": machine(run.device)["kind"],
            "mnist_kit.run_dir": str(run.run_dir)}


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return the generator that orders the training batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def load_tensors(data: DataSettings, settings: TrainSettings, data_dir, world: World,
                 device: torch.device, recipe_dir: Path | None = None) -> tuple[Splits, Tensors]:
    """The recipe's data set, fetched and verified by one process per machine, as normalized device tensors."""
    if not world.fetches:  # one process per machine fetches; the others read what it verified
        barrier(world)
    splits = load_dataset(data.dataset, data_dir)
    if world.fetches:
        barrier(world)
    kept, held = validation_split(splits.train_labels, data.validation, data.split_seed, splits.num_classes)
    excluded = None
    if data.exclude:  # left out of training only: the validation images stay, so a choice compares like with like
        path = exclude_path(data.exclude, recipe_dir)
        blob = read_exclude_bytes(path)
        indices = torch.tensor(parse_indices(blob, path, len(splits.train_labels)), dtype=torch.long)
        before = len(kept)
        kept = kept[~torch.isin(kept, indices)]
        excluded = {"listed": len(indices), "left_out": before - len(kept), "sha256": exclude_digest(blob)}
    kept = kept[:data.limit]  # data.limit applies after the validation images are set aside
    layout = torch.channels_last if settings.channels_last else torch.contiguous_format

    def images(pixels: torch.Tensor) -> torch.Tensor:
        return normalize(pixels, splits.mean, splits.std, device).contiguous(memory_format=layout)

    outliers = None
    if settings.outliers:  # imported here: drawing non-digits needs PIL, which a run without them never loads
        from mnist_kit.outliers import training_outliers

        outliers = images(training_outliers(settings.outliers, data_dir))
    return splits, Tensors(images(splits.train_images[kept]), splits.train_labels[kept].to(device),
                           images(splits.train_images[held]), splits.train_labels[held].to(device),
                           images(splits.test_images), splits.test_labels.to(device), outliers, excluded)


def train_epoch(loop: Loop, display, epoch: int) -> Trained:
    """One pass over the shuffled training tensors; returns the mean loss and accuracy measured on the way.

    Each batch is augmented as a whole (tensor ops on the device); the EMA, if any, follows every step. The sums
    stay on the device and are read only for the display and at the end, which is where a non-finite loss is caught.
    """
    parts, images, labels, world = loop.parts, loop.data.train_x, loop.data.train_y, loop.world
    loop.stepped.train()
    losses = torch.zeros(loop.steps_per_epoch, device=images.device)  # per step: where a loss went non-finite
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    lrs, seen = [], 0
    for step, index in enumerate(batch_order(len(labels), loop.batch_size, loop.generator, images.device), start=1):
        index = share(index, world)  # every process draws the same order and takes its part of each batch
        x, y = augmented(parts.augment, images[index]), labels[index]
        with precision_context(loop.precision, images.device):
            if loop.data.outliers_x is None:
                output = loop.stepped(x)
                loss = parts.loss(output, y)
            else:  # outlier exposure: the batch and as many non-digits in one pass, the non-digits pushed to uniform
                pick = torch.randint(len(loop.data.outliers_x), (len(y),), generator=loop.generator)
                both = loop.stepped(torch.cat([x, loop.data.outliers_x[pick.to(images.device)]]))
                output = both[:len(y)]
                loss = parts.loss(output, y) + loop.outlier_weight * uniform_loss(both[len(y):])
        descend(parts.optimizer, loss)
        lrs.append(parts.optimizer.param_groups[0]["lr"])
        parts.scheduler.step()
        if parts.ema is not None:
            parts.ema.update_parameters(parts.model)
        losses[step - 1] = loss.detach()
        loss_sum += loss.detach() * len(y)
        correct += (output.detach().argmax(dim=1) == y).sum()
        seen += len(y)
        if display.wants_batch_update():  # reading the sums syncs the device: only a few times a second
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss) and world.size == 1:  # several processes stop together, below
                raise diverged(losses[:step], lrs, epoch)
            display.batch(step, mean_loss, correct.item() / seen)
    totals = torch.stack([loss_sum.double(), correct.double(), loss_sum.new_tensor(seen, dtype=torch.float64)])
    loss_total, correct_total, seen_total = sum_in_place(totals, world).tolist()
    if not math.isfinite(loss_total):
        raise diverged(losses, lrs, epoch)
    return Trained(loss_total / seen_total, correct_total / seen_total, losses, lrs)


def augmented(augment: list[Callable], x: torch.Tensor) -> torch.Tensor:
    """A batch through the recipe's augmentations, in order (no gradients: they are data, not model)."""
    with torch.no_grad():
        for transform in augment:
            x = transform(x)
    return x


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on the loss's gradients."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def uniform_loss(outputs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy from the uniform answer (logits or log-probabilities alike): least when no class stands out."""
    return -outputs.float().log_softmax(dim=1).mean()


def diverged(losses: torch.Tensor, lrs: list[float], epoch: int) -> Diverged:
    """Where the loss first went non-finite (the last step, if it was another process's loss)."""
    bad = (~losses.isfinite()).nonzero()
    step = int(bad[0]) + 1 if len(bad) else len(lrs)
    return Diverged(epoch, step, lrs[step - 1])


def evaluate_final(loop: Loop, splits: Splits, epoch: int) -> dict:
    """The metrics of what will be exported (the EMA's average, or the model): {"test": ..., "validation": ... or
    None}. Choices read the validation split; the test split is measured for the record."""
    buffers_from_rank0(loop.parts.final, loop.world)  # every process evaluates the model rank 0 saves
    data, scores = loop.data, {}
    with precision_context(loop.precision, data.test_x.device):
        for split, images, labels in (("validation", data.val_x, data.val_y), ("test", data.test_x, data.test_y)):
            scores[split] = (evaluate(loop.parts.final, images, labels, splits.num_classes, loop.world)
                             if len(labels) else None)
    if not all(math.isfinite(s["loss"]) for s in scores.values() if s):  # weights gone to inf/nan: never exported
        raise Diverged(epoch, loop.steps_per_epoch, loop.parts.optimizer.param_groups[0]["lr"],
                       "the evaluated model's loss")
    return scores


def history_row(epoch: int, train: tuple[float, float], scores: dict, lr: float, seconds: float) -> dict:
    """One epoch of the history (validation columns only where there is a split)."""
    row = {"epoch": epoch, "train_loss": train[0], "train_accuracy": train[1]}
    if scores["validation"]:
        row |= {"val_loss": scores["validation"]["loss"], "val_accuracy": scores["validation"]["accuracy"]}
    return row | {"test_loss": scores["test"]["loss"], "test_accuracy": scores["test"]["accuracy"], "lr": lr,
                  "seconds": seconds}


def best_so_far(best: dict | None, scores: dict, parts: Parts, epoch: int, keep: str) -> dict | None:
    """The epoch with the best validation accuracy (the first of equals), with a copy of its weights when the
    recipe keeps the best (train.keep = "best"); None without a validation split."""
    if not scores["validation"] or (best and scores["validation"]["accuracy"] <= best["accuracy"]):
        return best
    weights = {k: v.detach().clone() for k, v in parts.final.state_dict().items()} if keep == "best" else None
    return {"epoch": epoch, "accuracy": scores["validation"]["accuracy"], "weights": weights}


def final_scores(loop: Loop, splits: Splits, scores: dict | None, best: dict | None, keep: str,
                 trained: int) -> dict:
    """The scores of what is exported: the last epoch's, or (train.keep = "best") the best validation epoch's
    weights put back and scored again; a run resumed after its last epoch is scored once."""
    if keep == "best" and best["epoch"] != trained:
        loop.parts.final.load_state_dict(best["weights"])  # the epoch validation chose
        scores = None
    return scores or evaluate_final(loop, splits, trained)


def restore(parts: Parts, state: dict, generator: torch.Generator) -> tuple[list[dict], str, float]:
    """Put a run's last.pth back into its parts and random states; returns (history, started, elapsed seconds).
    The best validation epoch so far is state["best"]."""
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    if parts.ema is not None:
        parts.ema.load_state_dict(state["ema"])
    restore_rng(state["rng"], generator)
    return state["history"], state["started"], state["elapsed"]


def training_state(run: Run, elapsed: float) -> dict:
    """What last.pth holds: every part's state, every random state, the history, the best validation epoch so
    far, and the recipe."""
    parts = run.loop.parts
    return {"schema": SCHEMA_VERSION, "epoch": len(run.history), "best": run.best, "model": parts.model.state_dict(),
            "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
            "ema": parts.ema.state_dict() if parts.ema is not None else None, "rng": rng_state(run.loop.generator),
            "history": run.history, "recipe": recipe_to_dict(run.recipe), "started": run.started, "elapsed": elapsed,
            "tracked": run.tracked}


@contextmanager
def stop_signals():
    """Inside: Ctrl-C and SIGTERM raise KeyboardInterrupt, so both end at a clean epoch.

    Yields a list that records the signals seen: under torchrun a process whose peer stopped first fails inside a
    collective instead, and the record tells that failure from a crash.
    """
    seen = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def interrupt(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) is not signal.SIG_IGN}  # a signal ignored by the caller stays ignored
    try:
        yield seen
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def timing(phases: dict[str, float], name: str):
    """Add the seconds the block takes to phases[name]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start


@contextmanager
def failures_as_errors(run: Run, signals: list):
    """The one place a run's failures become the exceptions callers handle, each with what was kept: Ctrl-C or
    SIGTERM (Interrupted), a loss gone non-finite (UserError), a file the disk refused (Unwritten), and under
    torchrun a collective that failed because a peer stopped first (Interrupted). A run with no finished epoch
    leaves no folder. Processes other than rank 0 raise them without words: rank 0 says it."""
    try:
        yield
    except KeyboardInterrupt:
        raise interrupted(run) from None
    except Diverged as stop:
        if not run.world.main:
            raise UserError("") from None
        kept = (f"nothing was kept ({run.run_dir} removed)" if forget_empty(run.run_dir, run.kept)
                else f"{run.run_dir}/last.pth keeps epoch {run.kept} of {run.settings.epochs}, nothing was exported")
        raise UserError(f"training stopped: {stop}; try a lower learning rate. {kept}") from None
    except NotWritten as failure:
        if not run.world.main:
            raise Unwritten("") from None
        if forget_empty(run.run_dir, run.kept):
            raise Unwritten(f"{failure}; nothing was kept ({run.run_dir} removed)") from None
        raise Unwritten(f"{failure}; {run.run_dir}/last.pth keeps epoch {run.kept} of {run.settings.epochs}: make "
                        f"room", resume_dir=run.run_dir, processes=run.world.size) from None
    except Exception:
        if run.world.size > 1 and signals:  # a peer stopped first and the collective this process was in failed
            raise interrupted(run) from None
        raise


def interrupted(run: Run) -> Interrupted:
    """Ctrl-C or SIGTERM: what was kept, and the folder to resume (the CLI says how)."""
    if not run.world.main:
        return Interrupted("")  # rank 0 tells where the run is kept
    if forget_empty(run.run_dir, run.kept):
        return Interrupted(f"interrupted before the first epoch ended; nothing was kept ({run.run_dir} removed)")
    return Interrupted(f"interrupted: {run.run_dir}/last.pth keeps epoch {run.kept} of {run.settings.epochs}",
                       resume_dir=run.run_dir, processes=run.world.size)


def forget_empty(run_dir: Path | None, done: int) -> bool:
    """Remove a run folder that holds nothing (no epoch finished); True if it did."""
    if done == 0 and run_dir is not None and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
        return True
    return False


def save_run(run_dir: Path, model: nn.Module, recipe: Recipe, metadata: dict) -> None:
    """model.pth, model.safetensors, then metadata.json with the SHA-256 of both (checked when the run is opened)."""
    with timing(metadata.setdefault("phase_seconds", {}), "export"):
        metadata["weights"] = writing(run_dir / "model.*", export.save_weights, run_dir, model,
                                      recipe_to_dict(recipe), metadata["test_accuracy"])
    writing(run_dir / METADATA, write_metadata, run_dir, metadata)


class NotWritten(Exception):
    """A file of the run could not be written (a full disk, a read-only folder)."""

    def __init__(self, path: Path, error: OSError):
        super().__init__(f"cannot write {path}: {error.strerror or error}")


def writing(path: Path, write, *args):
    """`write(*args)`; an OSError (no space left, read-only) becomes NotWritten naming `path`."""
    try:
        return write(*args)
    except OSError as error:
        raise NotWritten(path, error) from error


def title(run: Run, resumed: bool) -> str:
    """The lines above the progress display: what trains, and where its data and its run folder are."""
    loop, world = run.loop, run.world
    return (f"{run.recipe.name}: {count_parameters(loop.parts.model):,} parameters, {len(loop.data.train_y):,} "
            f"training images, batch {loop.batch_size}, epochs {run.settings.epochs}, on {run.device}"
            + (f" x {world.size} processes ({world.backend})" if world.size > 1 else "")
            + (f", resuming after epoch {len(run.history)}" if resumed else "")
            + f"\n  data in {data_root(run.data_dir)}" + (f", run folder {run.run_dir}" if run.run_dir else ""))


def run_metadata(run: Run, scores: dict, wall_seconds: float) -> dict:
    """What a stranger needs to rerun and judge the run."""
    splits, data, test, validation = run.splits, run.data_settings, scores["test"], scores["validation"]
    best, history = run.best, run.history
    return {
        "schema": SCHEMA_VERSION,
        "recipe": recipe_to_dict(run.recipe),
        "recipe_hash": recipe_hash(run.recipe),
        "seed": run.settings.seed,
        "device": str(run.device),
        "precision": run.loop.precision,
        "threads": torch.get_num_threads(),
        "world_size": run.world.size,
        "backend": run.world.backend,
        "parameters": count_parameters(run.loop.parts.final),
        "input_shape": list(splits.input_shape),
        "classes": splits.classes,
        "data": {"dataset": splits.name, "root": str(data_root(run.data_dir).resolve()), "files": splits.files,
                 "train_images": len(run.loop.data.train_y), "validation_images": data.validation,
                 "split_seed": data.split_seed, "test_images": len(splits.test_labels),
                 "mean": splits.mean, "std": splits.std,
                 **({"excluded": run.loop.data.excluded} if run.loop.data.excluded else {})},
        "machine": machine(run.device),
        "history": history,
        "validation_accuracy": validation["accuracy"] if validation else None,
        "validation_loss": validation["loss"] if validation else None,
        "kept_epoch": best["epoch"] if run.settings.keep == "best" else len(history),
        "best_validation_epoch": best["epoch"] if best else None,
        "stopped_early": len(history) < run.settings.epochs,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "per_class_accuracy": dict(zip(splits.classes, test["per_class_accuracy"])),
        "confusion": test["confusion"],
        "versions": export.versions(),
        "git_commit": export.git_commit(),
        "command": export.command_line(),
        "started": run.started,
        "wall_seconds": wall_seconds,
        "phase_seconds": run.phases,
    }

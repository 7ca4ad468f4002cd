"""The training loop, written out by hand: recipe in, run folder with weights and metadata out."""

import math
import random
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mnist_kit import export
from mnist_kit.assemble import Parts, build_parts, check_last_batch, check_registered
from mnist_kit.checkpoint import load_last, remove_last, restore_rng, rng_state, save_last
from mnist_kit.data import Splits, batch_order, data_root, load_dataset, normalize, validation_split
from mnist_kit.device import machine, precision_context, resolve_precision
from mnist_kit.distributed import (
    ALONE,
    World,
    barrier,
    buffers_from_rank0,
    check_batch,
    check_sync_bn,
    join,
    share,
    sum_in_place,
)
from mnist_kit.errors import Diverged, Interrupted, UserError
from mnist_kit.evaluate import evaluate
from mnist_kit.invocation import command, tool
from mnist_kit.models import count_parameters
from mnist_kit.progress import make_display
from mnist_kit.recipe import (
    Recipe,
    fallback_recipe,
    recipe_from_dict,
    recipe_hash,
    recipe_to_dict,
    run_recipe,
    to_toml,
    toml_value,
)
from mnist_kit.record import HISTORY, METADATA, SCHEMA_VERSION, new_run_dir, point_latest, write_history, write_metadata
from mnist_kit.track import check_loggers, log_end, log_epoch, log_steps, open_events

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

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.data.train_y) // self.batch_size)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return the generator that orders the training batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def load_tensors(config: dict, data_dir, world: World, device: torch.device) -> tuple[Splits, Tensors]:
    """The recipe's data set, fetched and verified by one process per machine, as normalized device tensors."""
    if not world.fetches:  # one process per machine fetches; the others read what it verified
        barrier(world)
    splits = load_dataset(config["data"]["dataset"], data_dir)
    if world.fetches:
        barrier(world)
    data = config["data"]
    kept, held = validation_split(splits.train_labels, data["validation"], data["split_seed"], splits.num_classes)
    kept = kept[:data.get("limit")]  # data.limit applies after the validation images are set aside
    layout = torch.channels_last if config["train"]["channels_last"] else torch.contiguous_format

    def images(pixels: torch.Tensor) -> torch.Tensor:
        return normalize(pixels, splits.mean, splits.std, device).contiguous(memory_format=layout)

    return splits, Tensors(images(splits.train_images[kept]), splits.train_labels[kept].to(device),
                           images(splits.train_images[held]), splits.train_labels[held].to(device),
                           images(splits.test_images), splits.test_labels.to(device))


class Trained(NamedTuple):
    """One epoch of training as measured on the way: the means, and each step's loss and learning rate."""

    loss: float
    accuracy: float
    step_losses: torch.Tensor
    lrs: list[float]


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
        x, y = images[index], labels[index]
        with torch.no_grad():
            for transform in parts.augment:
                x = transform(x)
        with precision_context(loop.precision, images.device):
            output = loop.stepped(x)
            loss = parts.loss(output, y)
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts.optimizer.step()
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


def train(recipe: Recipe, *, data_dir: Path | str | None = None, out_dir: Path | str = "runs",
          quiet: bool = False, console: Console | None = None, on_epoch: OnEpoch | None = None) -> RunResult:
    """Train one recipe; write model.pth, model.safetensors and metadata.json into a new run folder.

    `on_epoch(row)` is called with each epoch's history row once its checkpoint is written; what it raises ends
    the run there (a search's pruning), with last.pth kept as after an interruption."""
    return fit(recipe, data_dir=data_dir, out_dir=Path(out_dir), quiet=quiet, console=console, on_epoch=on_epoch)


def resume(run_dir: Path | str, *, data_dir: Path | str | None = None, quiet: bool = False,
           console: Console | None = None, on_epoch: OnEpoch | None = None) -> RunResult:
    """Continue an interrupted run from RUN/last.pth; it ends as the uninterrupted run would have. Plugins its
    recipe names are not imported from it: import them first (the CLI's --plugin)."""
    state = load_last(run_dir)
    recipe = recipe_from_dict(state["recipe"])
    check_registered(recipe.config, str(run_dir))  # its plugins are the user's to give: a run is data
    return fit(recipe, data_dir=data_dir, run_dir=Path(run_dir), state=state, quiet=quiet, console=console,
               on_epoch=on_epoch)


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


def training_state(recipe: Recipe, loop: Loop, history: list[dict], started: str, elapsed: float,
                   best: dict | None) -> dict:
    """What last.pth holds: every part's state, every random state, the history, the best validation epoch so
    far, and the recipe."""
    parts = loop.parts
    return {"schema": SCHEMA_VERSION, "epoch": len(history), "best": best, "model": parts.model.state_dict(),
            "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
            "ema": parts.ema.state_dict() if parts.ema is not None else None, "rng": rng_state(loop.generator),
            "history": history, "recipe": recipe_to_dict(recipe), "started": started, "elapsed": elapsed}


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


def fit(recipe: Recipe, *, data_dir: Path | str | None = None, out_dir: Path = Path("runs"),
        run_dir: Path | None = None, state: dict | None = None, quiet: bool = False,
        console: Console | None = None, on_epoch: OnEpoch | None = None) -> RunResult:
    """The loop behind train and resume: epochs from the state's next one (or 1), a checkpoint after each."""
    console, config, clock = console or Console(), recipe.config, time.perf_counter()
    phases: dict[str, float] = {}  # seconds this process spent in each part of the run (metadata phase_seconds)
    world, device = join(config["train"]["device"])
    check_batch(config["data"]["batch_size"], world)
    check_sync_bn(config["train"]["sync_bn"], world, device)
    logs = config["train"].get("log", [])
    check_loggers(logs)
    with timing(phases, "data"):
        splits, data = load_tensors(config, data_dir, world, device)
    with timing(phases, "build"):
        generator = seed_everything(config["train"]["seed"])
        batch_size, epochs = config["data"]["batch_size"], config["train"]["epochs"]
        steps = -(-len(data.train_y) // batch_size)
        parts = build_parts(config, splits.spec, steps, device, fill=(0.0 - splits.mean) / splits.std,
                            sync_bn=config["train"]["sync_bn"] and world.size > 1)
        check_last_batch(parts.model, len(data.train_y), batch_size, world.size)
        stepped = DistributedDataParallel(parts.model) if world.size > 1 else parts.model  # synced gradients
        loop = Loop(parts, stepped, data, batch_size, resolve_precision(config["train"]["precision"], device),
                    world, generator)
    if state:
        history, started, elapsed = restore(parts, state, generator)
    else:
        run_dir = new_run_dir(out_dir, recipe.name) if world.main else None
        history, started, elapsed = [], datetime.now(UTC).isoformat(timespec="seconds"), 0.0
    if not world.main:
        quiet, console = True, Console(quiet=True)
    keep, patience = config["train"]["keep"], config["train"]["patience"]
    scores, kept, best = None, len(history), state.get("best") if state else None  # kept: epochs safe in last.pth
    events = open_events(run_dir, len(history) * steps) if "tensorboard" in logs and world.main else None
    try:
        with stop_signals() as signals, make_display(console, quiet, len(data.val_y) > 0) as display:
            display.start(title(recipe, loop, device, len(history) if state else None, data_dir, run_dir), epochs,
                          steps)
            for row in history:
                display.epoch(row)
            for epoch in range(len(history) + 1, epochs + 1):
                if patience and best and epoch - 1 - best["epoch"] >= patience:
                    break  # early stopping: no better validation accuracy for `patience` epochs
                epoch_clock, lr = time.perf_counter(), parts.optimizer.param_groups[0]["lr"]
                with timing(phases, "train"):
                    trained = train_epoch(loop, display, epoch)
                with timing(phases, "evaluate"):
                    scores = evaluate_final(loop, splits, epoch)
                history.append(history_row(epoch, trained, scores, lr, time.perf_counter() - epoch_clock))
                best = best_so_far(best, scores, parts, epoch, keep)
                if world.main:
                    with timing(phases, "checkpoint"):
                        writing(run_dir / "last.pth", save_last, run_dir, training_state(
                            recipe, loop, history, started, elapsed + time.perf_counter() - clock, best))
                    writing(run_dir / HISTORY, write_history, run_dir, history)
                    if events:
                        log_steps(events, epoch, steps, trained.step_losses, trained.lrs)
                        log_epoch(events, history[-1], steps)
                kept = epoch
                display.epoch(history[-1])  # shown once it is safe on disk
                if on_epoch:
                    on_epoch(history[-1])
            with timing(phases, "evaluate"):
                scores = final_scores(loop, splits, scores, best, keep, len(history))
            metadata = run_metadata(recipe, splits, parts.final, history, scores, best, device=device,
                                    precision=loop.precision, data_dir=data_dir, train_images=len(data.train_y),
                                    started=started, wall_seconds=elapsed + time.perf_counter() - clock, world=world)
            metadata["phase_seconds"] = phases
            if world.main:
                save_run(run_dir, parts.final, recipe, metadata)
                point_latest(run_dir)
            if events:
                log_end(events, metadata, to_toml(config), parts.final, data.test_x, data.test_y,
                        len(history) * steps)
            barrier(world)
    except KeyboardInterrupt:
        raise interrupted(run_dir, kept, epochs, world) from None
    except Diverged as stop:
        raise stopped(stop, run_dir, kept, epochs, world) from None
    except NotWritten as failure:
        raise unwritten(failure, run_dir, kept, epochs, world) from None
    except Exception:
        if world.size > 1 and signals:  # a peer stopped first and the collective this process was in failed
            raise interrupted(run_dir, kept, epochs, world) from None
        raise
    finally:
        if events:
            events.close()
    if world.main:
        remove_last(run_dir)
    return RunResult(run_dir=run_dir if world.main else None, recipe=recipe.name,
                     test_accuracy=scores["test"]["accuracy"], metadata=metadata)


def final_scores(loop: Loop, splits: Splits, scores: dict | None, best: dict | None, keep: str,
                 trained: int) -> dict:
    """The scores of what is exported: the last epoch's, or (train.keep = "best") the best validation epoch's
    weights put back and scored again; a run resumed after its last epoch is scored once."""
    if keep == "best" and best["epoch"] != trained:
        loop.parts.final.load_state_dict(best["weights"])  # the epoch validation chose
        scores = None
    return scores or evaluate_final(loop, splits, trained)


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


def title(recipe: Recipe, loop: Loop, device: torch.device, resumed_after: int | None, data_dir,
          run_dir: Path | None) -> str:
    """The lines above the progress display: what trains, and where its data and its run folder are."""
    world = loop.world
    return (f"{recipe.name}: {count_parameters(loop.parts.model):,} parameters, {len(loop.data.train_y):,} training "
            f"images, batch {loop.batch_size}, epochs {recipe.config['train']['epochs']}, on {device}"
            + (f" x {world.size} processes ({world.backend})" if world.size > 1 else "")
            + (f", resuming after epoch {resumed_after}" if resumed_after is not None else "")
            + f"\n  data in {data_root(data_dir)}" + (f", run folder {run_dir}" if run_dir else ""))


def forget_empty(run_dir: Path | None, done: int) -> bool:
    """Remove a run folder that holds nothing (no epoch finished); True if it did."""
    if done == 0 and run_dir is not None and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
        return True
    return False


def interrupted(run_dir: Path | None, done: int, epochs: int, world: World = ALONE) -> Interrupted:
    """What to tell the user after Ctrl-C or SIGTERM; a run with no finished epoch leaves no folder."""
    if not world.main:
        return Interrupted("")  # rank 0 tells where the run is kept
    if forget_empty(run_dir, done):
        return Interrupted(f"interrupted before the first epoch ended; nothing was kept ({run_dir} removed)")
    return Interrupted(f"interrupted: {run_dir}/last.pth keeps epoch {done} of {epochs}; "
                       f"resume with: {resume_command(world)} {run_dir}")


def resume_command(world: World) -> str:
    """How to continue a run, on as many processes as it had."""
    return (f"{tool('torchrun')} --nproc_per_node N -m mnist_kit train --resume" if world.size > 1
            else f"{command()} train --resume")


def stopped(stop: Diverged, run_dir: Path | None, done: int, epochs: int, world: World = ALONE) -> UserError:
    """What to tell the user when the loss went non-finite: where, what to try, what was kept (never a NaN model)."""
    if not world.main:
        return UserError("")  # rank 0 says it
    kept = (f"nothing was kept ({run_dir} removed)" if forget_empty(run_dir, done)
            else f"{run_dir}/last.pth keeps epoch {done} of {epochs}, nothing was exported")
    return UserError(f"training stopped: {stop}; try a lower learning rate. {kept}")


def unwritten(failure: NotWritten, run_dir: Path, done: int, epochs: int, world: World = ALONE) -> UserError:
    """What to tell the user when the disk refused a file: what is kept, and how to go on once there is room."""
    if not world.main:
        return UserError("")
    if forget_empty(run_dir, done):
        return UserError(f"{failure}; nothing was kept ({run_dir} removed)")
    return UserError(f"{failure}; {run_dir}/last.pth keeps epoch {done} of {epochs}: make room, then resume with: "
                     f"{resume_command(world)} {run_dir}")


def run_metadata(recipe: Recipe, splits: Splits, model: nn.Module, history: list[dict], scores: dict,
                 best: dict | None, *, device: torch.device, precision: str, data_dir, train_images: int,
                 started: str, wall_seconds: float, world: World) -> dict:
    """What a stranger needs to rerun and judge the run."""
    config, test, validation = recipe.config, scores["test"], scores["validation"]
    return {
        "schema": SCHEMA_VERSION,
        "recipe": recipe_to_dict(recipe),
        "recipe_hash": recipe_hash(recipe),
        "seed": config["train"]["seed"],
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "world_size": world.size,
        "backend": world.backend,
        "parameters": count_parameters(model),
        "input_shape": list(splits.input_shape),
        "classes": splits.classes,
        "data": {"dataset": splits.name, "root": str(data_root(data_dir).resolve()), "files": splits.files,
                 "train_images": train_images, "validation_images": config["data"]["validation"],
                 "split_seed": config["data"]["split_seed"], "test_images": len(splits.test_labels),
                 "mean": splits.mean, "std": splits.std},
        "machine": machine(device),
        "history": history,
        "validation_accuracy": validation["accuracy"] if validation else None,
        "validation_loss": validation["loss"] if validation else None,
        "kept_epoch": best["epoch"] if config["train"]["keep"] == "best" else len(history),
        "best_validation_epoch": best["epoch"] if best else None,
        "stopped_early": len(history) < config["train"]["epochs"],
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "per_class_accuracy": dict(zip(splits.classes, test["per_class_accuracy"])),
        "confusion": test["confusion"],
        "versions": export.versions(),
        "git_commit": export.git_commit(),
        "command": export.command_line(),
        "started": started,
        "wall_seconds": wall_seconds,
    }


def train_with_fallback(recipe: Recipe | None = None, *, resume_dir: Path | str | None = None,
                        fallback: bool = True, **options) -> list[RunResult]:
    """Train `recipe` (or resume a run); while a run falls short of its [fallback] threshold, train the next.

    The original pipeline's rule: it reads the validation accuracy where the recipe holds images out, else the test
    accuracy as the original did (the one choice ever made on the test split), and says which. The fallback takes
    the --set values it has keys for; `fallback=False` (--no-fallback) turns the rule off.
    """
    if resume_dir:
        results = [resume(resume_dir, **{k: v for k, v in options.items() if k != "out_dir"})]
    else:
        results = [train(recipe, **options)]
    recipe = run_recipe(results[-1].metadata)
    console = options.get("console") or Console()
    while (threshold := recipe.config["fallback"].get("min_test_accuracy")) is not None:
        last = results[-1]
        split, accuracy = (("validation", last.validation_accuracy) if last.validation_accuracy is not None
                           else ("test", last.test_accuracy))
        if accuracy >= threshold:
            break
        short = (f"{last.recipe} reached {accuracy:.2%} {split} accuracy, under its fallback threshold "
                 f"{threshold:.2%} (the original pipeline's rule, read on the {split} split"
                 + (" as the original did: this recipe holds no validation images out)" if split == "test" else ")"))
        if not fallback:
            console.print(f"{short}; --no-fallback: {recipe.config['fallback']['recipe']} is not trained.",
                          highlight=False, soft_wrap=True)
            break
        recipe, carried, dropped = fallback_recipe(recipe)
        epochs = recipe.config["train"]["epochs"]
        console.print(f"{short}: training {recipe.name} instead ({epochs} epoch{'s' * (epochs != 1)}"
                      + (f"; carried from --set: {', '.join(f'{k}={toml_value(v)}' for k, v in carried.items())}"
                         if carried else "")
                      + (f"; dropped, {recipe.name} has no such key: {', '.join(dropped)}" if dropped else "")
                      + "). --no-fallback turns this off.", highlight=False, soft_wrap=True)
        results.append(train(recipe, **options))
    return results

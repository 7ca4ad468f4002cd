"""The training loop, written out by hand: recipe in, run folder with weights and metadata out."""

import random
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mnist_kit import export
from mnist_kit.augment import AUGMENTATIONS
from mnist_kit.checkpoint import load_last, remove_last, restore_rng, rng_state, save_last
from mnist_kit.data import Splits, batch_order, data_root, load_dataset, normalize
from mnist_kit.device import precision_context, resolve_precision
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
from mnist_kit.errors import Interrupted, UserError
from mnist_kit.evaluate import evaluate
from mnist_kit.models import MODELS, count_parameters
from mnist_kit.optim import LOSSES, OPTIMIZERS, SCHEDULERS
from mnist_kit.progress import make_display
from mnist_kit.recipe import Recipe, fallback_recipe, import_plugins


@dataclass(frozen=True)
class RunResult:
    """Where a run was written and how it scored."""

    run_dir: Path
    recipe: str
    test_accuracy: float
    metadata: dict


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return the generator that orders the training batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def new_run_dir(out_dir: Path, name: str) -> Path:
    """runs/<recipe>-<YYYYmmdd-HHMMSS>/, with a -2, -3... suffix if that second is taken."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for suffix in ["", *(f"-{i}" for i in range(2, 1000))]:
            run_dir = Path(out_dir) / f"{name}-{stamp}{suffix}"
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                continue
    except OSError as error:
        raise UserError(f"cannot create a run folder in {out_dir}: {error.strerror or error}") from error
    raise UserError(f"too many runs named {name}-{stamp} in {out_dir}")


def train_epoch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                optimizer: torch.optim.Optimizer, scheduler, loss_fn, generator: torch.Generator,
                display, precision: str = "fp32", augment=(), ema=None,
                world: World = ALONE) -> tuple[float, float]:
    """One pass over the shuffled training tensors; returns (mean loss, accuracy) measured on the way.

    Each batch is augmented as a whole (tensor ops on the device); `ema`, if given, follows every step.
    """
    model.train()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    seen = 0
    for step, index in enumerate(batch_order(len(labels), batch_size, generator, images.device), start=1):
        index = share(index, world)  # every process draws the same order and takes its part of each batch
        x, y = images[index], labels[index]
        if augment:
            with torch.no_grad():
                for transform in augment:
                    x = transform(x)
        with precision_context(precision, images.device):
            output = model(x)
            loss = loss_fn(output, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(getattr(model, "module", model))
        loss_sum += loss.detach() * len(y)
        correct += (output.detach().argmax(dim=1) == y).sum()
        seen += len(y)
        if display.wants_batch_update():  # reading the sums syncs the device: only a few times a second
            display.batch(step, loss_sum.item() / seen, correct.item() / seen)
    totals = torch.stack([loss_sum.double(), correct.double(), loss_sum.new_tensor(seen, dtype=torch.float64)])
    loss_total, correct_total, seen_total = sum_in_place(totals, world).tolist()
    return loss_total / seen_total, correct_total / seen_total


def build_model(config: dict, splits: Splits) -> nn.Module:
    """The recipe's model for this data set's image shape and classes."""
    return MODELS.build(config["model"], input_shape=splits.input_shape, num_classes=splits.num_classes)


def train(recipe: Recipe, *, data_dir: Path | str | None = None, out_dir: Path | str = "runs",
          quiet: bool = False, console: Console | None = None) -> RunResult:
    """Train one recipe; write model.pth, model.safetensors and metadata.json into a new run folder."""
    return fit(recipe, data_dir=data_dir, out_dir=Path(out_dir), quiet=quiet, console=console)


def resume(run_dir: Path | str, *, data_dir: Path | str | None = None, quiet: bool = False,
           console: Console | None = None) -> RunResult:
    """Continue an interrupted run from RUN/last.pth; it ends as the uninterrupted run would have."""
    state = load_last(run_dir)
    saved = state["recipe"]
    recipe = Recipe(name=saved["name"], path=Path(saved["path"]), config=saved["config"],
                    overrides=tuple(saved["overrides"]))
    if recipe.config.get("plugins"):
        import_plugins(recipe.config["plugins"], recipe.path.parent)
    return fit(recipe, data_dir=data_dir, run_dir=Path(run_dir), state=state, quiet=quiet, console=console)


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


def fit(recipe: Recipe, *, data_dir: Path | str | None = None, out_dir: Path = Path("runs"),
        run_dir: Path | None = None, state: dict | None = None, quiet: bool = False,
        console: Console | None = None) -> RunResult:
    """The loop behind train and resume: epochs from the state's next one (or 1), a checkpoint after each."""
    console = console or Console()
    config = recipe.config
    clock = time.perf_counter()
    world, device = join(config["train"]["device"])
    check_batch(config["data"]["batch_size"], world)
    check_sync_bn(config["train"]["sync_bn"], world, device)
    if not world.fetches:  # one process per machine fetches; the others read what it verified
        barrier(world)
    splits = load_dataset(config["data"]["dataset"], data_dir)
    if world.fetches:
        barrier(world)
    generator = seed_everything(config["train"]["seed"])
    limit = config["data"].get("limit")
    train_x = normalize(splits.train_images[:limit], splits.mean, splits.std, device)
    train_y = splits.train_labels[:limit].to(device)
    test_x = normalize(splits.test_images, splits.mean, splits.std, device)
    test_y = splits.test_labels.to(device)
    batch_size, epochs = config["data"]["batch_size"], config["train"]["epochs"]
    steps_per_epoch = -(-len(train_y) // batch_size)

    precision = resolve_precision(config["train"]["precision"], device)
    model = build_model(config, splits).to(device)
    if config["train"]["sync_bn"] and world.size > 1:  # same parameter names: checkpoints stay plain
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if config["train"]["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        train_x, test_x = (t.contiguous(memory_format=torch.channels_last) for t in (train_x, test_x))
    trained = DistributedDataParallel(model) if world.size > 1 else model  # same parameters, synced grads
    optimizer = OPTIMIZERS.build(config["optimizer"], params=model.parameters())
    scheduler = SCHEDULERS.build(config["scheduler"], optimizer=optimizer, epochs=epochs,
                                 steps_per_epoch=steps_per_epoch)
    loss_fn = LOSSES.build(config["train"]["loss"])
    blank = (0.0 - splits.mean) / splits.std  # a normalized empty pixel: what augmentations shift in
    augment = [AUGMENTATIONS.build(table, fill=blank) for table in config["augment"]]
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config["train"]["ema"]), use_buffers=True)
           if config["train"]["ema"] else None)
    final = ema.module if ema else model  # what is evaluated and exported

    def evaluate_final() -> dict:
        buffers_from_rank0(final, world)  # every process evaluates the model rank 0 saves
        with precision_context(precision, device):
            return evaluate(final, test_x, test_y, splits.num_classes, world)

    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema:
            ema.load_state_dict(state["ema"])
        restore_rng(state["rng"], generator)
        history, started, elapsed = state["history"], state["started"], state["elapsed"]
    else:
        run_dir = new_run_dir(out_dir, recipe.name) if world.main else None
        history, started, elapsed = [], datetime.now(UTC).isoformat(timespec="seconds"), 0.0
    if not world.main:
        quiet, console = True, Console(quiet=True)

    title = (f"{recipe.name}: {count_parameters(model):,} parameters, {len(train_y):,} training images, "
             f"batch {batch_size}, epochs {epochs}, on {device}"
             + (f" x {world.size} processes ({world.backend})" if world.size > 1 else "")
             + (f", resuming after epoch {len(history)}" if state else ""))
    test, kept = None, len(history)  # kept: epochs safe in last.pth
    try:
        with stop_signals() as signals, make_display(console, quiet) as display:
            display.start(title, epochs, steps_per_epoch)
            for row in history:
                display.epoch(row)
            for epoch in range(len(history) + 1, epochs + 1):
                epoch_clock = time.perf_counter()
                lr = optimizer.param_groups[0]["lr"]
                train_loss, train_acc = train_epoch(trained, train_x, train_y, batch_size, optimizer, scheduler,
                                                    loss_fn, generator, display, precision, augment, ema, world)
                test = evaluate_final()
                history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                                "test_loss": test["loss"], "test_accuracy": test["accuracy"], "lr": lr,
                                "seconds": time.perf_counter() - epoch_clock})
                if world.main:
                    save_last(run_dir, {
                        "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema else None,
                        "rng": rng_state(generator), "history": history,
                        "recipe": {"name": recipe.name, "path": str(recipe.path), "config": config,
                                   "overrides": list(recipe.overrides)},
                        "started": started, "elapsed": elapsed + time.perf_counter() - clock})
                kept = epoch
                display.epoch(history[-1])  # shown once it is safe on disk
            if test is None:  # resumed after the last epoch: nothing trained, evaluate once
                test = evaluate_final()
            metadata = run_metadata(recipe, splits, final, device, precision, history, test, data_dir,
                                    len(train_y), started, elapsed + time.perf_counter() - clock)
            metadata["world_size"], metadata["backend"] = world.size, world.backend
            if world.main:
                export.save_weights(run_dir, final, config, test["accuracy"])
                export.save_metadata(run_dir, metadata)
            barrier(world)
    except KeyboardInterrupt:
        raise interrupted(run_dir, kept, epochs, world) from None
    except Exception:
        if world.size > 1 and signals:  # a peer stopped first and the collective this process was in failed
            raise interrupted(run_dir, kept, epochs, world) from None
        raise
    if world.main:
        remove_last(run_dir)
    return RunResult(run_dir=run_dir if world.main else None, recipe=recipe.name, test_accuracy=test["accuracy"],
                     metadata=metadata)


def interrupted(run_dir: Path | None, done: int, epochs: int, world: World = ALONE) -> Interrupted:
    """What to tell the user after Ctrl-C or SIGTERM; a run with no finished epoch leaves no folder."""
    if not world.main:
        return Interrupted("")  # rank 0 tells where the run is kept
    if done == 0 and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
        return Interrupted(f"interrupted before the first epoch ended; nothing was kept ({run_dir} removed)")
    again = ("torchrun --nproc_per_node N -m mnist_kit train --resume" if world.size > 1
             else "mnist-kit train --resume")
    return Interrupted(f"interrupted: {run_dir}/last.pth keeps epoch {done} of {epochs}; "
                       f"resume with: {again} {run_dir}")


def run_metadata(recipe: Recipe, splits: Splits, model: nn.Module, device: torch.device, precision: str,
                 history: list[dict], test: dict, data_dir, train_images: int, started: str,
                 wall_seconds: float) -> dict:
    """What a stranger needs to rerun and judge the run."""
    config = recipe.config
    return {
        "recipe_name": recipe.name,
        "recipe_path": str(recipe.path),
        "overrides": list(recipe.overrides),
        "recipe": config,
        "seed": config["train"]["seed"],
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "parameters": count_parameters(model),
        "input_shape": list(splits.input_shape),
        "classes": splits.classes,
        "data": {"dataset": splits.name, "root": str(data_root(data_dir).resolve()), "files": splits.files,
                 "train_images": train_images, "test_images": len(splits.test_labels), "mean": splits.mean,
                 "std": splits.std},
        "history": history,
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
                        **options) -> list[RunResult]:
    """Train `recipe` (or resume a run); while a run falls short of its [fallback] threshold, train the next."""
    if resume_dir:
        results = [resume(resume_dir, **{k: v for k, v in options.items() if k != "out_dir"})]
    else:
        results = [train(recipe, **options)]
    recipe = load_recipe_of(results[-1]) if resume_dir else recipe
    while (threshold := recipe.config["fallback"].get("min_test_accuracy")) is not None:
        if results[-1].test_accuracy >= threshold:
            break
        console = options.get("console") or Console()
        recipe = fallback_recipe(recipe)
        console.print(f"{results[-1].recipe} reached {results[-1].test_accuracy:.2%}, under its fallback threshold "
                      f"{threshold:.2%}: training {recipe.name} instead.", highlight=False)
        results.append(train(recipe, **options))
    return results


def load_recipe_of(result: RunResult) -> Recipe:
    """The (resolved) recipe a finished run was trained with."""
    meta = result.metadata
    return Recipe(name=meta["recipe_name"], path=Path(meta["recipe_path"]), config=meta["recipe"],
                  overrides=tuple(meta["overrides"]))

"""One place that builds a run's parts from a resolved recipe: model, optimizer, scheduler, loss, augment, EMA.

Checking a recipe (a dry build on the CPU, no data), training, and rebuilding a saved run all come through here,
and `PARTS` below is the one statement of what the code itself passes to each factory.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mnist_kit.data import DatasetSpec, dataset_spec
from mnist_kit.errors import UserError
from mnist_kit.models import count_parameters
from mnist_kit.optim import NEEDS_LOG_PROBABILITIES, make_ema
from mnist_kit.parts import PARTS  # noqa: F401 (re-exported: what the code passes each factory)
from mnist_kit.settings import train_settings


@dataclass
class Parts:
    """Everything a run trains with, built from one recipe."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss: Callable
    augment: list[Callable]
    ema: torch.optim.swa_utils.AveragedModel | None

    @property
    def final(self) -> nn.Module:
        """What is evaluated and exported: the EMA's average where there is one, else the model."""
        return self.ema.module if self.ema is not None else self.model


def tables(config: dict, part: str) -> list[dict]:
    """The factory tables a resolved recipe gives one part (a list: [[augment]] may hold several)."""
    return list(config["augment"]) if part == "augment" else [config["train"]["loss"] if part == "loss"
                                                                else config[part]]


def check_registered(config: dict, where: str, parts: tuple[str, ...] = tuple(PARTS)) -> None:
    """Refuse a saved recipe whose factories nobody registered here: they came from plugins, and a run is data
    (nothing it names is imported), so the user gives them with --plugin."""
    missing = [f"{part} {table['name']!r}" for part in parts for table in tables(config, part)
               if table["name"] not in PARTS[part].registry.names()]
    if missing:
        named = config.get("plugins") or []
        raise UserError(f"{where}: {', '.join(missing)} is not registered here"
                        + (f"; its recipe imported it from {', '.join(map(repr, named))}" if named else "")
                        + ": give the module or .py file that registers it with --plugin (a run is data: "
                        "nothing it names is imported)")


def build(part: str, table, **supplied):
    """Build one part through its registry; `supplied` must be exactly what PARTS says the code passes."""
    registry, names = PARTS[part]
    assert set(supplied) == set(names), f"{part} is built with {sorted(supplied)}, PARTS says {names}"
    return registry.build(table, **supplied)


def build_model(config: dict, spec: DatasetSpec) -> nn.Module:
    """The recipe's model for a data set's image shape and classes (freshly initialised)."""
    return build("model", config["model"], input_shape=tuple(spec.input_shape), num_classes=spec.num_classes)


# Far past any MNIST network (the shipped ones have 0.1-1.5 M): ~400 MB of float32 weights, three times that with
# Adam's moments. A recipe or a run's metadata asking for more (widths = [10**9]) is refused before anything is
# allocated.
MAX_PARAMETERS = 100_000_000


def model_skeleton(config: dict, spec: DatasetSpec) -> nn.Module | None:
    """The recipe's model on the meta device: its parameters' shapes without their memory; None where a factory
    cannot build there (it then fails or succeeds in the real build as it would have)."""
    try:
        with torch.device("meta"):
            return build_model(config, spec)
    except UserError:
        raise
    except Exception:
        return None


def check_size(model: nn.Module, config: dict) -> None:
    """Refuse a model over MAX_PARAMETERS, in one line, before it is built for real."""
    count = count_parameters(model)
    if count > MAX_PARAMETERS:
        raise UserError(f"model {config['model']['name']!r} would have {count:,} parameters ({4 * count / 2**30:,.1f} "
                        f"GiB of float32), over the {MAX_PARAMETERS:,} this toolkit builds: a width or layer size "
                        f"too large?")


def build_parts(config: dict, spec: DatasetSpec, steps_per_epoch: int, device: torch.device | str = "cpu",
                fill: float = 0.0, sync_bn: bool = False) -> Parts:
    """Every part of a run, in the order that draws random numbers the same way on every run of a recipe.

    `fill` is the normalized value of a blank pixel (what augmentations shift in); `sync_bn` converts BatchNorm to
    SyncBatchNorm (under torchrun on CUDA; the parameter names stay, so checkpoints stay plain).
    """
    settings = train_settings(config)
    model = build_model(config, spec).to(device)
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build("optimizer", config["optimizer"], params=model.parameters())
    scheduler = build("scheduler", config["scheduler"], optimizer=optimizer, epochs=settings.epochs,
                      steps_per_epoch=steps_per_epoch)
    loss = build("loss", settings.loss)
    augment = [build("augment", table, fill=fill) for table in config["augment"]]
    ema = make_ema(model, settings.ema) if settings.ema else None
    return Parts(model, optimizer, scheduler, loss, augment, ema)


def training_images(config: dict, spec: DatasetSpec) -> int:
    """How many training images a recipe trains on: those left after data.validation, or data.limit of them (which
    must not ask for more than there are)."""
    data = config["data"]
    validation = data.get("validation", 0)
    if validation and not spec.num_classes <= validation < spec.train_images:
        raise UserError(f"data.validation = {validation} must hold out at least one image of each of the "
                        f"{spec.num_classes} classes and leave some of the {spec.train_images:,} to train on")
    left, limit = spec.train_images - validation, data.get("limit")
    if limit is not None and limit > left:
        raise UserError(f"data.limit = {limit} asks for more than the {left:,} training images of "
                        f"{data['dataset']}" + (f" left after data.validation = {validation}" if validation else ""))
    return limit or left


def dry_build(config: dict) -> tuple[Parts, int]:
    """Build every part on the CPU without data and run the model once: a recipe's mistakes fail here, in seconds,
    not after the data is fetched or an epoch is trained. Returns the parts and the number of training images."""
    spec = dataset_spec(config["data"]["dataset"])
    if (skeleton := model_skeleton(config, spec)) is not None:
        check_size(skeleton, config)
    images = training_images(config, spec)
    batch_size = config["data"]["batch_size"]
    parts = build_parts(config, spec, steps_per_epoch=-(-images // batch_size))
    check_outputs(parts.model, config, spec)
    check_last_batch(parts.model, images, batch_size)
    return parts, images


def check_recipe(recipe) -> tuple[Parts, int]:
    """Check a loaded recipe the way running it would, before any data: build every part on the CPU and run the
    model once (dry_build), then the same for each recipe of its fallback chain, with the --set values it would
    carry. What `train` and every command that runs recipes call first; returns the recipe's parts and its number
    of training images."""
    from mnist_kit.recipe import fallback_recipe

    checked, current = None, recipe
    while current is not None:
        try:
            built = dry_build(current.config)
        except UserError as error:
            raise UserError(f"{current.path.name}: {error}") from error
        checked = checked or built
        following = fallback_recipe(current)  # (recipe, carried, dropped), or None at the end of the chain
        current = following[0] if following else None
    return checked


def describe(parts: Parts) -> str:
    """'647,290 parameters' for messages and --print-config."""
    return f"{count_parameters(parts.model):,} parameters"


@torch.no_grad()
def check_outputs(model: nn.Module, config: dict, spec: DatasetSpec) -> None:
    """One forward pass on two images: the output has a score per class, and a loss that needs log-probabilities
    gets them (NLL on raw scores trains to a negative loss and a useless model)."""
    images = torch.randn(2, *spec.input_shape, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    name = config["model"]["name"]
    try:
        output = model(images)
    except RuntimeError as error:  # shapes that do not fit (a stage too many for 28x28 images, ...)
        raise UserError(f"model {name!r} fails on a batch of {spec.input_shape} images: "
                        f"{' '.join(str(error).split())[:300]}") from error
    finally:
        model.train(was_training)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (2, spec.num_classes):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise UserError(f"model {name!r} must output (batch, {spec.num_classes}) scores, got {shape}")
    loss = config["train"]["loss"]["name"]
    if loss in NEEDS_LOG_PROBABILITIES and not torch.allclose(output.float().logsumexp(dim=1), torch.zeros(2),
                                                              atol=1e-3):
        raise UserError(f"train.loss = {loss!r} needs log-probabilities, but model {name!r} outputs raw scores "
                        f"(logits): use train.loss = \"cross_entropy\", or end the model in nn.LogSoftmax(dim=1)")


def has_batchnorm(model: nn.Module) -> bool:
    """Whether a model normalizes over the batch in training (a batch of one image cannot be)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_last_batch(model: nn.Module, images: int, batch_size: int, processes: int = 1) -> None:
    """Refuse a batch size and image count whose last batch gives a process one image under BatchNorm (or none at
    all), naming values that work; the step count is never changed behind the user's back."""
    last = images % batch_size or batch_size
    share = min(last, batch_size) // processes  # the smallest share of the last batch
    needed = 2 if has_batchnorm(model) else 1
    if share >= needed:
        return
    where = f" over {processes} processes" if processes > 1 else ""
    why = "which BatchNorm cannot normalize" if needed == 2 else "and an empty batch has no loss"
    fits = [b for b in sorted(range(max(1, batch_size - 64), batch_size + 65), key=lambda b: abs(b - batch_size))
            if b % processes == 0 and (images % b or b) // processes >= needed][:2]
    options = [f"data.limit = {images - last}"] if images > last and batch_size // processes >= needed else []
    options += [f"data.batch_size = {b}" for b in fits]
    each = f" ({share} image(s) per process)" if processes > 1 else " image"
    raise UserError(f"{images:,} training images in batches of {batch_size} leave a last batch of {last}{where}{each}, "
                    f"{why}: use " + " or ".join(options))

"""What a recipe's factory sections are built by: the registry each part's table names a factory in, and the
arguments the code itself supplies (a recipe never sets them). Recipes are resolved against these signatures
(mnist_kit.recipe); parts are built from them (mnist_kit.assemble)."""

from typing import NamedTuple

from mnist_kit.augment import AUGMENTATIONS
from mnist_kit.models import MODELS
from mnist_kit.optim import LOSSES, OPTIMIZERS, SCHEDULERS
from mnist_kit.registry import Registry


class Part(NamedTuple):
    registry: Registry
    supplied: tuple[str, ...]  # arguments the code passes; a recipe never sets them


PARTS = {
    "model": Part(MODELS, ("input_shape", "num_classes")),
    "optimizer": Part(OPTIMIZERS, ("params",)),
    "scheduler": Part(SCHEDULERS, ("optimizer", "epochs", "steps_per_epoch")),
    "loss": Part(LOSSES, ()),  # recipe key train.loss
    "augment": Part(AUGMENTATIONS, ("fill",)),  # a list of [[augment]] tables, applied in order
}

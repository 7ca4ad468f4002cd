"""Model factories: each returns an nn.Module and is registered by name for recipes."""

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from mnist_kit.registry import Registry

MODELS = Registry("model")


def per_layer(value, count: int, what: str) -> list:
    """A scalar repeated for every layer, or a list with one value per layer."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != count:
            raise ValueError(f"{what} has {len(value)} values for {count} hidden layers")
        return list(value)
    return [value] * count


@MODELS.register("mlp")
def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] = (512, 256, 128),
    dropout: float | Sequence[float] = 0.2,
    batchnorm: bool | Sequence[bool] = (True, True, False),
) -> nn.Sequential:
    """A multilayer perceptron: per hidden layer Linear -> [BatchNorm] -> ReLU -> Dropout; LogSoftmax out.

    Layers are named like the reference class (fc1, bn1, ..., fcN), so its checkpoints load as they are.
    """
    dropouts = per_layer(dropout, len(hidden), "dropout")
    norms = per_layer(batchnorm, len(hidden), "batchnorm")
    if not hidden or any(not isinstance(size, int) or size < 1 for size in hidden):
        raise ValueError(f"hidden must list positive layer widths, got {hidden}")
    if any(not 0 <= p < 1 for p in dropouts):
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = math.prod(input_shape)
    for i, (size, p, norm) in enumerate(zip(hidden, dropouts, norms), start=1):
        layers[f"fc{i}"] = nn.Linear(width, size)
        if norm:
            layers[f"bn{i}"] = nn.BatchNorm1d(size)
        layers[f"relu{i}"] = nn.ReLU()
        if p > 0:
            layers[f"drop{i}"] = nn.Dropout(p)
        width = size
    layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, num_classes)
    layers["log_softmax"] = nn.LogSoftmax(dim=1)
    return nn.Sequential(layers)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

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


@MODELS.register("cnn_example")
def cnn_example(input_shape: Sequence[int], num_classes: int, dropout_conv: float = 0.25,
                dropout_fc: float = 0.5, hidden: int = 128) -> nn.Sequential:
    """PyTorch's MNIST example network: two 3x3 convolutions (32, 64), max-pool, dropout, fc 128, dropout."""
    if not 0 <= dropout_conv < 1 or not 0 <= dropout_fc < 1 or hidden < 1:
        raise ValueError(f"dropouts must be in [0, 1) and hidden >= 1, got {dropout_conv}, {dropout_fc}, {hidden}")
    channels, height, width = input_shape
    flat = 64 * ((height - 4) // 2) * ((width - 4) // 2)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(channels, 32, 3), relu1=nn.ReLU(), conv2=nn.Conv2d(32, 64, 3), relu2=nn.ReLU(),
        pool=nn.MaxPool2d(2), dropout1=nn.Dropout(dropout_conv), flatten=nn.Flatten(),
        fc1=nn.Linear(flat, hidden), relu3=nn.ReLU(), dropout2=nn.Dropout(dropout_fc),
        fc2=nn.Linear(hidden, num_classes), log_softmax=nn.LogSoftmax(dim=1)))


@MODELS.register("convnet")
def convnet(input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (32, 64, 128),
            convs_per_stage: int = 2, dropout: float = 0.0, pool: str = "max", stem_kernel: int = 3,
            stem_stride: int = 1) -> nn.Sequential:
    """A BatchNorm CNN: per stage `convs_per_stage` x (3x3 conv, BatchNorm, ReLU), then 2x2 max-pool
    (none after the last stage); then global `pool` ("max" or "avg"), dropout and one linear layer (logits).
    The very first convolution may be larger and strided (`stem_kernel`, `stem_stride`): a stride of 2 works
    on a quarter of the pixels from the start, which is most of the cost of a small CNN on a CPU."""
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths) or convs_per_stage < 1:
        raise ValueError(f"widths must list positive channel counts and convs_per_stage >= 1, got {widths}")
    if stem_kernel < 1 or stem_stride < 1:
        raise ValueError(f"stem_kernel and stem_stride must be >= 1, got {stem_kernel} and {stem_stride}")
    if pool not in ("max", "avg") or not 0 <= dropout < 1:
        raise ValueError(f"pool must be max or avg and dropout in [0, 1), got {pool!r} and {dropout}")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels = input_shape[0]
    for stage, width in enumerate(widths, start=1):
        for conv in range(1, convs_per_stage + 1):
            name = f"{stage}_{conv}"
            first = stage == 1 and conv == 1
            kernel, stride = (stem_kernel, stem_stride) if first else (3, 1)
            layers[f"conv{name}"] = nn.Conv2d(channels, width, kernel, stride=stride, padding=kernel // 2, bias=False)
            layers[f"bn{name}"] = nn.BatchNorm2d(width)
            layers[f"relu{name}"] = nn.ReLU(inplace=True)
            channels = width
        if stage < len(widths):
            layers[f"pool{stage}"] = nn.MaxPool2d(2)
    layers["global_pool"] = nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    if dropout:
        layers["dropout"] = nn.Dropout(dropout)
    layers["fc"] = nn.Linear(channels, num_classes)
    return nn.Sequential(layers)

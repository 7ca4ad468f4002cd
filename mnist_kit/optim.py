"""Optimizer, scheduler and loss factories, registered by name for recipes.

Every scheduler is stepped once per optimizer step (batch); factories convert epochs to steps, so
`step` with step_size=10 decays the rate every 10 epochs exactly as the reference's per-epoch StepLR.
"""

import torch
import torch.nn.functional as F
from torch import optim
from torch.optim import lr_scheduler
from torch.optim.swa_utils import AveragedModel

from mnist_kit.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")
LOSSES = Registry("loss")


def without_dynamo_import(base: type[optim.Optimizer]) -> type[optim.Optimizer]:
    """`base` as it runs outside torch.compile, without the `import torch._dynamo` its methods do on first use.

    torch.optim's methods are wrapped (torch._disable_dynamo, _use_grad_for_differentiable) so that torch.compile
    leaves them alone; the wrappers import torch._dynamo when first called: 1.6 s on a 2-core AMD EPYC with
    AVX-512 BF16, ~4 s on one with AVX2 only, before the first step. The wrapped functions are reached through
    `__wrapped__` (functools.wraps), and step keeps the one thing its wrapper does in eager mode: no autograd.
    Same class, state and arithmetic, so weights and checkpoints are unchanged (tests/test_optim.py)."""
    def step(self, closure=None):
        with torch.no_grad():
            return base.step.__wrapped__(self, closure)

    methods = {name: getattr(optim.Optimizer, name).__wrapped__
               for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict")}
    return type(base.__name__, (base,), {**methods, "step": step, "__module__": __name__, "__doc__": base.__doc__})


Adam, AdamW, SGD, Adadelta = map(without_dynamo_import, (optim.Adam, optim.AdamW, optim.SGD, optim.Adadelta))


def fused(params: list) -> bool | None:
    """Use torch's fused kernel (one call for every tensor: same math, far less per-step overhead) where it has one."""
    return True if params and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) else None


@OPTIMIZERS.register("adam")
def adam(params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
         eps: float = 1e-8) -> optim.Optimizer:
    """Adam with L2 weight decay added to the gradient (as torch.optim.Adam does)."""
    params = list(params)
    return Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, eps=eps, fused=fused(params))


@OPTIMIZERS.register("adamw")
def adamw(params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.01,
          eps: float = 1e-8) -> optim.Optimizer:
    """AdamW: weight decay applied to the weights directly, not through the gradient."""
    params = list(params)
    return AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, eps=eps, fused=fused(params))


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float = 0.1, momentum: float = 0.9, nesterov: bool = False,
        weight_decay: float = 0.0) -> optim.Optimizer:
    """Stochastic gradient descent with (optionally Nesterov) momentum."""
    params = list(params)
    return SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                     fused=fused(params))


@OPTIMIZERS.register("adadelta")
def adadelta(params, lr: float = 1.0, rho: float = 0.9, weight_decay: float = 0.0) -> optim.Optimizer:
    """Adadelta, as in PyTorch's MNIST example."""
    return Adadelta(params, lr=lr, rho=rho, weight_decay=weight_decay)


@SCHEDULERS.register("none")
def constant(optimizer, epochs: int, steps_per_epoch: int) -> lr_scheduler.LRScheduler:
    """Keep the optimizer's learning rate for the whole run."""
    return lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@SCHEDULERS.register("step")
def step(optimizer, epochs: int, steps_per_epoch: int, step_size: int = 10,
         gamma: float = 0.1) -> lr_scheduler.LRScheduler:
    """Multiply the learning rate by `gamma` every `step_size` epochs."""
    if step_size < 1 or not 0 < gamma <= 1:
        raise ValueError(f"step_size must be >= 1 and gamma in (0, 1], got {step_size} and {gamma}")
    return lr_scheduler.StepLR(optimizer, step_size=step_size * steps_per_epoch, gamma=gamma)


@SCHEDULERS.register("cosine")
def cosine(optimizer, epochs: int, steps_per_epoch: int, min_lr: float = 0.0,
           warmup_epochs: float = 0.0) -> lr_scheduler.LRScheduler:
    """Optional linear warm-up, then cosine decay to `min_lr` at the last step."""
    if min_lr < 0 or not 0 <= warmup_epochs < epochs:
        raise ValueError(f"min_lr must be >= 0 and warmup_epochs in [0, epochs={epochs}), got {min_lr} and "
                         f"{warmup_epochs}")
    total = epochs * steps_per_epoch
    warmup = round(warmup_epochs * steps_per_epoch)
    decay = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=min_lr)
    if warmup == 0:
        return decay
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, decay], milestones=[warmup])


@SCHEDULERS.register("onecycle", hints={"max_lr": "OneCycle peaks at the optimizer's lr: set optimizer.lr"})
def onecycle(optimizer, epochs: int, steps_per_epoch: int, pct_start: float = 0.25, div_factor: float = 25.0,
             final_div_factor: float = 1e4, anneal_strategy: str = "cos") -> lr_scheduler.LRScheduler:
    """Ramp up from lr / div_factor to the optimizer's lr (the peak) over `pct_start` of the run, then anneal to
    lr / div_factor / final_div_factor. The optimizer's lr is the one learning rate: there is no separate max_lr."""
    if not 0 < pct_start < 1 or div_factor <= 0 or final_div_factor <= 0 or anneal_strategy not in ("cos", "linear"):
        raise ValueError("pct_start must be in (0, 1), div_factor and final_div_factor > 0, anneal_strategy "
                         f"cos or linear; got {pct_start}, {div_factor}, {final_div_factor}, {anneal_strategy!r}")
    peaks = [group["lr"] for group in optimizer.param_groups]
    return lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                   pct_start=pct_start, div_factor=div_factor,
                                   final_div_factor=final_div_factor, anneal_strategy=anneal_strategy)


@LOSSES.register("nll")
def nll():
    """Negative log-likelihood of log-probabilities (for models ending in LogSoftmax)."""
    return F.nll_loss


NEEDS_LOG_PROBABILITIES = {"nll"}  # losses that are wrong on raw scores (the recipe check runs the model once)


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of the weights (and BatchNorm statistics), updated after every step.

    It warms up as timm's and TensorFlow's model EMA do: after n updates the decay is min(decay, (1 + n) / (10 + n)),
    so the average of a short run is made of its trained weights, not of the random start it began from.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        warm = torch.clamp((1 + updates) / (10 + updates), max=decay)  # a tensor: no host sync
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - warm.to(averaged[0].dtype))
        else:  # integer buffers (BatchNorm's batch counter): follow the model
            torch._foreach_copy_(averaged, current)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


@LOSSES.register("cross_entropy")
def cross_entropy(label_smoothing: float = 0.0):
    """Cross-entropy of logits (log-probabilities work too: log_softmax leaves them unchanged)."""
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")

    def loss(output: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=label_smoothing, reduction=reduction)

    return loss

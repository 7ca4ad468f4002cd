"""Augmentations applied to whole training batches as tensor operations on the device, registered by name.

A factory returns a function batch -> batch for normalized (N, C, H, W) images; `fill` (supplied by the
training code) is the normalized value of a blank pixel, so shifted-in borders look like paper.
"""

import math

import torch
import torch.nn.functional as F

from mnist_kit.registry import Registry

AUGMENTATIONS = Registry("augmentation")


@AUGMENTATIONS.register("affine")
def affine(fill: float, degrees: float = 10.0, scale: float = 0.1, shift: float = 2.0, shear: float = 0.0,
           p: float = 1.0):
    """Random rotation (± degrees), zoom (1 ± scale), shear (± degrees) and shift (± pixels) per image."""
    if degrees < 0 or not 0 <= scale < 1 or shift < 0 or shear < 0 or not 0 <= p <= 1:
        raise ValueError("degrees, shift and shear must be >= 0, scale in [0, 1) and p in [0, 1]")

    def apply(x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape

        def uniform(bound):
            return (torch.rand(n, device=x.device) * 2 - 1) * bound

        on = (torch.rand(n, device=x.device) < p).float()
        angle = uniform(math.radians(degrees)) * on
        shear_angle = uniform(math.radians(shear)) * on
        zoom = 1 + uniform(scale) * on
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear_angle)
        # output -> input sampling matrix in normalized coordinates: (rotation @ shear) / zoom, then a shift
        theta = torch.stack([
            torch.stack([cos / zoom, (cos * tan - sin) / zoom, uniform(2 * shift / width) * on], dim=1),
            torch.stack([sin / zoom, (sin * tan + cos) / zoom, uniform(2 * shift / height) * on], dim=1),
        ], dim=1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill

    return apply


@AUGMENTATIONS.register("elastic")
def elastic(fill: float, alpha: float = 1.0, sigma: float = 4.0, p: float = 0.5):
    """Elastic distortion: a smooth random displacement field (Gaussian-blurred noise, `alpha` pixels strong)."""
    if alpha < 0 or sigma <= 0 or not 0 <= p <= 1:
        raise ValueError("alpha must be >= 0, sigma > 0 and p in [0, 1]")
    radius = max(1, int(3 * sigma))
    kernel_1d = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
    kernel_1d /= kernel_1d.sum()

    def apply(x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        k = kernel_1d.to(x.device, x.dtype)
        noise = torch.rand(n * 2, 1, height, width, device=x.device, dtype=x.dtype) * 2 - 1
        noise = F.conv2d(F.pad(noise, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        noise = F.conv2d(F.pad(noise, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
        noise = noise / noise.flatten(1).abs().amax(dim=1).clamp(min=1e-6).view(-1, 1, 1, 1)  # peak 1
        on = (torch.rand(n, 1, 1, 1, device=x.device) < p).to(x.dtype)
        dx = noise[:n, 0] * on[:, 0] * alpha * 2 / width
        dy = noise[n:, 0] * on[:, 0] * alpha * 2 / height
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height, device=x.device, dtype=x.dtype),
                                torch.linspace(-1, 1, width, device=x.device, dtype=x.dtype), indexing="ij")
        grid = torch.stack([xs + dx, ys + dy], dim=-1)
        return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=True) + fill

    return apply


@AUGMENTATIONS.register("background")
def background(fill: float, level: float = 2.0, p: float = 0.5):
    """Paper that is not blank: with probability p an image's background is lifted to a random grey between blank
    and `level` (in the data's standard deviations above blank: MNIST's 2.0 is a grey of 0.62); ink brighter than
    that grey stays as it is. Photographs on grey paper, MNIST-C's brightness and fog."""
    if level < 0 or not 0 <= p <= 1:
        raise ValueError("level must be >= 0 and p in [0, 1]")

    def apply(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        on = torch.rand(n, 1, 1, 1, device=x.device) < p
        grey = fill + torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * level
        return torch.where(on, torch.maximum(x, grey), x)

    return apply

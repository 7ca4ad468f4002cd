"""MNIST-C-style corruptions of a split, made here: in the spirit of Mu and Gilmer (2019, "MNIST-C": 15 corruptions
of the test split), generated deterministically (one seed per corruption) in batches with torch, not the published
files (which cannot be fetched here) and not their exact parameters. Each maps uint8 images (N, 28, 28), white ink
on black, to uint8 images of the same shape.
"""

import hashlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

SEED = 0  # corruption k draws from the generator seeded with (SEED, k)


def as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float()[:, None] / 255


def as_bytes(images: torch.Tensor) -> torch.Tensor:
    return (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8)


def affine(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Each image (N, 1, H, W) resampled through its own 2x3 matrix (output -> input coordinates, [-1, 1]), black
    outside."""
    grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def signs(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=g).float() * 2 - 1


def shot_noise(x, g):
    """Poisson noise: each pixel's count drawn with a mean of 30 x its brightness."""
    return torch.poisson(x * 30, generator=g) / 30


def impulse_noise(x, g):
    """Salt and pepper: 8% of the pixels set to white or black."""
    hit = torch.rand(x.shape, generator=g) < 0.08
    return torch.where(hit, (torch.rand(x.shape, generator=g) < 0.5).float(), x)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1).float()
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = torch.outer(k, k)
    return (k / k.sum())[None, None]


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = gaussian_kernel(sigma)
    return F.conv2d(x, k, padding=k.shape[-1] // 2)


def glass_blur(x, g):
    """Blurred, then each pixel swapped with a random neighbour within 1 pixel, then blurred again."""
    x = blur(x, 0.5)
    n, _, h, w = x.shape
    for _ in range(1):
        dy, dx = (torch.randint(-1, 2, (n, h, w), generator=g) for _ in range(2))
        rows = (torch.arange(h)[None, :, None] + dy).clamp(0, h - 1)
        cols = (torch.arange(w)[None, None, :] + dx).clamp(0, w - 1)
        x = x[torch.arange(n)[:, None, None], 0, rows, cols][:, None]
    return blur(x, 0.5)


def motion_blur(x, g):
    """Smeared along a line of 5 pixels at one of 8 angles (each image its own)."""
    n = len(x)
    angle = torch.randint(0, 8, (n,), generator=g)
    out = torch.zeros_like(x)
    for a in range(8):
        theta = a * math.pi / 8
        k = torch.zeros(5, 5)
        for t in torch.linspace(-2, 2, 9):
            k[round(2 + float(t) * math.sin(theta)), round(2 + float(t) * math.cos(theta))] = 1
        chosen = angle == a
        if chosen.any():
            out[chosen] = F.conv2d(x[chosen], (k / k.sum())[None, None], padding=2)
    return out


def shear(x, g):
    """Sheared by 0.3 to 0.6 of the height, left or right."""
    n = len(x)
    s = signs(n, g) * (0.3 + 0.3 * torch.rand(n, generator=g))
    m = torch.zeros(n, 2, 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 1] = 1, s, 1
    return affine(x, m)


def scale(x, g):
    """Shrunk to 50-70% or grown to 130-150% about the centre."""
    n = len(x)
    factor = torch.where(torch.rand(n, generator=g) < 0.5, 0.5 + 0.2 * torch.rand(n, generator=g),
                         1.3 + 0.2 * torch.rand(n, generator=g))
    m = torch.zeros(n, 2, 3)
    m[:, 0, 0] = m[:, 1, 1] = 1 / factor
    return affine(x, m)


def rotate(x, g):
    """Turned 30 to 60 degrees either way."""
    n = len(x)
    a = signs(n, g) * torch.deg2rad(30 + 30 * torch.rand(n, generator=g))
    m = torch.stack([torch.stack([a.cos(), -a.sin(), torch.zeros(n)], 1),
                     torch.stack([a.sin(), a.cos(), torch.zeros(n)], 1)], 1)
    return affine(x, m)


def brightness(x, g):
    """Everything brighter by 0.5 of full scale (the background grey)."""
    return x + 0.5


def translate(x, g):
    """Moved 4 to 6 pixels in a random direction."""
    n = len(x)
    a = 2 * math.pi * torch.rand(n, generator=g)
    d = (4 + 2 * torch.rand(n, generator=g)) * 2 / 28
    m = torch.zeros(n, 2, 3)
    m[:, 0, 0] = m[:, 1, 1] = 1
    m[:, 0, 2], m[:, 1, 2] = d * a.cos(), d * a.sin()
    return affine(x, m)


def stripe(x, g):
    """A vertical band 3 to 5 pixels wide inverted."""
    n, _, h, w = x.shape
    left = torch.randint(4, w - 9, (n,), generator=g)
    width = torch.randint(3, 6, (n,), generator=g)
    cols = torch.arange(w)[None]
    band = ((cols >= left[:, None]) & (cols < (left + width)[:, None]))[:, None, None, :].expand_as(x)
    return torch.where(band, 1 - x, x)


def fog(x, g):
    """Low-frequency grey clouds added (noise at 4x4 and 7x7, bilinearly upsampled)."""
    n, _, h, w = x.shape
    clouds = sum(F.interpolate(torch.rand(n, 1, s, s, generator=g), size=(h, w), mode="bilinear",
                               align_corners=False) / (i + 1) for i, s in enumerate((4, 7)))
    return x + 0.5 * clouds


def strokes_mask(n: int, h: int, w: int, g: torch.Generator, points: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) mask of given points (N, P, 2) in pixel coordinates."""
    mask = torch.zeros(n, h * w)
    y, x = points[..., 0].round().long(), points[..., 1].round().long()
    inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    flat = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1))
    mask.scatter_(1, flat, inside.float())
    return mask.view(n, 1, h, w)


def line_points(n: int, g: torch.Generator, count: int, h: int, w: int, zigzag: bool) -> torch.Tensor:
    """Points along one random line (or zigzag) across each image."""
    start, end = torch.rand(n, 1, 2, generator=g) * torch.tensor([h, w]), torch.rand(n, 1, 2, generator=g) * \
        torch.tensor([h, w])
    t = torch.linspace(0, 1, count)[None, :, None]
    points = start + t * (end - start)
    if zigzag:
        normal = torch.stack([-(end - start)[..., 1], (end - start)[..., 0]], -1)
        normal = normal / normal.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        wave = 2.5 * torch.sign(torch.sin(t * 6 * math.pi))
        points = points + wave * normal
    return points


def dotted_line(x, g):
    """A random dotted line across the image (every third pixel of it)."""
    n, _, h, w = x.shape
    mask = strokes_mask(n, h, w, g, line_points(n, g, 40, h, w, zigzag=False)[:, ::3])
    return torch.maximum(x, mask)


def zigzag(x, g):
    """A random zigzag line across the image."""
    n, _, h, w = x.shape
    mask = strokes_mask(n, h, w, g, line_points(n, g, 80, h, w, zigzag=True))
    return torch.maximum(x, mask)


def spatter(x, g):
    """Grey droplets: about 8 soft blobs of 1 to 2 pixels' radius (a separable Gaussian per blob)."""
    n, _, h, w = x.shape
    count = 10
    centres = torch.rand(n, count, 2, generator=g) * torch.tensor([h, w])
    radius = 1 + torch.rand(n, count, generator=g)
    keep = (torch.rand(n, count, generator=g) < 0.8).float()
    rows = torch.exp(-(torch.arange(h).float() - centres[..., :1]) ** 2 / (2 * radius[..., None] ** 2))  # N, C, H
    cols = torch.exp(-(torch.arange(w).float() - centres[..., 1:]) ** 2 / (2 * radius[..., None] ** 2))  # N, C, W
    drops = torch.zeros(n, h, w)
    for blob in range(count):  # one outer product per blob, all images at once
        drops = torch.maximum(drops, keep[:, blob, None, None] * rows[:, blob, :, None] * cols[:, blob, None, :])
    return torch.maximum(x, 0.7 * drops[:, None])


def edges(x, g):
    """The outlines only: Sobel gradient magnitude, thresholded (MNIST-C used Canny; this is the simpler
    cousin)."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
    gx, gy = F.conv2d(x, kx, padding=1), F.conv2d(x, kx.transpose(2, 3), padding=1)
    return ((gx ** 2 + gy ** 2).sqrt() > 1.0).float()


CORRUPTIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "shot noise": shot_noise, "impulse noise": impulse_noise, "glass blur": glass_blur, "motion blur": motion_blur,
    "shear": shear, "scale": scale, "rotate": rotate, "brightness": brightness, "translate": translate,
    "stripe": stripe, "fog": fog, "spatter": spatter, "dotted line": dotted_line, "zigzag": zigzag,
    "canny edges": edges,
}


def corrupted(images: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 images (N, 28, 28) with one corruption applied, the same every time (kept for the process: a report
    over several runs corrupts the split once)."""
    key = (name, hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest())
    if key not in MADE:
        g = torch.Generator().manual_seed(SEED * 1000 + list(CORRUPTIONS).index(name))
        MADE[key] = as_bytes(CORRUPTIONS[name](as_float(images), g))
    return MADE[key].clone()


MADE: dict[tuple[str, str], torch.Tensor] = {}  # (corruption, SHA-256 of the images) -> corrupted images

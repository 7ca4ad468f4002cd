"""Classify a user's own digit images: preprocess them the way MNIST was made, then run the model."""

import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_kit.atomic import write_bytes_atomic
from mnist_kit.errors import UserError

MAX_PIXELS = 40_000_000  # refuse larger images (decompression bombs): a 12-megapixel photo is well inside
MAX_BYTES = 100 * 2**20
BOX, SIDE = 20, 28  # MNIST: the digit scaled into a 20x20 box, centred by mass in 28x28
MIN_CONTRAST = 0.15  # ink must differ from the paper by this much (of full scale) to count as ink
INK_THRESHOLD = 0.2  # after contrast stretching, paper texture and noise below this are cleared
WORK_SIDE = 400  # big photos are first shrunk to this longer side (pixels)
TARGET_STROKE = 2.0  # MNIST stroke width in pixels of the 20x20 box; thinner strokes are thickened


def read_gray(path: Path | str) -> np.ndarray:
    """Any PNG/JPEG/BMP/GIF (RGB, RGBA, palette, 16-bit) as float grey levels in [0, 1], ink as drawn."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: a folder, not an image file")
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():  # a device (/dev/zero), a pipe: reading it would never end
        raise UserError(f"{path}: not a regular file (a device or a pipe), not an image")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise UserError(f"{path}: {size / 2**20:.0f} MiB is too large for a digit image")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read: {error.strerror or error}") from None
    return decode_gray(data, str(path))


def decode_gray(data: bytes, name: str = "image") -> np.ndarray:
    """Image file bytes as float grey levels in [0, 1]: the one decoder behind predict and serve."""
    if not data:
        raise UserError(f"{name}: empty file")
    if len(data) > MAX_BYTES:
        raise UserError(f"{name}: {len(data) / 2**20:.0f} MiB is too large for a digit image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise UserError(f"{name}: {image.width}x{image.height} pixels is over the limit of "
                                f"{MAX_PIXELS:,} (a decompression bomb?)")
            image.seek(0)  # first frame of an animated GIF
            image = ImageOps.exif_transpose(image)
            return to_gray(image)
    except UnidentifiedImageError:
        raise UserError(f"{name}: not an image PIL can read (PNG, JPEG, BMP, GIF)") from None
    except Image.DecompressionBombError:
        raise UserError(f"{name}: too many pixels (over {MAX_PIXELS:,}): a decompression bomb?") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UserError(f"{name}: cannot decode image: {error}") from error


def to_gray(image: Image.Image) -> np.ndarray:
    """A PIL image as float grey in [0, 1]; transparent pixels become the colour that contrasts with the ink."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        return values / (65535.0 if values.max() > 255 else 255.0)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("it has pixels that are not finite numbers (NaN or inf)")
        return (values - values.min()) / max(np.ptp(values), 1e-12)
    if image.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255
        gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        alpha = rgba[..., 3]
        if alpha.min() < 1:  # drawn on a transparent canvas: the opaque strokes are the ink
            ink_is_dark = np.average(gray, weights=alpha + 1e-9) < 0.5
            background = 1.0 if ink_is_dark else 0.0
            return gray * alpha + background * (1 - alpha)
        return gray
    return np.asarray(image.convert("L"), dtype=np.float64) / 255


def shrink(gray: np.ndarray, longest: int = WORK_SIDE) -> np.ndarray:
    """Downscale (antialiased) so the longer side is at most `longest`: plenty for a 20-pixel digit."""
    scale = longest / max(gray.shape)
    if scale >= 1:
        return gray
    size = tuple(max(1, round(side * scale)) for side in gray.shape)
    tensor = torch.from_numpy(gray).float()[None, None]
    return F.interpolate(tensor, size=size, mode="bilinear", antialias=True)[0, 0].double().numpy()


def ink_image(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """Ink as bright on dark in [0, 1]: dark ink on light paper is inverted, uneven lighting and paper cleared."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    light_paper = float(np.median(border)) > 0.5
    darkness = torch.from_numpy(gray if light_paper else 1 - gray).float()[None, None]
    # the paper's own brightness, wherever it is: a max filter wider than any stroke, then smoothed
    k = max(3, max(gray.shape) // 6) | 1
    paper = F.avg_pool2d(F.max_pool2d(darkness, k, 1, k // 2), k, 1, k // 2, count_include_pad=False)
    ink = (paper - darkness).clamp(min=0)[0, 0].double().numpy()
    peak = float(np.percentile(ink, 99.9))
    if peak < MIN_CONTRAST:
        raise UserError(f"{name}: no ink found (the image is almost one flat colour)")
    ink = np.clip(ink / peak, 0, 1)
    return np.where(ink > INK_THRESHOLD, (ink - INK_THRESHOLD) / (1 - INK_THRESHOLD), 0.0)


def ink_bounds(ink: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns that hold the digit; lines with under 2% of the busiest line's ink (specks) are left out."""
    bounds = []
    for axis in (1, 0):
        mass = ink.sum(axis=axis)
        keep = np.nonzero(mass > 0.02 * mass.max())[0]
        bounds.append(slice(keep.min(), keep.max() + 1))
    return bounds[0], bounds[1]


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the ink area over the ink's perimeter (a long stroke of width w)."""
    mask = ink > 0.5
    padded = np.pad(mask, 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    edge = mask.sum() - interior.sum()
    return 2 * mask.sum() / max(edge, 1)


def mnist_like(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """A 28x28 float image in [0, 1] made as MNIST was: crop to the ink, fit 20x20, centre by mass."""
    ink = ink_image(shrink(gray), name)
    digit = ink[ink_bounds(ink)]
    scale = BOX / max(digit.shape)
    width = stroke_width(digit) * scale
    tensor = torch.from_numpy(digit).float()[None, None]
    if width < TARGET_STROKE and scale < 1:  # thin pen on a big image: thicken before shrinking
        grow = math.ceil((TARGET_STROKE - width) / scale) | 1
        tensor = F.max_pool2d(tensor, grow, stride=1, padding=grow // 2)
    height, wide = (max(1, round(s * scale)) for s in digit.shape)
    small = F.interpolate(tensor, size=(height, wide), mode="bilinear", antialias=scale < 1, align_corners=False)
    small = (small[0, 0] / small.max().clamp(min=1e-6)).clamp(0, 1).numpy()
    canvas = np.zeros((SIDE, SIDE))
    mass_y, mass_x = (np.indices(small.shape) * small).reshape(2, -1).sum(axis=1) / small.sum()
    # MNIST digits have their centre of mass at pixel (14, 14) (measured: 13.99, 14.01 on the test split)
    top = int(np.clip(round(SIDE / 2 - mass_y), 0, SIDE - small.shape[0]))
    left = int(np.clip(round(SIDE / 2 - mass_x), 0, SIDE - small.shape[1]))
    canvas[top: top + small.shape[0], left: left + small.shape[1]] = small
    return canvas


def gray_png(image: np.ndarray) -> bytes:
    """A [0, 1] grey image as the bytes of an 8-bit PNG of the same size."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def save_gray_png(image: np.ndarray, path: Path | str) -> Path:
    """A [0, 1] grey image as an 8-bit PNG of the same size (what the model saw), written atomically."""
    return write_bytes_atomic(path, gray_png(image))


def save_input(canvas: np.ndarray, folder: Path, stem: str, results: list[dict]) -> None:
    """Write what the model saw as FOLDER/<stem>-input.png (-2, -3... when two images share a stem); the
    entry of the image it belongs to (the last in `results`) records where."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--show-input {folder}: a file, not a folder")
    taken = {entry.get("input") for entry in results}
    path = folder / f"{stem}-input.png"
    for n in range(2, len(results) + 3):
        if str(path) not in taken:
            break
        path = folder / f"{stem}-{n}-input.png"
    try:
        save_gray_png(canvas, path)
    except OSError as error:
        raise UserError(f"--show-input {folder}: cannot write {path.name}: {error.strerror or error}") from None
    results[-1]["input"] = str(path)


def normalize_image(image: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """A 28x28 [0, 1] image as a (1, 1, 28, 28) model input (quantized to bytes as MNIST's pixels are)."""
    quantized = np.round(image * 255) / 255
    return ((torch.from_numpy(quantized).float() - mean) / std)[None, None]


@torch.inference_mode()
def classify(model, inputs: torch.Tensor, classes: list[str], top_k: int) -> list[dict]:
    """Top-k classes with probabilities for a batch of model inputs."""
    probabilities = model(inputs).float().softmax(dim=1)
    values, indices = probabilities.topk(min(top_k, len(classes)), dim=1)
    return [{"digit": classes[idx[0]], "probability": val[0].item(),
             "top_k": [{"digit": classes[i], "probability": v.item()} for v, i in zip(val, idx)]}
            for val, idx in zip(values, indices.tolist())]


def predict_files(path: Path | str, images: list[Path | str], top_k: int = 3,
                  show_input: Path | str | None = None) -> list[dict]:
    """Classify image files with a run's model; a file that fails gets an 'error' entry, the rest go on."""
    from mnist_kit.runs import build_run_model, find_run

    run = find_run(path)
    model = build_run_model(run)
    data = run.metadata["data"]
    results, inputs, ok = [], [], []
    for image in images:
        try:
            canvas = mnist_like(read_gray(image), str(image))
        except UserError as error:
            results.append({"file": str(image), "error": str(error)})
            continue
        results.append({"file": str(image)})
        if show_input:
            save_input(canvas, Path(show_input), Path(image).stem, results)
        inputs.append(normalize_image(canvas, data["mean"], data["std"]))
        ok.append(results[-1])
    if inputs:
        for entry, prediction in zip(ok, classify(model, torch.cat(inputs), run.classes, top_k)):
            entry.update(prediction)
    return results

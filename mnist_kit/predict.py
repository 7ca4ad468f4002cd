"""Classify a user's own digit images: decode them within bounded memory and preprocess them the way MNIST was made
(white ink centred by mass in 28x28); the model that answers is a mnist_kit.inference.Predictor."""

import functools
import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from mnist_kit.atomic import write_bytes_atomic
from mnist_kit.errors import UserError
from mnist_kit.inference import SIDE, Predictor, open_predictor

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # what users send; no decoder that runs a program (EPS)
MAX_PIXELS = 16_000_000  # decoded at full size (PNG, GIF, BMP, WebP, TIFF): at most 64 MB as RGBA bytes
MAX_JPEG_PIXELS = 64_000_000  # a JPEG decodes at 1/2 to 1/8 of its size straight away (draft mode)
SERVE_MAX_PIXELS = 4_000_000  # the draw page sends a 280x280 canvas; the server decodes at most this much whole (a
# baseline JPEG decodes at 1/8 first, so it may have MAX_JPEG_PIXELS; a progressive one cannot, so it may not)
MAX_BYTES = 100 * 2**20
BOX = 20  # MNIST: the digit scaled into a 20x20 box, centred by mass in SIDE x SIDE (28x28)
MIN_CONTRAST = 0.15  # ink must differ from the paper by this much (of full scale) to count as ink
INK_THRESHOLD = 0.2  # after contrast stretching, paper texture and noise below this are cleared
WORK_SIDE = 400  # big photos are first shrunk to this longer side (pixels)
DECODE_SIDE = 2 * WORK_SIDE  # decoded images are box-reduced to at most this longer side before they become floats
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the turn that shows the image upright
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


def decode_gray(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS,
                max_jpeg_pixels: int = MAX_JPEG_PIXELS) -> np.ndarray:
    """Image file bytes as float grey levels in [0, 1], at most DECODE_SIDE on its longer side: the one decoder
    behind predict and serve. Memory stays bounded: a JPEG decodes at a fraction of its size, other formats are
    capped at `max_pixels` and box-reduced as bytes before anything becomes a float."""
    if not data:
        raise UserError(f"{name}: empty file")
    if len(data) > MAX_BYTES:
        raise UserError(f"{name}: {len(data) / 2**20:.0f} MiB is too large for a digit image")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            # a baseline JPEG decodes at 1/8 of its size (draft mode); a progressive one holds all its coefficients
            # (~6 bytes a pixel at 4:4:4) whatever the scale, so it gets the limit of the formats decoded whole
            progressive = image.format == "JPEG" and bool(image.info.get("progressive"))
            limit = max_jpeg_pixels if image.format == "JPEG" and not progressive else max_pixels
            if image.width * image.height > limit:
                raise UserError(f"{name}: {image.width}x{image.height} is {image.width * image.height:,} pixels, over "
                                f"the limit of {limit:,} for a {'progressive ' * progressive}{image.format} image")
            image.seek(0)  # first frame of an animated GIF
            orientation = image.getexif().get(274, 1)  # EXIF Orientation
            if image.format == "JPEG":
                image.draft(image.mode, (DECODE_SIDE, DECODE_SIDE))  # decode at 1/2, 1/4 or 1/8 of the size
            small = reduced(image)
            return to_gray(small.transpose(TRANSPOSE[orientation]) if orientation in TRANSPOSE else small)
    except UnidentifiedImageError:
        raise UserError(f"{name}: not an image in a format accepted here ({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError:
        raise UserError(f"{name}: too many pixels (over {max_pixels:,}): a decompression bomb?") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UserError(f"{name}: cannot decode image: {error}") from error


def image_pixels(data: bytes) -> int:
    """How many pixels an image file says it has, from its header alone (0 when it is not one: decoding says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            return image.width * image.height
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError):
        return 0


def reduced(image: Image.Image) -> Image.Image:
    """The image in a mode Pillow can box-reduce (L, RGB, RGBA, I, F), reduced so its longer side is at most
    DECODE_SIDE: averaging bytes, so a large image never exists as floats."""
    if image.mode in ("I;16", "I;16B", "I;16L"):
        image = image.convert("I")
    elif image.mode in ("P", "PA", "LA", "La", "RGBa") or "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode not in ("L", "RGB", "RGBA", "I", "F"):
        image = image.convert("RGB")  # 1-bit, CMYK, YCbCr, LAB, HSV
    factor = -(-max(image.size) // DECODE_SIDE)
    return image.reduce(factor) if factor > 1 else image


def to_gray(image: Image.Image) -> np.ndarray:
    """A (small) PIL image as float32 grey in [0, 1]; transparent pixels become the colour that contrasts with the
    ink."""
    if image.mode == "I":
        values = np.asarray(image, dtype=np.float32)
        return values / (65535.0 if values.max() > 255 else 255.0)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ValueError("it has pixels that are not finite numbers (NaN or inf)")
        return (values - values.min()) / max(float(np.ptp(values)), 1e-12)
    if image.mode == "RGBA":
        rgba = np.asarray(image, dtype=np.float32) / 255
        gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        alpha = rgba[..., 3]
        if alpha.min() < 1:  # drawn on a transparent canvas: the opaque strokes are the ink
            ink_is_dark = np.average(gray, weights=alpha + 1e-9) < 0.5
            background = 1.0 if ink_is_dark else 0.0
            return gray * alpha + background * (1 - alpha)
        return gray
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def shrink(gray: np.ndarray, longest: int = WORK_SIDE) -> np.ndarray:
    """Downscale (antialiased) so the longer side is at most `longest`: plenty for a 20-pixel digit."""
    scale = longest / max(gray.shape)
    if scale >= 1:
        return gray
    size = tuple(max(1, round(side * scale)) for side in gray.shape)
    tensor = torch.from_numpy(gray).float()[None, None]
    return F.interpolate(tensor, size=size, mode="bilinear", antialias=True)[0, 0].numpy()


def running_max(x: np.ndarray, k: int, axis: int) -> np.ndarray:
    """The max over a centred window of k (odd) pixels along `axis`, edges padded with -inf: max_pool2d's numbers
    in about log2(k) array maxima whatever k is (windows of 1, 2, 4 ... pixels, then two that overlap to k)."""
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    windows, width = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(k // 2, k // 2)], constant_values=-np.inf), 1
    while 2 * width <= k:
        windows, width = np.maximum(windows[..., :-width], windows[..., width:]), 2 * width
    return np.moveaxis(np.maximum(windows[..., :n], windows[..., k - width:k - width + n]), -1, axis)


@functools.lru_cache(maxsize=16)
def box_mean_matrix(n: int, k: int) -> np.ndarray:
    """(n, n): row i averages the pixels within k // 2 of pixel i that lie inside the image (avg_pool with
    count_include_pad=False), so a matrix product is a running mean along one axis."""
    index = np.arange(n)
    inside = (np.abs(index[:, None] - index[None, :]) <= k // 2).astype(np.float32)
    return inside / inside.sum(axis=1, keepdims=True)


def box_mean(x: np.ndarray, k: int) -> np.ndarray:
    """The mean over a centred k x k window, counting only pixels inside the image: two matrix products (on a
    2-core CPU about twice as fast as cumulative sums along each axis; the same numbers to 1e-6)."""
    rows, columns = (torch.from_numpy(box_mean_matrix(n, k)) for n in x.shape)  # torch's threads, not numpy's BLAS
    return (rows @ torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) @ columns.T).numpy()


def ink_image(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """Ink as bright on dark in [0, 1]: dark ink on light paper is inverted, uneven lighting and paper cleared."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    light_paper = float(np.median(border)) > 0.5
    darkness = (gray if light_paper else 1 - gray).astype(np.float32)
    # the paper's own brightness, wherever it is: a k x k max filter wider than any stroke (a pass along each axis),
    # then a k x k mean
    k = max(3, max(gray.shape) // 6) | 1
    paper = running_max(running_max(darkness, k, 0), k, 1)
    paper = box_mean(paper, k)
    ink = np.clip(paper - darkness, 0, None)
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
    if width < TARGET_STROKE and scale < 1:  # thin pen on a big image: thicken before shrinking (a square max
        grow = math.ceil((TARGET_STROKE - width) / scale) | 1  # filter, as two running maxima: max_pool2d's numbers)
        digit = running_max(running_max(digit.astype(np.float32), grow, 0), grow, 1)
    tensor = torch.from_numpy(np.ascontiguousarray(digit)).float()[None, None]
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


def predict_files(model: Path | str | Predictor, images: list[Path | str], top_k: int = 3,
                  show_input: Path | str | None = None) -> list[dict]:
    """Classify image files with a model (a run folder, its weights, a Hub folder, an exported .onnx file alone, or
    an open Predictor); a file that fails gets an 'error' entry, the rest go on."""
    predictor = model if isinstance(model, Predictor) else open_predictor(model)
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
        inputs.append(predictor.normalized_canvas(canvas))
        ok.append(results[-1])
    if inputs:
        for entry, prediction in zip(ok, predictor.top_k(torch.cat(inputs), top_k)):
            entry.update(prediction, calibrated=predictor.calibrated)
    return results

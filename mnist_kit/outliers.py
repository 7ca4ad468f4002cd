"""Images that are not digits, made here and deterministically (a seed per set), to measure and choose how a model says
"not a digit": shapes, letters and scribbles drawn with PIL on paper as a user draws, photographed variants of them
(paper, lighting, blur, noise, JPEG), glyphs of other scripts and symbols (to train on, never Latin letters), the
letters again in other fonts (to measure on), and Fashion-MNIST's clothes. Each becomes a 28x28 input the way
predict makes one (mnist_kit.predict.mnist_like), so the model sees them as it sees a user's image.

Which set chooses and which only measures is the caller's to keep apart: mnist_kit.verdict chooses on `shapes`
(and validation digits), never on the others.
"""

import functools
import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mnist_kit.atomic import write_bytes_atomic
from mnist_kit.errors import UserError
from mnist_kit.predict import decode_gray, mnist_like

PAPER = 280  # drawings are made on a 280x280 page, as the draw page's canvas
DRAWN = ("shapes", "letters", "scribbles")
# photos: letters, shapes and scribbles photographed (a seed range of their own); letters-dejavu: the same letters in
# the DejaVu fonts, to measure a model trained on the letters above (Pillow's own font) on a font it never saw
SETS = (*DRAWN, "photos", "glyphs", "letters-dejavu")
# capital and small letters that no digit is written like (no O/o/D, I/l/i/j, Z/z, S/s, B, G/b/g/q, T/t, J, L, y)
LETTERS = "ACEFHKMNPRUVWXYaefhkmnruvwx"
# Letters of other scripts (Greek, Cyrillic, Hebrew), symbols and pictograms that outlier exposure may train on, so
# that the Latin letters above stay a family no model saw: none is written like a Latin letter of any case (no Α/α/a,
# Η/η/n, Ρ/ρ, Χ/χ, Ν/ν, μ/u, ω/w, И/N or Я/R mirrored, Λ/A, כ/C, ¥/Y, €, ©, ✓, ∪) or like a digit (no θ/Θ, δ, σ, ε,
# ζ, Б/б, З, Ч, Э, Ь, ו/ן/ז, ס, ד, /, |, $, §)
GLYPHS = ("βγλξπφψΓΔΞΠΣΦΨΩДЖЛЦШЩЫЮджлфцшщыю" "אגלמפצת"
          "&@#%*+=~∞≠±√∂∇≈÷¶♠♣♥♦☺★☀☁☂☃☯☮⚓✈✂☎♞♛♜⌘♫☠")
GLYPH_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
               "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf")  # the fonts matplotlib ships, where they have the glyph
SHAPES = ("star", "triangle", "heart", "grid", "arrow", "smiley", "spiral", "zigzag", "house", "cross-hatch")


def pen(rng: np.random.Generator) -> int:
    """A stroke width in page pixels: a felt pen to a marker."""
    return int(rng.integers(8, 22))


def shape_points(kind: str, rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """The strokes of a shape as polylines in [-1, 1]^2 (y down)."""
    turn = rng.uniform(0, 2 * math.pi)
    if kind == "star":
        angles = [turn + i * 4 * math.pi / 5 for i in range(6)]
        return [[(math.cos(a), math.sin(a)) for a in angles]]
    if kind == "triangle":
        angles = [turn + i * 2 * math.pi / 3 for i in range(4)]
        return [[(math.cos(a), math.sin(a)) for a in angles]]
    if kind == "heart":
        t = np.linspace(0, 2 * math.pi, 60)
        x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [list(zip(x / 17, y / 17))]
    if kind == "grid":  # a hash sign
        a, b = rng.uniform(0.2, 0.5, 2)
        return [[(-a, -1), (-a, 1)], [(a, -1), (a, 1)], [(-1, -b), (1, -b)], [(-1, b), (1, b)]]
    if kind == "arrow":
        return [[(-1, 0), (1, 0)], [(0.4, -0.5), (1, 0), (0.4, 0.5)]]
    if kind == "smiley":
        t = np.linspace(0, 2 * math.pi, 50)
        mouth = np.linspace(0.2 * math.pi, 0.8 * math.pi, 20)
        return [list(zip(np.cos(t), np.sin(t))), [(-0.35, -0.3), (-0.33, -0.28)], [(0.35, -0.3), (0.33, -0.28)],
                list(zip(0.55 * np.cos(mouth), 0.55 * np.sin(mouth)))]
    if kind == "spiral":
        t = np.linspace(0, rng.uniform(3, 5) * math.pi, 120)
        return [list(zip(t / t[-1] * np.cos(t + turn), t / t[-1] * np.sin(t + turn)))]
    if kind == "zigzag":
        n = int(rng.integers(4, 8))
        return [[(-1 + 2 * i / n, 0.5 * (-1) ** i) for i in range(n + 1)]]
    if kind == "house":
        return [[(-0.7, 1), (-0.7, -0.1), (0, -0.9), (0.7, -0.1), (0.7, 1), (-0.7, 1)], [(-0.7, -0.1), (0.7, -0.1)]]
    if kind == "cross-hatch":
        lines = []
        for i in np.linspace(-0.8, 0.8, int(rng.integers(3, 6))):
            lines += [[(i - 0.4, -1), (i + 0.4, 1)], [(-1, i - 0.3), (1, i + 0.3)]]
        return lines
    raise ValueError(kind)


def jitter(strokes: list[list[tuple[float, float]]], rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """A hand's version of exact strokes: scaled, sheared and turned a little, each point moved a little."""
    scale, shear, turn = rng.uniform(0.7, 1.0, 2), rng.uniform(-0.2, 0.2), rng.uniform(-0.3, 0.3)
    c, s = math.cos(turn), math.sin(turn)
    out = []
    for stroke in strokes:
        points = np.asarray(stroke, dtype=float) * scale
        points[:, 0] += shear * points[:, 1]
        points = points @ np.array([[c, s], [-s, c]]) + rng.normal(0, 0.02, points.shape)
        out.append([tuple(p) for p in points])
    return out


def page(strokes: list[list[tuple[float, float]]], width: int) -> Image.Image:
    """Strokes in [-1, 1]^2 drawn in black on a white page."""
    image = Image.new("L", (PAPER, PAPER), 255)
    draw = ImageDraw.Draw(image)
    half, margin = PAPER / 2, PAPER * 0.4
    for stroke in strokes:
        points = [(half + x * margin, half + y * margin) for x, y in stroke]
        draw.line(points, fill=0, width=width, joint="curve")
        for x, y in (points[0], points[-1]):  # round ends, as a pen leaves
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=0)
    return image


def letter_page(letter: str, rng: np.random.Generator) -> Image.Image:
    """A letter in Pillow's own font (the same on every machine), turned and sheared a little, on a white page."""
    return text_page(letter, ImageFont.load_default(size=int(rng.integers(150, 220))), rng)


def font_file(name: str) -> Path:
    """One of the fonts matplotlib ships (a dependency, so the same wherever mnist-kit is installed)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name


@functools.cache
def characters_in(name: str) -> frozenset[int]:
    """The code points a font has a glyph for."""
    from fontTools.ttLib import TTFont  # matplotlib's own dependency

    return frozenset(TTFont(font_file(name), lazy=True).getBestCmap())


def fonts_with(glyph: str) -> tuple[str, ...]:
    """The GLYPH_FONTS that draw `glyph` (not every font has Hebrew or pictograms: a missing one draws a box)."""
    return tuple(name for name in GLYPH_FONTS if ord(glyph) in characters_in(name))


def glyph_page(glyph: str, rng: np.random.Generator) -> Image.Image:
    """A glyph in one of the fonts that have it, drawn as a letter is."""
    names = fonts_with(glyph)
    font = ImageFont.truetype(str(font_file(names[int(rng.integers(len(names)))])), size=int(rng.integers(130, 200)))
    return text_page(glyph, font, rng)


def text_page(text: str, font: ImageFont.FreeTypeFont, rng: np.random.Generator) -> Image.Image:
    """Text centred on a white page, drawn thicker by a random stroke, then sheared and turned a little."""
    image = Image.new("L", (PAPER, PAPER), 255)
    draw = ImageDraw.Draw(image)
    draw.text((PAPER / 2, PAPER / 2), text, fill=0, font=font, anchor="mm", stroke_width=int(rng.integers(0, 6)),
              stroke_fill=0)
    shear = rng.uniform(-0.25, 0.25)
    image = image.transform(image.size, Image.Transform.AFFINE, (1, shear, -shear * PAPER / 2, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR, fillcolor=255)
    return image.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR, fillcolor=255)


def scribble_strokes(rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """Two to four smooth random strokes across the page."""
    strokes = []
    for _ in range(int(rng.integers(2, 5))):
        knots = rng.uniform(-1, 1, (int(rng.integers(3, 6)), 2))
        t = np.linspace(0, len(knots) - 1, 40)
        strokes.append(list(zip(np.interp(t, range(len(knots)), knots[:, 0]),
                                np.interp(t, range(len(knots)), knots[:, 1]))))
    return strokes


def letter_at(index: int) -> str:
    """The letter the index-th image of the letters set shows (the set cycles through LETTERS)."""
    return LETTERS[index % len(LETTERS)]


def drawing(kind: str, index: int, rng: np.random.Generator) -> Image.Image:
    """The index-th drawing of a set (cycling through its shapes or letters) as a white page with black ink."""
    if kind == "letters":
        return letter_page(letter_at(index), rng)
    if kind == "letters-dejavu":
        return glyph_page(letter_at(index), rng)  # every GLYPH_FONT has the Latin letters
    if kind == "glyphs":
        return glyph_page(GLYPHS[index % len(GLYPHS)], rng)
    if kind == "shapes":
        return page(jitter(shape_points(SHAPES[index % len(SHAPES)], rng), rng), pen(rng))
    if kind == "scribbles":
        return page(scribble_strokes(rng), pen(rng))
    raise ValueError(kind)


def photographed(image: Image.Image, rng: np.random.Generator) -> bytes:
    """A drawing as a phone photo of paper: grey paper lit unevenly, ink not quite black, blur, noise, JPEG."""
    ink = 1 - np.asarray(image, dtype=np.float32) / 255
    y, x = np.mgrid[0:PAPER, 0:PAPER] / PAPER
    light = rng.uniform(0.55, 0.9) + rng.uniform(-0.15, 0.15) * x + rng.uniform(-0.15, 0.15) * y
    grey = light * (1 - ink * rng.uniform(0.6, 0.9)) + rng.normal(0, 0.02, ink.shape)
    photo = Image.fromarray(np.clip(grey * 255, 0, 255).astype(np.uint8), mode="L")
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    buffer = io.BytesIO()
    photo.convert("RGB").save(buffer, format="JPEG", quality=int(rng.integers(60, 90)))
    return buffer.getvalue()


def outlier_images(kind: str, count: int, seed: int = 0) -> np.ndarray:
    """`count` 28x28 [0, 1] inputs (N, 28, 28) of one set, made as predict makes a user's image; the same seed gives
    the same images. Fashion-MNIST is not made here (mnist_kit.data loads it)."""
    if kind not in SETS:
        raise UserError(f"unknown outlier set {kind!r}; known: {', '.join(SETS)}")
    rng = np.random.default_rng([seed, SETS.index(kind)])
    images = []
    for index in range(count):
        if kind == "photos":
            source = DRAWN[index % len(DRAWN)]
            gray = decode_gray(photographed(drawing(source, index // len(DRAWN), rng), rng), "photo")
        else:
            gray = np.asarray(drawing(kind, index, rng), dtype=np.float32) / 255
        images.append(mnist_like(gray, kind))
    return np.stack(images).astype(np.float32)


TRAINING_SEED = 1  # outlier exposure draws with this seed; choosing (mnist_kit.verdict) with 0, measuring with 2
GENERATOR_VERSION = 1  # part of a cached set's file name: a change to the drawings above makes new files


def cached_outliers(kind: str, count: int, seed: int, root: Path) -> torch.Tensor:
    """A drawn set as uint8 pixels (N, 28, 28), made once and kept in the data folder (ROOT/outliers): making one
    image takes ~13 ms, a run may want thousands."""
    path = root / "outliers" / f"{kind}-{count}-seed{seed}-v{GENERATOR_VERSION}.npy"
    if path.is_file():
        try:
            pixels = np.load(path, allow_pickle=False)  # data only: a pickle is never opened
            if pixels.shape == (count, 28, 28) and pixels.dtype == np.uint8:
                return torch.from_numpy(pixels)
        except (OSError, ValueError):
            pass  # a broken cache is made again
    pixels = np.round(outlier_images(kind, count, seed) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    np.save(buffer, pixels, allow_pickle=False)
    try:
        write_bytes_atomic(path, buffer.getvalue())
    except OSError:
        pass  # a read-only data folder: the set is made again next time
    return torch.from_numpy(pixels)


def training_outliers(settings: dict, data_dir=None) -> torch.Tensor:
    """The non-digit images a recipe's train.outliers names, as uint8 pixels (N, 28, 28): Fashion-MNIST's training
    split (fetched and verified as any data set) and `images` drawn of each drawn set."""
    from mnist_kit.data import data_root, load_dataset

    parts = [load_dataset("fashion-mnist", data_dir).train_images if name == "fashion-mnist" else
             cached_outliers(name, settings.get("images", 5000), TRAINING_SEED, data_root(data_dir))
             for name in settings["sets"]]
    return torch.cat(parts)

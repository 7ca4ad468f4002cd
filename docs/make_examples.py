"""Make digit images the way users do: mouse drawings, pens on photographed paper, printed digits.

    python docs/make_examples.py DIR [--all]

Without --all: the six small examples the README shows (committed under docs/examples/).
With --all: every digit 0-9 in each of the five styles (50 files), to measure `mnist-kit predict`.
Deterministic (seeded). Strokes are drawn as a person would trace each digit, with hand jitter.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONTS = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf"]
# one stroke path per digit, in a unit box (x right, y down), the way it is usually written
STROKES = {
    0: [(0.5, 0.05), (0.2, 0.2), (0.12, 0.5), (0.2, 0.8), (0.5, 0.95), (0.8, 0.8), (0.88, 0.5), (0.8, 0.2),
        (0.5, 0.05)],
    1: [(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)],
    2: [(0.15, 0.25), (0.3, 0.08), (0.6, 0.05), (0.82, 0.2), (0.78, 0.45), (0.15, 0.95), (0.88, 0.95)],
    3: [(0.15, 0.12), (0.5, 0.04), (0.8, 0.18), (0.72, 0.4), (0.45, 0.5), (0.8, 0.62), (0.82, 0.85), (0.5, 0.96),
        (0.15, 0.88)],
    4: [(0.6, 0.95), (0.6, 0.05), (0.1, 0.65), (0.9, 0.65)],
    5: [(0.82, 0.06), (0.25, 0.06), (0.2, 0.45), (0.55, 0.38), (0.82, 0.55), (0.8, 0.82), (0.5, 0.96),
        (0.15, 0.88)],
    6: [(0.75, 0.05), (0.4, 0.25), (0.18, 0.6), (0.25, 0.9), (0.55, 0.96), (0.8, 0.8), (0.75, 0.58), (0.45, 0.5),
        (0.2, 0.65)],
    7: [(0.12, 0.06), (0.88, 0.06), (0.42, 0.95)],
    8: [(0.5, 0.5), (0.2, 0.3), (0.3, 0.08), (0.7, 0.08), (0.8, 0.3), (0.5, 0.5), (0.18, 0.72), (0.3, 0.94),
        (0.7, 0.94), (0.82, 0.72), (0.5, 0.5)],
    9: [(0.8, 0.35), (0.55, 0.5), (0.25, 0.4), (0.22, 0.15), (0.5, 0.04), (0.8, 0.15), (0.8, 0.35), (0.75, 0.95)],
}


def stroke(digit, rng, points=60, jitter=0.008):
    """The digit's path resampled to `points` points, with a little hand jitter."""
    path = np.array(STROKES[digit])
    t, tt = np.linspace(0, 1, len(path)), np.linspace(0, 1, points)
    smooth = np.stack([np.interp(tt, t, path[:, 0]), np.interp(tt, t, path[:, 1])], 1)
    return smooth + rng.normal(0, jitter, smooth.shape)


def drawn(digit, rng, size=280, width=18, fg=(0, 0, 0), bg=(255, 255, 255), mode="RGB"):
    """A digit drawn with a round brush on a canvas, as with a mouse in a paint program."""
    image = Image.new(mode, (size, size), bg)
    draw = ImageDraw.Draw(image)
    points = [(size * (0.2 + 0.6 * x), size * (0.1 + 0.8 * y)) for x, y in stroke(digit, rng)]
    draw.line(points, fill=fg, width=width, joint="curve")
    for x, y in (points[0], points[-1]):
        draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=fg)
    return image


def paper_photo(digit, rng, font=None, size=(450, 600)):
    """Handwriting (or a printed digit) on paper, photographed: uneven light, grain, blur, blue or black ink."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    paper = 200 + 35 * (x / w) - 25 * (y / h) + rng.normal(0, 6, (h, w))
    page = np.stack([paper * 0.98, paper * 0.97, paper * 0.92], -1)
    ink = Image.new("L", size, 0)
    if font:
        ImageDraw.Draw(ink).text((w * 0.3, h * 0.25), str(digit), fill=255, font=ImageFont.truetype(font, h // 2))
    else:
        side = int(h * 0.58)
        pen = drawn(digit, rng, size=side, width=int(rng.integers(5, 13)), fg=255, bg=0, mode="L")
        ink.paste(pen, (int(rng.integers(0, w - side)), int(rng.integers(h // 8, h - side))))
    ink = ink.rotate(float(rng.normal(0, 6)), resample=Image.BILINEAR).filter(ImageFilter.GaussianBlur(1))
    alpha = np.asarray(ink, dtype=float)[..., None] / 255
    color = np.array([30, 40, 120]) if rng.random() < 0.5 else np.array([25, 25, 25])
    return Image.fromarray(np.clip(page * (1 - alpha) + color * alpha, 0, 255).astype(np.uint8))


def font_path(name):
    """A DejaVu font from the system or from matplotlib's own copy."""
    import matplotlib

    for folder in (Path("/usr/share/fonts/truetype/dejavu"), Path(matplotlib.get_data_path()) / "fonts/ttf"):
        if (folder / name).is_file():
            return str(folder / name)
    return str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf")


def make(digit, style, rng, out: Path) -> Path:
    """One example file of a style; returns its path (the name says style and true digit)."""
    if style == "drawn":
        path = out / f"drawn-{digit}.png"
        drawn(digit, rng).save(path)
    elif style == "transparent":  # white ink on a transparent canvas
        path = out / f"transparent-{digit}.png"
        drawn(digit, rng, fg=(255, 255, 255, 255), bg=(0, 0, 0, 0), mode="RGBA").save(path)
    elif style == "thinpen":  # a thin pen on a large palette GIF
        path = out / f"thinpen-{digit}.gif"
        drawn(digit, rng, width=6, size=600).convert("P").save(path)
    elif style == "photo":
        path = out / f"photo-{digit}.jpg"
        paper_photo(digit, rng).save(path, quality=80)
    else:
        path = out / f"printed-{digit}.jpg"
        paper_photo(digit, rng, font=font_path(FONTS[digit % len(FONTS)])).save(path, quality=80)
    return path


STYLES = ["drawn", "transparent", "thinpen", "photo", "printed"]
README_EXAMPLES = [(2, "photo"), (7, "photo"), (4, "printed"), (5, "drawn"), (3, "transparent"), (8, "thinpen")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--all", action="store_true", help="all 50 (digit, style) files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pairs = [(d, s) for s in STYLES for d in range(10)] if args.all else README_EXAMPLES
    for digit, style in pairs:
        print(make(digit, style, rng, args.out))


if __name__ == "__main__":
    main()

"""Predict on images as users make them: MNIST's own preprocessing recovers a digit from a photo-like file."""

import base64
import io
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.data import normalize
from mnist_kit.errors import UserError
from mnist_kit.inference import open_predictor
from mnist_kit.predict import (
    SERVE_MAX_PIXELS,
    box_mean,
    decode_gray,
    mnist_like,
    predict_files,
    read_gray,
)
from mnist_kit.runs import build_run_model, find_run
from tests.conftest import REPO

runner = CliRunner()


@pytest.mark.parametrize(("shape", "k"), [((37, 50), 9), ((400, 267), 67), ((5, 3), 11), ((1, 1), 3)])
def test_box_mean_is_avg_pool_counting_only_pixels_inside_the_image(shape, k):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(image)[None, None], k, stride=1, padding=k // 2,
                                            count_include_pad=False)[0, 0].numpy()
    found = box_mean(image, k)
    assert found.shape == shape and found.dtype == np.float32 and np.abs(found - pooled).max() < 1e-5


def as_paper_photo(digit: np.ndarray, path, scale=9, offset=(300, 40), size=(600, 500), quality=85):
    """An MNIST digit as dark ink on white paper: scaled up, off-centre, RGB JPEG."""
    big = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale), Image.BILINEAR)
    page = Image.new("RGB", size, (250, 248, 240))
    page.paste(big.convert("RGB"), offset)
    page.save(path, quality=quality)
    return path


@pytest.fixture(scope="module")
def confident_digits(trained_run, splits):
    """Ten test digits, one per class, that the model gets right with over 95% probability."""
    model = build_run_model(find_run(trained_run.run_dir))
    with torch.inference_mode():
        probs = model(normalize(splits.test_images[:2000], splits.mean, splits.std)).softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    good = (predicted == splits.test_labels[:2000]) & (confidence > 0.95)
    picks = [int(good.logical_and(splits.test_labels[:2000] == c).nonzero()[0]) for c in range(10)]
    return [(splits.test_images[i].numpy(), int(splits.test_labels[i])) for i in picks]


def test_a_photographed_digit_is_classified_like_the_original(trained_run, confident_digits, tmp_path):
    paths = [as_paper_photo(img, tmp_path / f"digit-{label}.jpg", offset=(30 + 25 * label, 20 + 20 * label))
             for img, label in confident_digits]
    results = predict_files(trained_run.run_dir, paths, top_k=3)
    assert [r["digit"] for r in results] == [str(label) for _, label in confident_digits]
    assert all(len(r["top_k"]) == 3 and r["top_k"][0]["digit"] == r["digit"] for r in results)


def test_the_input_is_mnist_like(confident_digits, tmp_path):
    digit, _ = confident_digits[3]
    seen = mnist_like(read_gray(as_paper_photo(digit, tmp_path / "d.jpg")))
    assert seen.shape == (28, 28)
    rows, cols = np.nonzero(seen > 0.1)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) in range(18, 22)  # fits the 20x20 box
    mass = (np.indices(seen.shape) * seen).reshape(2, -1).sum(axis=1) / seen.sum()
    assert np.all(np.abs(mass - 14.0) <= 0.6)  # centred by mass where MNIST's centres are: pixel (14, 14)
    original = digit / 255
    assert np.abs(seen - original).mean() < 0.08  # close to the MNIST original, pixel for pixel


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "LA-white-ink", "BMP", "GIF"])
def test_every_image_mode_gives_the_same_digit(trained_run, confident_digits, tmp_path, mode):
    digit, label = confident_digits[7]
    ink = np.asarray(Image.fromarray(digit).resize((140, 140), Image.BILINEAR))
    if mode == "RGBA":  # black strokes on a transparent canvas
        rgba = np.zeros((140, 140, 4), np.uint8)
        rgba[..., 3] = ink
        Image.fromarray(rgba, "RGBA").save(path := tmp_path / "d.png")
    elif mode == "LA-white-ink":  # white strokes on a transparent canvas
        Image.fromarray(np.stack([np.full_like(ink, 255), ink], -1), "LA").save(path := tmp_path / "d.png")
    elif mode == "I;16":
        Image.fromarray(65535 - ink.astype(np.uint16) * 257).save(path := tmp_path / "d.png")
    elif mode == "P":
        Image.fromarray(255 - ink).convert("RGB").convert("P", palette=Image.ADAPTIVE).save(path := tmp_path / "d.png")
    else:
        Image.fromarray(255 - ink).convert("RGB").save(path := tmp_path / f"d.{mode.lower()}")
    (result,) = predict_files(trained_run.run_dir, [path])
    assert result["digit"] == str(label), (mode, result)


def huge_png(path, side=100_000):
    """A PNG whose header claims side x side pixels (a decompression bomb), with almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))
    return path


def text_file(path):
    path.write_text("hello, not an image")
    return path


def empty_file(path):
    path.write_bytes(b"")
    return path


def flat_image(color):
    def make(path):
        Image.new("RGB", (64, 64), color).save(path, format="PNG")
        return path
    return make


@pytest.mark.parametrize("make, message", [
    (text_file, "not an image"),
    (empty_file, "empty file"),
    (huge_png, "pixels"),
    (flat_image("white"), "no ink found"),
    (flat_image("black"), "no ink found"),
])
def test_bad_files_get_a_clear_error(tmp_path, make, message):
    path = make(tmp_path / "bad.png")
    with pytest.raises(UserError, match=message):
        mnist_like(read_gray(path), str(path))


def test_cli_reports_bad_files_and_classifies_the_others(trained_run, confident_digits, tmp_path, monkeypatch):
    good = as_paper_photo(confident_digits[5][0], tmp_path / "five.jpg")
    (bad := tmp_path / "notes.png").write_text("not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    shown = tmp_path / "shown"
    result = runner.invoke(app, ["predict", str(trained_run.run_dir), str(bad), str(good), str(empty),
                                 "--json", "--show-input", str(shown)])
    assert result.exit_code == 2
    entries = json.loads(result.stdout)
    assert [("error" in e) for e in entries] == [True, False, True]
    assert entries[1]["digit"] == "5"
    with Image.open(shown / "five-input.png") as image:
        assert image.size == (28, 28)
    monkeypatch.chdir(tmp_path)  # the file as given (a long path would fold in an 80-column table)
    table = runner.invoke(app, ["predict", str(trained_run.run_dir), "five.jpg", "--top-k", "2"])
    assert table.exit_code == 0 and "five.jpg" in table.output and "top 2" in table.output


# Bounded decoding (issue 'A run folder from anywhere is safe to open', section 2): the images users send, made by
# the bench (bench/preprocess.py), whose figures the README quotes.
sys.path.insert(0, str(REPO / "bench"))
from preprocess import CASES, peak_memory_mb  # noqa: E402

FIXTURE = json.loads((REPO / "tests" / "fixtures" / "preprocess-v1.json").read_text())["inputs"]


def fixture_input(name: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(FIXTURE[name]), np.uint8).reshape(28, 28) / 255


def test_the_inputs_stay_what_they_were_before_bounded_decoding(tmp_path, trained_run):
    """The 28x28 input of every example image (50: 10 digits x 5 styles, and the bench's canvas and 3000x4000
    photo) is within a small tolerance of what the float64 full-size pipeline gave, and predicts the same digit."""
    subprocess.run([sys.executable, str(REPO / "docs" / "make_examples.py"), str(tmp_path), "--all"], check=True,
                   capture_output=True)
    predictor = open_predictor(trained_run.run_dir)
    old, new = [], []
    for name in sorted(FIXTURE):
        image = (decode_gray(CASES[name.removeprefix("bench: ")](), name) if name.startswith("bench: ")
                 else read_gray(tmp_path / name))
        new.append(mnist_like(image, name))
        old.append(fixture_input(name))
        assert np.abs(new[-1] - old[-1]).max() < 0.02, name
    assert len(old) == 52

    def digits(images):
        batch = torch.cat([predictor.normalized_canvas(image) for image in images])
        return predictor.probabilities(batch).argmax(dim=1).tolist()

    assert digits(new) == digits(old)


def test_a_huge_png_is_refused_with_the_cap_and_the_largest_accepted_stays_under_200_mb(tmp_path):
    with pytest.raises(UserError, match=r"6000x6600 is 39,600,000 pixels, over the limit of 16,000,000 for a PNG"):
        decode_gray(CASES["6000x6600 RGBA PNG"](), "big.png")
    with pytest.raises(UserError, match=r"over the limit of 4,000,000 for a JPEG"):
        decode_gray(CASES["3000x4000 phone photo JPEG"](), "photo.jpg", SERVE_MAX_PIXELS, SERVE_MAX_PIXELS)
    growth, outcome = peak_memory_mb(CASES["4000x4000 RGBA PNG (largest accepted PNG)"]())
    assert outcome == "accepted" and growth < 200, growth  # measured: 125 MiB (before: 978 MiB, 6000x6600: 2.4 GiB)


@pytest.mark.parametrize("fmt", ["WEBP", "TIFF", "BMP", "GIF"])
def test_the_formats_users_send_are_read(fmt, confident_digits, tmp_path):
    digit, _ = confident_digits[7]
    path = tmp_path / f"seven.{fmt.lower()}"
    Image.fromarray(255 - digit).resize((140, 140)).save(path, format=fmt)
    expected = mnist_like(read_gray(as_paper_photo(digit, tmp_path / "seven.png")))
    assert np.abs(mnist_like(read_gray(path)) - expected).mean() < 0.05


def test_a_format_outside_the_allow_list_is_refused_without_running_its_decoder(tmp_path):
    eps = tmp_path / "digit.eps"
    eps.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 4 4 moveto 24 24 lineto stroke\n")
    with pytest.raises(UserError, match=r"not an image in a format accepted here \(PNG, JPEG, GIF, BMP, WEBP, TIFF\)"):
        read_gray(eps)


def test_a_progressive_jpeg_gets_the_limit_of_images_decoded_whole(tmp_path):
    """Issue 26 row 1: draft scaling bounds a baseline JPEG's memory, not a progressive one's (libjpeg keeps every
    coefficient): an 8000x8000 progressive 4:4:4 JPEG is refused (predict's peak RSS was 900 MB, the server's
    +375 MB a request) where the baseline one of the same size decodes at 1/8."""
    image = Image.new("RGB", (8000, 8000), "white")
    baseline, progressive = io.BytesIO(), io.BytesIO()
    image.save(baseline, "JPEG", subsampling=0)
    image.save(progressive, "JPEG", subsampling=0, progressive=True)
    with pytest.raises(UserError, match="over the limit of 16,000,000 for a progressive JPEG image"):
        decode_gray(progressive.getvalue(), "p.jpg")
    with pytest.raises(UserError, match="over the limit of 4,000,000 for a progressive JPEG image"):
        decode_gray(progressive.getvalue(), "p.jpg", SERVE_MAX_PIXELS)  # what the server passes
    assert max(decode_gray(baseline.getvalue(), "b.jpg", SERVE_MAX_PIXELS).shape) <= 800  # decoded at a fraction

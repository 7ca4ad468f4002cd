"""ONNX export: onnxruntime computes what PyTorch computes, for any batch size; the file carries its
preprocessing; an INT8 copy is smaller and about as accurate."""

import json

import numpy as np
import pytest
import torch

from mnist_kit.data import normalize
from mnist_kit.export import save_onnx
from mnist_kit.models import MODELS
from mnist_kit.runs import build_run_model, export_run, find_run

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")


def run_onnx(path, images: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"image": chunk.numpy()})[0] for chunk in images.split(2500)])


def test_exported_run_matches_pytorch_on_the_test_set(trained_run, splits):
    path = export_run(trained_run.run_dir)
    assert path == trained_run.run_dir / "model.onnx"
    images = normalize(splits.test_images, splits.mean, splits.std)
    with torch.inference_mode():
        expected = build_run_model(find_run(trained_run.run_dir))(images).numpy()
    got = run_onnx(path, images)
    assert got.shape == (10_000, 10)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    accuracy = float((got.argmax(axis=1) == splits.test_labels.numpy()).mean())
    assert accuracy == trained_run.test_accuracy


@pytest.mark.parametrize("name", ["convnet", "cnn_example"])
def test_cnn_exports_with_a_dynamic_batch(tmp_path, name):
    torch.manual_seed(0)
    model = MODELS.build(name, input_shape=(1, 28, 28), num_classes=10).eval()
    path = save_onnx(model, (1, 28, 28), tmp_path / "m.onnx")
    for batch in (1, 7):
        images = torch.randn(batch, 1, 28, 28)
        with torch.inference_mode():
            expected = model(images).numpy()
        np.testing.assert_allclose(run_onnx(path, images), expected, atol=1e-4, rtol=0)


def test_the_onnx_file_alone_says_how_to_preprocess(trained_run):
    onnx = pytest.importorskip("onnx")
    path = export_run(trained_run.run_dir)
    properties = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    data = trained_run.metadata["data"]
    assert float(properties["mnist_kit.mean"]) == data["mean"] and float(properties["mnist_kit.std"]) == data["std"]
    assert json.loads(properties["mnist_kit.classes"]) == [str(d) for d in range(10)]
    assert json.loads(properties["mnist_kit.input_shape"]) == [1, 28, 28]
    assert properties["mnist_kit.recipe"] == "quick" and properties["mnist_kit.run"] == trained_run.run_dir.name


def test_int8_export_is_smaller_and_about_as_accurate(trained_run, splits):
    path = export_run(trained_run.run_dir, int8=True)
    assert path == trained_run.run_dir / "model-int8.onnx"
    float_path = trained_run.run_dir / "model.onnx"
    assert float_path.stat().st_size / path.stat().st_size > 3  # 8-bit weights instead of 32-bit
    images, labels = normalize(splits.test_images, splits.mean, splits.std), splits.test_labels.numpy()
    float_accuracy = float((run_onnx(float_path, images).argmax(axis=1) == labels).mean())
    int8_accuracy = float((run_onnx(path, images).argmax(axis=1) == labels).mean())
    assert abs(int8_accuracy - float_accuracy) < 0.005, (float_accuracy, int8_accuracy)
    metadata = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert "mnist_kit.quantization" in metadata.custom_metadata_map and "mnist_kit.mean" in metadata.custom_metadata_map


def test_predict_from_the_onnx_file_alone(trained_run, tmp_path):
    """The .onnx file without its run folder: its metadata says how to preprocess and names the classes."""
    from typer.testing import CliRunner

    from mnist_kit.cli import app
    from mnist_kit.predict import predict_files
    from tests.conftest import REPO, one_line_error

    alone = tmp_path / "model.onnx"
    alone.write_bytes(export_run(trained_run.run_dir).read_bytes())
    images = sorted((REPO / "docs" / "examples").iterdir())
    from_onnx = predict_files(alone, images, top_k=10)
    from_run = predict_files(trained_run.run_dir, images, top_k=10)
    assert [r["digit"] for r in from_onnx] == [r["digit"] for r in from_run]
    for ours, theirs in zip(from_onnx, from_run):
        assert {t["digit"]: round(t["probability"], 4) for t in ours["top_k"]} == \
            pytest.approx({t["digit"]: round(t["probability"], 4) for t in theirs["top_k"]}, abs=2e-4)
    result = CliRunner().invoke(app, ["predict", str(alone), *map(str, images), "--json"])
    assert result.exit_code == 0 and [r["digit"] for r in json.loads(result.output)] == [r["digit"] for r in from_run]

    bare = tmp_path / "bare.onnx"  # an ONNX model that does not say how to preprocess
    save_onnx(MODELS.build("mlp", input_shape=(1, 28, 28), num_classes=10), (1, 28, 28), bare)
    one_line_error(CliRunner().invoke(app, ["predict", str(bare), str(images[0])]), "no mnist_kit.mean",
                   "mnist-kit export RUN --format onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    one_line_error(CliRunner().invoke(app, ["predict", str(tmp_path / "junk.onnx"), str(images[0])]),
                   "not an ONNX model onnxruntime can run")


@pytest.mark.parametrize("key, value, message", [
    ("mnist_kit.std", "1e-45", "std 1e-45"),  # every class was "nan%", exit 0
    ("mnist_kit.classes", '["a"]', "names 1 classes for a model with 10 outputs"),  # was an IndexError
    ("mnist_kit.classes", "[" * 100_000, "unreadable mnist-kit metadata"),  # was a RecursionError
])
def test_onnx_metadata_that_cannot_be_right_is_one_line(trained_run, tmp_path, key, value, message):
    """Issue 26 row 13: the metadata of an .onnx file handed over is checked before any image is classified."""
    import onnx
    from typer.testing import CliRunner

    from mnist_kit.cli import app
    from mnist_kit.export import with_metadata
    from tests.conftest import REPO, one_line_error

    exported = export_run(trained_run.run_dir)
    properties = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    odd = tmp_path / "odd.onnx"
    odd.write_bytes(with_metadata(exported.read_bytes(), {**properties, key: value}))
    image = sorted((REPO / "docs" / "examples").iterdir())[0]
    one_line_error(CliRunner().invoke(app, ["predict", str(odd), str(image)]), message)

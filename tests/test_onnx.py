"""ONNX export: onnxruntime computes what PyTorch computes, for any batch size."""

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

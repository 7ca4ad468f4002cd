"""Fashion-MNIST through the dataset registry: verified files, its own statistics and class names, same loop."""

import shutil

import pytest
from rich.console import Console

from mnist_kit.data import load_dataset
from mnist_kit.errors import UserError
from mnist_kit.fetch import FASHION_FILES, FASHION_SYSTEM_DIR, problems
from mnist_kit.recipe import load_recipe
from mnist_kit.train import train
from tests.conftest import QUICK, write_recipe


@pytest.fixture(scope="module")
def fashion(data_root):
    if not FASHION_SYSTEM_DIR.is_dir() and not shutil.which("apt-get"):
        pytest.skip("no Debian package source for Fashion-MNIST here (apt-get), and no web for torchvision's")
    try:
        return load_dataset("fashion-mnist", data_root)
    except UserError as error:
        pytest.skip(f"Fashion-MNIST could not be fetched here: {error}")


def test_files_are_the_verified_ones(fashion, data_root):
    assert problems(data_root / "FashionMNIST" / "raw", FASHION_FILES) == {}
    assert {name: f["sha256"] for name, f in fashion.files.items()} == {n: s for n, (_, s) in FASHION_FILES.items()}


def test_own_statistics_and_class_names(fashion):
    assert fashion.mean == pytest.approx(0.2860, abs=1e-4) and fashion.std == pytest.approx(0.3530, abs=1e-4)
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[9] == "Ankle boot"
    assert fashion.train_labels.bincount().tolist() == [6000] * 10
    assert len(fashion.test_labels) == 10_000


def test_a_recipe_trains_on_it_with_no_other_change(fashion, tmp_path):
    text = QUICK.replace("[data]", '[data]\ndataset = "fashion-mnist"')
    recipe = load_recipe(write_recipe(tmp_path / "f.toml", text))
    result = train(recipe, out_dir=tmp_path / "runs", quiet=True, console=Console(quiet=True))
    assert 0.7 < result.test_accuracy < 0.95  # clothing after one short epoch: learned, and harder than digits
    assert result.metadata["classes"][0] == "T-shirt/top"
    assert set(result.metadata["per_class_accuracy"]) == set(fashion.classes)
    assert result.metadata["data"]["mean"] == fashion.mean

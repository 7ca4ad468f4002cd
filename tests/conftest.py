"""Shared fixtures: the real MNIST files (fetched once per session) and short real training runs."""

import os
from pathlib import Path

import pytest
import torch

from mnist_kit.data import DATA_ENV, load_dataset
from mnist_kit.fetch import data_root as default_data_root
from mnist_kit.fetch import fetch_mnist

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each, for the
    os.environ["OMP_NUM_THREADS"] = "1"  # worker and for the processes it starts (a test that compares a run in
    torch.set_num_threads(1)  # here with one in a subprocess compares the same arithmetic)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data folder, with the four verified MNIST files (fetched through the real sources if missing)."""
    root = default_data_root()  # $MNIST_KIT_DATA, else the user's cache folder: where `make train` put it
    fetch_mnist(root)
    return root


@pytest.fixture(scope="session")
def splits(data_root):
    return load_dataset("mnist", data_root)


@pytest.fixture(autouse=True)
def data_env(data_root, monkeypatch):
    """Every test (CLI ones included) reads the session's data folder."""
    monkeypatch.setenv(DATA_ENV, str(data_root))


def one_line_error(result, *fragments) -> str:
    """A CLI result that is a user's mistake: exit 2, one 'error: ...' line on stderr naming every fragment, no
    traceback. Returns the line."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


def run_folders(folder: Path) -> list[Path]:
    """The run folders in `folder` (not the `latest` link beside them)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.is_symlink())


def write_recipe(path: Path, text: str) -> Path:
    """A recipe file for a test."""
    path.write_text(text)
    return path


# A quick recipe: the baseline network on 5,000 training images for one epoch.
QUICK = """
description = "quick test recipe"
[data]
batch_size = 64
limit = 5000
[model]
name = "mlp"
[optimizer]
name = "adam"
weight_decay = 1e-5
[scheduler]
name = "step"
step_size = 10
[train]
epochs = 1
seed = 0
device = "cpu"
"""


@pytest.fixture
def quick_recipe(tmp_path) -> Path:
    return write_recipe(tmp_path / "quick.toml", QUICK)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A real run (baseline network, 10,000 images, 2 epochs: about 95%) for the commands that use runs."""
    from rich.console import Console

    from mnist_kit.recipe import load_recipe
    from mnist_kit.train import train

    folder = tmp_path_factory.mktemp("trained")
    recipe = load_recipe(write_recipe(folder / "quick.toml", QUICK), ["data.limit=10000", "train.epochs=2"])
    return train(recipe, out_dir=folder / "runs", quiet=True, console=Console(quiet=True))


SWEEP = """
description = "test sweep"
recipe = "quick.toml"
[set]
"data.limit" = 1500
[grid]
"optimizer.lr" = [0.0, 0.003]
"""


@pytest.fixture
def sweep_file(tmp_path):
    """A two-point sweep (lr 0 learns nothing, lr 0.003 learns) over the quick recipe on 1,500 images."""
    write_recipe(tmp_path / "quick.toml", QUICK)
    return write_recipe(tmp_path / "sweep.toml", SWEEP)

"""The label audit (issue 28, part 1): labels flipped on purpose are ranked near the top; data.exclude trains
without a list of training images, its content part of the recipe's hash."""

import json
import shutil
import sys

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.data import DATASETS, DIGITS, Splits, describes, load_dataset
from mnist_kit.recipe import load_recipe, recipe_hash
from mnist_kit.train import train
from tests.conftest import QUICK, one_line_error, write_recipe

FLIPPED = 60  # of the 6,000 training images


def flipped_indices() -> torch.Tensor:
    return torch.randperm(6000, generator=torch.Generator().manual_seed(7))[:FLIPPED].sort().values


if "flipped-mnist" not in DATASETS.names():
    @DATASETS.register("flipped-mnist")
    @describes(input_shape=(1, 28, 28), classes=DIGITS, train_images=6000, test_images=1000)
    def flipped_mnist(root):
        """MNIST's first 6,000 training and 1,000 test images, FLIPPED training labels moved to another digit."""
        mnist = load_dataset("mnist", root)
        labels = mnist.train_labels[:6000].clone()
        flipped = flipped_indices()
        labels[flipped] = (labels[flipped] + 1 + torch.arange(FLIPPED) % 9) % 10
        return Splits("flipped-mnist", DIGITS, mnist.train_images[:6000], labels, mnist.test_images[:1000],
                      mnist.test_labels[:1000], mnist.mean, mnist.std)


def test_the_labels_flipped_on_purpose_are_ranked_near_the_top(tmp_path):
    pytest.importorskip("cleanlab", reason="the [audit] extra is not installed")
    from mnist_kit.audit import audit, contact_sheet

    recipe = write_recipe(tmp_path / "quick.toml", QUICK.replace("limit = 5000", 'dataset = "flipped-mnist"'))
    said = []
    report = audit(recipe, folds=3, images="both", overrides=["train.epochs=2"], out=tmp_path / "audit",
                   on_fold=lambda k, n, status: said.append(status))
    assert said == ["trained"] * 3
    train_ranked = [row["index"] for row in report["issues"] if row["split"] == "train"]
    caught = set(train_ranked[:2 * FLIPPED]) & set(flipped_indices().tolist())
    assert len(caught) >= 0.7 * FLIPPED, (len(caught), len(train_ranked))
    files = json.loads((tmp_path / "audit" / "label-issues.json").read_text())
    assert files["issues"] == report["issues"]
    listed = (tmp_path / "audit" / "train-issues.txt").read_text().split("\n", 1)[1].split()
    assert [int(i) for i in listed] == train_ranked
    assert contact_sheet(report, tmp_path / "audit", count=20).stat().st_size > 10_000
    again = audit(recipe, folds=3, images="both", overrides=["train.epochs=2"], out=tmp_path / "audit",
                  on_fold=lambda k, n, status: said.append(status))
    assert said[3:] == ["done before"] * 3 and again["issues"] == report["issues"]  # the folds' runs are matched


def test_data_exclude_leaves_images_out_and_its_content_is_in_the_hash(tmp_path):
    recipe_file = write_recipe(tmp_path / "quick.toml", QUICK)
    listed = tmp_path / "drop.txt"
    listed.write_text("# suspected\n3\n1\n4, 1\n59999\n")
    recipe = load_recipe(recipe_file, [f'data.exclude="{listed}"', "data.validation=1000"])
    run = train(recipe, out_dir=tmp_path / "runs", quiet=True, console=Console(quiet=True))
    excluded = run.metadata["data"]["excluded"]
    assert excluded["listed"] == 4 and excluded["left_out"] <= 4 and len(excluded["sha256"]) == 64
    moved = tmp_path / "moved.txt"
    shutil.copy(listed, moved)
    same_content = load_recipe(recipe_file, [f'data.exclude="{moved}"', "data.validation=1000"])
    assert recipe_hash(same_content) != recipe_hash(recipe)  # the path is a value of the recipe too...
    listed.write_text("3\n1\n4\n")
    assert recipe_hash(load_recipe(recipe_file, [f'data.exclude="{listed}"', "data.validation=1000"])) != \
        run.metadata["recipe_hash"]  # ...and a changed list makes another recipe


@pytest.mark.parametrize("content, message", [(None, "no file at"), ("1\nseven\n", "lists 'seven'"),
                                              ("60000\n", "lists index 60000"), (b"\xff\xfe", "is not text")])
def test_a_bad_exclude_file_is_one_line(tmp_path, content, message):
    listed = tmp_path / "drop.txt"
    if content is not None:
        listed.write_bytes(content if isinstance(content, bytes) else content.encode())
    recipe = write_recipe(tmp_path / "quick.toml", QUICK)
    one_line_error(CliRunner().invoke(app, ["train", str(recipe), "--set", f'data.exclude="{listed}"', "--out",
                                            str(tmp_path / "runs")]), "data.exclude", message)


def test_audit_without_the_extra_or_with_bad_options_is_one_line(monkeypatch, tmp_path):
    one_line_error(CliRunner().invoke(app, ["audit", "fast", "--images", "all", "--out", str(tmp_path)]),
                   "--images must be train, test or both")
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    one_line_error(CliRunner().invoke(app, ["audit", "fast", "--out", str(tmp_path)]), "needs cleanlab", "[audit]")


@pytest.mark.parametrize("args, message", [(["--backend", "slurm"], "unknown backend"),
                                           (["--address", "auto"], "--address is for --backend ray"),
                                           (["--backend", "ray", "--workers", "2"], "--workers is for the local")])
def test_audit_backend_mistakes_are_one_line(args, message):
    pytest.importorskip("cleanlab", reason="the [audit] extra is not installed")
    one_line_error(CliRunner().invoke(app, ["audit", "fast", *args]), message)

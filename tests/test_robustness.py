"""The corruption report (issue 28, part 2 begun): 15 MNIST-C-style corruptions, deterministic and
shape-preserving; one robustness function behind the command and the Hub model card."""

import json

import pytest
import torch
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.corrupt import CORRUPTIONS, corrupted


def test_every_corruption_is_deterministic_shape_preserving_and_changes_the_images(splits):
    images = splits.test_images[:300]
    assert len(CORRUPTIONS) == 15
    for name in CORRUPTIONS:
        once = corrupted(images, name)
        assert once.shape == images.shape and once.dtype == torch.uint8, name
        assert torch.equal(once, corrupted(images, name)), name  # a fixed seed per corruption
        assert (once.int() - images.int()).abs().float().mean() > 0.5, name  # it does something
    assert torch.equal(corrupted(images[:100], "brightness"), corrupted(images, "brightness")[:100])


def test_robustness_scores_each_run_on_the_clean_and_the_corrupted_test_split(trained_run):
    result = CliRunner().invoke(app, ["robustness", str(trained_run.run_dir), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["clean"] == pytest.approx(trained_run.test_accuracy, abs=2e-4)  # float32 here, the run's precision there
    assert set(row["corruptions"]) == set(CORRUPTIONS)
    assert row["mean"] == pytest.approx(sum(row["corruptions"].values()) / 15)
    assert row["mean"] < row["clean"] and row["corruptions"]["rotate"] < row["corruptions"]["dotted line"]
    shown = CliRunner().invoke(app, ["robustness", str(trained_run.run_dir)])
    assert shown.exit_code == 0 and "mean of the corruptions" in shown.stdout


def test_plot_robustness_draws_several_runs_into_the_folder_it_is_given(trained_run, tmp_path):
    from tests.conftest import one_line_error

    run = str(trained_run.run_dir)
    result = CliRunner().invoke(app, ["plot", "robustness", run, run, "--out", str(tmp_path)])
    assert result.exit_code == 0 and (tmp_path / "robustness.png").stat().st_size > 10_000, result.output
    one_line_error(CliRunner().invoke(app, ["plot", "robustness", run, run]), "needs --out")
    one_line_error(CliRunner().invoke(app, ["plot", "confusion", run, run, "--out", str(tmp_path)]), "takes one run")


def test_robustness_on_the_held_out_training_images_may_choose(trained_run, tmp_path):
    from rich.console import Console

    from mnist_kit.recipe import load_recipe
    from mnist_kit.train import train
    from tests.conftest import QUICK, one_line_error, write_recipe

    recipe = load_recipe(write_recipe(tmp_path / "quick.toml", QUICK), ["data.limit=2000", "data.validation=1000"])
    run = train(recipe, out_dir=tmp_path / "runs", quiet=True, console=Console(quiet=True))
    result = CliRunner().invoke(app, ["robustness", str(run.run_dir), "--split", "validation", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["split"] == "validation" and row["clean"] == pytest.approx(run.validation_accuracy, abs=2e-4)
    assert row["mean"] < row["clean"] and set(row["corruptions"]) == set(CORRUPTIONS)
    one_line_error(CliRunner().invoke(app, ["robustness", str(trained_run.run_dir), "--split", "validation"]),
                   "held out no validation images")

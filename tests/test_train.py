"""The training loop on real MNIST bytes: it learns, it is deterministic, the fallback rule works."""

import pytest
import torch
from rich.console import Console

from mnist_kit.export import load_state_dict
from mnist_kit.fallback import train_with_fallback
from mnist_kit.recipe import load_recipe
from mnist_kit.train import train
from tests.conftest import QUICK, write_recipe

quiet = {"quiet": True, "console": Console(quiet=True)}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quick")
    recipe = load_recipe(write_recipe(folder / "quick.toml", QUICK))
    return train(recipe, out_dir=folder / "runs", **quiet)


def test_a_short_run_learns(quick_run):
    # 5,000 images, one epoch: a working loop reaches about 91%; chance is 10%, a loop that skips
    # the optimizer step or shuffles labels stays near it.
    assert quick_run.test_accuracy >= 0.88
    (row,) = quick_run.metadata["history"]
    assert row["train_loss"] < 1.0 and row["test_loss"] < 0.4
    assert row["train_accuracy"] > 0.7
    assert quick_run.metadata["data"]["train_images"] == 5000


def test_more_epochs_do_better(quick_run, tmp_path):
    recipe = load_recipe(quick_run.metadata["recipe"]["path"], ["train.epochs=3"])
    result = train(recipe, out_dir=tmp_path, **quiet)
    accuracies = [row["test_accuracy"] for row in result.metadata["history"]]
    assert accuracies[-1] > accuracies[0]
    assert result.test_accuracy > quick_run.test_accuracy


def test_same_recipe_and_seed_give_identical_runs(quick_run, tmp_path):
    again = train(load_recipe(quick_run.metadata["recipe"]["path"]), out_dir=tmp_path, **quiet)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in again.metadata["history"]]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in quick_run.metadata["history"]]
    first = load_state_dict(quick_run.run_dir / "model.safetensors")
    second = load_state_dict(again.run_dir / "model.safetensors")
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_another_seed_gives_other_weights(quick_run, tmp_path):
    other = train(load_recipe(quick_run.metadata["recipe"]["path"], ["train.seed=1"]), out_dir=tmp_path, **quiet)
    first = load_state_dict(quick_run.run_dir / "model.safetensors")
    second = load_state_dict(other.run_dir / "model.safetensors")
    assert not torch.equal(first["fc1.weight"], second["fc1.weight"])


def test_fallback_trains_the_other_recipe_when_short(tmp_path):
    write_recipe(tmp_path / "better.toml", QUICK.replace("limit = 5000", "limit = 2000")
                 .replace('description = "quick test recipe"', 'description = "fallback"'))
    # lr = 0 cannot learn: about 10%, well under the 50% threshold
    weak = QUICK.replace("weight_decay = 1e-5", "weight_decay = 1e-5\nlr = 0.0").replace("limit = 5000", "limit = 2000")
    path = write_recipe(tmp_path / "weak.toml", weak + '[fallback]\nmin_test_accuracy = 0.5\nrecipe = "better.toml"\n')
    results = train_with_fallback(load_recipe(path), out_dir=tmp_path / "runs", **quiet)
    assert [r.recipe for r in results] == ["weak", "better"]
    assert results[0].test_accuracy < 0.5 <= results[1].test_accuracy


def test_no_fallback_when_good_enough(tmp_path):
    path = write_recipe(tmp_path / "fine.toml", QUICK.replace("limit = 5000", "limit = 2000")
                        + '[fallback]\nmin_test_accuracy = 0.5\nrecipe = "baseline"\n')
    results = train_with_fallback(load_recipe(path), out_dir=tmp_path / "runs", **quiet)
    assert [r.recipe for r in results] == ["fine"]


CNN = (QUICK.replace('name = "mlp"', 'name = "convnet"\nwidths = [16, 32]\nconvs_per_stage = 1\nstem_stride = 2')
       .replace('[optimizer]\nname = "adam"', '[optimizer]\nname = "adamw"\nlr = 0.005')
       .replace('epochs = 1', 'epochs = 3')
       .replace('device = "cpu"', 'device = "cpu"\nloss = "cross_entropy"\nema = 0.9\nprecision = "auto"\n'
                                  'channels_last = true'))
AUGMENTED = CNN + '\n[[augment]]\nname = "affine"\ndegrees = 10\n'


def test_cnn_with_augmentation_ema_and_bf16_learns_and_evaluates_the_same(tmp_path):
    from mnist_kit.runs import evaluate_run

    recipe = load_recipe(write_recipe(tmp_path / "cnn.toml", AUGMENTED))
    assert recipe.config["augment"] == [{"name": "affine", "degrees": 10, "scale": 0.1, "shift": 2.0, "shear": 0.0,
                                         "p": 1.0}]
    result = train(recipe, out_dir=tmp_path / "runs", **quiet)
    assert result.test_accuracy > 0.85
    assert result.metadata["precision"] in ("bf16", "fp32")
    assert "n_averaged" not in load_state_dict(result.run_dir / "model.safetensors")  # the EMA's module, unwrapped
    assert evaluate_run(result.run_dir, write=False)["accuracy"] == result.test_accuracy

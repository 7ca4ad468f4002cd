"""Nothing is chosen by the test split: a validation split held out of the training images chooses the epoch
(train.keep = "best"), stops early (train.patience), ranks sweep points and reads the fallback threshold."""

import csv
import json

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from mnist_kit.cli import app, shortfall_text
from mnist_kit.data import validation_split
from mnist_kit.errors import UserError
from mnist_kit.fallback import train_with_fallback
from mnist_kit.recipe import load_recipe
from mnist_kit.runs import evaluate_run
from mnist_kit.train import train
from tests.conftest import QUICK, SWEEP, write_recipe

quiet = {"quiet": True, "console": Console(quiet=True)}
runner = CliRunner()


def test_the_split_is_stratified_disjoint_and_drawn_by_its_own_seed(splits):
    labels = splits.train_labels
    kept, held = validation_split(labels, 1005, seed=0, num_classes=10)
    assert len(held) == 1005 and len(kept) == 60_000 - 1005
    assert not set(held.tolist()) & set(kept.tolist())
    counts = torch.bincount(labels[held], minlength=10).tolist()
    assert counts == [101] * 5 + [100] * 5  # the same number of each class, as far as it divides
    assert torch.equal(validation_split(labels, 1005, seed=0, num_classes=10)[1], held)
    assert not torch.equal(validation_split(labels, 1005, seed=1, num_classes=10)[1], held)


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """Three epochs on 3,000 images with 1,000 held out, keeping the best validation epoch."""
    folder = tmp_path_factory.mktemp("split")
    text = QUICK.replace("limit = 5000", "limit = 3000\nvalidation = 1000\nsplit_seed = 4").replace(
        "epochs = 1", 'epochs = 3\nkeep = "best"').replace('name = "adam"', 'name = "adam"\nlr = 0.01')
    return train(load_recipe(write_recipe(folder / "split.toml", text)), out_dir=folder / "runs", **quiet)


def test_a_run_with_a_split_records_validation_beside_test_and_keeps_the_best_epoch(split_run):
    meta = split_run.metadata
    history = meta["history"]
    assert all({"val_loss", "val_accuracy", "test_accuracy"} <= set(row) for row in history)
    assert meta["data"]["validation_images"] == 1000 and meta["data"]["train_images"] == 3000
    best = max(history, key=lambda row: row["val_accuracy"])
    assert meta["kept_epoch"] == meta["best_validation_epoch"] == best["epoch"]
    assert meta["validation_accuracy"] == best["val_accuracy"]  # the exported weights are that epoch's
    assert meta["test_accuracy"] == best["test_accuracy"]  # measured for the record, never read to choose
    assert meta["machine"]["cpu"] and meta["machine"]["cores"] >= 1
    features = meta["machine"]["features"]  # what decides speed here, as torch finds it: AVX2 < AVX-512 < BF16 < AMX
    assert features == [name for name in ("AVX2", "AVX-512", "AVX-512 BF16", "AMX") if name in features]
    assert meta["machine"]["kind"].startswith(f"{meta['machine']['cores']}-core {meta['machine']['cpu']} ")


def test_eval_scores_a_run_on_its_own_held_out_images(split_run):
    report = evaluate_run(split_run.run_dir, write=False, split="validation")
    assert report["total"] == 1000 and report["accuracy"] == split_run.validation_accuracy
    assert report["recorded_accuracy"] == split_run.validation_accuracy
    result = runner.invoke(app, ["eval", str(split_run.run_dir), "--split", "validation"])
    assert result.exit_code == 0 and "validation split" in result.stdout
    assert (split_run.run_dir / "eval-validation.json").exists()


def test_eval_of_the_validation_split_of_a_run_without_one_is_one_line(trained_run):
    result = runner.invoke(app, ["eval", str(trained_run.run_dir), "--split", "validation"])
    assert result.exit_code == 2 and "held out no validation images" in result.stderr


def test_patience_stops_when_validation_stops_improving(tmp_path):
    text = QUICK.replace("limit = 5000", "limit = 1000\nvalidation = 500").replace(
        "epochs = 1", "epochs = 30\npatience = 2").replace('name = "adam"', 'name = "adam"\nlr = 0.003')
    result = train(load_recipe(write_recipe(tmp_path / "p.toml", text)), out_dir=tmp_path, **quiet)
    history = result.metadata["history"]
    assert result.metadata["stopped_early"] and len(history) < 30
    best = max(history, key=lambda row: row["val_accuracy"])["epoch"]
    assert len(history) == best + 2  # two epochs without a better validation accuracy, then stop


@pytest.mark.parametrize("setting", ['keep = "best"', "patience = 3"])
def test_choosing_without_a_validation_split_is_refused(tmp_path, setting):
    path = write_recipe(tmp_path / "r.toml", QUICK.replace("epochs = 1", f"epochs = 1\n{setting}"))
    with pytest.raises(UserError, match="chooses by validation accuracy: set data.validation"):
        load_recipe(path)


def test_the_fallback_reads_validation_where_there_is_a_split(tmp_path):
    write_recipe(tmp_path / "better.toml", QUICK.replace("limit = 5000", "limit = 1000"))
    weak = QUICK.replace("weight_decay = 1e-5", "weight_decay = 1e-5\nlr = 0.0").replace(
        "limit = 5000", "limit = 1000\nvalidation = 500")
    path = write_recipe(tmp_path / "weak.toml", weak + '[fallback]\nmin_test_accuracy = 0.5\nrecipe = "better.toml"\n')
    heard = []
    results = train_with_fallback(load_recipe(path), out_dir=tmp_path / "runs", quiet=True,
                                  console=Console(quiet=True), on_shortfall=heard.append)
    assert [r.recipe for r in results] == ["weak", "better"]
    assert [(s.split, s.threshold, s.next.name) for s in heard] == [("validation", 0.5, "better")]
    assert "validation accuracy, under its fallback threshold 50.00% (the original pipeline's rule, read on the " \
           "validation split)" in shortfall_text(heard[0])


def test_sweeps_rank_on_validation_and_warn_when_they_can_only_rank_on_test(sweep_file, tmp_path):
    sweep_file.write_text(SWEEP.replace('"data.limit" = 1500', '"data.limit" = 1500\n"data.validation" = 500')
                          .replace("[0.0, 0.003]", "[0.0003, 0.001, 0.003]"))
    result = runner.invoke(app, ["sweep", str(sweep_file), "--out", str(tmp_path / "split")])
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output
    rows = list(csv.DictReader(open(tmp_path / "split" / "summary.csv")))
    best = max(rows, key=lambda row: float(row["validation_accuracy"]))
    assert [row["best"] for row in rows] == ["*" if row is best else "" for row in rows]
    sweep_file.write_text(SWEEP)
    unsplit = runner.invoke(app, ["sweep", str(sweep_file), "--out", str(tmp_path / "unsplit")])
    assert unsplit.exit_code == 0 and "warning:" in unsplit.stderr and "chosen on the test split" in unsplit.stderr
    assert all(json.loads(open(row["run"] + "/metadata.json").read())["validation_accuracy"] is None
               for row in csv.DictReader(open(tmp_path / "unsplit" / "summary.csv")))


def test_the_shipped_sweeps_hold_images_out_and_every_point_builds(tmp_path):
    import tomllib
    from pathlib import Path

    from mnist_kit.sweep import sweep_points

    repo = Path(__file__).resolve().parent.parent
    paths = [*repo.joinpath("recipes", "sweeps").glob("*.toml"), *repo.joinpath("bench", "sweeps").glob("*.toml")]
    assert len(paths) >= 7
    for path in paths:  # the searches behind the shipped recipes and docs/records.md rank on validation
        assert tomllib.loads(path.read_text())["set"]["data.validation"] > 0, path.name
        assert sweep_points(path, tmp_path / path.stem)[1], path.name

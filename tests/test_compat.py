"""Runs written before metadata schema 2 still open: eval, plot, predict, export and resume, on the records
mnist-kit wrote then (tests/fixtures/v1) in front of weights trained here today."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console

import mnist_kit.progress
from mnist_kit.checkpoint import LAST
from mnist_kit.errors import Interrupted
from mnist_kit.export import load_state_dict
from mnist_kit.predict import predict_files
from mnist_kit.recipe import recipe_from_dict, run_recipe
from mnist_kit.runs import evaluate_run, export_run, find_run, plot_run
from mnist_kit.train import resume, train
from tests.conftest import REPO, run_folders

FIXTURE = Path(__file__).parent / "fixtures" / "v1"
quiet = {"quiet": True, "console": Console(quiet=True)}


def old_recipe():
    """The recipe record of the fixture's last.pth, upgraded: onecycle's max_lr is now the optimizer's lr."""
    return recipe_from_dict(json.loads((FIXTURE / "last-recipe.json").read_text()))


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """Today's weights of the fixture's recipe behind the metadata.json written before schema 2."""
    result = train(old_recipe(), out_dir=tmp_path_factory.mktemp("v1"), **quiet)
    shutil.copy(FIXTURE / "metadata.json", result.run_dir / "metadata.json")
    return result


def test_the_old_records_upgrade_to_todays_recipe():
    record = json.loads((FIXTURE / "last-recipe.json").read_text())
    assert "schema" not in record and record["config"]["scheduler"]["max_lr"] == 0.01  # as written then
    recipe = old_recipe()
    assert recipe.config["optimizer"]["lr"] == 0.01 and "max_lr" not in recipe.config["scheduler"]
    assert recipe.overrides == {"train.seed": 3} and recipe.name == "v1"
    metadata = json.loads((FIXTURE / "metadata.json").read_text())
    assert "schema" not in metadata and run_recipe(metadata).config == recipe.config


def test_eval_plot_predict_and_export_open_an_old_run(old_run, tmp_path):
    run = find_run(old_run.run_dir)
    assert run.recipe.config["optimizer"]["lr"] == 0.01
    report = evaluate_run(old_run.run_dir, write=False)
    assert report["accuracy"] == old_run.test_accuracy  # today's weights, rebuilt from yesterday's metadata
    assert report["recorded_accuracy"] == json.loads((FIXTURE / "metadata.json").read_text())["test_accuracy"]
    assert {p.name for p in plot_run("all", old_run.run_dir, out_dir=tmp_path)} == {
        "curves.png", "samples.png", "classes.png", "predictions.png", "confusion.png", "calibration.png"}
    (entry,) = predict_files(old_run.run_dir, [REPO / "docs" / "examples" / "photo-7.jpg"])
    assert entry["digit"] in "0123456789"
    pytest.importorskip("onnx")
    assert export_run(old_run.run_dir).stat().st_size > 1000
    pytest.importorskip("huggingface_hub")
    from mnist_kit.hub import save_hub_folder

    hub = save_hub_folder(old_run.run_dir, tmp_path / "hub")  # today's recipe form in config.json: it opens
    assert evaluate_run(hub, write=False)["accuracy"] == old_run.test_accuracy


def test_an_old_last_pth_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    reference = train(old_recipe(), out_dir=tmp_path / "reference", **quiet)
    shown = mnist_kit.progress.PlainDisplay.epoch

    def stop_after_one(self, row):
        shown(self, row)
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist_kit.progress.PlainDisplay, "epoch", stop_after_one)
    with pytest.raises(Interrupted, match="keeps epoch 1 of 2"):
        train(old_recipe(), out_dir=tmp_path / "runs", **quiet)
    monkeypatch.undo()
    (run_dir,) = run_folders(tmp_path / "runs")
    state = torch.load(run_dir / LAST, weights_only=True)
    del state["schema"]
    state["recipe"] = json.loads((FIXTURE / "last-recipe.json").read_text())  # the record as written before
    torch.save(state, run_dir / LAST)
    resumed = resume(run_dir, **quiet)
    assert [r["test_accuracy"] for r in resumed.metadata["history"]] == [
        r["test_accuracy"] for r in reference.metadata["history"]]
    ours, theirs = (load_state_dict(r.run_dir / "model.safetensors") for r in (resumed, reference))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert resumed.metadata["schema"] == 2 and resumed.metadata["recipe"]["config"]["optimizer"]["lr"] == 0.01

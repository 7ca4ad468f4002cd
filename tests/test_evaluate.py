"""Evaluating a run rebuilds its model from the recipe and gets exactly what training recorded."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.errors import UserError
from mnist_kit.evaluate import class_report, confusion_matrix, most_confused, shifted
from mnist_kit.runs import evaluate_ensemble, evaluate_run, find_run

runner = CliRunner()


def test_eval_matches_the_recorded_accuracy(trained_run):
    report = evaluate_run(trained_run.run_dir)
    assert report["accuracy"] == trained_run.test_accuracy
    assert report["loss"] == pytest.approx(trained_run.metadata["test_loss"], rel=1e-6)
    assert sum(map(sum, report["confusion"])) == 10_000
    assert json.loads((trained_run.run_dir / "eval.json").read_text())["accuracy"] == report["accuracy"]


def test_eval_from_the_pth_alone_gives_the_same(trained_run, tmp_path):
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    for name in ("model.pth", "metadata.json"):
        shutil.copy(trained_run.run_dir / name, run_dir)
    report = evaluate_run(run_dir / "model.pth", write=False)
    assert report["accuracy"] == trained_run.test_accuracy


def test_eval_cli_prints_the_report_and_json(trained_run):
    result = runner.invoke(app, ["eval", str(trained_run.run_dir)])
    assert result.exit_code == 0, result.output
    for text in ("per class", "confusion matrix", "most confused", f"{trained_run.test_accuracy:.2%}"):
        assert text in result.output
    result = runner.invoke(app, ["eval", str(trained_run.run_dir), "--json"])
    assert json.loads(result.output)["accuracy"] == trained_run.test_accuracy


def test_a_folder_that_is_not_a_run_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="is not a run folder"):
        find_run(tmp_path)
    result = runner.invoke(app, ["eval", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and result.output.startswith("error: no run at")


def test_class_metrics_by_hand():
    predicted, labels = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 0])
    confusion = confusion_matrix(predicted, labels, 3).tolist()
    assert confusion == [[1, 0, 1], [1, 1, 0], [0, 0, 2]]
    report = class_report(confusion, ["a", "b", "c"])
    assert report["a"] == {"accuracy": 0.5, "recall": 0.5, "precision": 0.5, "support": 2}
    assert report["c"]["precision"] == pytest.approx(2 / 3) and report["c"]["recall"] == 1.0
    assert most_confused(confusion, ["a", "b", "c"], top=2) == [
        {"true": "a", "predicted": "c", "count": 1}, {"true": "b", "predicted": "a", "count": 1}]


def test_shifted_moves_pixels_one_step_and_fills_the_edge():
    images = torch.zeros(1, 1, 4, 4)
    images[0, 0, 1, 2] = 1.0
    moved = shifted(images, 1, -1, fill=-0.5)  # one row down, one column left
    assert moved.shape == images.shape
    assert moved[0, 0, 2, 1] == 1.0 and moved[0, 0, 1, 2] == 0.0
    assert (moved[0, 0, 0, :] == -0.5).all() and (moved[0, 0, :, 3] == -0.5).all()  # what moved in
    assert torch.equal(shifted(images, 0, 0, fill=-0.5), images)


def test_eval_with_tta_writes_its_own_report(trained_run):
    plain = evaluate_run(trained_run.run_dir, write=False)
    tta = evaluate_run(trained_run.run_dir, tta=True)
    assert tta["tta"] and not plain["tta"]
    assert tta["loss"] != pytest.approx(plain["loss"], rel=1e-4)  # the shifted views changed the predictions
    assert tta["accuracy"] == pytest.approx(plain["accuracy"], abs=0.01)
    assert json.loads((trained_run.run_dir / "eval-tta.json").read_text())["accuracy"] == tta["accuracy"]


def test_an_ensemble_of_one_run_twice_is_that_run(trained_run):
    ensemble = evaluate_ensemble([trained_run.run_dir, trained_run.run_dir / "model.pth"])
    assert ensemble["accuracy"] == trained_run.test_accuracy
    assert ensemble["confusion"] == evaluate_run(trained_run.run_dir, write=False)["confusion"]
    assert [m["accuracy"] for m in ensemble["members"]] == [trained_run.test_accuracy] * 2


def test_an_ensemble_of_two_data_sets_is_refused(trained_run, tmp_path):
    other = shutil.copytree(trained_run.run_dir, tmp_path / "fashion")
    meta = json.loads((other / "metadata.json").read_text())
    meta["data"]["dataset"] = "fashion-mnist"
    (other / "metadata.json").write_text(json.dumps(meta))
    result = runner.invoke(app, ["eval", str(trained_run.run_dir), str(other)])
    assert result.exit_code == 2
    assert "an ensemble needs runs of one data set; these were trained on fashion-mnist, mnist" in result.output


def test_eval_cli_ensemble_with_tta(trained_run):
    result = runner.invoke(app, ["eval", str(trained_run.run_dir), str(trained_run.run_dir), "--tta"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "ensemble of 2 runs" in result.output and "9 shifted views" in result.output
    assert "members" in result.output and "Wrote" not in result.output

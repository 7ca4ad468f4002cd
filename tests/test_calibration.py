"""Calibration (issue 27, part 1): one temperature fitted on the images a run held out, judged on the test split."""

import json

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from mnist_kit.calibration import expected_calibration_error, fit_temperature, scores
from mnist_kit.cli import app
from mnist_kit.recipe import load_recipe
from mnist_kit.runs import calibrate_run, find_run, outputs_on_split, run_dataset
from mnist_kit.train import train
from tests.conftest import QUICK, one_line_error, write_recipe


def test_the_hand_written_ece_agrees_with_torchmetrics():
    metrics = pytest.importorskip("torchmetrics.classification")
    generator = torch.Generator().manual_seed(0)
    for sharpness in (0.5, 3.0, 20.0, 200.0):  # nearly uniform to certain (float32 confidences of 1.0)
        probabilities = (sharpness * torch.randn(5000, 10, generator=generator)).softmax(dim=1)
        labels = torch.randint(0, 10, (5000,), generator=generator)
        labels[:2500] = probabilities[:2500].argmax(dim=1)  # half right, as a model would be
        reference = metrics.MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")
        assert expected_calibration_error(probabilities, labels) == pytest.approx(
            float(reference(probabilities, labels)), abs=1e-5)  # float32 sums


def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with():
    generator = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(20000, 10, generator=generator)
    for truth in (0.5, 2.0):  # an underconfident model's labels, then an overconfident one's
        labels = torch.multinomial((logits / truth).softmax(dim=1), 1, generator=generator).squeeze(1)
        assert fit_temperature(logits, labels) == pytest.approx(truth, rel=0.05)


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory):
    """A quick MLP on 5,000 images, 1,000 of them held out, label smoothing 0.1 (underconfident, as `fast`)."""
    folder = tmp_path_factory.mktemp("calibrated")
    text = QUICK.replace('device = "cpu"', 'device = "cpu"\nloss = { name = "cross_entropy", label_smoothing = 0.1 }')
    recipe = load_recipe(write_recipe(folder / "quick.toml", text), ["data.validation=1000", "train.epochs=2"])
    return train(recipe, out_dir=folder / "runs", quiet=True, console=Console(quiet=True)).run_dir


def test_calibrating_lowers_the_test_nll_keeps_every_class_and_is_recorded(held_out_run):
    result = calibrate_run(held_out_run)
    before, after = result["test_before"], result["test_after"]
    assert result["fitted_on"] == "validation" and result["images"] == 1000
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"]  # judged on images it was not fitted on
    assert after["accuracy"] == before["accuracy"]
    run = find_run(held_out_run)
    assert run.metadata["calibration"]["temperature"] == result["temperature"] != 1.0
    outputs = outputs_on_split(run, *_model_and_splits(run))
    assert torch.equal((outputs / result["temperature"]).argmax(dim=1), outputs.argmax(dim=1))
    assert scores(outputs, run_dataset(run).test_labels, result["temperature"])["nll"] == pytest.approx(after["nll"])


def _model_and_splits(run):
    from mnist_kit.runs import build_run_model_from

    return build_run_model_from(run)[0], run_dataset(run)


def test_the_cli_prints_before_and_after_and_refuses_a_run_with_nothing_held_out(held_out_run, trained_run):
    result = CliRunner().invoke(app, ["calibrate", str(held_out_run), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["temperature"] > 0
    one_line_error(CliRunner().invoke(app, ["calibrate", str(trained_run.run_dir)]),
                   "was trained on every training image", "--set data.validation=5000")


def test_predict_and_the_server_use_the_recorded_temperature_and_refuse_a_wrong_one(held_out_run, splits, tmp_path):
    import shutil

    from mnist_kit.inference import open_predictor
    from mnist_kit.protocol import infer

    temperature = calibrate_run(held_out_run)["temperature"]
    predictor = open_predictor(held_out_run)
    images = splits.test_images[:64].float() / 255
    inputs = predictor.normalized(images[:, None])
    with torch.inference_mode():
        raw = predictor.scores(inputs).float()
    probabilities = predictor.probabilities(inputs)
    assert predictor.temperature == temperature
    assert torch.allclose(probabilities, (raw / temperature).softmax(dim=1))
    assert torch.equal(probabilities.argmax(dim=1), raw.argmax(dim=1))  # the same digits, other confidences
    answer = infer(predictor, {"inputs": [{"name": "image", "datatype": "FP32", "shape": [64, 1, 28, 28],
                                           "data": images.flatten().tolist()}], "outputs": [{"name": "probabilities"}]})
    assert torch.allclose(torch.tensor(answer["outputs"][0]["data"]).view(64, -1), probabilities, atol=1e-6)
    for wrong in (-1.0, 0.0, 1e9, "2", True):  # a run folder from anywhere: read as data, checked
        copy = tmp_path / f"run-{wrong}"
        shutil.copytree(held_out_run, copy)
        meta = json.loads((copy / "metadata.json").read_text())
        meta["calibration"]["temperature"] = wrong
        (copy / "metadata.json").write_text(json.dumps(meta))
        one_line_error(CliRunner().invoke(app, ["predict", str(copy), str(tmp_path / "none.png")]),
                       "calibration.temperature is", "calibrate it again")

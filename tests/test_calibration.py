"""Calibration (issue 27, part 1): one temperature fitted on the images a run held out, judged on the test split."""

import importlib.util
import json

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from mnist_kit.calibration import expected_calibration_error, fit_temperature, scores
from mnist_kit.cli import app
from mnist_kit.confidence import calibrate_run
from mnist_kit.recipe import load_recipe
from mnist_kit.runs import find_run, outputs_on_split, run_dataset
from mnist_kit.train import train
from tests.conftest import QUICK, REPO, one_line_error, write_recipe


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


def test_eval_reports_the_scores_before_and_after_and_an_ensemble_averages_calibrated_probabilities(
        held_out_run, trained_run):
    from mnist_kit.runs import evaluate_ensemble, evaluate_run

    fitted = calibrate_run(held_out_run)
    report = evaluate_run(held_out_run, write=False)["calibration"]
    assert report["temperature"] == fitted["temperature"]
    assert report["before"] == pytest.approx(fitted["test_before"]) and report["after"] == pytest.approx(
        fitted["test_after"])
    assert evaluate_run(trained_run.run_dir, write=False)["calibration"]["after"] is None  # nothing held out
    pair = evaluate_ensemble([held_out_run, held_out_run])  # one model twice: its own calibrated probabilities
    assert pair["calibration"]["members_calibrated"] == 2
    assert pair["calibration"]["scores"]["nll"] == pytest.approx(fitted["test_after"]["nll"], rel=1e-4)
    shown = CliRunner().invoke(app, ["eval", str(held_out_run)])
    assert shown.exit_code == 0 and f"after (temperature {fitted['temperature']:.3f})" in shown.stdout


def test_the_reliability_bins_add_up_to_the_ece_and_the_diagram_is_drawn(held_out_run, trained_run, tmp_path):
    from PIL import Image

    from mnist_kit.calibration import reliability_bins

    generator = torch.Generator().manual_seed(2)
    probabilities = (3 * torch.randn(4000, 10, generator=generator)).softmax(dim=1)
    labels = torch.randint(0, 10, (4000,), generator=generator)
    bins = reliability_bins(probabilities, labels)
    assert sum(bins["count"]) == 4000
    gaps = sum(n * abs(a - c) for n, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"]) if n)
    assert gaps / 4000 == pytest.approx(expected_calibration_error(probabilities, labels), abs=1e-5)
    calibrate_run(held_out_run)
    for run, out in ((held_out_run, tmp_path / "calibrated"), (trained_run.run_dir, tmp_path / "raw")):
        result = CliRunner().invoke(app, ["plot", "calibration", str(run), "--out", str(out)])
        assert result.exit_code == 0, result.output
        with Image.open(out / "calibration.png") as image:  # two panels, or one for a run without a temperature
            assert image.width == (1040 if run == held_out_run else 520)


def test_the_onnx_file_and_the_hub_folder_carry_the_temperature(held_out_run, trained_run, tmp_path):
    from mnist_kit.inference import open_predictor
    from mnist_kit.runs import export_run

    temperature = calibrate_run(held_out_run)["temperature"]
    if importlib.util.find_spec("onnxruntime"):
        calibrated, raw = open_predictor(export_run(held_out_run)), open_predictor(export_run(trained_run.run_dir))
        assert (calibrated.temperature, calibrated.calibrated) == (pytest.approx(temperature), True)
        assert (raw.temperature, raw.calibrated) == (1.0, False)
    if importlib.util.find_spec("huggingface_hub"):
        from mnist_kit.hub import save_hub_folder

        hub = open_predictor(save_hub_folder(held_out_run, tmp_path / "hub"))
        assert (hub.temperature, hub.calibrated) == (temperature, True)


def test_predict_says_once_that_an_uncalibrated_run_shows_raw_probabilities(held_out_run, trained_run):
    calibrate_run(held_out_run)
    example = str(REPO / "docs" / "examples" / "photo-7.jpg")
    raw = CliRunner().invoke(app, ["predict", str(trained_run.run_dir), example, example])
    assert raw.exit_code == 0 and raw.stdout.count("not calibrated") == 1
    assert "not calibrated" not in CliRunner().invoke(app, ["predict", str(held_out_run), example]).stdout
    entries = json.loads(CliRunner().invoke(app, ["predict", str(trained_run.run_dir), example, "--json"]).stdout)
    assert entries[0]["calibrated"] is False

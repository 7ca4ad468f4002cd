"""Bad input, through the CLI as users type it: exit status 2, one line naming what is wrong, nothing written."""

import json
import os
import shutil

import pytest
import torch
from typer.testing import CliRunner

from mnist_kit.cli import app
from tests.conftest import QUICK, one_line_error, write_recipe

runner = CliRunner()


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args])


RECIPE_MISTAKES = [
    # (what the recipe file says instead, what the one line must say)
    (("limit = 5000", "limit = = 5000"), ["invalid TOML", "line 5, column 9"]),
    (("[train]", "[trainn]"), ["unknown key or section 'trainn'", "Did you mean 'train'"]),
    (("batch_size = 64", "batch-size = 64"), ["unknown key 'batch-size' in [data]", "Did you mean 'batch_size'"]),
    (("epochs = 1", 'epochs = "1"'), ["train.epochs: expected an integer, got '1'"]),
    (("epochs = 1", "epochs = 0"), ["train.epochs must be > 0, got 0"]),
    (("batch_size = 64", "batch_size = -8"), ["data.batch_size must be > 0, got -8"]),
    (("weight_decay = 1e-5", "weight_decay = 1e-5\nlr = -0.001"), ["optimizer 'adam'", "Invalid learning rate"]),
    (('name = "mlp"', 'name = "mlp"\ndropout = 1.0'), ["model 'mlp'", "dropout must be in [0, 1)"]),
    (('name = "adam"', 'name = "adamm"'), ["unknown optimizer 'adamm'", "known optimizers:", "'adam'"]),
    (('name = "step"', 'name = "cosin"'), ["unknown scheduler 'cosin'", "Did you mean 'cosine'"]),
    (("step_size = 10", "step_sise = 10"), ["scheduler 'step' takes no argument 'step_sise'",
                                            "Its parameters: step_size=10, gamma=0.1"]),
]


@pytest.mark.parametrize("edit, fragments", RECIPE_MISTAKES, ids=[m[1][0][:40] for m in RECIPE_MISTAKES])
def test_recipe_mistakes(tmp_path, edit, fragments):
    assert edit[0] in QUICK
    recipe = write_recipe(tmp_path / "r.toml", QUICK.replace(*edit, 1))
    result = run_cli("train", recipe, "--out", tmp_path / "runs")
    one_line_error(result, "r.toml", *fragments)
    assert not (tmp_path / "runs").exists()


def test_plugin_that_does_not_import(tmp_path):
    (tmp_path / "mine.py").write_text("raise RuntimeError('half-written plugin')\n")
    recipe = write_recipe(tmp_path / "r.toml", 'plugins = ["mine.py"]\n' + QUICK)
    one_line_error(run_cli("train", recipe), "plugin 'mine.py' does not import: RuntimeError: half-written")


def test_missing_and_looping_fallbacks(tmp_path):
    fallback = '[fallback]\nmin_test_accuracy = 0.9\nrecipe = "{}"\n'
    missing = write_recipe(tmp_path / "a.toml", QUICK + fallback.format("gone.toml"))
    one_line_error(run_cli("train", missing), "no recipe 'gone.toml'")
    write_recipe(tmp_path / "b.toml", QUICK + fallback.format("b.toml"))
    one_line_error(run_cli("train", tmp_path / "b.toml"), "fallback recipes loop back on themselves: b -> b")


@pytest.mark.parametrize("assignment, fragments", [
    ("train.epoch=1", ["unknown key 'epoch' in [train]", "Did you mean 'epochs'"]),
    ("optimizer.lr=1e-3x", ["--set optimizer.lr: cannot parse value '1e-3x'"]),
    ("optimizer.momentum=0.9", ["optimizer 'adam' takes no argument 'momentum'"]),
    ("train.epochs", ["expected KEY=VALUE"]),
])
def test_set_mistakes(tmp_path, assignment, fragments):
    result = run_cli("train", "baseline", "--set", assignment, "--out", tmp_path / "runs")
    one_line_error(result, *fragments)
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of a finished run that a test may damage."""
    return shutil.copytree(trained_run.run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("plots", "*.json.tmp"))


def test_folder_that_is_not_a_run(tmp_path):
    one_line_error(run_cli("eval", tmp_path), "is not a run folder: it has no model.safetensors or model.pth")
    one_line_error(run_cli("eval", tmp_path / "nothing"), "no run at")


def test_missing_weights(run_copy):
    for name in ("model.safetensors", "model.pth"):
        (run_copy / name).unlink()
    one_line_error(run_cli("eval", run_copy), "is not a run folder")


def test_truncated_weights(run_copy):
    for name in ("model.safetensors", "model.pth"):
        data = (run_copy / name).read_bytes()
        (run_copy / name).write_bytes(data[: len(data) // 2])
    one_line_error(run_cli("eval", run_copy / "model.pth"), "model.pth: not a readable checkpoint (truncated")
    one_line_error(run_cli("eval", run_copy), "model.safetensors: not a readable safetensors file",
                          "and the fallback", "model.pth: not a readable checkpoint")


def test_damaged_safetensors_falls_back_to_the_pth(run_copy, trained_run):
    data = (run_copy / "model.safetensors").read_bytes()
    (run_copy / "model.safetensors").write_bytes(data[:100])
    report = json.loads(run_cli("eval", run_copy, "--json").stdout)
    assert report["weights"].endswith("model.pth") and report["accuracy"] == trained_run.test_accuracy


def test_pth_that_is_not_a_checkpoint(run_copy):
    torch.save([1, 2, 3], run_copy / "model.pth")
    one_line_error(run_cli("eval", run_copy / "model.pth"), "not an mnist-kit checkpoint")


def test_weights_that_do_not_fit_the_recipe(run_copy):
    meta = json.loads((run_copy / "metadata.json").read_text())
    meta["recipe"]["config"]["model"]["hidden"] = [512, 256, 64]
    (run_copy / "metadata.json").write_text(json.dumps(meta))
    one_line_error(run_cli("eval", run_copy), "does not fit the recipe's model",
                          "fc3.weight (128, 256) vs (64, 256)", "fc4.weight (10, 128) vs (10, 64)")


class RunsCode:
    """A pickle payload that would run a shell command when unpickled."""

    def __reduce__(self):
        return (os.system, ("echo this should never run",))


def test_pickle_that_would_run_code(run_copy):
    torch.save({"model_state_dict": RunsCode()}, run_copy / "model.pth")
    result = run_cli("eval", run_copy / "model.pth")
    one_line_error(result, "refused: it holds Python objects that could run code", "weights_only=True")
    assert "should never run" not in result.output


def test_altered_data_file_is_fetched_again(data_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_root / "MNIST" / "raw", raw, ignore=shutil.ignore_patterns(".*"))
    labels = bytearray((raw / "t10k-labels-idx1-ubyte").read_bytes())
    labels[500] = (labels[500] + 1) % 10  # one test label changed: same size, wrong checksum
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    (raw / "train-images-idx3-ubyte").write_bytes(b"\0" * 1000)  # truncated
    result = run_cli("data", "fetch", "--data-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "4 files verified" in result.output
    info = json.loads(run_cli("data", "info", "--json", "--data-dir", tmp_path).output)
    assert info["files"]["t10k-labels-idx1-ubyte"]["sha256"].startswith("ff7bcfd4")


def test_unwritable_data_folder(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    one_line_error(run_cli("data", "fetch", "--data-dir", tmp_path / "file" / "data"),
                          "cannot write to the data folder")


def test_predict_bad_inputs_one_line_each(trained_run, tmp_path):
    from PIL import Image

    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (50, 50), "white").save(tmp_path / "blank.png")
    Image.new("L", (50, 50), 0).save(tmp_path / "black.png")
    from tests.test_predict import huge_png
    huge_png(tmp_path / "bomb.png")
    files = ["notes.png", "empty.jpg", "blank.png", "black.png", "bomb.png"]
    result = runner.invoke(app, ["predict", str(trained_run.run_dir), *(str(tmp_path / f) for f in files)])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    expected = ["not an image", "empty file", "no ink found", "no ink found", "pixels"]
    assert len(errors) == len(files)
    for line, name, fragment in zip(errors, files, expected):
        assert name in line and fragment in line, line
    assert "Traceback" not in result.output


def test_debug_flag_and_variable_show_the_traceback(monkeypatch):
    assert run_cli("--debug", "recipes", "show", "nope").exc_info[0].__name__ == "UserError"
    monkeypatch.setenv("MNIST_KIT_DEBUG", "1")
    assert run_cli("recipes", "show", "nope").exc_info[0].__name__ == "UserError"
    monkeypatch.delenv("MNIST_KIT_DEBUG")
    assert run_cli("recipes", "show", "nope").exit_code == 2

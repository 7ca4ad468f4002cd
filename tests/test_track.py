"""What a run leaves to look at: history.csv in every run, TensorBoard event files read back with TensorBoard's own
event reader."""

import csv
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.recipe import load_recipe, recipe_hash
from mnist_kit.record import EVENTS as EVENTS_DIR
from mnist_kit.record import HISTORY as HISTORY_CSV
from mnist_kit.train import train
from tests.conftest import QUICK, one_line_error, write_recipe

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("track")
    recipe = load_recipe(write_recipe(folder / "quick.toml", QUICK),
                         ["data.limit=3000", "data.validation=1000", "train.epochs=2", 'train.log=["tensorboard"]'])
    return train(recipe, out_dir=folder / "runs", quiet=True, console=Console(quiet=True))


def read_events(run_dir):
    events = event_accumulator.EventAccumulator(str(run_dir / EVENTS_DIR),
                                                size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_history_csv_is_the_metadata_history(logged_run):
    with open(logged_run.run_dir / HISTORY_CSV, newline="") as file:
        rows = list(csv.DictReader(file))
    history = logged_run.metadata["history"]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, epoch in zip(rows, history):
        assert list(row) == list(epoch)
        assert all(float(row[key]) == pytest.approx(value, rel=1e-12) for key, value in epoch.items())


def test_event_files_hold_steps_epochs_pictures_recipe_and_hparams(logged_run):
    events, history = read_events(logged_run.run_dir), logged_run.metadata["history"]
    steps = 47  # 3,000 training images (the limit applies after the validation images are held out), batches of 64
    losses = events.Scalars("step/train_loss")
    assert [e.step for e in losses] == list(range(1, 2 * steps + 1))
    assert len(events.Scalars("step/lr")) == 2 * steps
    assert losses[-1].value < losses[0].value  # it learned
    for tag, key in (("accuracy/validation", "val_accuracy"), ("accuracy/test", "test_accuracy"),
                     ("loss/train", "train_loss")):
        assert [(e.step, pytest.approx(e.value, abs=1e-6)) for e in events.Scalars(tag)] == [
            (row["epoch"] * steps, row[key]) for row in history]
    assert {"test/confusion", "test/worst_mistakes"} <= set(events.Tags()["images"])
    assert events.Images("test/worst_mistakes")[0].width > 500
    (text,) = events.Tensors("recipe/text_summary")
    assert b"epochs = 2" in text.tensor_proto.string_val[0]
    plugin = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model.name"].string_value == "mlp" and hparams["train.epochs"].number_value == 2
    assert events.Scalars("final/test_accuracy")[0].value == pytest.approx(logged_run.test_accuracy)
    assert events.Scalars("final/validation_accuracy")[0].value == pytest.approx(logged_run.validation_accuracy)


def test_logging_does_not_change_what_the_run_is(logged_run, tmp_path):
    quiet = load_recipe(write_recipe(tmp_path / "quick.toml", QUICK),
                        ["data.limit=3000", "data.validation=1000", "train.epochs=2"])
    assert recipe_hash(quiet) == logged_run.metadata["recipe_hash"]


def test_without_tensorboard_the_option_says_how_to_install_it(quick_recipe, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    result = CliRunner().invoke(app, ["train", str(quick_recipe), "--log", "tensorboard",
                                      "--out", str(tmp_path / "runs")])
    one_line_error(result, "tensorboard", "pip install -e", "[tensorboard]'")
    assert not (tmp_path / "runs").exists()  # refused before anything trained


def test_an_unknown_logger_is_a_recipe_error(quick_recipe, tmp_path):
    result = CliRunner().invoke(app, ["train", str(quick_recipe), "--log", "wandb", "--out", str(tmp_path)])
    one_line_error(result, "train.log", "tensorboard", "wandb")

"""A run folder from anywhere is data: opening it (eval, plot, predict, export, serve, ensembles, resume) never
imports code its metadata names. Plugins come from the user: --plugin, or the user's own recipe."""

import json
import shutil

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import mnist_kit.progress
from mnist_kit.checkpoint import LAST
from mnist_kit.cli import app
from mnist_kit.errors import Interrupted
from mnist_kit.recipe import load_recipe
from mnist_kit.train import train
from tests.conftest import QUICK, REPO, run_folders, write_recipe

EVIL = """
from pathlib import Path
Path(__file__).resolve().parent.parent.joinpath("pwned").write_text("a run folder ran its code")
from mnist_kit.models import MODELS, mlp
MODELS.register("evil_only")(mlp)
"""
MINE = "from mnist_kit.models import MODELS, mlp\nMODELS.register('evil_only', replace=True)(mlp)\n"


def poison(record: dict, model: str = "evil_only") -> None:
    """What an attacker's run folder says: its model comes from the .py file beside it; where the recipe was, gone."""
    record["config"]["model"]["name"] = model
    record["config"]["plugins"] = ["downloaded-run/evil.py"]
    record["path"] = ""


@pytest.fixture
def downloaded(trained_run, tmp_path, monkeypatch):
    """A copy of a real run, poisoned, in ./downloaded-run with evil.py beside it; the working directory is its
    parent, as for a user who unpacked it there."""
    run_dir = tmp_path / "downloaded-run"
    shutil.copytree(trained_run.run_dir, run_dir)
    (run_dir / "evil.py").write_text(EVIL)
    meta = json.loads((run_dir / "metadata.json").read_text())
    poison(meta["recipe"])
    (run_dir / "metadata.json").write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)
    return run_dir


@pytest.mark.parametrize("command", [
    ["eval", "downloaded-run"],
    ["eval", "downloaded-run", "downloaded-run/model.pth"],
    ["plot", "predictions", "downloaded-run"],
    ["predict", "downloaded-run", str(REPO / "docs" / "examples" / "photo-7.jpg")],
    ["export", "downloaded-run"],
    ["serve", "downloaded-run", "--port", "0"],
], ids=["eval", "ensemble", "plot", "predict", "export", "serve"])
def test_opening_a_poisoned_run_imports_nothing_and_names_the_plugin(downloaded, command):
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "model 'evil_only' is not registered here; its recipe imported it from 'downloaded-run/evil.py'" \
           in result.stderr and "--plugin" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (downloaded.parent / "pwned").exists()


def test_the_users_own_plugin_opens_it(downloaded, tmp_path):
    (tmp_path / "mine.py").write_text(MINE)
    result = CliRunner().invoke(app, ["eval", "downloaded-run", "--plugin", "mine.py", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] > 0.8 and not (tmp_path / "pwned").exists()


def test_resume_imports_nothing_from_last_pth(tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path / "q.toml", QUICK.replace("epochs = 1", "epochs = 2")
                                      .replace("limit = 5000", "limit = 1000")))
    shown = mnist_kit.progress.PlainDisplay.epoch

    def stop_after_one(self, row):
        shown(self, row)
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist_kit.progress.PlainDisplay, "epoch", stop_after_one)
    with pytest.raises(Interrupted):
        train(recipe, out_dir=tmp_path / "runs", quiet=True, console=Console(quiet=True))
    monkeypatch.undo()
    (run_dir,) = run_folders(tmp_path / "runs")
    downloaded = tmp_path / "downloaded-run"
    run_dir.rename(downloaded)
    (downloaded / "evil.py").write_text(EVIL.replace("evil_only", "evil_resume"))
    state = torch.load(downloaded / LAST, weights_only=True)
    poison(state["recipe"], "evil_resume")  # a name no other test registers in this process
    torch.save(state, downloaded / LAST)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "--resume", "downloaded-run"])
    assert result.exit_code == 2 and "model 'evil_resume' is not registered here" in result.stderr, result.output
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "mine.py").write_text(MINE.replace("evil_only", "evil_resume"))
    resumed = CliRunner().invoke(app, ["train", "--resume", "downloaded-run", "--plugin", "mine.py", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert (downloaded / "model.safetensors").exists() and not (tmp_path / "pwned").exists()

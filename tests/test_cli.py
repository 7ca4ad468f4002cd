"""The CLI as users call it, through typer's test runner: output, files, exit codes, one-line errors."""

import json

from typer.testing import CliRunner

from mnist_kit.cli import app
from tests.conftest import QUICK, run_folders, write_recipe

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_recipes_lists_names_and_descriptions():
    result = invoke("recipes")
    assert result.exit_code == 0
    assert "baseline" in result.output and "improved" in result.output


def test_recipes_show_prints_the_file_with_comments():
    result = invoke("recipes", "show", "baseline")
    assert result.exit_code == 0
    assert result.output.startswith("#") and "[optimizer]" in result.output


def test_train_writes_a_run_and_says_where(tmp_path):
    recipe = write_recipe(tmp_path / "quick.toml", QUICK)
    result = invoke("train", recipe, "--set", "data.limit=2000", "--set", "train.seed=3", "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (run_dir,) = run_folders(tmp_path / "runs")
    assert run_dir.name in result.output.replace("\n", "")
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["recipe"]["config"]["train"]["seed"] == 3 and meta["data"]["train_images"] == 2000
    assert "epoch 1" in result.output  # plain lines when stdout is not a terminal


def test_unknown_recipe_is_one_line_and_exit_2(tmp_path):
    result = invoke("train", "basline", "--out", tmp_path)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: no recipe 'basline': give a name (baseline, ")
    assert line.endswith(") or a path to a .toml file. Did you mean 'baseline'?")
    assert not list(tmp_path.iterdir())


def test_bad_override_is_one_line_and_exit_2(tmp_path):
    result = invoke("train", "baseline", "--set", "train.epoch=1", "--out", tmp_path)
    assert result.exit_code == 2
    assert "unknown key 'epoch' in [train]" in result.output and "Traceback" not in result.output
    result = invoke("train", "baseline", "--set", "optimizer.lr=[1,", "--out", tmp_path)
    assert result.exit_code == 2 and "cannot parse value" in result.output


def test_debug_shows_the_traceback(tmp_path):
    result = invoke("--debug", "train", "basline")
    assert result.exit_code != 0 and result.exc_info and result.exc_info[0].__name__ == "UserError"


def test_data_info_json(data_root):
    result = invoke("data", "info", "--json", "--data-dir", data_root)
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["train"]["images"] == 60_000 and len(info["files"]) == 4


def test_data_info_table_and_fetch(data_root):
    result = invoke("data", "info")
    assert result.exit_code == 0 and "class counts" in result.output and "t10k-images-idx3-ubyte" in result.output
    result = invoke("data", "fetch")
    assert result.exit_code == 0 and "4 files verified" in result.output


def test_help_keeps_square_brackets():
    """Help texts say [default: ...] and .[cluster]: they must not be eaten as rich markup."""
    result = CliRunner().invoke(app, ["sweep", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "[default: runs/sweeps/NAME]" in result.output and "the [cluster] extra" in result.output
    assert "[default: $MNIST_KIT_DATA, else the user's cache: ~/.cache/mnist-kit on Linux]" in result.output

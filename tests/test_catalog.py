"""`mnist-kit runs list` and `runs diff` over real runs: found in sub-folders, filtered, sorted, compared; metadata
only (no torch import), and a file that is not a run's metadata is skipped with a warning, never trusted."""

import json
import subprocess
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mnist_kit.catalog import MAX_METADATA_BYTES, diff_runs, list_runs, where_curves_part
from mnist_kit.cli import app
from mnist_kit.recipe import load_recipe
from mnist_kit.train import train
from tests.conftest import QUICK, REPO, one_line_error, write_recipe

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny real runs: two learning rates, one of them inside a sweep-like sub-folder, and a seed."""
    folder = tmp_path_factory.mktemp("catalog")
    recipe_file = write_recipe(folder / "quick.toml", QUICK)
    made = []
    for out, overrides in ((folder / "runs", ["optimizer.lr=0.0"]),
                           (folder / "runs" / "sweeps" / "lr" / "p02", ["optimizer.lr=0.003"]),
                           (folder / "runs", ["optimizer.lr=0.003", "train.seed=1"])):
        recipe = load_recipe(recipe_file, ["data.limit=1000", "data.validation=500", *overrides])
        made.append(train(recipe, out_dir=out, quiet=True, console=Console(quiet=True)))
    return folder / "runs", made


def test_list_finds_every_run_below_the_folder_and_sorts_by_validation(runs):
    folder, made = runs
    rows, unreadable = list_runs(folder, sort="validation", descending=True)
    assert unreadable == [] and len(rows) == 3
    assert [r["validation_accuracy"] for r in rows] == sorted((m.validation_accuracy for m in made), reverse=True)
    assert rows[-1]["overrides"] == 'data.limit=1000 data.validation=500 optimizer.lr=0.0'  # lr 0 learns nothing
    assert {r["run"].split("/")[0] for r in rows} == {"sweeps", made[0].run_dir.name, made[2].run_dir.name}
    assert all(r["recipe"] == "quick" and r["epochs"] == 1 and r["seconds"] > 0 for r in rows)


def test_list_filters_on_recipe_keys_and_columns(runs):
    folder, made = runs
    rows, _ = list_runs(folder, where=["optimizer.lr=0.003"])
    assert len(rows) == 2
    rows, _ = list_runs(folder, where=["optimizer.lr=0.003", "train.seed=1"])
    assert [r["test_accuracy"] for r in rows] == [made[2].test_accuracy]
    assert list_runs(folder, recipe="qu*")[0] and not list_runs(folder, recipe="fast")[0]


def test_list_json_and_table(runs):
    folder, made = runs
    result = runner.invoke(app, ["runs", "list", str(folder), "--json", "--sort", "test"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["test_accuracy"] for r in rows] == sorted(m.test_accuracy for m in made)
    table = runner.invoke(app, ["runs", "list", str(folder)], terminal_width=200)
    assert "3 runs under" in table.stdout and f"{made[2].test_accuracy:.2%}" in table.stdout


def test_a_file_that_is_not_a_runs_metadata_is_skipped_with_a_warning(runs, tmp_path):
    folder = tmp_path / "runs"
    for name, text in (("broken", "{not json"), ("list", "[1, 2]"), ("huge", " " * (MAX_METADATA_BYTES + 1))):
        (folder / name).mkdir(parents=True)
        (folder / name / "metadata.json").write_text(text)
    result = runner.invoke(app, ["runs", "list", str(folder)])
    assert result.exit_code == 0 and "0 runs under" in result.stdout
    assert result.stderr.count("warning: skipped") == 3


def test_diff_names_the_keys_and_results_that_differ(runs):
    _, made = runs
    diff = diff_runs(made[0].run_dir, made[2].run_dir)
    assert diff["recipe"] == {"optimizer.lr": [0.0, 0.003], "train.seed": [0, 1]}
    assert diff["results"]["test_accuracy"] == [made[0].test_accuracy, made[2].test_accuracy]
    assert "parameters" not in diff["results"] and "data" not in diff["results"]  # same network, same data files
    everything = diff_runs(made[0].run_dir, made[2].run_dir, everything=True)
    assert everything["recipe"]["model.name"] == ["mlp", "mlp"]
    result = runner.invoke(app, ["runs", "diff", str(made[0].run_dir), str(made[2].run_dir), "--json"])
    assert json.loads(result.stdout) == diff


def history(key: str, values: list[float]) -> dict:
    return {"history": [{"epoch": i, key: v, "train_loss": 1.0 / i} for i, v in enumerate(values, start=1)]}


def test_curves_part_at_the_first_epoch_past_the_gap():
    a = history("val_accuracy", [0.90, 0.950, 0.97, 0.98])
    b = history("val_accuracy", [0.90, 0.9505, 0.99, 0.98])
    assert where_curves_part(a, b) == {"compared": "validation accuracy", "gap": 0.1, "epoch": 3,
                                       "values": [0.97, 0.99], "epochs_compared": 4}
    assert where_curves_part(a, b, accuracy_gap=0.01)["epoch"] == 2  # 0.05 points apart
    assert where_curves_part(a, b, accuracy_gap=5)["epoch"] is None
    # no validation split on one side: the training losses compare, relative to the smaller
    c = {"history": [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.52}]}
    d = {"history": [{"epoch": 1, "train_loss": 1.005}, {"epoch": 2, "train_loss": 0.5},
                     {"epoch": 3, "train_loss": 0.1}]}
    assert where_curves_part(c, d) == {"compared": "training loss", "gap": 0.01, "epoch": 2, "values": [0.52, 0.5],
                                       "epochs_compared": 2}
    assert where_curves_part(a, c)["compared"] == "training loss"


def test_diff_says_where_real_runs_part_and_plot_overlays_them(runs, tmp_path):
    _, made = runs
    lr0, seed1 = made[0].run_dir, made[2].run_dir
    assert diff_runs(lr0, seed1)["curves"]["epoch"] == 1  # lr 0 never learns
    assert diff_runs(lr0, lr0)["curves"] == {"compared": "validation accuracy", "gap": 0.1, "epoch": None,
                                            "values": None, "epochs_compared": 1}
    shown = runner.invoke(app, ["runs", "diff", str(lr0), str(seed1)], terminal_width=200)
    assert "curves part at epoch 1: validation accuracy" in shown.stdout
    result = runner.invoke(app, ["plot", "curves", str(lr0), str(seed1), str(made[1].run_dir), "--out",
                                 str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    one_line_error(runner.invoke(app, ["plot", "curves", str(lr0), str(seed1)]), "needs --out")
    one_line_error(runner.invoke(app, ["plot", "confusion", str(lr0), str(seed1), "--out", str(tmp_path)]),
                   "takes one run")


def test_user_mistakes_are_one_line(runs, tmp_path):
    folder, made = runs
    one_line_error(runner.invoke(app, ["runs", "list", str(tmp_path / "nowhere")]), "no such folder")
    one_line_error(runner.invoke(app, ["runs", "list", str(folder), "--sort", "accuracy"]), "cannot sort by")
    one_line_error(runner.invoke(app, ["runs", "list", str(folder), "--where", "lr"]), "KEY=VALUE")
    one_line_error(runner.invoke(app, ["runs", "diff", str(made[0].run_dir), str(tmp_path)]), "not a run folder")


def test_listing_imports_no_torch(runs):
    folder, _ = runs
    code = ("import sys; from mnist_kit.cli import app\n"
            f"app(['runs', 'list', {str(folder)!r}, '--json'], standalone_mode=False)\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3

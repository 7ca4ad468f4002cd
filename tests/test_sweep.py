"""Sweeps: every point trains, the summary marks the best, reruns skip finished points, failures do not stop it."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.errors import UserError
from mnist_kit.recipe import toml_value
from mnist_kit.sweep import local_backend, run_sweep, sweep_points
from tests.conftest import SWEEP


def read_csv(path):
    with open(path) as file:
        return list(csv.DictReader(file))


def test_sweep_trains_each_point_marks_the_best_and_skips_on_rerun(sweep_file, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(sweep_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "summary.csv")
    assert [r["optimizer.lr"] for r in rows] == ["0.0", "0.003"]
    assert float(rows[0]["test_accuracy"]) < 0.3 < 0.8 < float(rows[1]["test_accuracy"])  # lr 0 learns nothing
    assert [r["best"] for r in rows] == ["", "*"]
    assert (out / "summary.png").stat().st_size > 5000
    again = CliRunner().invoke(app, ["sweep", str(sweep_file), "--out", str(out)])
    assert again.exit_code == 0 and again.output.count("done before") == 2
    assert read_csv(out / "summary.csv")[1]["test_accuracy"] == rows[1]["test_accuracy"]


def test_a_failing_point_is_reported_and_the_rest_run(sweep_file, tmp_path):
    sweep_file.write_text(SWEEP.replace('"optimizer.lr" = [0.0, 0.003]', '"train.device" = ["mps", "cpu"]'))
    rows, out = run_sweep(sweep_file, tmp_path / "out")
    assert rows[0]["status"] == "failed" and "not available" in rows[0]["error"]
    assert rows[1]["status"] == "trained" and rows[1]["test_accuracy"] > 0.8


def test_parallel_workers_give_the_same_summary(sweep_file, tmp_path):
    serial, _ = run_sweep(sweep_file, tmp_path / "serial")
    parallel, _ = run_sweep(sweep_file, tmp_path / "parallel", backend=local_backend(workers=2))
    assert [r["test_accuracy"] for r in parallel] == pytest.approx([r["test_accuracy"] for r in serial], abs=0.02)


@pytest.mark.parametrize("text, message", [
    ('recipe = "quick.toml"\n[grid]\n"optimizer.lr" = []\n', "non-empty list"),
    ('recipe = "quick.toml"\ngrids = 1\n', "unknown key 'grids'"),
    ('[grid]\n"optimizer.lr" = [1]\n', "`recipe` must name the base recipe"),
    ('recipe = "quick.toml"\n[grid]\n"optimizer.lrr" = [1]\n', "point 1 .*takes no argument 'lrr'"),
])
def test_bad_sweep_files(sweep_file, text, message):
    sweep_file.write_text(text)
    with pytest.raises(UserError, match=message):
        sweep_points(sweep_file, sweep_file.parent / "out")


def test_toml_values_round_trip():
    import tomllib

    for value in [1, 0.003, 1e-05, 25.0, True, "cpu", 'a "quoted" word', [64, 128], {"name": "nll"}]:
        assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value


def test_a_changed_set_or_plugin_trains_the_points_again_instead_of_reporting_stale_runs(sweep_file, tmp_path):
    out = tmp_path / "out"
    first, _ = run_sweep(sweep_file, out)
    sweep_file.write_text(SWEEP.replace('"data.limit" = 1500', '"data.limit" = 1600'))
    changed, _ = run_sweep(sweep_file, out)
    assert [row["status"] for row in changed] == ["trained", "trained"]  # not "done before" with 1,500 images
    assert all(json.loads((Path(row["run"]) / "metadata.json").read_text())["data"]["train_images"] == 1600
               for row in changed)
    again, _ = run_sweep(sweep_file, out)
    assert [row["status"] for row in again] == ["done before", "done before"]
    assert [row["run"] for row in again] == [row["run"] for row in changed]

    (tmp_path / "width.py").write_text(PLUGIN.format(width=16))
    quick = (tmp_path / "quick.toml").read_text()
    (tmp_path / "quick.toml").write_text('plugins = ["width.py"]\n' + quick.replace('name = "mlp"', 'name = "wide"'))
    with_plugin, _ = run_sweep(sweep_file, out)
    (tmp_path / "width.py").write_text(PLUGIN.format(width=24))  # the plugin's content is part of the recipe
    assert [row["status"] for row in run_sweep(sweep_file, out)[0]] == ["trained", "trained"]
    assert with_plugin[0]["run"] != first[0]["run"]


PLUGIN = """
from torch import nn
from mnist_kit.models import MODELS

@MODELS.register("wide")
def wide(input_shape, num_classes, width: int = {width}):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, num_classes))
"""


def test_duplicate_grid_values_are_one_point(sweep_file, tmp_path):
    sweep_file.write_text(SWEEP.replace("[0.0, 0.003]", "[0.001, 1e-3, 0.003]"))
    _, points = sweep_points(sweep_file, tmp_path / "out")
    assert [(p.index, p.values["optimizer.lr"]) for p in points] == [(1, 0.001), (2, 0.003)]

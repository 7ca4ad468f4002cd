"""Sweeps: every point trains, the summary marks the best, reruns skip finished points, failures do not stop it."""

import csv

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

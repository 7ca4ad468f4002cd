"""The run record (mnist_kit.record): metadata.json read bounded and upgraded from older schemas, the run folder's
layout, the `latest` pointer, history.csv; one owner, no torch. The fixture tests/fixtures/v1 is a run as schema 1
wrote it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_kit import record
from mnist_kit.cli import app
from mnist_kit.errors import NoFinishedRun, UserError
from tests.conftest import REPO

FIXTURE = Path(__file__).parent / "fixtures" / "v1"
runner = CliRunner()


def test_schema_1_metadata_reads_in_todays_form():
    written = json.loads((FIXTURE / record.METADATA).read_text())
    assert "schema" not in written and written["recipe_name"] == "v1"  # as mnist-kit 0.1 wrote it
    meta = record.open_metadata(FIXTURE)
    recipe = meta["recipe"]
    assert meta["schema"] == record.SCHEMA_VERSION and recipe["schema"] == record.SCHEMA_VERSION
    assert recipe["name"] == "v1" and recipe["path"] == written["recipe_path"]
    assert recipe["overrides"] == {"train.seed": 3}
    assert recipe["config"]["optimizer"]["lr"] == 0.01 and "max_lr" not in recipe["config"]["scheduler"]
    assert recipe["config"]["train"]["keep"] == "last"  # keys added since get their defaults
    assert not {"recipe_name", "recipe_path", "overrides"} & set(meta)
    assert meta["test_accuracy"] == written["test_accuracy"]
    assert written == json.loads((FIXTURE / record.METADATA).read_text())  # the file's dict is not changed


def test_runs_list_and_diff_show_an_old_run_as_it_was_trained(tmp_path):
    result = runner.invoke(app, ["runs", "list", str(FIXTURE.parent), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["recipe"] == "v1" and row["overrides"] == "train.seed=3" and row["epochs"] == 2
    shutil.copytree(FIXTURE, tmp_path / "v1")
    meta = json.loads((tmp_path / "v1" / record.METADATA).read_text())
    meta["recipe"]["scheduler"]["max_lr"] = 0.02  # schema 1's peak learning rate
    (tmp_path / "v1" / record.METADATA).write_text(json.dumps(meta))
    diff = runner.invoke(app, ["runs", "diff", str(FIXTURE), str(tmp_path / "v1"), "--json"])
    assert diff.exit_code == 0, diff.output
    assert json.loads(diff.stdout)["recipe"] == {"optimizer.lr": [0.01, 0.02]}  # today's key; nothing else differs


def test_a_newer_schema_and_a_broken_record_are_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    meta = json.loads((run / record.METADATA).read_text())
    (run / record.METADATA).write_text(json.dumps({**meta, "schema": record.SCHEMA_VERSION + 1}))
    with pytest.raises(UserError, match="newer mnist-kit"):
        record.open_metadata(run)
    assert record.read_metadata(run / record.METADATA) is None
    (run / record.METADATA).write_text(json.dumps({"schema": 2, "recipe": {"name": "x"}}))  # no config
    with pytest.raises(UserError, match="not a run's metadata"):
        record.open_metadata(run)
    (run / record.METADATA).write_bytes(b" " * (record.MAX_METADATA_BYTES + 1))
    assert record.read_metadata(run / record.METADATA) is None


def test_latest_points_at_the_run_that_finished_last(tmp_path):
    with pytest.raises(NoFinishedRun):
        record.pointed_run(tmp_path / record.LATEST)
    first, second = record.new_run_dir(tmp_path, "quick"), record.new_run_dir(tmp_path, "quick")
    assert first != second and first.name.startswith("quick-") and second.name.endswith("-2")
    record.point_latest(first)
    record.point_latest(second)
    assert record.pointed_run(tmp_path / record.LATEST) == second
    assert record.pointed_run(first) == first
    assert not record.is_finished(tmp_path / record.LATEST)


def test_the_cli_adds_the_command_to_run_when_no_run_has_finished(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / record.LATEST)])
    assert result.exit_code == 2 and "none has" in result.stderr and "train RECIPE" in result.stderr


def test_history_csv_has_the_columns_of_every_row(tmp_path):
    rows = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25, "val_accuracy": 0.9}]
    path = record.write_history(tmp_path, rows)
    assert path.read_text().splitlines() == ["epoch,train_loss,val_accuracy", "1,0.5,", "2,0.25,0.9"]


def test_the_record_imports_no_torch():
    code = ("import sys; import mnist_kit.record, mnist_kit.settings, mnist_kit.catalog; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


ODD = {  # issue 26 row 7 and row 14: each once crashed or hung the whole listing
    "machine": lambda meta: {**meta, "machine": "x"},
    "accuracy": lambda meta: {**meta, "test_accuracy": "high"},
    "history": lambda meta: {**meta, "history": 5},
    "started": lambda meta: {**meta, "started": 5},
    "config": lambda meta: {**meta, "recipe": [1]},
    "overrides": lambda meta: {**meta, "overrides": [["a"]]},
}


def test_one_odd_metadata_json_is_skipped_with_its_reason_and_the_rest_listed(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "good")
    meta = json.loads((FIXTURE / record.METADATA).read_text())
    for name, odd in ODD.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / record.METADATA).write_text(json.dumps(odd(meta)))
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / record.METADATA).write_text("[" * 100_000)
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / record.METADATA)  # reading it would wait for a writer forever
    for sort in ("test", "started", "seconds"):
        result = runner.invoke(app, ["runs", "list", str(tmp_path), "--json", "--sort", sort])
        assert result.exit_code == 0, result.output
        assert [row["run"] for row in json.loads(result.stdout)] == ["good"]
        skipped = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped")]
        assert len(skipped) == len(ODD) + 2
    assert "JSON nested too deeply" in result.stderr and "not a regular file" in result.stderr
    assert "test_accuracy is str 'high'" in result.stderr
    diff = runner.invoke(app, ["runs", "diff", str(tmp_path / "good"), str(tmp_path / "nested")])
    assert diff.exit_code == 2 and len(diff.stderr.strip().splitlines()) == 1 and "nested too deeply" in diff.stderr
    (tmp_path / "nested" / record.SAFETENSORS).write_bytes(b"")  # a run folder as find_run sees one
    evaluated = runner.invoke(app, ["eval", str(tmp_path / "nested")])
    assert evaluated.exit_code == 2 and len(evaluated.stderr.strip().splitlines()) == 1
    assert "JSON nested too deeply" in evaluated.stderr

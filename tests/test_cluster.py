"""Sweeps as Ray tasks on a local Ray instance: the same summary as the local backend, failures reported, Ctrl-C."""

import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.cluster import import_ray, ray_backend
from mnist_kit.errors import UserError
from mnist_kit.sweep import local_backend, run_sweep
from tests.conftest import REPO, SWEEP


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs, as on CI) for the module: a sweep joins it instead of starting its own."""
    ray = import_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()


def comparable(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "run")} for row in rows]


def test_ray_tasks_give_the_local_summary_and_skip_finished_points(sweep_file, tmp_path, local_ray):
    local, _ = run_sweep(sweep_file, tmp_path / "local", backend=local_backend(cpus_per_point=1))
    on_ray, out = run_sweep(sweep_file, tmp_path / "ray", backend=ray_backend(cpus_per_point=1))
    # the same function trains each point with the same seed and thread count: the same numbers, exactly
    assert comparable(on_ray) == comparable(local)
    assert [row["status"] for row in on_ray] == ["trained", "trained"]
    assert on_ray[0]["test_accuracy"] < 0.3 < 0.8 < on_ray[1]["test_accuracy"]  # lr 0 learns nothing
    header = (out / "summary.csv").read_text().splitlines()[0]
    assert header.startswith("point,optimizer.lr,validation_accuracy,test_accuracy")
    assert all(str(tmp_path / "ray") in row["run"] for row in on_ray)  # runs land under --out
    again, _ = run_sweep(sweep_file, tmp_path / "ray", backend=ray_backend())
    assert [row["status"] for row in again] == ["done before", "done before"]


def test_audit_folds_train_as_ray_tasks_and_a_local_rerun_reuses_them(tmp_path, local_ray):
    pytest.importorskip("cleanlab", reason="the [audit] extra is not installed")
    from mnist_kit.audit import audit
    from tests.conftest import QUICK, write_recipe

    recipe = write_recipe(tmp_path / "quick.toml", QUICK.replace("limit = 5000", "limit = 1500"))
    said = []
    on_ray = audit(recipe, folds=2, images="test", out=tmp_path / "audit", backend=ray_backend(),
                   on_fold=lambda k, n, status: said.append(status))
    assert said == ["trained", "trained"] and on_ray["accuracy_out_of_sample"]["test"] > 0.8
    local = audit(recipe, folds=2, images="test", out=tmp_path / "audit",
                  on_fold=lambda k, n, status: said.append(status))
    assert said[2:] == ["done before", "done before"] and local["issues"] == on_ray["issues"]


def test_a_point_ray_cannot_place_is_reported_and_the_rest_run(sweep_file, tmp_path, local_ray):
    sweep_file.write_text(SWEEP.replace('"optimizer.lr" = [0.0, 0.003]', '"train.device" = ["cuda", "cpu"]'))
    rows, _ = run_sweep(sweep_file, tmp_path / "out", backend=ray_backend())
    assert rows[0]["status"] == "failed" and "the Ray cluster has no GPU" in rows[0]["error"]
    assert rows[1]["status"] == "trained" and rows[1]["test_accuracy"] > 0.8


def test_more_cpus_per_point_than_any_machine_has_is_an_error(sweep_file, tmp_path, local_ray):
    with pytest.raises(UserError, match="--cpus-per-point 3: no machine in the Ray cluster has more than 2 CPUs"):
        run_sweep(sweep_file, tmp_path / "out", backend=ray_backend(cpus_per_point=3))


@pytest.mark.parametrize("args, message", [
    (["--backend", "slurm"], "unknown backend 'slurm'; choose local or ray"),
    (["--backend", "ray", "--workers", "2"], "--workers is for the local backend"),
    (["--address", "10.0.0.1:6379"], "--address is for --backend ray (a Ray cluster)"),
])
def test_backend_mistakes_are_one_line_errors(sweep_file, tmp_path, args, message):
    result = CliRunner().invoke(app, ["sweep", str(sweep_file), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--backend", "slurm"], "unknown backend 'slurm'; choose local or ray"),
    (["--replicas", "2"], "--replicas is for --backend ray (a Ray cluster)"),
    (["--backend", "ray", "--workers", "2", "--plugin", "mine.py"],
     "--workers and --plugin are for the local backend; on Ray: --replicas"),
])
def test_serve_backend_mistakes_are_one_line_errors(tmp_path, args, message):
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "no-run"), *args])
    assert result.exit_code == 2 and message in result.output


def test_an_address_nobody_answers_is_a_quick_clear_error(sweep_file, tmp_path):
    command = [sys.executable, "-m", "mnist_kit", "sweep", str(sweep_file), "--out", str(tmp_path / "out"),
               "--backend", "ray", "--address", "127.0.0.1:1"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)  # ray.init alone: minutes
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot reach the Ray cluster at 127.0.0.1:1: nothing answers")
    assert not (tmp_path / "out").exists()


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    with pytest.raises(UserError, match=r"pip install -e '.*\[cluster\]'"):
        import_ray()


def test_ctrl_c_cancels_the_outstanding_points_and_a_rerun_finishes(sweep_file, tmp_path):
    sweep_file.write_text(SWEEP.replace("[0.0, 0.003]", "[0.001, 0.002, 0.003, 0.004]")  # two run at once here
                          .replace('"data.limit" = 1500', '"data.limit" = 3000'))
    command = [sys.executable, "-m", "mnist_kit", "sweep", str(sweep_file), "--out", str(tmp_path / "out"),
               "--backend", "ray"]
    env = {**os.environ, "RAY_ADDRESS": ""}  # a local Ray instance of its own
    for _attempt in range(3):
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        for line in process.stdout:
            if line.startswith("point "):  # the first point is done, others are running or waiting
                process.send_signal(signal.SIGINT)
                break
        _, err = process.communicate(timeout=120)
        # Ray's own driver sometimes aborts when a cancelled task's reply arrives ("Check failed: it !=
        # submissible_tasks_.end() Tried to complete task that was not pending": Ray's bug, seen under load in about
        # half of the full-suite runs on 2 cores, twice running in one suite on a slow host); up to three tries, and the
        # rerun below must still finish every point.
        if "Tried to complete task that was not pending" not in err:
            break
    assert process.returncode == 130, err
    assert "unfinished points cancelled; run the sweep again" in err and "Traceback" not in err
    # The rerun reads what the cancelled run left: the local backend reads it as Ray would (one Ray start fewer)
    rerun = subprocess.run(command[:-2], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert 1 <= rerun.stdout.count("(done before)") < 4 and "failed" not in rerun.stdout

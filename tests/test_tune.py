"""`mnist-kit tune`: an Optuna study over a real recipe, pruned on validation, kept in SQLite; it goes on after
SIGKILL without repeating finished trials, and two workers share one study file without duplicate trials."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.errors import UserError
from mnist_kit.tune import read_study, run_study
from tests.conftest import QUICK, REPO, one_line_error, write_recipe

optuna = pytest.importorskip("optuna")

# The quick MLP on 1,000 images, 500 held out to choose on: a trial takes about a second per epoch.
STUDY = """
recipe = "quick.toml"
trials = {trials}
pruner = "{pruner}"
heartbeat_seconds = 1
grace_seconds = 3
[set]
"data.limit" = {limit}
"data.validation" = 500
"train.epochs" = {epochs}
[space]
"optimizer.lr" = {{ low = 0.0001, high = 0.03, log = true }}
"data.batch_size" = {{ choices = [32, 64] }}
"""


def study_file(folder, trials=6, pruner="halving", limit=1000, epochs=3):
    write_recipe(folder / "quick.toml", QUICK)
    return write_recipe(folder / "study.toml", STUDY.format(trials=trials, pruner=pruner, limit=limit, epochs=epochs))


def tune_process(path, out, data_root):
    return subprocess.Popen([sys.executable, "-m", "mnist_kit", "tune", str(path), "--out", str(out)], cwd=REPO,
                            env={**os.environ, "MNIST_KIT_DATA": str(data_root)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def load(out, name="study"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def test_a_study_prunes_on_validation_and_chooses_by_it(tmp_path):
    rows, folder = run_study(study_file(tmp_path), tmp_path / "out")
    states = [row["state"] for row in rows]
    assert len(rows) == 6 and states.count("complete") + states.count("pruned") == 6
    assert "pruned" in states  # successive halving promotes only the best third at each epoch
    for row in rows:
        trial_folder = folder / "trials" / f"{row['trial']:04d}"
        if row["state"] == "pruned":
            assert row["pruned_after"] in (1, 2) and not trial_folder.exists()  # numbers in the database only
        else:
            assert (trial_folder / row["run"].split("/")[-1] / "metadata.json").exists()
            assert 0 <= row["validation_accuracy"] <= 1 and row["test_accuracy"] is not None
    with open(folder / "summary.csv", newline="") as file:
        summary = list(csv.DictReader(file))
    (best,) = [r for r in summary if r["best"] == "*"]
    assert float(best["validation_accuracy"]) == max(r["validation_accuracy"] for r in rows
                                                      if r["validation_accuracy"] is not None)
    assert (folder / "history.png").stat().st_size > 10_000
    # Run again: the study is finished, nothing trains, the same trials are reported.
    again, _ = run_study(study_file(tmp_path), tmp_path / "out")
    assert [r["trial"] for r in again] == [r["trial"] for r in rows]


def test_sigkill_mid_trial_then_rerun_goes_on_and_retries_the_killed_trial(tmp_path, data_root):
    # two trials: the first finishes, the second is killed and retried (a third would prove nothing more)
    path, out = study_file(tmp_path, trials=2, pruner="none", limit=6000, epochs=2), tmp_path / "out"
    process = tune_process(path, out, data_root)
    for line in process.stdout:  # trial 0 finished: wait until trial 1 is training, then kill without warning
        if line.startswith("trial 0:"):
            break
    deadline = time.monotonic() + 60
    while not any((out / "trials" / "0001").glob("*/last.pth")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed = load(out).trials[1]
    assert killed.state == optuna.trial.TrialState.RUNNING  # SIGKILL: nobody could mark it
    time.sleep(4)  # past grace_seconds: its heartbeat is stale

    done = subprocess.run([sys.executable, "-m", "mnist_kit", "tune", str(path), "--out", str(out)], cwd=REPO,
                          env={**os.environ, "MNIST_KIT_DATA": str(data_root)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    trials = load(out).trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(numbers)))  # numbering went on, nothing twice
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and "trial 0:" not in done.stdout  # not repeated
    assert trials[1].state == optuna.trial.TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert retry.params == killed.params and retry.state == optuna.trial.TrialState.COMPLETE
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 2


def test_two_workers_share_one_sqlite_study(tmp_path, data_root):
    # Started together on a study that does not exist yet: they race to create the tables and the study.
    path, out = study_file(tmp_path, trials=6, pruner="none", epochs=1), tmp_path / "out"
    workers = [tune_process(path, out, data_root) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    trials = load(out).trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) >= 6
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    runs = [t.user_attrs["run"] for t in complete]
    assert len(runs) == len(set(runs)) == 6  # issue 26 row 4: was 7 or 8 (each worker finished its last trial)
    assert len({t.params["optimizer.lr"] for t in complete}) == 6  # was pairs: both workers seeded alike
    # A trial started when the last was already running elsewhere stepped back; the summary does not list it.
    assert all(t.user_attrs.get("surplus") for t in trials if t not in complete)
    with open(out / "summary.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == 6


def test_study_file_mistakes_are_one_line(tmp_path):
    runner = CliRunner()
    path = study_file(tmp_path)
    text = path.read_text()
    for broken, fragment in (
            (text.replace('"data.validation" = 500', ""), "data.validation"),
            (text.replace("trials = 6", "trails = 6"), "unknown key 'trails'"),
            (text.replace('recipe = "quick.toml"', ""), "`recipe` must name the base recipe"),
            (text.replace("low = 0.0001", "low = 0.5"), "low < high"),
            (text.replace('pruner = "halving"', 'pruner = "hyperband"'), "pruner must be one of"),
            (text.replace("choices = [32, 64]", "choices = [32, -1]"), "highest values"),
            # issue 26 row 12: each was an Optuna traceback after the first trial, or misread
            (text.replace("log = true", "step = 0"), "step must be a number > 0, got 0"),
            (text.replace("log = true", "step = -8"), "step must be a number > 0, got -8"),
            (text.replace("log = true", 'step = "x"'), "step must be a number > 0, got 'x'"),
            (text.replace("log = true", 'log = "no"'), "log must be true or false, got 'no'")):
        path.write_text(broken)
        one_line_error(runner.invoke(app, ["tune", str(path), "--out", str(tmp_path / "out")]), fragment)


def test_an_out_folder_that_cannot_be_made_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "file").write_text("")  # a file where the study's folder would go: mkdir fails for root too
    one_line_error(CliRunner().invoke(app, ["tune", str(study_file(tmp_path)), "--out", str(locked / "file" / "x")]),
                   "cannot create the study's folder")


def test_without_optuna_tune_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    result = CliRunner().invoke(app, ["tune", str(study_file(tmp_path)), "--out", str(tmp_path / "out")])
    one_line_error(result, "pip install -e", "[tune]'")


def test_the_shipped_study_reads():
    study = read_study(REPO / "recipes" / "studies" / "fast-3ep.toml")
    assert study["set"]["data.validation"] > 0 and study["trials"] == 24


def test_an_interrupted_study_is_told_how_to_go_on_by_the_cli(monkeypatch, tmp_path):
    """The library says what was kept; the CLI writes the command that continues it (with --out and --storage)."""
    from typer.testing import CliRunner

    import mnist_kit.tune
    from mnist_kit.cli import app
    from mnist_kit.errors import Interrupted

    def stopped(*args, **kwargs):
        raise Interrupted(f"interrupted: {tmp_path} keeps every finished trial")

    monkeypatch.setattr(mnist_kit.tune, "run_study", stopped)
    result = CliRunner().invoke(app, ["tune", "fast-3ep", "--out", str(tmp_path), "--storage", "sqlite:///x.db"])
    assert result.exit_code == 130
    said = " ".join(result.stderr.split())  # the command as this process runs the CLI (under pytest: python -m ...)
    assert said.endswith(f"keeps every finished trial: {said.split(': ')[-1].split(' tune ')[0]} tune fast-3ep "
                         f"--out {tmp_path} --storage sqlite:///x.db")


def test_a_continued_study_draws_new_values_and_a_changed_study_file_is_refused(tmp_path):
    """Issue 26 rows 4 and 5: a study continued in a new process drew its first trials' values again (every process
    seeded the sampler alike); a study file changed after a run reused the old study silently, or crashed."""
    path = study_file(tmp_path, trials=2, pruner="none", epochs=1)
    rows, _ = run_study(path, tmp_path / "out")
    path.write_text(path.read_text().replace("trials = 2", "trials = 3"))  # more trials: the same study goes on
    rows, _ = run_study(path, tmp_path / "out")
    assert len(rows) == 3 and rows[2]["optimizer.lr"] not in {rows[0]["optimizer.lr"], rows[1]["optimizer.lr"]}
    path.write_text(path.read_text().replace('"data.limit" = 1000', '"data.limit" = 800'))
    with pytest.raises(UserError, match="made from another version of this file"):
        run_study(path, tmp_path / "out")
    path.write_text(path.read_text().replace("choices = [32, 64]", "choices = [32, 50]"))
    one_line_error(CliRunner().invoke(app, ["tune", str(path), "--out", str(tmp_path / "out")]),
                   "made from another version of this file")


def test_a_failing_trial_does_not_count_and_a_space_where_nothing_trains_stops(tmp_path):
    """Issue 26 row 12: a trial whose point cannot train used up one of `trials` (2 complete of 3, exit 0) and
    Optuna printed its traceback. Now it is one line, the study goes on to `trials` complete ones, and a study
    whose points all fail stops after `trials` failures in a row with one line."""
    from tests.test_assemble import BOMB

    (tmp_path / "tune_bomb.py").write_text(BOMB.replace('"bomb"', '"tune_bomb"'))  # test_assemble has "bomb"
    write_recipe(tmp_path / "quick.toml", 'plugins = ["tune_bomb.py"]\n' + QUICK.replace('name = "mlp"',
                                                                                        'name = "tune_bomb"'))
    text = STUDY.format(trials=3, pruner="none", limit=1000, epochs=1).replace(
        '"data.batch_size" = {{ choices = [32, 64] }}'.replace("{{", "{").replace("}}", "}"),
        '"model.after" = { choices = [3, 1000000] }')  # after 3 steps its outputs are NaN: the loss diverges
    path = write_recipe(tmp_path / "study.toml", text)
    result = CliRunner().invoke(app, ["tune", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "failed, it does not count: training stopped: the training loss is not a finite number" in result.stdout
    states = [t.state for t in load(tmp_path / "out").trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3 and optuna.trial.TrialState.FAIL in states

    path.write_text(text.replace("choices = [3, 1000000]", "choices = [3, 4]"))
    one_line_error(CliRunner().invoke(app, ["tune", str(path), "--out", str(tmp_path / "none")]),
                   "3 trials failed in a row", "not a finite number", "summary.csv lists them")

"""MLflow tracking (issue 29, part 3): runs logged to a real SQLite store and read back with MLflow's own client:
parameters, per-epoch metrics, tags, artifacts; a resumed run continues its MLflow run; a sweep's points share one
experiment."""

import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.errors import Interrupted
from mnist_kit.recipe import load_recipe
from mnist_kit.train import resume, train
from tests.conftest import QUICK, one_line_error, run_folders, write_recipe

mlflow = pytest.importorskip("mlflow")
LOGGED = ["data.limit=2000", "data.validation=1000", "train.epochs=3", 'train.log=["mlflow"]']


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite store for the test, named the way users name one."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)  # artifacts go to ./mlruns beside it
    return mlflow.MlflowClient(uri)


def only_run(client, experiment: str):
    found = client.get_experiment_by_name(experiment)
    assert found is not None, [e.name for e in client.search_experiments()]
    (run,) = client.search_runs([found.experiment_id])
    return run


def test_a_run_logs_its_recipe_metrics_tags_and_files(store, tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "quick.toml", QUICK), LOGGED)
    result = train(recipe, out_dir=tmp_path / "runs", quiet=True, console=Console(quiet=True))
    run = only_run(store, "quick")
    assert run.info.status == "FINISHED" and run.info.run_name == result.run_dir.name
    assert run.data.params["optimizer.lr"] == "0.001" and run.data.params["train.epochs"] == "3"
    assert run.data.params["model.name"] == "mlp" and "description" not in run.data.params
    tags = run.data.tags
    assert tags["mnist_kit.recipe"] == "quick" and tags["mnist_kit.seed"] == "0"
    assert tags["mnist_kit.machine"] == result.metadata["machine"]["kind"]
    assert tags["mlflow.source.git.commit"] == str(result.metadata["git_commit"])
    history = result.metadata["history"]
    for key in ("train_loss", "val_accuracy", "test_accuracy", "lr"):
        logged = store.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in logged] == [(row["epoch"], pytest.approx(row[key])) for row in history]
    assert run.data.metrics["final_test_accuracy"] == pytest.approx(result.test_accuracy)
    files = {f.path for f in store.list_artifacts(run.info.run_id)}
    assert files == {"model.safetensors", "metadata.json", "history.csv"}
    copy = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="metadata.json",
                                               tracking_uri=store.tracking_uri, dst_path=str(tmp_path / "back"))
    assert open(copy, "rb").read() == (result.run_dir / "metadata.json").read_bytes()


def test_a_resumed_run_continues_its_mlflow_run(store, tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "quick.toml", QUICK), LOGGED)

    def stop_after_two(row: dict) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt  # as Ctrl-C after the second epoch's checkpoint

    with pytest.raises(Interrupted):
        train(recipe, out_dir=tmp_path / "runs", quiet=True, console=Console(quiet=True), on_epoch=stop_after_two)
    assert only_run(store, "quick").info.status == "KILLED"
    (run_dir,) = run_folders(tmp_path / "runs")
    resume(run_dir, quiet=True, console=Console(quiet=True))
    run = only_run(store, "quick")  # still one run
    assert run.info.status == "FINISHED"
    assert [m.step for m in store.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2, 3]


def test_a_sweep_logs_each_point_under_one_experiment(store, tmp_path):
    write_recipe(tmp_path / "quick.toml", QUICK)
    (tmp_path / "lr.toml").write_text('recipe = "quick.toml"\n[set]\n"data.limit" = 1000\n"train.log" = ["mlflow"]\n'
                                      '[grid]\n"optimizer.lr" = [0.001, 0.003]\n')
    result = CliRunner().invoke(app, ["sweep", str(tmp_path / "lr.toml"), "--out", str(tmp_path / "sweep")])
    assert result.exit_code == 0, result.output
    found = store.get_experiment_by_name("sweep lr")
    runs = store.search_runs([found.experiment_id])
    assert sorted(r.data.params["optimizer.lr"] for r in runs) == ["0.001", "0.003"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_without_mlflow_the_option_says_how_to_install_it(quick_recipe, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    result = CliRunner().invoke(app, ["train", str(quick_recipe), "--log", "mlflow", "--out", str(tmp_path / "runs")])
    one_line_error(result, "mlflow", "pip install -e", "[mlflow]'")
    assert not (tmp_path / "runs").exists()


def test_a_study_logs_each_trial_under_one_experiment(store, tmp_path):
    pytest.importorskip("optuna")
    from mnist_kit.tune import run_study
    from tests.test_tune import study_file

    path = study_file(tmp_path, trials=2, pruner="none", limit=500, epochs=1)
    path.write_text(path.read_text().replace('"train.epochs" = 1', '"train.epochs" = 1\n"train.log" = ["mlflow"]'))
    rows, folder = run_study(path, tmp_path / "out")
    found = store.get_experiment_by_name(f"study {folder.name}")
    runs = store.search_runs([found.experiment_id])
    assert len(runs) == len(rows) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.params["optimizer.lr"] for r in runs) == sorted(str(row["optimizer.lr"]) for row in rows)

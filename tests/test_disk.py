"""A disk that refuses: full (a small tmpfs) or read-only (a read-only bind mount). Nothing is lost, every case is
one line, and a run stopped by a full disk resumes once there is room. Skipped where mounting is refused."""

import json
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from mnist_kit.cli import app
from tests.conftest import QUICK, run_folders, write_recipe

runner = CliRunner()


def mount(*args) -> None:
    result = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"this machine refuses `mount {' '.join(map(str, args))}`: {result.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs."""
    folder = tmp_path / "small"
    folder.mkdir()
    mount("-t", "tmpfs", "-o", "size=3m", "tmpfs", folder)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def read_only_run(trained_run, tmp_path):
    """A copy of a finished run, behind a read-only bind mount."""
    source = shutil.copytree(trained_run.run_dir, tmp_path / "source", ignore=shutil.ignore_patterns("plots", "eval*"))
    folder = tmp_path / "run"
    folder.mkdir()
    mount("--bind", source, folder)
    try:
        mount("-o", "remount,ro,bind", folder)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_a_full_disk_keeps_the_last_good_epoch_and_resumes_once_there_is_room(small_disk, tmp_path):
    # hidden 200: last.pth (weights + Adam's two moments) is about 1.9 MB: the first fits in 3 MB, the second
    # (written beside the first, then renamed over it) does not
    text = QUICK.replace('name = "mlp"', 'name = "mlp"\nhidden = [200]\nbatchnorm = false')
    text = text.replace("limit = 5000", "limit = 1000").replace("epochs = 1", "epochs = 2")
    recipe = write_recipe(tmp_path / "r.toml", text)
    result = runner.invoke(app, ["train", str(recipe), "--out", str(small_disk), "--quiet"])
    line = error_line(result)
    (run_dir,) = run_folders(small_disk)
    assert f"cannot write {run_dir}/last.pth: No space left on device" in line
    assert f"{run_dir}/last.pth keeps epoch 1 of 2: make room, then resume with: " in line \
        and line.endswith(f" train --resume {run_dir}")
    assert sorted(p.name for p in run_dir.iterdir()) == ["history.csv", "last.pth"]  # no temporary file left
    mount("-o", "remount,size=20m", small_disk)  # make room
    resumed = runner.invoke(app, ["train", "--resume", str(run_dir), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert sorted(p.name for p in run_dir.iterdir()) == ["history.csv", "metadata.json", "model.pth",
                                                         "model.safetensors"]


def test_a_disk_too_full_for_the_first_epoch_leaves_no_folder(small_disk, tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", QUICK.replace("limit = 5000", "limit = 1000"))  # last.pth ~7 MB
    line = error_line(runner.invoke(app, ["train", str(recipe), "--out", str(small_disk), "--quiet"]))
    assert "No space left on device; nothing was kept" in line and not list(small_disk.iterdir())


def test_eval_on_a_read_only_run_prints_the_report_then_says_the_file_was_not_written(read_only_run, trained_run):
    result = runner.invoke(app, ["eval", str(read_only_run), "--json"])
    line = error_line(result)
    assert f"cannot write {read_only_run}/eval.json: Read-only file system (the report above is complete)" in line
    assert json.loads(result.stdout)["accuracy"] == trained_run.test_accuracy
    plain = runner.invoke(app, ["eval", str(read_only_run)])
    assert "accuracy" in plain.stdout and "Wrote" not in plain.stdout and plain.exit_code == 2


def test_export_and_plot_on_a_read_only_run_are_one_line(read_only_run):
    pytest.importorskip("onnx")
    assert "cannot write" in error_line(runner.invoke(app, ["export", str(read_only_run)]))
    assert "cannot write plots" in error_line(runner.invoke(app, ["plot", "curves", str(read_only_run)]))

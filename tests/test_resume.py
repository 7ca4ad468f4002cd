"""Interrupted by a real signal, resumed: the run ends with exactly the weights and numbers of an uninterrupted one."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys

import pytest
import torch
from rich.console import Console

from mnist_kit.atomic import write_atomic
from mnist_kit.checkpoint import LAST, load_last, restore_rng, rng_state
from mnist_kit.export import load_state_dict
from mnist_kit.recipe import load_recipe
from mnist_kit.train import train
from tests.conftest import REPO, run_folders, write_recipe

# Dropout, BatchNorm, OneCycle and shuffling all draw on or carry state that a resume must restore.
RECIPE = """
description = "resume test"
[data]
batch_size = 64
limit = 4000
[model]
name = "mlp"
[optimizer]
name = "adamw"
lr = 0.003
[scheduler]
name = "onecycle"
[train]
epochs = 5
seed = 7
device = "cpu"
"""


def cli(*args, env):
    return subprocess.Popen([sys.executable, "-m", "mnist_kit", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_after_epoch(process, epoch: int, signum: int) -> str:
    """Send `signum` once the process has printed the line of `epoch`; return its stderr."""
    for line in process.stdout:
        if line.startswith(f"epoch {epoch} "):
            process.send_signal(signum)
            break
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    return err


def without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


# A CNN with batched augmentation (global RNG), weight EMA (its own state) and bf16 autocast where available.
CNN_RECIPE = (RECIPE.replace("limit = 4000", "limit = 3000")
              .replace('name = "mlp"', 'name = "convnet"\nwidths = [8, 16]\nconvs_per_stage = 1\nstem_stride = 2')
              .replace('device = "cpu"', 'device = "cpu"\nloss = "cross_entropy"\nema = 0.9\nprecision = "auto"')
              + '\n[[augment]]\nname = "affine"\n')


@pytest.mark.parametrize("signals, recipe", [([signal.SIGINT], RECIPE), ([signal.SIGTERM, signal.SIGINT], RECIPE),
                                             ([signal.SIGINT], CNN_RECIPE)],
                         ids=["sigint", "sigterm+sigint", "cnn-augment-ema"])
def test_resume_ends_exactly_as_the_uninterrupted_run(tmp_path, data_root, signals, recipe):
    recipe_path = write_recipe(tmp_path / "resumable.toml", recipe)
    env = {**os.environ, "MNIST_KIT_DATA": str(data_root)}
    out = tmp_path / "runs"

    process = cli("train", recipe_path, "--out", out, "--quiet", env=env)
    err = stop_after_epoch(process, 1, signals[0])
    (run_dir,) = run_folders(out)
    printed = re.search(r"resume with: (.+)$", err.strip(), re.M).group(1)  # the command it prints is the one that
    assert printed.endswith(f"-m mnist_kit train --resume {run_dir}") and "Traceback" not in err  # works: used below
    assert load_last(run_dir)["epoch"] in (1, 2)  # the signal may land just after epoch 2's checkpoint
    assert not (run_dir / "model.safetensors").exists()

    for signum in signals[1:]:  # interrupted again while resuming
        process = cli("train", "--resume", run_dir, "--quiet", env=env)
        stop_after_epoch(process, 3, signum)
        assert load_last(run_dir)["epoch"] in (3, 4)

    process = subprocess.Popen([*shlex.split(printed), "--quiet"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert not (run_dir / LAST).exists()

    reference = train(load_recipe(recipe_path), out_dir=tmp_path / "reference", quiet=True,
                      console=Console(quiet=True))
    resumed = json.loads((run_dir / "metadata.json").read_text())
    assert without_seconds(resumed["history"]) == without_seconds(reference.metadata["history"])
    assert resumed["test_accuracy"] == reference.test_accuracy
    csv_epochs = (run_dir / "history.csv").read_text().splitlines()[1:]  # rewritten whole after every epoch
    assert [line.split(",")[0] for line in csv_epochs] == ["1", "2", "3", "4", "5"]
    ours = load_state_dict(run_dir / "model.safetensors")
    theirs = load_state_dict(reference.run_dir / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_interrupt_in_the_first_epoch_leaves_nothing(tmp_path, data_root):
    recipe_path = write_recipe(tmp_path / "slow.toml", RECIPE.replace("limit = 4000", "limit = 60000"))
    env = {**os.environ, "MNIST_KIT_DATA": str(data_root)}
    process = cli("train", recipe_path, "--out", tmp_path / "runs", "--quiet", env=env)
    for line in process.stdout:  # the title line: training has started
        if line.startswith("slow:"):
            process.send_signal(signal.SIGINT)
            break
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "nothing was kept" in err
    assert list((tmp_path / "runs").iterdir()) == []


def test_resume_refuses_a_finished_run_and_overrides(trained_run):
    from typer.testing import CliRunner

    from mnist_kit.cli import app

    result = CliRunner().invoke(app, ["train", "--resume", str(trained_run.run_dir)])
    assert result.exit_code == 2 and "finished training already" in result.output
    result = CliRunner().invoke(app, ["train", "--resume", str(trained_run.run_dir), "--set", "train.epochs=9"])
    assert result.exit_code == 2 and "--set is for a RECIPE: a resumed run continues" in result.output
    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 2 and "give a RECIPE" in result.output


def test_rng_state_survives_weights_only_round_trip(tmp_path):
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = rng_state(generator)
    write_atomic(tmp_path / "s.pth", lambda f: torch.save(state, f))
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.randperm(5, generator=generator))
    restore_rng(torch.load(tmp_path / "s.pth", weights_only=True), generator)
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.randperm(5, generator=generator))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and torch.equal(expected[3], again[3])


def test_an_interrupted_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous")

    def ctrl_c_halfway(file):
        file.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, ctrl_c_halfway)
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]

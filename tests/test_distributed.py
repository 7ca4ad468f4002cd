"""One run on two CPU processes through the real torchrun launcher (gloo), against the single-process run."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from rich.console import Console

from mnist_kit.checkpoint import LAST, load_last
from mnist_kit.export import load_state_dict
from mnist_kit.recipe import load_recipe
from mnist_kit.runs import evaluate_run
from mnist_kit.train import resume, train
from tests.conftest import QUICK, REPO, run_folders, write_recipe

# No dropout and no BatchNorm: nothing that differs between one process and two but the summation order.
PLAIN = """
description = "ddp equivalence"
[data]
batch_size = 64
limit = 6400
[model]
name = "mlp"
hidden = [128, 64]
dropout = 0.0
batchnorm = false
[optimizer]
name = "adam"
[scheduler]
name = "none"
[train]
epochs = 1
seed = 0
device = "cpu"
"""


def torchrun_train(*args, data_root, wait=True):
    """`torchrun --nproc_per_node 2 -m mnist_kit train --quiet ARGS` (finished, or running if not `wait`)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "mnist_kit", "train", "--quiet", *map(str, args)]
    env = {**os.environ, "MNIST_KIT_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    if wait:
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def torchrun(recipe_path, out, data_root):
    return torchrun_train(recipe_path, "--out", out, data_root=data_root)


def single(recipe_path, out):
    return train(load_recipe(recipe_path), out_dir=out, quiet=True, console=Console(quiet=True))


def largest_difference(run_a, run_b) -> float:
    ours, theirs = load_state_dict(run_a / "model.safetensors"), load_state_dict(run_b / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    return max((ours[key] - theirs[key]).abs().max().item() for key in ours)


def test_two_processes_train_the_same_weights_as_one(tmp_path, data_root):
    recipe = write_recipe(tmp_path / "plain.toml", PLAIN)
    done = torchrun(recipe, tmp_path / "ddp", data_root)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = run_folders(tmp_path / "ddp")
    reference = single(recipe, tmp_path / "one")
    # the same parameter names (no "module." prefix), and after 100 Adam steps with the same global batches only the
    # order of float sums differs (measured 7.3e-7); gradients not averaged across processes, or another batch
    # order, would differ by orders of magnitude more
    assert largest_difference(run_dir, reference.run_dir) < 1e-4
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["world_size"] == 2 and meta["backend"] == "gloo"
    assert evaluate_run(run_dir, write=False)["accuracy"] == meta["test_accuracy"]  # loads into a plain model
    assert done.stdout.count("Wrote ") == 1  # only rank 0 writes and reports


def test_batchnorm_and_dropout_recipe_reaches_the_same_accuracy(tmp_path, data_root):
    recipe = write_recipe(tmp_path / "bn.toml", QUICK.replace("limit = 5000", "limit = 6400"))
    done = torchrun(recipe, tmp_path / "ddp", data_root)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = run_folders(tmp_path / "ddp")
    accuracy = json.loads((run_dir / "metadata.json").read_text())["test_accuracy"]
    # each process evaluated half the test split with rank 0's BatchNorm statistics: the sum is rank 0's model
    assert evaluate_run(run_dir, write=False)["accuracy"] == accuracy
    # per-process BatchNorm statistics and dropout masks differ from one process's: compare accuracy, not weights
    assert accuracy == pytest.approx(single(recipe, tmp_path / "one").test_accuracy, abs=0.02)


def test_a_batch_that_does_not_split_is_a_clear_error(tmp_path, data_root):
    recipe = write_recipe(tmp_path / "odd.toml", PLAIN.replace("batch_size = 64", "batch_size = 63"))
    done = torchrun(recipe, tmp_path / "ddp", data_root)
    assert done.returncode != 0
    assert "data.batch_size 63 does not split over 2 processes" in done.stderr
    assert not (tmp_path / "ddp").exists() or not any((tmp_path / "ddp").iterdir())



def test_ctrl_c_on_torchrun_keeps_the_last_epoch_and_any_world_size_resumes(tmp_path, data_root):
    recipe = write_recipe(tmp_path / "plain.toml",
                          PLAIN.replace("limit = 6400", "limit = 3200").replace("epochs = 1", "epochs = 4"))
    process = torchrun_train(recipe, "--out", tmp_path / "ddp", data_root=data_root, wait=False)
    for line in process.stdout:  # rank 0's plain progress lines
        if line.startswith("epoch 1 "):
            process.send_signal(signal.SIGINT)  # Ctrl-C reaches torchrun, which passes it to every process
            break
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0
    (run_dir,) = run_folders(tmp_path / "ddp")
    assert re.search(rf"resume with: \S*torchrun --nproc_per_node N -m mnist_kit train --resume {run_dir}", err)
    assert load_last(run_dir)["epoch"] in (1, 2)  # the signal may land just after epoch 2's checkpoint
    assert not (run_dir / "model.safetensors").exists()
    copy = shutil.copytree(run_dir, tmp_path / "copy" / run_dir.name)

    done = torchrun_train("--resume", run_dir, data_root=data_root)  # the same two processes
    assert done.returncode == 0, done.stderr[-2000:]
    alone = resume(copy, quiet=True, console=Console(quiet=True))  # or one process
    assert not (run_dir / LAST).exists() and not (copy / LAST).exists()

    reference = single(recipe, tmp_path / "one").run_dir  # never interrupted, one process
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert [row["epoch"] for row in meta["history"]] == [1, 2, 3, 4]
    # 200 Adam steps: the order of float sums is all that differs (a repeated or skipped epoch would move ~1e-2)
    assert largest_difference(run_dir, reference) < 1e-4
    assert largest_difference(alone.run_dir, reference) < 1e-4


def test_sync_bn_on_the_cpu_is_a_clear_error(tmp_path, data_root):
    recipe = write_recipe(tmp_path / "sync.toml", PLAIN.replace('device = "cpu"', 'device = "cpu"\nsync_bn = true'))
    done = torchrun(recipe, tmp_path / "ddp", data_root)
    assert done.returncode != 0
    assert "train.sync_bn needs CUDA: PyTorch's SyncBatchNorm refuses cpu modules" in done.stderr
    assert single(recipe, tmp_path / "one").test_accuracy > 0.5  # alone there is nothing to sync: it trains


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_several_machines_command_with_two_launchers_as_two_nodes(tmp_path, data_root):
    """The README's multi-node command: one torchrun per 'node' (here both on this machine), c10d rendezvous."""
    recipe = write_recipe(tmp_path / "plain.toml", PLAIN)
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "test",
               "-m", "mnist_kit", "train", str(recipe), "--out", str(tmp_path / "ddp"), "--quiet"]
    env = {**os.environ, "MNIST_KIT_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=120) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    (run_dir,) = run_folders(tmp_path / "ddp")
    assert json.loads((run_dir / "metadata.json").read_text())["world_size"] == 2
    assert largest_difference(run_dir, single(recipe, tmp_path / "one").run_dir) < 1e-4

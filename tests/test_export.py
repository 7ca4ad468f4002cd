"""A run's files: .pth and .safetensors hold the same tensors, metadata says how to rerun, writes are atomic."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import safetensors
import safetensors.torch
import torch
from rich.console import Console

from mnist_kit.assemble import build_model
from mnist_kit.atomic import write_atomic
from mnist_kit.data import normalize
from mnist_kit.evaluate import evaluate
from mnist_kit.export import load_state_dict, safetensors_bytes
from mnist_kit.fetch import MNIST_FILES
from mnist_kit.recipe import load_recipe
from mnist_kit.train import train
from tests.conftest import QUICK, REPO, run_folders, write_recipe


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    recipe = load_recipe(write_recipe(folder / "quick.toml", QUICK), ["data.limit=3000"])
    return train(recipe, out_dir=folder / "runs", quiet=True, console=Console(quiet=True))


def test_run_folder_holds_the_weights_metadata_and_history(run):
    assert run.run_dir.name.startswith("quick-")
    assert sorted(p.name for p in run.run_dir.iterdir()) == ["history.csv", "metadata.json", "model.pth",
                                                             "model.safetensors"]


def test_pth_is_the_reference_checkpoint_and_loads_weights_only(run):
    ckpt = torch.load(run.run_dir / "model.pth", weights_only=True)
    assert {"model_state_dict", "model_architecture", "test_accuracy", "recipe"} <= set(ckpt)
    assert ckpt["test_accuracy"] == run.test_accuracy
    assert "fc1" in ckpt["model_architecture"]
    assert ckpt["recipe"]["config"]["model"]["name"] == "mlp" and ckpt["recipe"]["schema"] == 2


def test_safetensors_equals_pth_key_for_key(run):
    pth = torch.load(run.run_dir / "model.pth", weights_only=True)["model_state_dict"]
    st = safetensors.torch.load_file(run.run_dir / "model.safetensors")
    assert list(st) and sorted(st) == sorted(pth)
    for key in pth:
        assert pth[key].dtype == st[key].dtype and torch.equal(pth[key], st[key]), key
    with safetensors.safe_open(run.run_dir / "model.safetensors", "pt") as file:
        assert json.loads(file.metadata()["recipe"]) == json.loads(json.dumps(run.metadata["recipe"]))


def test_reloaded_weights_score_what_training_recorded(run, splits):
    recipe = json.loads((run.run_dir / "metadata.json").read_text())["recipe"]["config"]
    for weights in ("model.safetensors", "model.pth"):
        model = build_model(recipe, splits.spec)
        model.load_state_dict(load_state_dict(run.run_dir / weights))
        test = evaluate(model, normalize(splits.test_images, splits.mean, splits.std), splits.test_labels, 10)
        assert test["accuracy"] == run.test_accuracy


def test_metadata_has_what_a_rerun_needs(run):
    meta = json.loads((run.run_dir / "metadata.json").read_text())
    for key in ["schema", "recipe", "history", "test_accuracy", "per_class_accuracy",
                "parameters", "seed", "device", "versions", "started", "wall_seconds", "git_commit", "command"]:
        assert key in meta, key
    assert meta["schema"] == 2 and meta["recipe"]["name"] == "quick"
    assert meta["recipe"]["overrides"] == {"data.limit": 3000}
    assert meta["recipe"]["config"]["data"]["limit"] == 3000
    assert meta["parameters"] == 568_970
    assert {name: f["sha256"] for name, f in meta["data"]["files"].items()} == {
        name: sha for name, (_, sha) in MNIST_FILES.items()}
    assert set(meta["per_class_accuracy"]) == {str(d) for d in range(10)}
    assert {"torch", "torchvision", "python"} <= set(meta["versions"])
    assert meta["wall_seconds"] > 0 and len(meta["history"]) == 1
    phases = meta["phase_seconds"]  # where the time went
    assert set(phases) == {"data", "build", "train", "evaluate", "checkpoint", "export"}
    assert all(seconds > 0 for seconds in phases.values())
    assert sum(phases.values()) - phases["export"] <= meta["wall_seconds"]


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")

    def crash(file):
        file.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_safetensors_bytes_depend_on_contents_only():
    # safetensors writes its metadata in hash-map order, which changes from one call to the next; three keys
    # have six orders, so twenty plain saves all alike would be a one-in-millions coincidence.
    tensors = {"b": torch.arange(6.0).view(2, 3), "a": torch.ones(4, dtype=torch.bfloat16)}
    metadata = {"recipe": "{}", "test_accuracy": "0.99", "model_architecture": "Linear()"}
    blobs = {safetensors_bytes(tensors, metadata) for _ in range(20)}
    assert len(blobs) == 1
    (blob,) = blobs
    loaded = safetensors.torch.load(blob)
    assert sorted(loaded) == ["a", "b"] and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    header_length = int.from_bytes(blob[:8], "little")
    assert header_length % 8 == 0 and json.loads(blob[8:8 + header_length])["__metadata__"] == metadata


def test_one_augmented_recipe_and_seed_in_two_processes_writes_identical_files(tmp_path):
    # fast-995's parts (augmentation, bf16 where the CPU has it, channels_last, OneCycle) in two fresh
    # processes, with different hash seeds: the weights file is the same to the byte.
    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        command = [sys.executable, "-m", "mnist_kit", "train", "fast-995", "--set", "train.epochs=1",
                   "--set", "data.limit=2000", "--out", str(out), "--quiet"]
        done = subprocess.run(command, cwd=REPO, env=os.environ | {"PYTHONHASHSEED": hash_seed},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        (run_dir,) = run_folders(out)
        digests.append(hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1]

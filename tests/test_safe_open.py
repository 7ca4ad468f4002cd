"""Opening what users hand over (issue 'A run folder from anywhere is safe to open'): every mistake is one line
and exit 2, one bad file does not cost the others their answers, and what is written is readable by others."""

import json
import os
import shutil
import stat

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mnist_kit.atomic import write_bytes_atomic
from mnist_kit.cli import app
from mnist_kit.errors import UserError
from mnist_kit.sweep import read_sweep
from tests.conftest import REPO, one_line_error

runner = CliRunner()
PHOTO = REPO / "docs" / "examples" / "photo-7.jpg"


@pytest.fixture
def run_copy(trained_run, tmp_path):
    return shutil.copytree(trained_run.run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("plots", "eval*.json"))


def test_a_float_tiff_with_nan_pixels_is_one_line_and_the_other_files_are_classified(trained_run, tmp_path):
    values = np.zeros((40, 40), dtype=np.float32)
    values[10:30, 18:22] = 1.0
    values[0, 0] = np.nan
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    values[0, 0] = np.inf
    Image.fromarray(values, mode="F").save(tmp_path / "inf.tif")
    result = runner.invoke(app, ["predict", str(trained_run.run_dir), str(tmp_path / "nan.tif"), str(PHOTO),
                                 str(tmp_path / "inf.tif"), "--json"])
    assert result.exit_code == 2
    entries = json.loads(result.stdout)
    assert "not finite numbers" in entries[0]["error"] and "not finite numbers" in entries[2]["error"]
    assert entries[1]["digit"] == "7"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("key", ["data", "data.mean", "data.std", "classes", "input_shape"])
def test_metadata_missing_what_opening_reads_is_one_line(run_copy, key):
    meta = json.loads((run_copy / "metadata.json").read_text())
    section, _, name = key.partition(".")
    del (meta[section] if name else meta)[name or section]
    (run_copy / "metadata.json").write_text(json.dumps(meta))
    for command in (["eval", str(run_copy)], ["plot", "curves", str(run_copy)],
                    ["predict", str(run_copy), str(PHOTO)]):
        one_line_error(runner.invoke(app, command), "not mnist-kit run metadata", f"'{name or section}' is missing")


def test_metadata_with_a_wrong_mean_is_one_line(run_copy):
    meta = json.loads((run_copy / "metadata.json").read_text())
    meta["data"]["mean"] = "0.13"
    (run_copy / "metadata.json").write_text(json.dumps(meta))
    one_line_error(runner.invoke(app, ["eval", str(run_copy)]), "data.mean must be a finite number, got '0.13'")


@pytest.mark.parametrize("command", ["sweep", "train", "tune", "recipes show"])
def test_a_toml_file_that_is_not_utf8_is_one_line(tmp_path, command):
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "caf\xe9"\nrecipe = "fast"\n'.encode("latin-1"))
    if command == "sweep":
        with pytest.raises(UserError, match="not UTF-8 text"):
            read_sweep(path)
    one_line_error(runner.invoke(app, [*command.split(), str(path)]), "latin1.toml: not UTF-8 text")


def test_show_input_at_a_file_is_one_line(trained_run, tmp_path):
    (tmp_path / "a-file").write_text("")
    one_line_error(runner.invoke(app, ["predict", str(trained_run.run_dir), str(PHOTO), "--show-input",
                                       str(tmp_path / "a-file")]), "--show-input", "a file, not a folder")
    one_line_error(runner.invoke(app, ["predict", str(trained_run.run_dir), str(PHOTO), "--show-input",
                                       str(tmp_path / "a-file" / "below")]), "--show-input", "cannot write")


def test_two_images_with_the_same_stem_keep_both_inputs(trained_run, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(PHOTO, tmp_path / folder / "digit.jpg")
    result = runner.invoke(app, ["predict", str(trained_run.run_dir), str(tmp_path / "a" / "digit.jpg"),
                                 str(tmp_path / "b" / "digit.jpg"), "--show-input", str(tmp_path / "seen"), "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [e["input"] for e in entries] == [str(tmp_path / "seen" / "digit-input.png"),
                                             str(tmp_path / "seen" / "digit-2-input.png")]
    assert sorted(p.name for p in (tmp_path / "seen").iterdir()) == ["digit-2-input.png", "digit-input.png"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "a folder, not an image file"),
    (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),
    (lambda p: p.symlink_to(p.parent / "nowhere"), "no such file"),
])
def test_a_folder_or_a_device_given_as_an_image_says_what_it_is(trained_run, tmp_path, make, message):
    make(tmp_path / "image.png")
    result = runner.invoke(app, ["predict", str(trained_run.run_dir), str(tmp_path / "image.png")])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert "Usage:" not in result.output


def test_a_file_that_fails_to_read_is_one_error_line(trained_run, tmp_path):
    """/proc/self/mem is a regular file whose read fails (EIO) even for root: the read error path, for real."""
    (tmp_path / "mem.png").symlink_to("/proc/self/mem")
    result = runner.invoke(app, ["predict", str(trained_run.run_dir), str(tmp_path / "mem.png"), str(PHOTO)])
    assert result.exit_code == 2 and "mem.png: cannot read" in result.stderr, result.output
    assert "Traceback" not in result.output and "7" in result.stdout  # the other file still answered


@pytest.mark.skipif(os.geteuid() == 0, reason="a file's mode does not stop root, and no other user can run this "
                                              "Python (it lives under /root, mode 0700)")
def test_an_unreadable_image_is_one_error_line_not_a_usage_block(trained_run, tmp_path):
    path = tmp_path / "secret.png"
    shutil.copy(PHOTO, path)
    path.chmod(0)
    result = runner.invoke(app, ["predict", str(trained_run.run_dir), str(path)])
    assert result.exit_code == 2 and "cannot read" in result.stderr and "Usage:" not in result.output


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "shared.bin", b"run")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(write_bytes_atomic(tmp_path / "private.bin", b"run").stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_weights_that_no_longer_match_their_recorded_sha256_are_named_and_the_good_copy_used(run_copy, trained_run):
    import safetensors.torch

    meta = json.loads((run_copy / "metadata.json").read_text())
    assert set(meta["weights"]) == {"model.pth", "model.safetensors"}
    state = safetensors.torch.load_file(run_copy / "model.safetensors")
    state["fc1.weight"].mul_(-1)  # a valid file with other numbers: loads fine, scores badly
    safetensors.torch.save_file(state, run_copy / "model.safetensors")
    result = runner.invoke(app, ["eval", str(run_copy), "--json"])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "model.safetensors does not match the SHA-256" in result.stderr
    assert "using model.pth, which does" in result.stderr
    report = json.loads(result.stdout)
    assert report["weights"].endswith("model.pth") and report["accuracy"] == trained_run.test_accuracy
    (run_copy / "model.pth").write_bytes((run_copy / "model.pth").read_bytes() + b"\0")  # both changed now
    both = runner.invoke(app, ["eval", str(run_copy), "--json"])
    assert both.exit_code == 0 and "its numbers may not be the run's" in both.stderr
    assert json.loads(both.stdout)["weights"].endswith("model.safetensors")


@pytest.mark.parametrize("hidden", [[700_000], [10**9]])
def test_a_run_asking_for_an_enormous_network_is_refused_before_it_is_built(run_copy, hidden):
    """Issue 26 row 3: metadata asking for hidden [700000] took 11 s and 2.7 GB before its "does not fit"; [10**9]
    was an allocator traceback. The parameter count comes from the model built on the meta device (no memory)."""
    path = run_copy / "metadata.json"
    meta = json.loads(path.read_text())
    meta["recipe"]["config"]["model"] |= {"hidden": hidden, "dropout": 0.0, "batchnorm": [True]}
    path.write_text(json.dumps(meta))
    image = REPO / "docs" / "examples" / "drawn-5.png"
    for command in (["eval", str(run_copy)], ["predict", str(run_copy), str(image)]):
        one_line_error(CliRunner().invoke(app, command), "parameters", "over the 100,000,000 this toolkit builds")


def test_a_huge_width_in_set_is_one_line(tmp_path):
    """Issue 26 row 17: --set model.widths=[1000000000,64,128] was a RuntimeError from the allocator."""
    result = CliRunner().invoke(app, ["train", "fast", "--print-config", "--set", "model.widths=[1000000000,64,128]"])
    one_line_error(result, "model 'convnet' would have", "over the 100,000,000")

"""`mnist-kit export RUN --format hf --out DIR`: a Hub model folder that huggingface_hub parses and mnist-kit opens
as a run (eval, predict), offline."""

import json
import shutil
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from mnist_kit.cli import app
from tests.conftest import one_line_error

runner = CliRunner()


@pytest.fixture(scope="module")
def hub_folder(trained_run, tmp_path_factory):
    pytest.importorskip("huggingface_hub", reason="the [hub] extra is not installed")
    out = tmp_path_factory.mktemp("hub") / "mnist-quick"
    result = runner.invoke(app, ["export", str(trained_run.run_dir), "--format", "hf", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_the_folder_holds_what_the_hub_expects(hub_folder, trained_run):
    assert sorted(p.name for p in hub_folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert (hub_folder / "model.safetensors").read_bytes() == (trained_run.run_dir / "model.safetensors").read_bytes()
    config = json.loads((hub_folder / "config.json").read_text())
    assert config["model_type"] == "mnist-kit" and config["architecture"] == "mlp" and config["num_labels"] == 10
    assert config["preprocessing"]["mean"] == trained_run.metadata["data"]["mean"]


def test_huggingface_hub_parses_the_card(hub_folder, trained_run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(hub_folder / "README.md")
    assert card.data.datasets == ["ylecun/mnist"] and "image-classification" in card.data.tags
    assert card.data.license == "mit"  # the project's license (LICENSE, pyproject.toml)
    (result,) = card.data.eval_results
    assert result.metric_type == "accuracy" and result.metric_value == trained_run.test_accuracy
    assert result.dataset_split == "test"
    text = card.text
    assert "Limits, measured" in text and "rotate (MNIST-C-style" in text and "mean over the corruptions" in text
    assert "```toml" in text
    first_row = next(line for line in text.splitlines() if line.startswith("| the test split as it is"))
    assert f"{trained_run.test_accuracy:.2%}" in first_row  # measured again when written: the same number


def test_mnist_kit_opens_the_folder_as_a_run(hub_folder, trained_run, tmp_path):
    # eval writes its report (eval.json) beside the weights: on a copy, so the shared folder stays as exported
    # whichever test runs first
    hub_folder = shutil.copytree(hub_folder, tmp_path / "copy")
    result = runner.invoke(app, ["eval", str(hub_folder), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == trained_run.test_accuracy
    digit = Image.new("L", (100, 100), 255)
    for x in range(30, 70):  # a thick vertical bar: a 1
        for y in range(15, 85):
            if 45 <= x <= 55:
                digit.putpixel((x, y), 0)
    digit.save(tmp_path / "one.png")
    result = runner.invoke(app, ["predict", str(hub_folder), str(tmp_path / "one.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["digit"] == "1"


def test_export_hf_needs_out_and_the_extra(trained_run, monkeypatch, tmp_path):
    one_line_error(runner.invoke(app, ["export", str(trained_run.run_dir), "--format", "hf"]), "--out DIR")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    result = runner.invoke(app, ["export", str(trained_run.run_dir), "--format", "hf", "--out", str(tmp_path / "x")])
    one_line_error(result, "pip install -e", "[hub]'")


def test_export_hf_never_overwrites_a_run_and_asks_before_replacing_files(trained_run, tmp_path):
    """Issue 26 row 15: --out another run's folder replaced its model.safetensors; a non-empty folder was
    overwritten without a word."""
    other = tmp_path / "other-run"
    shutil.copytree(trained_run.run_dir, other)
    before = (other / "model.safetensors").read_bytes()
    one_line_error(runner.invoke(app, ["export", str(trained_run.run_dir), "--format", "hf", "--out", str(other),
                                       "--force"]), "is a run folder")
    assert (other / "model.safetensors").read_bytes() == before and not (other / "config.json").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    one_line_error(runner.invoke(app, ["export", str(trained_run.run_dir), "--format", "hf", "--out", str(busy)]),
                   "is not empty (notes.txt)", "--force")
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    forced = runner.invoke(app, ["export", str(trained_run.run_dir), "--format", "hf", "--out", str(busy), "--force"])
    assert forced.exit_code == 0, forced.output
    assert {"notes.txt", "model.safetensors", "config.json", "README.md"} <= {p.name for p in busy.iterdir()}

"""The examples of the README and the docs/ pages are executed or compared here, so the docs cannot drift from the
code: every recipe, sweep or study file they quote is the file itself, the plugin example trains, and the From-Python
block runs."""

import json
import re
import runpy
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.data import dataset_spec
from tests.conftest import REPO, run_folders

README = (REPO / "README.md").read_text()
PAGES = {path: path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}


def blocks(language: str) -> list[str]:
    """The fenced blocks of one language in the README and the docs/ pages, in order."""
    return [block for text in PAGES.values()
            for block in re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)]


def test_every_quoted_recipe_or_sweep_file_is_the_file_itself():
    files = {p.read_text(): p for p in (REPO / "recipes").rglob("*.toml")}
    quoted = [block for block in blocks("toml") if not block.startswith("# tiny.toml")]
    assert len(quoted) >= 3  # recipes/baseline.toml, recipes/sweeps/fast-lr.toml, recipes/studies/fast-3ep.toml
    for block in quoted:
        assert block in files, f"README quotes a recipe that is not in recipes/:\n{block[:300]}"


def test_the_plugin_example_trains_as_written(tmp_path):
    (plugin,) = [block for block in blocks("python") if block.startswith("# my_models.py")]
    (recipe,) = [block for block in blocks("toml") if block.startswith("# tiny.toml")]
    (tmp_path / "my_models.py").write_text(plugin)
    (tmp_path / "tiny.toml").write_text(recipe)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "tiny.toml"), "--set", "train.epochs=1", "--set",
                                      "data.limit=2000", "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = run_folders(tmp_path / "runs")
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["test_accuracy"] > 0.8 and meta["history"][-1]["train_loss"] > 0  # the loss fits the model
    assert meta["recipe"]["config"]["train"]["loss"]["name"] == "cross_entropy"


def test_the_plugin_dataset_example_states_its_images():
    (example,) = [block for block in blocks("python") if "@describes(" in block]
    exec(compile(example, "README.md", "exec"), {})
    assert dataset_spec("my-digits").train_images == 20_000


def test_the_from_python_block_runs(tmp_path, monkeypatch, capsys):
    (snippet,) = [block for block in blocks("python") if "from mnist_kit.train import train" in block]
    monkeypatch.chdir(tmp_path)  # it writes runs/ where it runs
    path = tmp_path / "snippet.py"
    path.write_text(snippet)
    runpy.run_path(str(path))
    lines = capsys.readouterr().out.splitlines()  # training's own progress lines, then the two prints
    (run_dir,) = run_folders(tmp_path / "runs")
    run_line = lines[-2].split()
    assert run_line[0] == str(Path("runs") / run_dir.name) and float(run_line[1]) > 0.95
    assert float(lines[-1]) > 0.95  # evaluate_run(..., tta=True)["accuracy"]


@pytest.mark.parametrize("page, section", [("README.md", "## From Python"),
                                           ("docs/training.md", "## Your own models, without editing the package")])
def test_the_sections_that_hold_executed_examples_exist(page, section):
    assert section in PAGES[REPO / page]


def test_the_readme_is_a_front_page_that_links_every_docs_page():
    assert README.count("\n") <= 250
    for path in PAGES:
        if path.parent.name == "docs":
            assert f"](docs/{path.name})" in README, f"the README links no {path.name}"
    assert "](docs/quickstart.ipynb)" in README


def test_links_between_pages_lead_to_files():
    for path, text in PAGES.items():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", text):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert (path.parent / target).exists(), f"{path.name} links {target}, which is not there"

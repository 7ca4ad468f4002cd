"""Installable anywhere: the wheel carries the recipes and runs outside the repository; the commands mnist-kit
prints are the ones that work there; runs/latest; data in the user's cache; the help a person reads."""

import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

import mnist_kit
from mnist_kit.cli import BUILT_IN_DATASETS, app, first_sentence
from mnist_kit.data import DATASETS
from mnist_kit.fetch import MNIST_FILES, data_root, fetch_mnist, user_data_dir
from mnist_kit.recipebook import RECIPES_DIR, shipped_file
from tests.conftest import QUICK, REPO, one_line_error, run_folders, write_recipe

runner = CliRunner()
SHIPPED = sorted(p.relative_to(RECIPES_DIR).as_posix() for p in RECIPES_DIR.rglob("*.toml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (the repository is left as it was)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for name in ("mnist_kit", "recipes"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", "-q", "-w", str(out), str(source)], check=True,
                   capture_output=True, timeout=300)
    (built,) = out.glob("mnist_kit-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed (--no-deps: the test venv's torch is used) into a folder outside the repository."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
                    "-q", "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    return target


def outside(installed: Path, cwd: Path, *args, program=None, data_root=None):
    """Run the installed mnist-kit from `cwd`, a folder outside the repository, with a PATH that does not find it."""
    env = {**os.environ, "PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"}
    if data_root:
        env["MNIST_KIT_DATA"] = str(data_root)
    command = [*(program or [sys.executable, "-m", "mnist_kit"]), *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_carries_the_recipes_and_the_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n.removeprefix("mnist_kit/recipes/") for n in names if n.startswith("mnist_kit/recipes/")) == SHIPPED
    assert "mnist_kit/static/draw.html" in names and any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata and "Requires-Dist: pillow" in metadata


def test_the_installed_wheel_works_from_another_folder(installed, tmp_path, data_root):
    where = outside(installed, tmp_path, "-c", "import mnist_kit, torch; print(mnist_kit.__file__, torch.__file__)",
                    program=[sys.executable])
    package, torch_file = where.stdout.split()
    assert Path(package).is_relative_to(installed) and not Path(torch_file).is_relative_to(installed)

    listed = outside(installed, tmp_path, "recipes")
    assert listed.returncode == 0, listed.stderr
    assert str(installed / "mnist_kit" / "recipes") in listed.stdout.replace("\n", "")
    assert all(name in listed.stdout for name in ("baseline", "best", "fast-995", "improved", "fast-lr", "fast-3ep"))
    shown = outside(installed, tmp_path, "recipes", "show", "fast")
    assert shown.returncode == 0 and shown.stdout == (REPO / "recipes" / "fast.toml").read_text()
    assert outside(installed, tmp_path, "--version").stdout.strip() == f"mnist-kit {mnist_kit.__version__}"

    trained = outside(installed, tmp_path, "train", "baseline", "--set", "train.epochs=1", "--quiet",
                      data_root=data_root)
    assert trained.returncode == 0, trained.stderr
    (run_dir,) = run_folders(tmp_path / "runs")  # ./runs of the folder it ran in
    assert (tmp_path / "runs" / "latest").resolve() == run_dir.resolve()
    assert f"data in {data_root}" in trained.stdout and json.loads((run_dir / "metadata.json").read_text())[
        "test_accuracy"] > 0.9
    assert not (tmp_path / "data").exists()  # the data came from its one place, not fetched again here


def test_the_next_commands_it_prints_work_where_mnist_kit_is_not_on_path(installed, tmp_path, data_root):
    """A virtual environment that is not activated: "Next:" names the program by its path."""
    program = installed / "bin" / "mnist-kit"
    recipe = write_recipe(tmp_path / "quick.toml", QUICK)
    out = tmp_path / "ü dir" / "runs x"  # a path the shell must be given quoted
    trained = outside(installed, tmp_path, "train", recipe, "--set", "data.limit=1000", "--quiet", "--out", str(out),
                      program=[str(program)], data_root=data_root)
    assert trained.returncode == 0, trained.stderr
    lines = trained.stdout.split("Next:\n", 1)[1].splitlines()
    assert all(line.strip().startswith(f"{program} ") for line in lines), lines
    evaluated = outside(installed, tmp_path, *shlex.split(lines[0])[1:], program=[str(program)], data_root=data_root)
    assert evaluated.returncode == 0 and "accuracy" in evaluated.stdout, evaluated.stderr
    assert shlex.split(lines[0])[-1].startswith(str(out))  # the run folder, whole, as one word
    hint = outside(installed, tmp_path, "-c", "from mnist_kit.invocation import install_hint; "
                   "print(install_hint('serve'))", program=[sys.executable])
    assert hint.stdout.strip().endswith("pip install 'mnist-kit[serve]'")  # a wheel: no `-e .` to point at


def test_reading_recipes_imports_no_torch():
    code = ("import sys\nfrom mnist_kit.cli import app\n"
            "for argv in (['recipes'], ['recipes', 'show', 'fast'], ['--help'], ['train', '--help']):\n"
            "    try:\n        app(argv)\n    except SystemExit as stop:\n        assert not stop.code, argv\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr


def test_latest_names_the_last_finished_run(tmp_path):
    recipe = write_recipe(tmp_path / "quick.toml", QUICK)
    out = tmp_path / "runs"
    for seed in (1, 2):
        result = runner.invoke(app, ["train", str(recipe), "--set", "data.limit=1000", "--set", f"train.seed={seed}",
                                     "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert (out / "latest").is_symlink() and (out / "latest").resolve() == run_folders(out)[-1].resolve()
    report = runner.invoke(app, ["eval", str(out / "latest"), "--json"])
    assert report.exit_code == 0 and json.loads(report.output)["run"] == str(run_folders(out)[-1])  # named as itself
    second = json.loads((run_folders(out)[-1] / "metadata.json").read_text())
    assert json.loads(report.output)["recorded_accuracy"] == second["test_accuracy"]

    (out / "latest").unlink()  # a file system without symlinks gets a pointer file instead
    (out / "latest").write_text(run_folders(out)[0].name + "\n")
    assert runner.invoke(app, ["eval", str(out / "latest")]).exit_code == 0
    (out / "latest").write_text("../../etc\n")
    one_line_error(runner.invoke(app, ["eval", str(out / "latest")]), "not a pointer to a run folder")
    (out / "latest").unlink()
    one_line_error(runner.invoke(app, ["eval", str(out / "latest")]), "none has", " train RECIPE)")
    os.symlink("gone", out / "latest")
    one_line_error(runner.invoke(app, ["eval", str(out / "latest")]), "names gone, which is gone")


def test_the_data_folder_is_the_argument_then_the_variable_then_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("MNIST_KIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == user_data_dir() == tmp_path / "cache" / "mnist-kit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec says to ignore a relative path
    assert data_root() == Path.home() / ".cache" / "mnist-kit"
    monkeypatch.setenv("MNIST_KIT_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env" and data_root(tmp_path / "arg") == tmp_path / "arg"


def test_an_earlier_data_folder_is_copied_not_fetched_again(monkeypatch, tmp_path, data_root, capsys):
    """mnist-kit before this kept ./data beside the runs: a checkout that has one fills the cache from it."""
    earlier = tmp_path / "project" / "data" / "MNIST" / "raw"
    earlier.mkdir(parents=True)
    for name in MNIST_FILES:
        os.symlink(data_root / "MNIST" / "raw" / name, earlier / name)
    monkeypatch.chdir(tmp_path / "project")
    monkeypatch.setattr("mnist_kit.fetch.MNIST_SOURCES", [("network", lambda staging: 1 / 0)])
    raw = fetch_mnist(tmp_path / "cache")
    assert sorted(p.name for p in raw.iterdir() if not p.name.startswith(".")) == sorted(MNIST_FILES)
    assert not any(p.is_symlink() for p in raw.iterdir())  # copies: the cache does not depend on the project
    assert "fetching 4 files from the earlier data folder data/MNIST/raw" in capsys.readouterr().err


def help_pages():
    """(command path, help text) of every command and group, as `--help` prints them."""
    pages = []

    def walk(command, path):
        result = runner.invoke(app, [*path, "--help"], terminal_width=100)
        assert result.exit_code == 0, path
        pages.append((" ".join(path), result.output))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return pages


def test_help_reads_as_people_write_it():
    pages = help_pages()
    assert len(pages) > 15
    for path, text in pages:
        assert "<" not in text.replace("<=", "") and "{" not in text.split("\n")[0], (path, text)
        commands = text.split("Commands:\n", 1)[1] if "Commands:\n" in text else ""
        assert "..." not in commands, (path, commands)  # every summary whole
    command = get_command(app)
    options = [(name, p) for name, sub in command.commands.items() for p in getattr(sub, "params", [])]
    for name, sub in command.commands.items():
        for inner in getattr(sub, "commands", {}).values():
            options += [(name, p) for p in inner.params]
    repeatable = [(name, p.name) for name, p in options if getattr(p, "multiple", False)]
    assert len(repeatable) >= 6
    assert all("Repeatable" in (p.help or "") for _, p in options if getattr(p, "multiple", False)), repeatable
    top = dict(pages)[""]
    assert "--version" in top and "--install-completion" in top


def test_data_fetch_help_names_every_data_set():
    built_in = [name for name in DATASETS.names() if DATASETS.get(name).__module__ == "mnist_kit.data"]  # no plugins
    assert sorted(BUILT_IN_DATASETS) == sorted(built_in)
    text = runner.invoke(app, ["data", "fetch", "--help"]).output
    assert all(name in text for name in built_in)


def test_first_sentence():
    assert first_sentence("Train a recipe into a run folder.\n\n    More, e.g. this.") == \
        "Train a recipe into a run folder."
    assert first_sentence("Serve a run: model.onnx and friends. Then") == "Serve a run: model.onnx and friends."
    assert first_sentence("No full stop") == "No full stop"


def test_shipped_sweeps_and_studies_go_by_name():
    assert shipped_file("sweeps", "fast-lr") == RECIPES_DIR / "sweeps" / "fast-lr.toml"
    assert shipped_file("studies", "fast-3ep") == RECIPES_DIR / "studies" / "fast-3ep.toml"
    assert shipped_file("sweeps", "mine/grid.toml") == Path("mine/grid.toml")  # a path stays a path
    one_line_error(runner.invoke(app, ["sweep", "fast-l"]), "no shipped sweeps file 'fast-l'", "'fast-lr'?")
    one_line_error(runner.invoke(app, ["tune", "fast"]), "no shipped studies file 'fast'", "fast-3ep")

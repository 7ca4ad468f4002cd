"""The `mnist-kit` command: a thin typer skin over the library's functions."""

import functools
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mnist_kit.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Train, evaluate and ship MNIST digit classifiers from TOML recipes.")
data_app = typer.Typer(no_args_is_help=True, help="Fetch and inspect the data sets.")
recipes_app = typer.Typer(help="List the recipes, or show one.")
app.add_typer(data_app, name="data")
app.add_typer(recipes_app, name="recipes")

console = Console()
errors = Console(stderr=True)
DEBUG_ENV = "MNIST_KIT_DEBUG"
invocation = {"debug": False}  # set by the top-level callback on every invocation

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data folder [default: $MNIST_KIT_DATA or ./data].")]


def debugging() -> bool:
    """True under `mnist-kit --debug ...` or with MNIST_KIT_DEBUG set."""
    return bool(os.environ.get(DEBUG_ENV) or invocation["debug"])


def user_errors(command):
    """Turn a UserError into one line on stderr and exit status 2 (a traceback with --debug)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as error:
            if debugging():
                raise
            errors.print(f"error: {error}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            errors.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return run


Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks (or set MNIST_KIT_DEBUG=1).")]


@app.callback()
def options(debug: Debug = False):
    """Train, evaluate and ship MNIST digit classifiers from TOML recipes."""
    invocation["debug"] = debug


@app.command("train")
@user_errors
def train_command(
    recipe: Annotated[str, typer.Argument(help="A recipe name under recipes/ (baseline) or a .toml path.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a value: train.epochs=1 (TOML).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder that receives the run folder.")] = Path("runs"),
    data_dir: DataDir = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Plain lines instead of progress bars.")] = False,
):
    """Train a recipe and write model.pth, model.safetensors and metadata.json into a new run folder."""
    from mnist_kit.recipe import load_recipe
    from mnist_kit.train import train_with_fallback

    loaded = load_recipe(recipe, set_ or [])
    results = train_with_fallback(loaded, data_dir=data_dir, out_dir=out, quiet=quiet, console=console)
    table = Table("recipe", "test accuracy", "seconds", "run folder", title="runs")
    for result in results:
        table.add_row(result.recipe, f"{result.test_accuracy:.2%}", f"{result.metadata['wall_seconds']:.0f}",
                      str(result.run_dir))
    console.print(table)
    final = results[-1].run_dir
    console.print(f"Wrote {final}/model.pth, model.safetensors and metadata.json", highlight=False, soft_wrap=True)


@data_app.command("fetch")
@user_errors
def data_fetch(dataset: Annotated[str, typer.Option(help="Data set name.")] = "mnist", data_dir: DataDir = None):
    """Fetch the data set's files into the data folder and verify their checksums."""
    from mnist_kit.data import data_info

    info = data_info(dataset, data_dir)
    console.print(f"{info['dataset']}: {len(info['files'])} files verified in {info['root']}", highlight=False)


@data_app.command("info")
@user_errors
def data_info_command(dataset: Annotated[str, typer.Option(help="Data set name.")] = "mnist",
                      data_dir: DataDir = None,
                      as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """Where the data files are, their sizes and checksums, and the class counts of each split."""
    from mnist_kit.data import data_info

    info = data_info(dataset, data_dir)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    files = Table("file", "bytes", "sha256", title=f"{info['dataset']} in {info['root']}", title_justify="left")
    for name, record in info["files"].items():
        files.add_row(name, f"{record['bytes']:,}", record["sha256"])
    counts = Table("split", "images", *info["classes"], title="class counts", title_justify="left")
    for split in ("train", "test"):
        counts.add_row(split, f"{info[split]['images']:,}", *map(str, info[split]["class_counts"]))
    console.print(files, counts)
    console.print(f"normalization: mean {info['mean']}, std {info['std']}", highlight=False)


@recipes_app.callback(invoke_without_command=True)
@user_errors
def recipes_list(ctx: typer.Context):
    """List the recipes under recipes/ with their descriptions."""
    from mnist_kit.recipe import list_recipes

    if ctx.invoked_subcommand:
        return
    table = Table("recipe", "description")
    for name, description in list_recipes():
        table.add_row(name, description)
    console.print(table)


@recipes_app.command("show")
@user_errors
def recipes_show(name: Annotated[str, typer.Argument(help="Recipe name or .toml path.")]):
    """Print a recipe file, comments included."""
    from mnist_kit.recipe import recipe_text

    print(recipe_text(name), end="")


def main():
    """Console-script entry point."""
    app()

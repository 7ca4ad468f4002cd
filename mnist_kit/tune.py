"""Studies: a search space over a base recipe, sampled by Optuna (TPE), pruned on validation accuracy after each
epoch, kept in Optuna's database (SQLite in the study's folder by default, any RDB URL with --storage).

The database is the study: rerun the same command after a crash or a kill and it goes on (finished trials are
kept, numbering continues); several processes or machines given the same storage share the work. A trial that
stops without finishing is marked failed and its parameters are tried again once: a killed process's trial when
its heartbeat is older than `grace_seconds` (Optuna's RetryHeartbeatStaleTrialCallback), an interrupted one (Ctrl-C,
SIGTERM) at once. The best trial is the best validation accuracy; its test accuracy is reported beside it and
never chooses.
"""

import hashlib
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_kit.assemble import check_recipe
from mnist_kit.data import data_root
from mnist_kit.errors import Interrupted, UserError
from mnist_kit.invocation import install_hint
from mnist_kit.recipe import load_recipe, recipe_hash, recipe_path
from mnist_kit.recipebook import read_search_file
from mnist_kit.registry import closest
from mnist_kit.search import best_row, point_figures, train_point, write_summary_csv

STUDY_KEYS = ("description", "recipe", "trials", "minutes", "sampler", "pruner", "seed", "heartbeat_seconds",
              "grace_seconds", "set", "space")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "halving", "none")
DEFAULTS = {"trials": 20, "minutes": 0, "sampler": "tpe", "pruner": "median", "seed": 0, "heartbeat_seconds": 10,
            "grace_seconds": 60, "set": {}}
SQLITE_TIMEOUT = 60  # seconds a writer waits for another process's lock (without it: "database is locked")


def require_optuna():
    """The optuna module, or a UserError that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise UserError(f"mnist-kit tune needs Optuna: {install_hint('tune')}") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's outcome is told once, by run_study's caller
    return optuna


def check_dimension(path: Path, key: str, spec: Any) -> None:
    """A [space] entry: {low, high[, log][, step]} (ints give ints) or {choices = [...]}."""
    where = f"{path}: [space] {key!r}"
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected a table, e.g. {{ low = 0.001, high = 0.1, log = true }} or "
                        f"{{ choices = [64, 128] }}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise UserError(f"{where}: `choices` must be a non-empty list, alone in its table")
        return
    unknown = set(spec) - {"low", "high", "log", "step"}
    if unknown or not {"low", "high"} <= set(spec):
        raise UserError(f"{where}: a range has low and high (and optionally log, step); got {sorted(spec)}")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)) \
            or low >= high:
        raise UserError(f"{where}: low and high must be finite numbers with low < high")
    if spec.get("log") and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0")
    if not isinstance(spec.get("log", False), bool):
        raise UserError(f"{where}: log must be true or false, got {spec['log']!r}")
    if spec.get("log") and "step" in spec:
        raise UserError(f"{where}: give log or step, not both")
    step = spec.get("step", 1)
    if isinstance(step, bool) or not isinstance(step, int | float) or not math.isfinite(step) or step <= 0:
        raise UserError(f"{where}: step must be a number > 0, got {step!r}")


def read_study(path: Path | str) -> dict:
    """A study file, checked, with defaults filled in."""
    path = Path(path)
    study = {**DEFAULTS, **read_search_file(path, STUDY_KEYS, "study")}
    if not isinstance(study.get("space"), dict) or not study["space"]:
        raise UserError(f'{path}: [space] must give each searched key a range or choices, e.g. "optimizer.lr" = '
                        f'{{ low = 0.001, high = 0.1, log = true }}')
    for key, spec in study["space"].items():
        check_dimension(path, key, spec)
    for key, choices in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if study[key] not in choices:
            raise UserError(f"{path}: {key} must be one of {', '.join(choices)}, got {study[key]!r}"
                            + closest(str(study[key]), choices))
    for key in ("trials", "heartbeat_seconds", "grace_seconds"):
        if not isinstance(study[key], int) or isinstance(study[key], bool) or study[key] < 1:
            raise UserError(f"{path}: {key} must be a whole number >= 1, got {study[key]!r}")
    if study["grace_seconds"] <= study["heartbeat_seconds"]:
        raise UserError(f"{path}: grace_seconds must be longer than heartbeat_seconds")
    if not isinstance(study["minutes"], int | float) or isinstance(study["minutes"], bool) or study["minutes"] < 0:
        raise UserError(f"{path}: minutes must be a number >= 0 (0: no time budget), got {study['minutes']!r}")
    if not isinstance(study["set"], dict):
        raise UserError(f"{path}: [set] must be a table of fixed values")
    return study


def check_recipes(path: Path, study: dict, base: Path) -> str:
    """The base recipe with [set] must hold images out (a study chooses on them), and the space's corners must be
    valid recipes, before anything trains. Returns the study's fingerprint: what its trials depend on (the resolved
    base recipe with [set], and the [space])."""
    fixed = load_recipe(base, study["set"])
    check_recipe(fixed)
    if fixed.config["data"]["validation"] == 0:
        raise UserError(f'{path}: a study chooses on validation images: set "data.validation" = 5000 in [set]')
    for corner in (0, -1):
        values = {key: (spec["choices"][corner] if "choices" in spec else spec["low" if corner == 0 else "high"])
                  for key, spec in study["space"].items()}
        try:
            check_recipe(load_recipe(base, {**study["set"], **values}))
        except UserError as error:
            raise UserError(f"{path}: the space's {'lowest' if corner == 0 else 'highest'} values: {error}") from None
    return hashlib.sha256(json.dumps({"recipe": recipe_hash(fixed), "space": study["space"]},
                                     sort_keys=True).encode()).hexdigest()


def suggest(trial, key: str, spec: dict) -> Any:
    """The trial's value for one dimension (lists among choices are offered as their JSON text)."""
    if "choices" in spec:
        plain = all(c is None or isinstance(c, bool | int | float | str) for c in spec["choices"])
        if plain:
            return trial.suggest_categorical(key, spec["choices"])
        return json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in spec["choices"]]))
    if all(isinstance(spec[k], int) for k in ("low", "high")) and isinstance(spec.get("step", 1), int):
        return trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False))
    return trial.suggest_float(key, spec["low"], spec["high"], step=spec.get("step"), log=spec.get("log", False))


def make_storage(optuna, url: str, study: dict):
    """Optuna's RDB storage with a heartbeat (a killed trial is failed after grace_seconds and retried once) and,
    for SQLite, a lock timeout so several processes can share the file."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT}} if url.startswith("sqlite") else {}
    for attempt in range(3):  # workers started together may race to create the tables: the loser tries again
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat: Optuna >= 2.8
                return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=study["heartbeat_seconds"],
                                  grace_period=study["grace_seconds"],
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
        except ImportError as error:
            raise UserError(f"--storage {url}: its database driver is not installed ({error})") from None
        except Exception as error:  # a wrong URL, a server that does not answer: the user's to fix
            if attempt == 2:
                raise UserError(f"--storage {url}: cannot open the study database: {error}") from None
            time.sleep(1 + attempt)


def make_sampler(optuna, study: dict):
    """A sampler that draws trial N's values with its own seed, made from the study's seed and N: reproducible for
    one worker, and two workers (or a study continued after a kill) never draw alike, since trial numbers are
    unique in the database. The inner sampler is Optuna's, made afresh per trial; TPE still learns from every
    finished trial."""
    kind = optuna.samplers.TPESampler if study["sampler"] == "tpe" else optuna.samplers.RandomSampler

    class PerTrialSeed(optuna.samplers.BaseSampler):
        def __init__(self):
            self.number, self.inner = None, None

        def at(self, trial):
            if trial.number != self.number:
                self.number, self.inner = trial.number, kind(seed=(study["seed"] * 1_000_003 + trial.number) % 2**32)
            return self.inner

        def infer_relative_search_space(self, study, trial):
            return self.at(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.at(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.at(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial):
            self.at(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self.at(trial).after_trial(study, trial, state, values)

    return PerTrialSeed()


def make_pruner(optuna, study: dict):
    return {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0),
              "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
              "none": lambda: optuna.pruners.NopPruner()}[study["pruner"]]()


def finished(optuna, study) -> int:
    """Trials that count towards `trials`: complete and pruned ones."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


class Surplus(Exception):
    """A trial started when the study's trials were all finished or running: another worker took the last."""


def surplus(optuna, trial, wanted: int) -> bool:
    """Whether `wanted` trials are finished, or running with a lower number than this one (workers started together
    each see the other's trial: the later one steps back)."""
    state = optuna.trial.TrialState
    ahead = [t for t in trial.study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED, state.RUNNING))
             if t.state != state.RUNNING or t.number < trial.number]
    return len(ahead) >= wanted


def objective_for(optuna, base: Path, study_file: dict, folder: Path, data_dir: Path,
                  on_epoch: Callable[[int, dict], None] | None = None):
    """The function Optuna calls per trial: train the recipe the trial's values make, in trials/NNNN, reporting
    validation accuracy after each epoch for the pruner; returns the final validation accuracy."""
    def objective(trial) -> float:
        if surplus(optuna, trial, study_file["trials"]):
            trial.set_user_attr("surplus", True)
            trial.study.stop()
            raise Surplus
        values = {key: suggest(trial, key, spec) for key, spec in study_file["space"].items()}
        out = folder / "trials" / f"{trial.number:04d}"

        def report(row: dict) -> None:
            if on_epoch:
                on_epoch(trial.number, row)
            trial.report(row["val_accuracy"], row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}")

        try:
            result = train_point(load_recipe(base, {**study_file["set"], **values}), out_dir=out, data_dir=data_dir,
                                 on_epoch=report, experiment=f"study {folder.name}")
        except UserError as error:  # this point cannot train (e.g. its loss diverged): it does not count
            trial.set_user_attr("error", str(error))
            shutil.rmtree(out, ignore_errors=True)
            raise
        except optuna.TrialPruned:
            shutil.rmtree(out, ignore_errors=True)  # its numbers are in the database; its weights are not wanted
            raise
        except Interrupted:
            trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})  # tried again later
            shutil.rmtree(out, ignore_errors=True)
            raise
        figures = point_figures(result.metadata, result.run_dir)
        for key in ("test_accuracy", "seconds", "run"):
            trial.set_user_attr(key, figures[key])
        return figures["validation_accuracy"]

    return objective


def run_study(path: Path | str, out_dir: Path | str | None = None, storage: str | None = None, data_dir=None,
              on_trial: Callable[[dict], None] | None = None,
              on_epoch: Callable[[int, dict], None] | None = None) -> tuple[list[dict], Path]:
    """Run (or continue) a study until it holds `trials` finished trials or `minutes` pass; write summary.csv and
    the pictures; returns the rows (one per trial) and the study's folder."""
    optuna = require_optuna()
    path = Path(path)
    study_file = read_study(path)
    base = recipe_path(study_file["recipe"], path.parent)
    fingerprint = check_recipes(path, study_file, base)
    folder = (Path(out_dir) if out_dir else Path("runs") / "studies" / path.stem).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the study's folder {folder}: {error.strerror or error}") from None
    url = storage or f"sqlite:///{folder / 'study.db'}"
    study = optuna.create_study(storage=make_storage(optuna, url, study_file), sampler=make_sampler(optuna, study_file),
                                pruner=make_pruner(optuna, study_file), study_name=path.stem, direction="maximize",
                                load_if_exists=True)
    made_from = study.user_attrs.get("fingerprint")
    if made_from is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif made_from != fingerprint:
        raise UserError(f"{path}: the study in {url} was made from another version of this file (its [set], [space] "
                        f"or base recipe changed since): give another --out or --storage, or remove it to start over")
    failures = []
    if finished(optuna, study) < study_file["trials"]:
        def stop_after_failures(study, trial) -> None:  # a space where nothing trains must not run forever
            if trial.state == optuna.trial.TrialState.FAIL and "error" in trial.user_attrs:
                failures.append(trial.user_attrs["error"])
                if len(failures) >= study_file["trials"]:
                    study.stop()
            elif trial.state != optuna.trial.TrialState.FAIL:
                failures.clear()

        callbacks = [optuna.study.MaxTrialsCallback(study_file["trials"], states=(
            optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)), stop_after_failures]
        if on_trial:
            callbacks.append(lambda s, t: None if t.user_attrs.get("surplus") else on_trial(trial_row(t)))
        objective = objective_for(optuna, base, study_file, folder, data_root(data_dir).resolve(), on_epoch)
        try:
            study.optimize(objective, n_trials=None, timeout=study_file["minutes"] * 60 or None,
                           callbacks=callbacks, catch=(UserError, Surplus))
        except Interrupted:
            raise Interrupted(f"interrupted: {folder} keeps every finished trial; the interrupted one is tried "
                              f"again when the study goes on") from None
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    write_study_summary(folder, rows, list(study_file["space"]))
    write_study_figures(optuna, study, folder)
    if len(failures) >= study_file["trials"]:
        raise UserError(f"{path}: {len(failures)} trials failed in a row (the last: {failures[-1]}); "
                        f"{folder}/summary.csv lists them")
    return rows, folder


def trial_row(trial) -> dict:
    """A trial as a summary row: its number, state, values, validation and test accuracy, seconds, run."""
    state = trial.state.name.lower()
    row = {"trial": trial.number, "state": state, **trial.params,
           "validation_accuracy": trial.value if state == "complete" else None,
           "test_accuracy": trial.user_attrs.get("test_accuracy"), "seconds": trial.user_attrs.get("seconds"),
           "run": trial.user_attrs.get("run"),
           "pruned_after": max(trial.intermediate_values) if state == "pruned" and trial.intermediate_values else None}
    if trial.datetime_start and trial.datetime_complete:
        row["trial_seconds"] = (trial.datetime_complete - trial.datetime_start).total_seconds()
    retried = trial.system_attrs.get("failed_trial")  # a killed trial's retry (RetryHeartbeatStaleTrialCallback)
    row["retry_of"] = retried if retried is not None else trial.user_attrs.get("retry_of")  # an interrupted one's
    row["error"] = trial.user_attrs.get("error")
    return row


def best_trial(rows: list[dict]) -> dict | None:
    """The complete trial with the best validation accuracy (the first of equals); test accuracy never chooses."""
    return best_row(rows, "validation_accuracy")


def write_study_summary(folder: Path, rows: list[dict], keys: list[str]) -> Path:
    """summary.csv: a row per trial, the best (by validation) marked."""
    columns = ["trial", "state", *keys, "validation_accuracy", "test_accuracy", "seconds", "trial_seconds",
               "pruned_after", "retry_of", "error", "best", "run"]
    return write_summary_csv(folder / "summary.csv", columns, rows, best_trial(rows))


def write_study_figures(optuna, study, folder: Path) -> list[Path]:
    """Optuna's matplotlib pictures: optimization history, parameter importances (PED-ANOVA: no scikit-learn),
    parallel coordinates. A picture the study cannot draw yet (too few complete trials) is left out."""
    import matplotlib.pyplot as plt  # Optuna draws with pyplot; headless, matplotlib picks Agg by itself
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as pictures

    from mnist_kit.plots import save_png

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    drawn = []
    for name, draw, needs in (
            ("history.png", lambda: pictures.plot_optimization_history(study, target_name="validation accuracy"), 1),
            ("importance.png", lambda: pictures.plot_param_importances(
                study, evaluator=PedAnovaImportanceEvaluator(), target_name="validation accuracy"), 3),
            ("parallel.png", lambda: pictures.plot_parallel_coordinate(study, target_name="validation accuracy"), 2)):
        if len(complete) < needs:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable since Optuna 2.2
                axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances of a space where no parameter varied yet
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        drawn.append(save_png(figure, folder / name))
        plt.close(figure)
    return drawn

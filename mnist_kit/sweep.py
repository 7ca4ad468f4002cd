"""Sweeps: one base recipe, a grid of --set values, a run per point (finished points are skipped)."""

import itertools
import os
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_kit.assemble import check_recipe
from mnist_kit.data import data_root
from mnist_kit.errors import Interrupted, Notice, UserError
from mnist_kit.recipe import load_recipe, recipe_from_dict, recipe_hash, recipe_path
from mnist_kit.recipebook import read_search_file
from mnist_kit.record import LAST, METADATA, is_finished, read_metadata
from mnist_kit.search import best_row, point_figures, train_point, write_summary_csv

SWEEP_KEYS = ("description", "recipe", "set", "grid")


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its number, the overrides that make it, and its folder."""

    index: int
    values: dict[str, Any]  # dotted key -> value, from the grid
    overrides: dict[str, Any]  # the sweep's fixed `set` values, then the grid's: what the point's recipe is given
    folder: Path
    recipe_hash: str  # of the point's whole resolved recipe: a finished run counts only if it has the same
    experiment: str = ""  # the MLflow experiment every point of the sweep logs to (when its recipe logs to MLflow)


# How the points get trained: called with the base recipe's path, the points, the data folder and a function that
# takes each point's summary row as it ends. `local_backend()` here, `mnist_kit.cluster.ray_backend()` on Ray.
Backend = Callable[[str, list[Point], Path, Callable[[dict], None]], None]


def slug(values: dict) -> str:
    """A folder-safe name for a point: 'optimizer.lr=0.003,data.batch_size=64'."""
    text = ",".join(f"{key}={value}" for key, value in values.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)[:120]


def read_sweep(path: Path | str) -> dict:
    """A sweep file, checked: a base recipe, optional fixed `set` values, a non-empty `grid` of lists."""
    path = Path(path)
    sweep = read_search_file(path, SWEEP_KEYS, "sweep")
    grid = sweep.get("grid")
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise UserError(f'{path}: [grid] must give each swept key a non-empty list, e.g. "optimizer.lr" = [1e-3, 3e-3]')
    if not isinstance(sweep.get("set", {}), dict):
        raise UserError(f"{path}: [set] must be a table of fixed values")
    return sweep


def sweep_points(path: Path | str, out_dir: Path | str) -> tuple[dict, list[Point]]:
    """Every point of the grid, each checked as a full recipe before anything trains."""
    path = Path(path)
    sweep = read_sweep(path)
    base = recipe_path(sweep["recipe"], path.parent)
    keys = list(sweep["grid"])
    points, seen = [], set()
    for combo in itertools.product(*sweep["grid"].values()):
        values = dict(zip(keys, combo))
        overrides = {**sweep.get("set", {}), **values}
        index = len(points) + 1
        try:
            recipe = load_recipe(base, overrides)
            check_recipe(recipe)
            digest = recipe_hash(recipe)
        except UserError as error:
            raise UserError(f"{path}: point {index} ({slug(values)}): {error}") from error
        if digest in seen:  # the same recipe twice (1e-3 and 0.001): one point
            continue
        seen.add(digest)
        points.append(Point(index, values, overrides, Path(out_dir) / f"p{index:02d}-{slug(values)}", digest,
                            f"sweep {path.stem}"))
    return {**sweep, "base": str(base.resolve()), "name": path.stem}, points


def finished_run(point: Point) -> tuple[Path, dict] | None:
    """The point's finished run folder and its metadata, trained from the point's whole recipe, if any: after a
    change to the sweep's [set], the base recipe or a plugin, the point trains again."""
    for meta_path in sorted(point.folder.glob(f"*/{METADATA}")):
        if not is_finished(meta_path.parent):  # interrupted, or `latest`, which names one of the others
            continue
        metadata = read_metadata(meta_path)
        try:
            digest = metadata and (metadata.get("recipe_hash") or recipe_hash(recipe_from_dict(metadata["recipe"])))
        except (OSError, UserError):
            continue  # not a run this sweep can count
        if digest == point.recipe_hash:
            return meta_path.parent, metadata
    return None


def unfinished_run(point: Point) -> Path | None:
    """An interrupted run of the point's whole recipe (last.pth), to resume instead of starting over."""
    from mnist_kit.checkpoint import load_last

    for last in sorted(point.folder.glob(f"*/{LAST}")):
        if last.parent.is_symlink():
            continue
        try:
            if recipe_hash(recipe_from_dict(load_last(last.parent)["recipe"])) == point.recipe_hash:
                return last.parent
        except (UserError, KeyError, TypeError):
            continue
    return None


def failed_row(point: Point, error: str) -> dict:
    """The summary row of a point that did not finish."""
    return {"point": point.index, **point.values, "error": error, "status": "failed"}


def run_point(base: str, point: Point, data_dir, threads: int | None = None) -> dict:
    """Train (or resume) one point quietly in `threads` threads; its summary row, with 'error' if it failed."""
    import torch

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    row = {"point": point.index, **point.values}
    try:
        if found := finished_run(point):
            return {**row, **point_figures(found[1], found[0]), "status": "done before"}
        if partial := unfinished_run(point):
            load_recipe(base, point.overrides)  # the user's recipe imports its plugins; the run folder imports none
            result = train_point(resume_dir=partial, data_dir=data_dir, experiment=point.experiment)
        else:
            result = train_point(load_recipe(base, point.overrides), out_dir=point.folder, data_dir=data_dir,
                                 experiment=point.experiment)
        return {**row, **point_figures(result.metadata, result.run_dir), "status": "trained"}
    except (UserError, Interrupted) as error:
        return failed_row(point, str(error))
    except Exception as error:  # a point that crashes is reported; the sweep goes on
        return failed_row(point, f"{type(error).__name__}: {error}")
    finally:
        torch.set_num_threads(previous_threads)


def local_backend(workers: int = 1, cpus_per_point: int | None = None) -> Backend:
    """Points on this machine: one at a time, or `workers` processes, each with `cpus_per_point` threads
    (default: the cores shared out)."""

    def run(base: str, points: list[Point], data_dir: Path, report: Callable[[dict], None]) -> None:
        if workers <= 1:
            for point in points:
                report(run_point(base, point, data_dir, cpus_per_point))
            return
        threads = cpus_per_point or max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_point, base, p, data_dir, threads) for p in points]
            for future in as_completed(futures):
                report(future.result())

    return run


def run_sweep(path: Path | str, out_dir: Path | str | None = None, data_dir=None, backend: Backend | None = None,
              on_row: Callable[[dict], None] | None = None) -> tuple[list[dict], Path]:
    """Run every point through `backend` (default: `local_backend()`, one point at a time), write summary.csv and
    summary.png; returns the rows and the sweep's folder. Paths are made absolute for other nodes."""
    out = (Path(out_dir) if out_dir else Path("runs") / "sweeps" / Path(path).stem).resolve()
    data_dir = data_root(data_dir).resolve()
    sweep, points = sweep_points(path, out)
    rows = []

    def report(row: dict) -> None:
        rows.append(row)
        if on_row:
            on_row(row)

    (backend or local_backend())(sweep["base"], points, data_dir, report)
    rows.sort(key=lambda row: row["point"])
    if ranked_on(rows) == "test_accuracy" and any("test_accuracy" in row for row in rows):
        warnings.warn(f"{path}: its points hold no images out (set \"data.validation\" = 5000 in [set]): the best "
                      f"point is chosen on the test split, which then no longer measures it", Notice, stacklevel=2)
    write_summary(out, rows, list(sweep["grid"]))
    return rows, out


def ranked_on(rows: list[dict]) -> str:
    """The accuracy sweeps choose by: validation_accuracy when every finished point held images out, else (with a
    warning, as the test split should never choose) test_accuracy."""
    scored = [row for row in rows if "test_accuracy" in row]
    return "validation_accuracy" if all(row.get("validation_accuracy") is not None for row in scored) \
        else "test_accuracy"


def best_point(rows: list[dict]) -> dict | None:
    """The row with the highest validation accuracy (the first of equals); the test accuracy only for a sweep
    whose points hold no images out (see ranked_on)."""
    return best_row([row for row in rows if "test_accuracy" in row], ranked_on(rows))


def write_summary(out: Path, rows: list[dict], keys: list[str]) -> None:
    """summary.csv (a row per point, the best marked) and summary.png (accuracy per point)."""
    from mnist_kit.plots import save_png, sweep_figure

    write_summary_csv(out / "summary.csv", ["point", *keys, "validation_accuracy", "test_accuracy", "seconds",
                                           "best", "status", "run", "error"], rows, best_point(rows),
                      {"seconds": lambda seconds: f"{seconds:.1f}"})
    save_png(sweep_figure(rows, keys, ranked_on(rows)), out / "summary.png")

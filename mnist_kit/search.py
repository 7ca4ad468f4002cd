"""What sweeps (grids, mnist_kit.sweep) and studies (Optuna, mnist_kit.tune) share: training one point quietly, the
figures a point's row carries, the best row, and the summary CSV."""

import csv
import io
from collections.abc import Callable
from pathlib import Path

from mnist_kit.atomic import write_bytes_atomic


def train_point(recipe=None, *, out_dir: Path | None = None, resume_dir: Path | None = None, data_dir=None,
                on_epoch: Callable[[dict], None] | None = None, experiment: str | None = None):
    """Train one point's recipe into `out_dir` (or resume the run in `resume_dir`) with no display; its RunResult.
    What `on_epoch` raises ends the run there (a study's pruning). `experiment`: the MLflow experiment that holds
    every point of the search (when its recipe logs to MLflow)."""
    from rich.console import Console

    from mnist_kit.train import resume, train

    quiet = {"quiet": True, "console": Console(quiet=True), "data_dir": data_dir, "on_epoch": on_epoch,
             "experiment": experiment}
    return resume(resume_dir, **quiet) if resume_dir else train(recipe, out_dir=out_dir, **quiet)


def point_figures(metadata: dict, run_dir: Path) -> dict:
    """A finished point's figures for its row: validation and test accuracy, seconds, the run folder."""
    return {"validation_accuracy": metadata.get("validation_accuracy"), "test_accuracy": metadata["test_accuracy"],
            "seconds": metadata["wall_seconds"], "run": str(run_dir)}


def best_row(rows: list[dict], key: str) -> dict | None:
    """The row with the highest `key` (the first of equals) among those that have it."""
    scored = [row for row in rows if row.get(key) is not None]
    return max(scored, key=lambda row: row[key]) if scored else None


def write_summary_csv(path: Path, columns: list[str], rows: list[dict], best: dict | None,
                      formats: dict[str, Callable] | None = None) -> Path:
    """A row per point, `columns` in order (a missing or None value is empty; `formats` turn values into text), the
    best one marked "*" in the `best` column; written atomically."""
    formats = formats or {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([("*" if row is best else "") if column == "best"
                         else "" if row.get(column) is None else formats.get(column, str)(row[column])
                         for column in columns])
    return write_bytes_atomic(path, buffer.getvalue().encode())

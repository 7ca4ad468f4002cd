"""Every run under a folder, sweep points and study trials included, as table rows; and how two runs differ.

Reads metadata.json files only, through mnist_kit.record (bounded in size, parsed as JSON, upgraded from older
schemas: opening a run runs no code) and imports no torch,
so listing a few hundred runs takes a fraction of a second.
"""

import fnmatch
import json
import tomllib
from pathlib import Path
from typing import Any

from mnist_kit.errors import UserError
from mnist_kit.record import MAX_METADATA_BYTES, metadata_files, open_metadata, parse_metadata  # noqa: F401

SORT_KEYS = ("started", "recipe", "run", "validation_accuracy", "test_accuracy", "seconds")
SORT_ALIASES = {"validation": "validation_accuracy", "val": "validation_accuracy", "test": "test_accuracy",
                "date": "started", "time": "seconds"}


def overrides_text(overrides: dict) -> str:
    """--set values as one line: 'optimizer.lr=0.01 train.seed=2'."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in overrides.items())


def run_row(path: Path, meta: dict, folder: Path) -> dict:
    """The list's row for one run (None where the run has no such figure)."""
    recipe, machine = meta["recipe"], meta.get("machine") or {}
    return {
        "run": str(path.parent.relative_to(folder)) if path.parent != folder else ".",
        "recipe": recipe.get("name"),
        "overrides": overrides_text(recipe.get("overrides") or {}),
        "epochs": len(meta.get("history") or []),
        "validation_accuracy": meta.get("validation_accuracy"),
        "test_accuracy": meta.get("test_accuracy"),
        "seconds": meta.get("wall_seconds"),
        "started": meta.get("started"),
        "machine": machine.get("kind") or machine.get("gpu") or machine.get("cpu"),  # kind: since 0.2, with features
    }


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested recipe as dotted keys: {'optimizer.lr': 0.01, 'augment': [...]} (lists stay whole)."""
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config}
    flat = {}
    for key, value in config.items():
        flat |= flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


def parse_where(condition: str) -> tuple[str, Any]:
    """KEY=VALUE with VALUE read as TOML (3, 0.01, true, "adam", [1, 2]), or as a bare string."""
    key, equals, text = condition.partition("=")
    if not equals or not key.strip():
        raise UserError(f"--where {condition!r}: expected KEY=VALUE, e.g. optimizer.lr=0.01 or recipe=fast")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return key.strip(), value


def matches(meta: dict, row: dict, conditions: list[tuple[str, Any]]) -> bool:
    """True when every KEY=VALUE holds: KEY is a column of the list or a dotted key of the resolved recipe."""
    config = flatten(meta["recipe"].get("config") or {})
    for key, wanted in conditions:
        have = row[key] if key in row else config.get(key, meta.get(key))
        if have != wanted and str(have) != str(wanted):
            return False
    return True


def sort_key(name: str) -> str:
    """A --sort name (validation, test, seconds, started, recipe, run) as the row's column."""
    key = SORT_ALIASES.get(name, name)
    if key not in SORT_KEYS:
        from mnist_kit.registry import closest

        raise UserError(f"cannot sort by {name!r}; choose one of validation, test, seconds, started, recipe, run"
                        + closest(name, [*SORT_KEYS, *SORT_ALIASES]))
    return key


def list_runs(folder: Path | str = "runs", recipe: str | None = None, where: list[str] = (),
              sort: str = "started", descending: bool = False) -> tuple[list[dict], list[Path]]:
    """The rows of every finished run under `folder` that matches (`recipe`: a name or glob; `where`: KEY=VALUE
    conditions), sorted (runs without the figure last); and (path, why) for each metadata.json that is not a run's:
    one odd file is skipped, never the whole listing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (runs are written to ./runs unless --out says otherwise)")
    key, conditions = sort_key(sort), [parse_where(c) for c in where]
    rows, unreadable = [], []
    for path in metadata_files(folder):
        try:
            meta = parse_metadata(path)
        except (OSError, ValueError, UserError) as error:
            unreadable.append((path, getattr(error, "strerror", None) or str(error)))
            continue
        row = run_row(path, meta, folder)
        if recipe and not fnmatch.fnmatchcase(str(row["recipe"]), recipe):
            continue
        if matches(meta, row, conditions):
            rows.append(row)
    present = sorted((r for r in rows if r[key] is not None), key=lambda r: r[key], reverse=descending)
    return present + [r for r in rows if r[key] is None], unreadable


RESULT_KEYS = ("test_accuracy", "validation_accuracy", "test_loss", "wall_seconds", "epochs", "kept_epoch",
               "parameters", "seed", "device", "precision", "threads", "world_size", "machine", "torch", "git_commit",
               "data", "recipe_hash", "started")


def results_of(meta: dict) -> dict[str, Any]:
    """What a run measured and where, for a diff: the figures, the machine, the versions, the data's checksums."""
    files = (meta.get("data") or {}).get("files") or {}
    found = {**meta, "epochs": len(meta.get("history") or []), "torch": (meta.get("versions") or {}).get("torch"),
             "data": ", ".join(f"{name} {(info or {}).get('sha256', '')[:12]}" for name, info in sorted(files.items()))
             or None}
    return {key: found.get(key) for key in RESULT_KEYS}


def run_label(run: Path | str, meta: dict) -> str:
    """A run as a legend names it: its folder and its recipe ('fast-20261202-1906 (fast)')."""
    return f"{Path(run).resolve().name} ({meta['recipe'].get('name')})"


def curves_of(runs: list[Path | str]) -> list[tuple[str, list[dict]]]:
    """Each run's label and per-epoch history, for curves side by side."""
    metas = [(run, open_metadata(run)) for run in runs]
    return [(run_label(run, meta), meta.get("history") or []) for run, meta in metas]


def where_curves_part(a: dict, b: dict, accuracy_gap: float = 0.1, loss_gap: float = 0.01) -> dict:
    """The first epoch where two runs' validation accuracies differ by more than `accuracy_gap` points, or, where
    either run held no images out, their training losses by more than `loss_gap` of the smaller one. `epoch` is
    None when they never part over the epochs both ran."""
    rows = list(zip(a.get("history") or [], b.get("history") or []))
    by_accuracy = bool(rows) and all("val_accuracy" in row for pair in rows for row in pair)
    compared, key, limit = (("validation accuracy", "val_accuracy", accuracy_gap) if by_accuracy
                            else ("training loss", "train_loss", loss_gap))
    found = {"compared": compared, "gap": limit, "epoch": None, "values": None, "epochs_compared": len(rows)}
    for left, right in rows:
        x, y = left[key], right[key]
        apart = 100 * abs(x - y) if by_accuracy else abs(x - y) / max(min(x, y), 1e-12)  # points, or a share
        if apart > limit:
            return {**found, "epoch": left["epoch"], "values": [x, y]}
    return found


def diff_runs(run_a: Path | str, run_b: Path | str, everything: bool = False, accuracy_gap: float = 0.1,
              loss_gap: float = 0.01) -> dict[str, dict]:
    """How two runs differ: {"recipe": {dotted key: [a, b]}, "results": {key: [a, b]}, "curves": where they part
    (where_curves_part)}; only the keys whose values differ unless `everything`. The recipe is compared resolved
    (defaults filled in), description aside."""
    a, b = open_metadata(run_a), open_metadata(run_b)
    out = {}
    for section, (left, right) in {
        "recipe": (flatten({"name": a["recipe"].get("name"), **(a["recipe"].get("config") or {})}),
                   flatten({"name": b["recipe"].get("name"), **(b["recipe"].get("config") or {})})),
        "results": (results_of(a), results_of(b)),
    }.items():
        keys = [k for k in dict.fromkeys([*left, *right]) if k != "description"]
        out[section] = {k: [left.get(k), right.get(k)] for k in keys if everything or left.get(k) != right.get(k)}
    out["curves"] = where_curves_part(a, b, accuracy_gap, loss_gap)
    return out

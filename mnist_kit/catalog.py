"""Every run under a folder, sweep points and study trials included, as table rows; and how two runs differ.

Reads metadata.json files only (bounded in size, parsed as JSON: opening a run runs no code) and imports no torch,
so listing a few hundred runs takes a fraction of a second.
"""

import fnmatch
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from mnist_kit.errors import UserError

METADATA = "metadata.json"
MAX_METADATA_BYTES = 16 * 2**20  # a real one is ~20 KB; a file claiming more is not read
SORT_KEYS = ("started", "recipe", "run", "validation_accuracy", "test_accuracy", "seconds")
SORT_ALIASES = {"validation": "validation_accuracy", "val": "validation_accuracy", "test": "test_accuracy",
                "date": "started", "time": "seconds"}


def read_metadata(path: Path) -> dict | None:
    """A run's metadata.json as a dict, or None when it is not one (too big, not JSON, not a run's)."""
    try:
        if path.stat().st_size > MAX_METADATA_BYTES:
            return None
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("recipe"), dict):
        return None
    return meta


def metadata_files(folder: Path) -> list[Path]:
    """Every metadata.json under `folder` (symlinked folders are not followed), in path order."""
    found = []
    for parent, folders, files in os.walk(folder):
        folders.sort()
        if METADATA in files:
            found.append(Path(parent) / METADATA)
    return found


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
        "machine": machine.get("gpu") or machine.get("cpu"),
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
    conditions), sorted (runs without the figure last); and the metadata.json files that could not be read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (runs are written to ./runs unless --out says otherwise)")
    key, conditions = sort_key(sort), [parse_where(c) for c in where]
    rows, unreadable = [], []
    for path in metadata_files(folder):
        meta = read_metadata(path)
        if meta is None:
            unreadable.append(path)
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


def open_metadata(run: Path | str) -> dict:
    """A run folder's (or a metadata.json's) metadata, or a one-line UserError."""
    path = Path(run)
    path = path / METADATA if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"{run}: not a run folder (no {METADATA})")
    meta = read_metadata(path)
    if meta is None:
        raise UserError(f"{path}: not a run's metadata (unreadable, not JSON, or over {MAX_METADATA_BYTES:,} bytes)")
    return meta


def diff_runs(run_a: Path | str, run_b: Path | str, everything: bool = False) -> dict[str, dict[str, list]]:
    """How two runs differ: {"recipe": {dotted key: [a, b]}, "results": {key: [a, b]}}; only the keys whose values
    differ unless `everything`. The recipe is compared resolved (defaults filled in), description aside."""
    a, b = open_metadata(run_a), open_metadata(run_b)
    out = {}
    for section, (left, right) in {
        "recipe": (flatten({"name": a["recipe"].get("name"), **(a["recipe"].get("config") or {})}),
                   flatten({"name": b["recipe"].get("name"), **(b["recipe"].get("config") or {})})),
        "results": (results_of(a), results_of(b)),
    }.items():
        keys = [k for k in dict.fromkeys([*left, *right]) if k != "description"]
        out[section] = {k: [left.get(k), right.get(k)] for k in keys if everything or left.get(k) != right.get(k)}
    return out

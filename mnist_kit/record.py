"""The run record: a run folder's layout, metadata.json (read, written, upgraded from older schemas), history.csv,
the `latest` pointer beside the run folders, and the SHA-256 of the weights. The only code that reads or writes
them; no torch here, so listing and comparing runs answers at once.

A run folder holds:
    model.pth, model.safetensors   the weights (written by mnist_kit.export; their SHA-256 are in the metadata)
    metadata.json                  what a stranger needs to rerun and judge the run (schema SCHEMA_VERSION)
    history.csv                    one row per epoch, the columns of metadata.json's history
    last.pth                       while the run is unfinished: the training state to resume from (checkpoint.py)
"""

import copy
import csv
import io
import json
import os
import stat
import warnings
from datetime import datetime
from pathlib import Path

from mnist_kit.atomic import point_atomic, write_bytes_atomic, write_json_atomic
from mnist_kit.errors import NoFinishedRun, Notice, UserError
from mnist_kit.recipebook import parse_override
from mnist_kit.settings import SCHEMA

SCHEMA_VERSION = 2  # of metadata.json and of a recipe's dict form; 1: before it was written down
METADATA = "metadata.json"
PTH = "model.pth"
SAFETENSORS = "model.safetensors"
LAST = "last.pth"
HISTORY = "history.csv"
HUB_CONFIG = "config.json"  # a Hub folder's record (mnist-kit export --format hf): a run too
LATEST = "latest"  # beside the run folders: names the one that finished last
PLOTS = "plots"  # RUN/plots: the PNGs `mnist-kit plot` writes by default
EVENTS = "tensorboard"  # RUN/tensorboard: TensorBoard's event files (`tensorboard --logdir runs` finds every run's)
MAX_METADATA_BYTES = 16 * 2**20  # a real one is ~20 KB; a file claiming more is not read


# --- the run folder and the `latest` pointer ---

def new_run_dir(out_dir: Path | str, name: str) -> Path:
    """OUT/<name>-<YYYYmmdd-HHMMSS>/, created, with a -2, -3... suffix if that second is taken."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for suffix in ["", *(f"-{i}" for i in range(2, 1000))]:
            run_dir = Path(out_dir) / f"{name}-{stamp}{suffix}"
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                continue
    except OSError as error:
        raise UserError(f"cannot create a run folder in {out_dir}: {error.strerror or error}") from error
    raise UserError(f"too many runs named {name}-{stamp} in {out_dir}")


def point_latest(run_dir: Path) -> None:
    """OUT/latest names the run that finished last (make eval/plot/docs use it); a failure is only a warning."""
    link = run_dir.parent / LATEST
    try:
        point_atomic(link, run_dir.name)
    except OSError as error:
        warnings.warn(Notice(f"cannot point {link} at {run_dir.name}: {error.strerror or error}"), stacklevel=1)


def pointed_run(path: Path) -> Path:
    """runs/latest as the run folder it names (so reports name the run itself); any other path as it is. `latest`
    is a symlink to a sibling folder, or, where the file system has none, a small file holding the folder's name."""
    if path.name != LATEST:
        return path
    if path.is_symlink():
        target = os.readlink(path)
        if not path.exists():
            raise UserError(f"{path} names {target}, which is gone: give a run folder")
        return path.parent / target if Path(target).name == target else path
    if not path.exists():
        raise NoFinishedRun(path)
    if not path.is_file() or path.stat().st_size > 4096:
        return path
    name = path.read_text(encoding="utf-8", errors="replace").strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UserError(f"{path}: not a pointer to a run folder (it should hold one folder name)")
    return path.parent / name


def is_finished(run_dir: Path) -> bool:
    """A run folder whose training ended: metadata.json written, no last.pth left; not the `latest` link."""
    return (run_dir / METADATA).is_file() and not (run_dir / LAST).exists() and not run_dir.is_symlink()


# --- metadata.json ---

def metadata_files(folder: Path) -> list[Path]:
    """Every metadata.json under `folder` (symlinked folders are not followed), in path order."""
    found = []
    for parent, folders, files in os.walk(folder):
        folders.sort()
        if METADATA in files:
            found.append(Path(parent) / METADATA)
    return found


def metadata_path(run_dir: Path) -> Path | None:
    """A run folder's record: metadata.json, or a Hub folder's config.json; None when it has neither."""
    return next((run_dir / name for name in (METADATA, HUB_CONFIG) if (run_dir / name).is_file()), None)


def parse_metadata(path: Path) -> dict:
    """A metadata.json, or a Hub folder's config.json, in today's schema (a regular file, bounded in size, parsed as
    JSON: reading a run runs no code), its fields of the types readers rely on; ValueError or OSError when it is not
    one."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
        raise ValueError("not a regular file")
    if info.st_size > MAX_METADATA_BYTES:
        raise ValueError(f"over {MAX_METADATA_BYTES:,} bytes")
    try:
        meta = json.loads(path.read_bytes())
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if path.name == HUB_CONFIG and (not isinstance(meta, dict) or meta.get("model_type") != "mnist-kit"):
        raise ValueError("not an mnist-kit config.json (model_type is not mnist-kit)")
    if not isinstance(meta, dict) or not isinstance(meta.get("recipe"), dict):
        raise ValueError("not a run's metadata (no recipe)")
    try:
        meta = upgraded(meta)
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"not a run's metadata ({type(error).__name__}: {error})") from None
    check_fields(meta)
    return meta


# What readers rely on, each of its type (None where a run may have no such figure; a Hub folder has no history).
NUMBER = (int, float)
FIELD_TYPES = {"history": (list, type(None)), "machine": (dict, type(None)), "test_accuracy": (*NUMBER, type(None)),
               "validation_accuracy": (*NUMBER, type(None)), "wall_seconds": (*NUMBER, type(None)),
               "started": (str, type(None)), "recipe_hash": (str, type(None)), "data": (dict, type(None))}


def check_fields(meta: dict) -> None:
    """ValueError naming the first field that is not of the type readers rely on (a listing then skips the run)."""
    for key, types in FIELD_TYPES.items():
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"{key} is {type(value).__name__} {str(value)[:40]!r}, not what a run records")
    recipe = meta["recipe"]
    if not isinstance(recipe.get("name"), str) or not all(isinstance(recipe.get(k), dict)
                                                           for k in ("config", "overrides")):
        raise ValueError("recipe has no name, config table or overrides table")
    if not all(isinstance(row, dict) for row in meta.get("history") or []):
        raise ValueError("history is not a list of epochs")


def read_metadata(path: Path) -> dict | None:
    """A run's metadata.json in today's schema, or None when it is not one (too big, not JSON, not a run's)."""
    try:
        return parse_metadata(path)
    except (OSError, ValueError, UserError):
        return None


def open_metadata(run: Path | str) -> dict:
    """A run folder's (or a metadata.json's) metadata in today's schema, or a one-line UserError."""
    path = pointed_run(Path(run))
    path = path / METADATA if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"{run}: not a run folder (no {METADATA})")
    try:
        return parse_metadata(path)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a run's metadata (unreadable, not JSON, or over {MAX_METADATA_BYTES:,} bytes:"
                        f" {error})") from None


def write_metadata(run_dir: Path, metadata: dict) -> Path:
    """RUN/metadata.json, atomically."""
    return write_json_atomic(Path(run_dir) / METADATA, metadata)


def write_history(run_dir: Path, history: list[dict]) -> Path:
    """RUN/history.csv: the epoch table (one row per epoch, the columns of metadata.json's history), atomically."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return write_bytes_atomic(Path(run_dir) / HISTORY, buffer.getvalue().encode())


def weights_intact(metadata: dict, run_dir: Path, path: Path) -> bool | None:
    """Whether a weights file still has the SHA-256 its run recorded when it wrote it (None: none recorded)."""
    from mnist_kit.fetch import sha256_file  # numpy comes with it: only opening weights needs this

    recorded = (metadata.get("weights") or {}).get(path.name) if path.parent == run_dir else None
    return None if recorded is None else sha256_file(path) == recorded


# --- schemas: what older versions wrote, in today's form ---

def upgraded(metadata: dict) -> dict:
    """Metadata of any schema in today's form, as a new dict (the recipe's config copied): schema 1 kept the recipe
    flat (`recipe_name`, `recipe_path`, `overrides` as KEY=VALUE strings, `recipe` the config)."""
    schema = metadata.get("schema", 1)
    check_schema(schema)
    if schema < 2:
        metadata = {key: value for key, value in metadata.items()
                    if key not in ("recipe_name", "recipe_path", "overrides")} | {
            "recipe": {"schema": 1, "name": metadata.get("recipe_name", "run"), "path": metadata.get("recipe_path", ""),
                       "config": metadata["recipe"], "overrides": metadata.get("overrides") or []}}
    return {**metadata, "schema": SCHEMA_VERSION, "recipe": upgraded_recipe(metadata["recipe"])}


def schema_of(recipe_record: dict) -> int:
    return recipe_record.get("schema", 1) if isinstance(recipe_record, dict) else 1


def check_schema(schema: int) -> None:
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise UserError(f"written by a newer mnist-kit (schema {schema}; this one reads up to {SCHEMA_VERSION})")


def upgraded_recipe(record: dict) -> dict:
    """A recipe's dict form ({schema, name, path, config, overrides}) of any schema in today's: schema 1 -> 2:
    onecycle's max_lr became the optimizer's lr (the one learning rate), overrides a table; new keys of the fixed
    sections get their defaults."""
    schema = schema_of(record)
    check_schema(schema)
    config = copy.deepcopy(record["config"])
    scheduler = config.get("scheduler") or {}
    if schema < 2 and scheduler.get("name") == "onecycle" and "max_lr" in scheduler:
        config["optimizer"]["lr"] = scheduler.pop("max_lr")
    for section, fields in SCHEMA.items():
        for key, (_, default, _) in fields.items():
            if default is not None:
                config.setdefault(section, {}).setdefault(key, default)
    overrides = record.get("overrides") or {}
    if not isinstance(overrides, dict):  # schema 1: a list of KEY=VALUE strings
        overrides = {".".join(keys): value for keys, value in map(parse_override, map(str, overrides))}
    return {**record, "schema": SCHEMA_VERSION, "config": config, "overrides": overrides}

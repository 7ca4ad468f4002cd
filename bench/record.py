"""What every results file under bench/results/ carries, and where it goes: one folder per machine.

A results file is JSON: the command that measured it, the figures, and the machine (CPU model, cores, GPU), torch
version, thread count, date and git commit. Figures from another machine land in that machine's folder, so two
machines are never mixed into one table without saying so.
"""

import re
from datetime import UTC, datetime
from pathlib import Path

import torch
from rich.console import Console

from mnist_kit.atomic import write_json_atomic
from mnist_kit.device import machine
from mnist_kit.export import git_commit
from mnist_kit.recipe import recipe_hash
from mnist_kit.sweep import Point, finished_run, unfinished_run
from mnist_kit.train import resume, train

RESULTS = Path(__file__).resolve().parent / "results"


def machine_slug(record: dict) -> str:
    """A machine record -> the folder its results go to: 'amd-epyc-avx512-bf16-2-cores', 'amd-epyc-avx2-2-cores'.
    The best speed-deciding instruction set is in the name, so two CPUs of one generic name never share a folder."""
    best = (record.get("features") or ["no AVX2"])[-1]
    return "-".join(re.sub(r"[^a-z0-9]+", "-", part.lower().replace("avx-512", "avx512")).strip("-")
                    for part in (record["cpu"], best, f"{record['cores']} cores"))


def machine_folder(results: Path = RESULTS) -> Path:
    """results/<this machine>/, created."""
    folder = results / machine_slug(machine(torch.device("cpu")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_folders(folder: Path) -> list[Path]:
    """The run folders a training process wrote into `folder` (not the `latest` link beside them)."""
    return [p for p in Path(folder).iterdir() if p.is_dir() and not p.is_symlink()]


def keep_folder(keep: Path | None, scratch: str, arm: str | None) -> Path:
    """Where a bench keeps an arm's runs (KEEP/ARM/seed-S): the base arm (None) in KEEP itself, the layout
    bench/verdict.py --keep writes, so every bench shares the base's runs; a scratch folder without --keep."""
    folder = keep or Path(scratch)
    return folder / arm if arm else folder


def kept_run(recipe: dict, folder: Path) -> Path:
    """The run of this very recipe (by resolved-recipe hash, as a sweep's point is found) in `folder`: reused when
    finished, resumed when interrupted, else trained there."""
    kept = Point(index=0, values={}, overrides={}, folder=Path(folder), recipe_hash=recipe_hash(recipe))
    if found := finished_run(kept):
        return found[0]
    if partial := unfinished_run(kept):
        return resume(partial, quiet=True, console=Console(quiet=True)).run_dir
    return train(recipe, out_dir=folder, quiet=True, console=Console(quiet=True)).run_dir


def environment() -> dict:
    """The machine and software a measurement ran on (as a run's metadata records them)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {"machine": machine(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "git_commit": git_commit(), "date": datetime.now(UTC).isoformat(timespec="seconds")}


def write_results(path: Path, command: list[str], figures: dict) -> Path:
    """Write {command, **figures, **environment} to path atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, {"command": command, **figures, **environment()})

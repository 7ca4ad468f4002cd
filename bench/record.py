"""What every results file under bench/results/ carries, and where it goes: one folder per machine.

A results file is JSON: the command that measured it, the figures, and the machine (CPU model, cores, GPU), torch
version, thread count, date and git commit. Figures from another machine land in that machine's folder, so two
machines are never mixed into one table without saying so.
"""

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import torch

from mnist_kit.atomic import write_json_atomic
from mnist_kit.device import cpu_model, machine
from mnist_kit.export import git_commit

RESULTS = Path(__file__).resolve().parent / "results"


def machine_slug(cpu: str, cores: int) -> str:
    """'AMD EPYC', 2 -> 'amd-epyc-2-cores': the folder a machine's results go to."""
    return f"{re.sub(r'[^a-z0-9]+', '-', cpu.lower()).strip('-')}-{cores}-cores"


def machine_folder(results: Path = RESULTS) -> Path:
    """results/<this machine>/, created."""
    folder = results / machine_slug(cpu_model(), os.cpu_count() or 1)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_folders(folder: Path) -> list[Path]:
    """The run folders a training process wrote into `folder` (not the `latest` link beside them)."""
    return [p for p in Path(folder).iterdir() if p.is_dir() and not p.is_symlink()]


def environment() -> dict:
    """The machine and software a measurement ran on (as a run's metadata records them)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {"machine": machine(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "git_commit": git_commit(), "date": datetime.now(UTC).isoformat(timespec="seconds")}


def write_results(path: Path, command: list[str], figures: dict) -> Path:
    """Write {command, **figures, **environment} to path atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, {"command": command, **figures, **environment()})

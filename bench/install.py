"""Installing and starting: the wheel's size, the virtual environments `make train` and `make test` build, and how
long the CLI takes to answer, at this commit and at an earlier one.

    python bench/install.py [--before REF] [--venvs] [--repeat 7] [--results bench/results]

The wheel is built from a copy of the sources (pip wheel --no-deps). --venvs builds the two environments in a temporary
folder as the Makefile does (torch and torchvision pinned, then `.` for `make train`, then `.[dev]` for `make test`)
and measures them on disk (minutes: torch's CUDA libraries are most of it). Start-up: the wall time of
`python -m mnist_kit ARGS` from start to exit, the median of --repeat runs after one unmeasured run; --before REF
times the same commands on a worktree of REF (run with PYTHONPATH pointing at it). Writes
<results>/<machine>/install.json.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from record import machine_folder, write_results

REPO = Path(__file__).resolve().parent.parent
COMMANDS = [["--help"], ["train", "--help"], ["recipes"], ["recipes", "show", "fast"], ["runs", "list", "EMPTY"],
            ["train", "fast", "--print-config"]]
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]  # as the Makefile pins them
EXTRAS = [name for name in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
          if name != "dev"]  # each measured alone on top of `make train`'s environment


def build_wheel(folder: Path) -> Path:
    """The wheel of a copy of the sources in `folder`."""
    source = folder / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for name in ("mnist_kit", "recipes"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(folder), str(source)], check=True)
    return next(folder.glob("mnist_kit-*.whl"))


def megabytes(folder: Path) -> float:
    """Bytes on disk under `folder` (du), in MiB."""
    return int(subprocess.run(["du", "-sk", str(folder)], capture_output=True, text=True,
                              check=True).stdout.split()[0]) / 1024


def venv_sizes(folder: Path) -> dict:
    """What `make train` installs (torch pinned, then the package) and what `make test` adds (the dev extra)."""
    venv = folder / "venv"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    clock = time.perf_counter()
    subprocess.run([*pip, *TORCH_PINS], check=True)
    subprocess.run([*pip, str(REPO)], check=True)
    train = {"mib": round(megabytes(venv), 1), "install_seconds": round(time.perf_counter() - clock, 1)}
    torch_mib = sum(megabytes(p) for p in (venv / "lib").glob("python3*/site-packages/*")
                    if p.name.startswith(("torch", "nvidia", "triton", "cuda")))
    extras = {extra: extra_size(venv, extra, folder) for extra in EXTRAS}
    clock = time.perf_counter()
    subprocess.run([*pip, f"{REPO}[dev]"], check=True)
    test = {"mib": round(megabytes(venv), 1), "install_seconds": round(time.perf_counter() - clock, 1)}
    return {"make_train": {**train, "torch_and_cuda_mib": round(torch_mib, 1)}, "make_test": test,
            "dev_adds_mib": round(test["mib"] - train["mib"], 1), "extras": extras}


def extra_size(venv: Path, extra: str, folder: Path) -> dict:
    """What one extra adds on disk to `make train`'s environment: the distributions pip would install there (its
    dry-run report), installed alone into a scratch folder and measured (du)."""
    python = str(venv / "bin" / "python")
    report = json.loads(subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                                        "--dry-run", "--report", "-", f"{REPO}[{extra}]"], capture_output=True,
                                       text=True, check=True).stdout)
    wanted = [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in report["install"]
              if item["metadata"]["name"] != "mnist-kit"]
    target = folder / f"extra-{extra}"
    if wanted:
        subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps", "--target",
                        str(target), *wanted], check=True)
    return {"packages": len(wanted), "adds_mib": round(megabytes(target), 1) if wanted else 0.0}


def startup(code_root: Path | None, repeat: int, empty: Path) -> dict:
    """Median and min seconds of each command, run from `code_root` (a worktree) or this checkout."""
    env = {**os.environ, **({"PYTHONPATH": str(code_root)} if code_root else {})}
    figures = {}
    for args in COMMANDS:
        argv = [str(empty) if a == "EMPTY" else a for a in args]
        times = []
        for i in range(repeat + 1):
            clock = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "mnist_kit", *argv], cwd=code_root or REPO, env=env,
                                    capture_output=True)
            if i:
                times.append(time.perf_counter() - clock)
        figures[" ".join(args).replace("EMPTY", "FOLDER")] = {
            "median_seconds": round(statistics.median(times), 3), "min_seconds": round(min(times), 3),
            "exit": result.returncode}
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git ref to time too (e.g. the commit before a change)")
    parser.add_argument("--venvs", action="store_true", help="also build and measure the two environments")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wheel = build_wheel(tmp)
        size = wheel.stat().st_size
        figures["wheel"] = {"file": wheel.name, "bytes": size, "mib": round(size / 2**20, 3)}
        (tmp / "empty").mkdir()
        figures["startup"] = {"this_commit": startup(None, args.repeat, tmp / "empty")}
        if args.before:
            worktree = tmp / "before"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(worktree), args.before],
                           check=True)
            try:
                commit = subprocess.run(["git", "-C", str(worktree), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, check=True).stdout.strip()
                figures["startup"]["before"] = {"ref": args.before, "commit": commit,
                                                **startup(worktree, args.repeat, tmp / "empty")}
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=True)
        if args.venvs:
            figures["venvs"] = venv_sizes(tmp)
    path = write_results(machine_folder(args.results) / "install.json", [sys.executable, *sys.argv], figures)
    for section, value in figures.items():
        print(section, value)
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()

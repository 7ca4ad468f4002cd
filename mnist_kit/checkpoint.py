"""The resumable state of a run in progress: RUN/last.pth, written atomically after every epoch."""

import random
from pathlib import Path

import numpy as np
import torch

from mnist_kit.atomic import torch_bytes, write_bytes_atomic
from mnist_kit.errors import UserError
from mnist_kit.export import load_checkpoint_file
from mnist_kit.record import LAST, SAFETENSORS


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a run draws from: torch (CPU, CUDA), numpy, python, the batch-order generator."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "generator": generator.get_state(),
    }


def restore_rng(state: dict, generator: torch.Generator) -> None:
    """Put every random state back as `rng_state` saw it."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(state["generator"])


def save_last(run_dir: Path, state: dict) -> Path:
    """Write the training state to RUN/last.pth atomically (a crash leaves the previous epoch's)."""
    return write_bytes_atomic(Path(run_dir) / LAST, torch_bytes(state))


def load_last(run_dir: Path | str) -> dict:
    """The training state of an unfinished run, loaded with weights_only=True."""
    run_dir = Path(run_dir)
    path = run_dir / LAST
    if not path.is_file():
        if (run_dir / SAFETENSORS).is_file():
            raise UserError(f"{run_dir} finished training already (it has {SAFETENSORS} and no {LAST})")
        raise UserError(f"{run_dir} has no {LAST} to resume from (not a run folder, or no epoch completed)")
    state = load_checkpoint_file(path)
    if not isinstance(state, dict) or not {"epoch", "model", "optimizer", "scheduler", "rng"} <= set(state):
        raise UserError(f"{path} is not an mnist-kit training state")
    return state


def remove_last(run_dir: Path) -> None:
    """Drop RUN/last.pth once the final files are written."""
    (Path(run_dir) / LAST).unlink(missing_ok=True)

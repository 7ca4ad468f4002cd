"""Atomic file writes: a temporary file in the same folder, flushed, then renamed over the target."""

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def write_atomic(path: Path | str, write: Callable[[BinaryIO], Any]) -> Path:
    """Call `write(file)` on a temporary file beside `path`, then rename it to `path`; nothing half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would hide a run in a shared --out from others
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask would set it for a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def torch_bytes(obj: Any) -> bytes:
    """torch.save's bytes, made in memory: written with write_bytes_atomic, a full disk is an OSError (ENOSPC), not
    the RuntimeError torch raises when its own writer runs out of room."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return write_atomic(path, lambda file: file.write(data))


def write_json_atomic(path: Path | str, obj: Any) -> Path:
    """Write `obj` as indented JSON to `path` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    return write_bytes_atomic(path, text.encode())


def point_atomic(link: Path | str, target_name: str) -> Path:
    """Make `link` name `target_name` (a sibling), replacing what it named before in one rename: a relative
    symlink, or where the file system has none, a small text file holding the name."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(target_name, tmp, target_is_directory=True)
    except OSError:  # no symlinks here (Windows without the privilege, some network file systems)
        return write_bytes_atomic(link, f"{target_name}\n".encode())
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return link

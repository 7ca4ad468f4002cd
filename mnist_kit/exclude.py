"""`data.exclude`: a file listing training images to leave out, as indices into the original training split (before
any validation split or limit), one per line (`#` starts a comment), as `mnist-kit audit` writes them. Read bounded
and checked; its content, not its path, is part of a recipe's hash. No torch here."""

import hashlib
import re
from pathlib import Path

from mnist_kit.errors import UserError

MAX_BYTES = 2**20  # 60,000 indices of 5 digits and a newline are 360 KB
INDEX = re.compile(r"\d+")


def exclude_path(value: str, recipe_dir: Path | None = None) -> Path:
    """Where a recipe's data.exclude file is: as given (absolute, or from the current folder), else beside the
    recipe file."""
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists() and recipe_dir is not None and (recipe_dir / path).exists():
        return recipe_dir / path
    return path


def read_exclude_bytes(path: Path) -> bytes:
    """The file's bytes, bounded; one line naming the file when it cannot be read."""
    try:
        if not path.is_file():
            raise UserError(f"data.exclude: no file at {path}" if not path.exists() else
                            f"data.exclude: {path} is not a regular file")
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"data.exclude: {path} holds {path.stat().st_size:,} bytes; an index list is under "
                            f"{MAX_BYTES:,}")
        return path.read_bytes()
    except OSError as error:
        raise UserError(f"data.exclude: cannot read {path}: {error.strerror or error}") from None


def parse_indices(blob: bytes, path: Path, size: int | None = None) -> list[int]:
    """The sorted distinct indices a file lists (whitespace or commas between them, `#` comments), each checked
    against the training split's `size`."""
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"data.exclude: {path} is not text (one index a line)") from None
    words = [word for line in text.splitlines() for word in line.split("#", 1)[0].replace(",", " ").split()]
    bad = next((word for word in words if not INDEX.fullmatch(word)), None)
    if bad is not None:
        raise UserError(f"data.exclude: {path} lists {bad[:20]!r}; it lists training image indices, one a line")
    indices = sorted({int(word) for word in words})
    if size is not None and indices and indices[-1] >= size:
        raise UserError(f"data.exclude: {path} lists index {indices[-1]}; the training split has {size:,} images "
                        f"(0 to {size - 1})")
    return indices


def exclude_digest(blob: bytes) -> str:
    """SHA-256 of the file's content: what the recipe's hash takes in, and what a run records."""
    return hashlib.sha256(blob).hexdigest()

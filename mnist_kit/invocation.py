"""How mnist-kit is run here, so that the commands it prints can be typed as they are: the program (the path of a
virtual environment that is not activated), its sibling tools (torchrun, tensorboard), pip lines for extras."""

import shutil
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def shown(path: Path) -> str:
    """A path as short as it reads: relative to the working directory when it is inside it."""
    path = path.absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def on_path(name: str, path: Path) -> str:
    """`name` where PATH finds this very file, else the file's path."""
    found = shutil.which(name)
    return name if found and Path(found).resolve() == path.resolve() else shown(path)


def command(argv0: str | None = None) -> str:
    """The command that runs this CLI again: `mnist-kit`, `.venv/bin/mnist-kit` (not activated), or
    `python -m mnist_kit` for a run started that way."""
    program = Path(argv0 or sys.argv[0])
    if program.name == "__main__.py":
        return f"{on_path('python', Path(sys.executable))} -m mnist_kit"
    if program.name == "mnist-kit" and program.is_file():
        return on_path("mnist-kit", program)
    return "mnist-kit"


def tool(name: str) -> str:
    """A program installed beside this Python (torchrun, tensorboard, pip): its name where PATH finds it,
    else its path."""
    path = Path(sys.executable).parent / name
    return on_path(name, path) if path.is_file() else name


def source_checkout() -> Path | None:
    """The repository this package runs from (an editable install), or None for an installed wheel."""
    root = PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() and (root / "recipes").is_dir() else None


def install_hint(extra: str) -> str:
    """The pip line that adds an optional extra to this installation."""
    pip = tool("pip")
    checkout = source_checkout()
    if checkout:
        return f"{pip} install -e '{shown(checkout)}[{extra}]'"
    return f"{pip} install 'mnist-kit[{extra}]'"

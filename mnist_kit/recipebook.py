"""The shipped recipes and reading TOML: where recipes are found, listed and shown. No torch here, so
`mnist-kit recipes` answers at once.

The recipes live at the top of the repository (`recipes/`, the source); a wheel carries a copy inside the package
(`mnist_kit/recipes/`, put there by the build: see pyproject.toml), which is used when it is there.
"""

import re
import tomllib
from pathlib import Path

from mnist_kit.errors import UserError
from mnist_kit.registry import closest

PACKAGE = Path(__file__).resolve().parent
BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*")  # a --set value that is not TOML, taken as a string


def shipped_recipes_dir() -> Path:
    """The recipes inside an installed wheel, else those of the source checkout beside the package."""
    inside = PACKAGE / "recipes"
    return inside if inside.is_dir() else PACKAGE.parent / "recipes"


RECIPES_DIR = shipped_recipes_dir()


def recipe_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A shipped recipe's name (`baseline`) or a path to a .toml file, as an existing path."""
    text = str(name_or_path)
    candidates = []
    if text.endswith(".toml") or "/" in text:
        path = Path(text).expanduser()
        candidates += [relative_to / path] if relative_to and not path.is_absolute() else []
        candidates.append(path)
    else:
        candidates.append(RECIPES_DIR / f"{text}.toml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = [p.stem for p in sorted(RECIPES_DIR.glob("*.toml"))]
    raise UserError(f"no recipe {text!r}: give a name ({', '.join(known)}) or a path to a .toml file."
                    + closest(text, known))


def shipped_file(kind: str, name_or_path: str | Path) -> Path:
    """A sweep or study file (`kind`: sweeps, studies): a path as it is, or the name of one shipped in that folder
    of the recipes (`fast-lr`), which an installed wheel carries too."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        return Path(text).expanduser()
    path = RECIPES_DIR / kind / f"{text}.toml"
    if path.is_file():
        return path
    known = shipped_names(kind)
    raise UserError(f"no shipped {kind} file {text!r}: give a name ({', '.join(known)}) or a path to a .toml file."
                    + closest(text, known))


def shipped_names(kind: str) -> list[str]:
    """The names of the shipped sweeps or studies."""
    return [p.stem for p in sorted((RECIPES_DIR / kind).glob("*.toml"))]


def read_text(path: Path) -> str:
    """A TOML file as written; one that cannot be read or is not UTF-8 is a one-line error naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"{path}: cannot read: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (TOML files are UTF-8): {error}") from None


def read_toml(path: Path) -> dict:
    """Parse a TOML file; a syntax error names the file, line and column."""
    text = read_text(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: invalid TOML: {error}") from error


def read_search_file(path: Path, keys: tuple[str, ...], kind: str) -> dict:
    """A sweep or study file's TOML: each top-level key one of `keys`, and `recipe` naming the base recipe."""
    table = read_toml(path)
    for key in table:
        if key not in keys:
            raise UserError(f"{path}: unknown key {key!r}; a {kind} has {', '.join(keys)}." + closest(key, keys))
    if not isinstance(table.get("recipe"), str):
        raise UserError(f"{path}: `recipe` must name the base recipe (a name or a .toml path)")
    return table


def list_recipes() -> list[tuple[str, str]]:
    """(name, description) of every shipped recipe."""
    return [(p.stem, read_toml(p).get("description", "")) for p in sorted(RECIPES_DIR.glob("*.toml"))]


def recipe_text(name_or_path: str) -> str:
    """The recipe file as written, comments included."""
    return read_text(recipe_path(name_or_path))


def parse_override(assignment: str) -> tuple[list[str], object]:
    """'train.epochs=1' -> (['train', 'epochs'], 1); the value is TOML, or a bare word taken as a string."""
    key, sep, text = assignment.partition("=")
    key, text = key.strip(), text.strip()
    if not sep or not key:
        raise UserError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.epochs=1")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if not BARE_WORD.fullmatch(text):
            raise UserError(f"--set {key}: cannot parse value {text!r} as TOML (quote strings: '\"...\"')") from None
        value = text
    return key.split("."), value

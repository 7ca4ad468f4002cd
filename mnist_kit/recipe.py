"""TOML recipes: find, load, override with --set, check against the schema and the factories, resolve."""

import copy
import importlib
import importlib.util
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_kit.augment import AUGMENTATIONS
from mnist_kit.data import DATASET_SHAPES, DATASETS
from mnist_kit.errors import UserError
from mnist_kit.models import MODELS
from mnist_kit.optim import LOSSES, OPTIMIZERS, SCHEDULERS
from mnist_kit.registry import Registry, closest

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"

# The fixed sections: key -> (accepted types, default, check on the value or None). `None` default = optional.
POSITIVE = (lambda v: v > 0, "must be > 0")
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any, tuple | None]]] = {
    "data": {
        "dataset": ((str,), "mnist", None),
        "batch_size": ((int,), 64, POSITIVE),
        "limit": ((int,), None, POSITIVE),  # train on the first N training images only
    },
    "train": {
        "epochs": ((int,), 25, POSITIVE),
        "seed": ((int,), 0, None),
        "device": ((str,), "auto", (lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v),
                                    "must be auto, cpu, cuda, cuda:N or mps")),
        "loss": ((str, dict), "nll", None),
        "precision": ((str,), "fp32", (lambda v: v in ("fp32", "bf16", "auto"), "must be fp32, bf16 or auto")),
        "ema": ((int, float), 0.0, (lambda v: 0 <= v < 1, "must be in [0, 1) (0 turns it off)")),
        "channels_last": ((bool,), False, None),
        "sync_bn": ((bool,), False, None),  # under torchrun on CUDA: BatchNorm statistics over the global batch
    },
    "fallback": {
        "min_test_accuracy": ((int, float), None, (lambda v: 0 <= v <= 1, "must be between 0 and 1")),
        "recipe": ((str,), None, None),
    },
}
# Sections whose keys are the arguments of the factory they name (checked against its signature).
FACTORY_SECTIONS: dict[str, Registry] = {"model": MODELS, "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS}
# What the training code passes to each factory itself (never set from a recipe).
SUPPLIED = {
    "model": ("input_shape", "num_classes"),
    "optimizer": ("params",),
    "scheduler": ("optimizer", "epochs", "steps_per_epoch"),
    "loss": (),
}
TOP_LEVEL = {"description": (str,), "plugins": (list,), "augment": (list,)}
BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*")


@dataclass(frozen=True)
class Recipe:
    """A checked recipe: its name (names the run folder), file, resolved config and the overrides applied."""

    name: str
    path: Path
    config: dict
    overrides: tuple[str, ...] = field(default=())

    @property
    def description(self) -> str:
        return self.config.get("description", "")


def recipe_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A recipe name under recipes/ (`baseline`) or a path to a .toml file, as an existing path."""
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


def read_toml(path: Path) -> dict:
    """Parse a TOML file; a syntax error names the file, line and column."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: invalid TOML: {error}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from error


def parse_override(assignment: str) -> tuple[list[str], Any]:
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


def check_key(keys: list[str]) -> None:
    """Raise UserError unless a dotted --set key addresses a place the schema has."""
    dotted = ".".join(keys)
    sections = [*TOP_LEVEL, *SCHEMA, *FACTORY_SECTIONS]
    if keys[0] not in sections:
        raise UserError(f"--set {dotted}: unknown section {keys[0]!r}; known: {', '.join(sections)}."
                        + closest(keys[0], sections))
    if keys[0] in TOP_LEVEL and len(keys) > 1 or keys[0] not in TOP_LEVEL and len(keys) == 1:
        raise UserError(f"--set {dotted}: address a value, like train.epochs or optimizer.lr")
    if keys[0] in SCHEMA and keys[1] not in SCHEMA[keys[0]]:
        known = SCHEMA[keys[0]]
        raise UserError(f"--set {dotted}: unknown key {keys[1]!r} in [{keys[0]}]; known: {', '.join(known)}."
                        + closest(keys[1], known))


def apply_overrides(config: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A copy of `config` with each 'dotted.key=value' set (factory arguments are checked later)."""
    config = copy.deepcopy(config)
    for assignment in overrides:
        keys, value = parse_override(assignment)
        check_key(keys)
        table = config
        for key in keys[:-1]:
            if isinstance(table.get(key), str):  # `loss = "nll"` addressed as loss.x: it becomes a table
                table[key] = {"name": table[key]}
            table = table.setdefault(key, {})
        table[keys[-1]] = value
    return config


def import_plugins(plugins: list[str], base: Path) -> None:
    """Import the modules a recipe names (module names, or .py paths relative to the recipe's folder)."""
    for plugin in plugins:
        if not isinstance(plugin, str):
            raise UserError(f"plugins: expected module names or .py paths, got {plugin!r}")
        try:
            if plugin.endswith(".py"):
                path = (base / plugin) if not Path(plugin).is_absolute() else Path(plugin)
                if not path.is_file():
                    raise UserError(f"plugin {plugin!r}: no such file {path}")
                module_name = f"mnist_kit_plugin_{path.stem}"
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(plugin)
        except UserError:
            raise
        except Exception as error:
            raise UserError(f"plugin {plugin!r} does not import: {type(error).__name__}: {error}") from error


def type_error(where: str, value: Any, types: tuple[type, ...]) -> UserError:
    names = " or ".join({str: "a string", int: "an integer", float: "a number", list: "a list",
                         dict: "a table", bool: "true or false"}[t] for t in types)
    return UserError(f"{where}: expected {names}, got {value!r}")


def check_value(where: str, value: Any, types: tuple[type, ...], rule: tuple | None) -> None:
    """Raise UserError if `value` has the wrong type (bool is not a number) or breaks its rule."""
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise type_error(where, value, types)
    if rule and not rule[0](value):
        raise UserError(f"{where} {rule[1]}, got {value!r}")


def resolve(config: dict, source: str) -> dict:
    """Check every section and key; return the config with every default filled in."""
    known = [*TOP_LEVEL, *SCHEMA, *FACTORY_SECTIONS]
    for key in config:
        if key not in known:
            raise UserError(f"{source}: unknown key or section {key!r}; known: {', '.join(known)}."
                            + closest(key, known))
    resolved: dict[str, Any] = {}
    for key, types in TOP_LEVEL.items():
        if key in config:
            check_value(f"{source}: {key}", config[key], types, None)
            resolved[key] = config[key]
    resolved.setdefault("description", "")
    resolved.setdefault("plugins", [])
    resolved["augment"] = [resolve_factory(table, AUGMENTATIONS, ("fill",), f"{source}: [[augment]] {i + 1}")
                           for i, table in enumerate(resolved.get("augment", []))]
    for section, fields in SCHEMA.items():
        given = config.get(section, {})
        if not isinstance(given, dict):
            raise type_error(f"{source}: [{section}]", given, (dict,))
        for key in given:
            if key not in fields:
                raise UserError(f"{source}: unknown key {key!r} in [{section}]; known: {', '.join(fields)}."
                                + closest(key, fields))
        resolved[section] = {}
        for key, (types, default, rule) in fields.items():
            if key in given:
                check_value(f"{source}: {section}.{key}", given[key], types, rule)
            value = given.get(key, default)
            if value is not None:
                resolved[section][key] = value
    for section, registry in FACTORY_SECTIONS.items():
        resolved[section] = resolve_factory(config.get(section), registry, SUPPLIED[section], f"{source}: [{section}]")
    resolved["train"]["loss"] = resolve_factory(resolved["train"]["loss"], LOSSES, (), f"{source}: train.loss")
    DATASETS.get(resolved["data"]["dataset"])
    fallback = resolved["fallback"]
    if bool("min_test_accuracy" in fallback) != bool("recipe" in fallback):
        raise UserError(f"{source}: [fallback] needs both min_test_accuracy and recipe")
    return resolved


def resolve_factory(table: Any, registry: Registry, supplied: tuple[str, ...], where: str) -> dict:
    """A factory table checked against its signature, with the factory's defaults filled in."""
    if table is None:
        raise UserError(f"{where} is missing: it names a {registry.kind} (known: {', '.join(registry.names())})")
    if isinstance(table, str):
        table = {"name": table}
    if not isinstance(table, dict):
        raise type_error(where, table, (dict,))
    try:
        registry.check(table, dict.fromkeys(supplied))
    except UserError as error:
        misplaced = [key for key in table if key in TOP_LEVEL]
        hint = (f" ({misplaced[0]!r} is a top-level key: in TOML it must come before the first [table])"
                if misplaced else "")
        raise UserError(f"{where}: {error}{hint}") from error
    params = registry.user_parameters(table["name"], dict.fromkeys(supplied))
    defaults = {k: v.default for k, v in params.items() if v.default is not v.empty}
    return {"name": table["name"], **jsonable(defaults), **{k: v for k, v in table.items() if k != "name"}}


def check_buildable(config: dict, source: str) -> None:
    """Build the factories once on stand-ins, so their own checks (negative lr, dropout >= 1...) fail now."""
    import torch

    try:
        optimizer = OPTIMIZERS.build(config["optimizer"], params=[torch.nn.Parameter(torch.zeros(1))])
        SCHEDULERS.build(config["scheduler"], optimizer=optimizer, epochs=config["train"]["epochs"],
                         steps_per_epoch=1)
        LOSSES.build(config["train"]["loss"])
        for table in config["augment"]:
            AUGMENTATIONS.build(table, fill=0.0)
        if config["data"]["dataset"] in DATASET_SHAPES:
            input_shape, num_classes = DATASET_SHAPES[config["data"]["dataset"]]
            MODELS.build(config["model"], input_shape=input_shape, num_classes=num_classes)
    except UserError as error:
        raise UserError(f"{source}: {error}") from error


def jsonable(value: Any) -> Any:
    """Tuples as lists, so a resolved recipe reads the same from TOML, JSON and Python."""
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def load_recipe(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                relative_to: Path | None = None, _chain: tuple[Path, ...] = ()) -> Recipe:
    """Find, read, override, import plugins, check and resolve a recipe (and check its fallback chain)."""
    path = recipe_path(name_or_path, relative_to).resolve()
    config = apply_overrides(read_toml(path), overrides)
    if isinstance(config.get("plugins"), list):
        import_plugins(config["plugins"], path.parent)
    resolved = resolve(config, path.name)
    check_buildable(resolved, path.name)
    chain = (*_chain, path)
    fallback = resolved["fallback"].get("recipe")
    if fallback:
        target = recipe_path(fallback, path.parent).resolve()
        if target in chain:
            loop = " -> ".join(p.stem for p in (*chain, target))
            raise UserError(f"{path.name}: fallback recipes loop back on themselves: {loop}")
        load_recipe(target, (), None, chain)
    return Recipe(name=path.stem, path=path, config=resolved, overrides=tuple(overrides))


def fallback_recipe(recipe: Recipe) -> Recipe | None:
    """The recipe to train when this one falls short of its fallback.min_test_accuracy (or None)."""
    name = recipe.config["fallback"].get("recipe")
    return load_recipe(recipe_path(name, recipe.path.parent)) if name else None


def list_recipes() -> list[tuple[str, str]]:
    """(name, description) of every recipe under recipes/."""
    return [(p.stem, read_toml(p).get("description", "")) for p in sorted(RECIPES_DIR.glob("*.toml"))]


def recipe_text(name_or_path: str) -> str:
    """The recipe file as written, comments included."""
    return recipe_path(name_or_path).read_text(encoding="utf-8")

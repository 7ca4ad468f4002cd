"""TOML recipes: find, load, override with --set, check against the schema and the factories' signatures, resolve;
the recipe's one dict form and its hash. Nothing is built here (mnist_kit.assemble builds)."""

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_kit.data import DATASETS
from mnist_kit.errors import UserError
from mnist_kit.exclude import exclude_digest, exclude_path, read_exclude_bytes
from mnist_kit.parts import PARTS
from mnist_kit.plugins import import_plugins
from mnist_kit.recipebook import (  # noqa: F401 (re-exported)
    RECIPES_DIR,
    list_recipes,
    parse_override,
    read_toml,
    recipe_path,
    recipe_text,
)
from mnist_kit.record import SCHEMA_VERSION, upgraded, upgraded_recipe
from mnist_kit.registry import closest
from mnist_kit.settings import LOGGERS, SCHEMA  # noqa: F401 (the fixed sections; re-exported)

# Sections whose keys are the arguments of the factory they name (checked against its signature), and their
# default when a recipe leaves the section out.
FACTORY_SECTIONS = {"model": None, "optimizer": {"name": "adam"}, "scheduler": {"name": "none"}}
TOP_LEVEL = {"description": (str,), "plugins": (list,), "augment": (list,)}


@dataclass(frozen=True)
class Recipe:
    """A checked recipe: its name (names the run folder), file, resolved config and the overrides applied."""

    name: str
    path: Path
    config: dict
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, as --set gave them

    @property
    def description(self) -> str:
        return self.config.get("description", "")


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


def parse_overrides(overrides: Mapping[str, Any] | Sequence[str]) -> dict[str, Any]:
    """--set strings ('train.epochs=1', ...) as {dotted key: value}; a mapping is taken as it is (a copy)."""
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        raise TypeError("overrides: give a list of KEY=VALUE strings or a dict, not one string")
    return {".".join(keys): value for keys, value in map(parse_override, overrides)}


def apply_overrides(config: dict, overrides: Mapping[str, Any] | Sequence[str]) -> dict:
    """A copy of `config` with each dotted key set (factory arguments are checked later)."""
    config = copy.deepcopy(config)
    for dotted, value in parse_overrides(overrides).items():
        keys = dotted.split(".")
        check_key(keys)
        table = config
        for key in keys[:-1]:
            if isinstance(table.get(key), str):  # `loss = "nll"` addressed as loss.x: it becomes a table
                table[key] = {"name": table[key]}
            table = table.setdefault(key, {})
        table[keys[-1]] = value
    return config


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
    resolved["augment"] = [resolve_factory(table, "augment", f"{source}: [[augment]] {i + 1}")
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
    for section, default in FACTORY_SECTIONS.items():
        table = config.get(section, default)
        if default and isinstance(table, dict) and "name" not in table:  # `--set optimizer.lr=...` on the default
            table = {**default, **table}
        resolved[section] = resolve_factory(table, section, f"{source}: [{section}]")
    resolved["train"]["loss"] = resolve_factory(resolved["train"]["loss"], "loss", f"{source}: train.loss")
    DATASETS.get(resolved["data"]["dataset"])
    check_finite(resolved, source)
    fallback = resolved["fallback"]
    if bool("min_test_accuracy" in fallback) != bool("recipe" in fallback):
        raise UserError(f"{source}: [fallback] needs both min_test_accuracy and recipe")
    train = resolved["train"]
    if "outliers" in train:  # its defaults written out: the resolved recipe (and its hash) says what was trained
        train["outliers"] = {"weight": 0.5, "images": 5000, **train["outliers"]}
    if (train["keep"] == "best" or train["patience"]) and not resolved["data"]["validation"]:
        what = 'train.keep = "best"' if train["keep"] == "best" else "train.patience"
        raise UserError(f"{source}: {what} chooses by validation accuracy: set data.validation (e.g. 5000 of the "
                        f"training images), never the test split")
    return resolved


def check_finite(value: Any, source: str, keys: tuple = ()) -> None:
    """Refuse inf and nan anywhere in a recipe (a learning rate of inf trains a model of NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        where = ".".join(str(k) for k in keys)
        raise UserError(f"{source}: {where} must be a finite number, got {value}")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        check_finite(item, source, (*keys, key))


def resolve_factory(table: Any, part: str, where: str) -> dict:
    """A factory table checked against its signature, with the factory's defaults filled in."""
    registry, supplied = PARTS[part]
    if table is None:
        raise UserError(f"{where} is missing: it names a {registry.kind} (known: {', '.join(registry.names())})")
    if isinstance(table, str):
        table = {"name": table}
    if not isinstance(table, dict):
        raise type_error(where, table, (dict,))
    try:
        registry.check(table, supplied)
    except UserError as error:
        misplaced = [key for key in table if key in TOP_LEVEL]
        hint = (f" ({misplaced[0]!r} is a top-level key: in TOML it must come before the first [table])"
                if misplaced else "")
        raise UserError(f"{where}: {error}{hint}") from error
    params = registry.user_parameters(table["name"], supplied)
    defaults = {k: v.default for k, v in params.items() if v.default is not v.empty}
    return {"name": table["name"], **jsonable(defaults), **{k: v for k, v in table.items() if k != "name"}}


def jsonable(value: Any) -> Any:
    """Tuples as lists, so a resolved recipe reads the same from TOML, JSON and Python."""
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def load_recipe(name_or_path: str | Path, overrides: Mapping[str, Any] | Sequence[str] = (),
                relative_to: Path | None = None, _chain: tuple[Path, ...] = ()) -> Recipe:
    """Find, read, override, import plugins and resolve a recipe against the factories' signatures; its fallback
    chain is resolved with the overrides it would carry. Building the parts is the runner's check
    (mnist_kit.assemble.check_recipe, which train and every command that runs recipes call first)."""
    path = recipe_path(name_or_path, relative_to).resolve()
    overrides = parse_overrides(overrides)
    config = apply_overrides(read_toml(path), overrides)
    if isinstance(config.get("plugins"), list):
        import_plugins(config["plugins"], path.parent)
    resolved = resolve(config, path.name)
    recipe = Recipe(name=path.stem, path=path, config=resolved, overrides=overrides)
    chain = (*_chain, path)
    if fallback := resolved["fallback"].get("recipe"):
        target = recipe_path(fallback, path.parent).resolve()
        if target in chain:
            loop = " -> ".join(p.stem for p in (*chain, target))
            raise UserError(f"{path.name}: fallback recipes loop back on themselves: {loop}")
        load_recipe(target, carried_overrides(recipe, read_toml(target))[0], None, chain)
    return recipe


def carried_overrides(recipe: Recipe, fallback_config: dict) -> tuple[dict[str, Any], list[str]]:
    """Which of a recipe's --set values its fallback takes: those it has the key for (a fixed section's key, or an
    argument of the same factory), never a factory's `name` or the [fallback] section. Returns (carried, dropped)."""
    carried, dropped = {}, []
    for dotted, value in recipe.overrides.items():
        keys = dotted.split(".")
        section = keys[0]
        if section in FACTORY_SECTIONS or dotted.startswith("train.loss."):
            table = (fallback_config.get("train", {}).get("loss") if section == "train"
                     else fallback_config.get(section, FACTORY_SECTIONS[section]))
            mine = recipe.config["train"]["loss"] if section == "train" else recipe.config[section]
            name = table if isinstance(table, str) else (table or {}).get("name")
            has = keys[-1] != "name" and name == mine["name"]
        elif section in SCHEMA and section != "fallback":
            has = len(keys) == 2
        else:
            has = False
        (carried.__setitem__(dotted, value) if has else dropped.append(dotted))
    return carried, dropped


def fallback_recipe(recipe: Recipe) -> tuple[Recipe, dict[str, Any], list[str]] | None:
    """The recipe to train when this one falls short of its fallback.min_test_accuracy, with the --set values it
    carries over and the keys it drops; None when there is no fallback."""
    name = recipe.config["fallback"].get("recipe")
    if not name:
        return None
    path = recipe_path(name, recipe.path.parent)
    carried, dropped = carried_overrides(recipe, read_toml(path))
    return load_recipe(path, carried), carried, dropped


def recipe_hash(recipe: Recipe) -> str:
    """SHA-256 of what decides a run: the resolved recipe (every key but `description` and `train.log`, which only
    say how it is described and watched), the content of its data.exclude file, and the content of each .py plugin
    it names, so a changed plugin or list makes another recipe. Sweeps match finished points by it."""
    config = {key: value for key, value in recipe.config.items() if key != "description"}
    if "log" in config.get("train", {}):
        config["train"] = {key: value for key, value in config["train"].items() if key != "log"}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    if config["data"].get("exclude"):  # the list's content decides the run, wherever the file is
        path = exclude_path(config["data"]["exclude"], recipe.path.parent)
        digest.update(exclude_digest(read_exclude_bytes(path)).encode())
    for plugin in recipe.config.get("plugins", []):
        if plugin.endswith(".py"):
            path = Path(plugin) if Path(plugin).is_absolute() else recipe.path.parent / plugin
            digest.update(path.read_bytes() if path.is_file() else b"(missing)")
    return digest.hexdigest()


def recipe_to_dict(recipe: Recipe) -> dict:
    """The one dict form of a recipe, as metadata.json, last.pth and model.pth hold it (JSON-ready)."""
    return {"schema": SCHEMA_VERSION, "name": recipe.name, "path": str(recipe.path), "config": recipe.config,
            "overrides": dict(recipe.overrides)}


def recipe_from_dict(record: dict) -> Recipe:
    """A Recipe from its dict form, of any schema (mnist_kit.record upgrades it). Nothing is imported and no factory
    is called: opening a run reads data."""
    try:
        record = upgraded_recipe(record)
        return Recipe(name=str(record["name"]), path=Path(record["path"]), config=record["config"],
                      overrides=parse_overrides(record["overrides"]))
    except (KeyError, TypeError, AttributeError, UserError) as error:
        raise UserError(f"not an mnist-kit recipe record ({type(error).__name__}: {error})") from error


def run_recipe(metadata: dict) -> Recipe:
    """The recipe a run was trained with, from its metadata.json of any schema."""
    return recipe_from_dict(upgraded(metadata)["recipe"])


def to_toml(config: dict) -> str:
    """A resolved recipe as TOML text that reads back to the same dict (`--print-config`)."""
    lines = [f"{key} = {toml_value(config[key])}" for key in TOP_LEVEL  # [[augment]] tables come below
             if key in config and not (key == "augment" and config[key])]
    for section in ("data", "model", "optimizer", "scheduler", "train", "augment", "fallback"):
        for table in (config.get(section, []) if section == "augment" else [config.get(section)]):
            if table is not None:
                header = "[[augment]]" if section == "augment" else f"[{section}]"
                lines += ["", header, *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A plain value (number, bool, string, list, table) as TOML text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float (1e-05, 0.1, 25.0)
    return str(value)

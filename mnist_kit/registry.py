"""Factories registered by name, built from TOML tables checked against the factory's own signature."""

import collections.abc
import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from mnist_kit.errors import UserError


def closest(name: str, choices) -> str:
    """A ' Did you mean X?' hint for a misspelt name, or '' when nothing is close."""
    match = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


class Registry:
    """A named table of factories: `@REG.register("name")` adds one, `REG.build(table)` calls one.

    Building binds the table to the factory's signature and checks each value against its annotation first.
    A ValueError the factory raises rejects a value (the user's to fix); any other exception is a bug.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable] = {}
        self._hints: dict[str, dict[str, str]] = {}

    def register(self, name: str, *, replace: bool = False,
                 hints: Mapping[str, str] | None = None) -> Callable[[Callable], Callable]:
        """Decorator that registers a factory under `name`; a taken name is refused unless `replace=True`.

        `hints` maps an argument the factory does not take to what to do instead (said when a recipe gives it).
        """

        def add(factory: Callable) -> Callable:
            if name in self._factories and not replace and self._factories[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered already (by {describe(self._factories[name])});"
                                 f" register({name!r}, replace=True) replaces it")
            self._factories[name] = factory
            self._hints[name] = dict(hints or {})
            return factory

        return add

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Callable:
        """The factory registered as `name`; an unknown name lists the known ones and the closest."""
        if name not in self._factories:
            raise UserError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}."
                + closest(name, self._factories)
            )
        return self._factories[name]

    def user_parameters(self, name: str, supplied: collections.abc.Iterable[str] = ()) -> dict[str, inspect.Parameter]:
        """The factory's keyword parameters a recipe may set (those the code supplies are left out)."""
        supplied = set(supplied)
        signature = inspect.signature(self.get(name))
        return {p: v for p, v in signature.parameters.items() if p not in supplied}

    def check(self, table: Mapping[str, Any] | str, supplied: collections.abc.Iterable[str] = ()) -> None:
        """Raise UserError unless `table` names a factory and gives it only arguments it takes, of their types."""
        name, kwargs = split_table(table, self.kind)
        params = self.user_parameters(name, supplied)
        described = describe_parameters(params)
        for key in kwargs:
            if key not in params:
                hint = self._hints.get(name, {}).get(key)
                raise UserError(
                    f"{self.kind} {name!r} takes no argument {key!r}"
                    + (f": {hint}" if hint else f".{closest(key, params)} Its parameters: {described}")
                )
        missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in kwargs]
        if missing:
            raise UserError(
                f"{self.kind} {name!r} needs argument(s) {', '.join(missing)}. Its parameters: {described}"
            )
        hints = annotations(self.get(name))
        for key, value in kwargs.items():
            expected = hints.get(key, inspect.Parameter.empty)
            if not matches(value, expected):
                raise UserError(f"{self.kind} {name!r}: {key} expects {type_name(expected)}, got {value!r}")

    def build(self, table: Mapping[str, Any] | str, **supplied: Any) -> Any:
        """Call the factory that `table["name"]` names with the table's other keys plus `supplied`."""
        self.check(table, supplied)
        name, kwargs = split_table(table, self.kind)
        factory = self.get(name)
        try:
            bound = inspect.signature(factory).bind(**kwargs, **supplied)
        except TypeError as error:
            raise UserError(f"{self.kind} {name!r}: {error}") from None
        try:
            return factory(*bound.args, **bound.kwargs)
        except ValueError as error:  # the factory (or torch under it) rejects a value: the user's to fix
            raise UserError(f"{self.kind} {name!r} rejected {kwargs}: {error}") from error


def describe(factory: Callable) -> str:
    """'module.function' of a factory, for messages."""
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)}"


def split_table(table: Mapping[str, Any] | str, kind: str) -> tuple[str, dict[str, Any]]:
    """`{"name": n, **kwargs}` (or the bare string n) as (n, kwargs)."""
    if isinstance(table, str):
        return table, {}
    if not isinstance(table, Mapping) or not isinstance(table.get("name"), str):
        raise UserError(f"the {kind} table needs a 'name' string, got {table!r}")
    return table["name"], {k: v for k, v in table.items() if k != "name"}


def describe_parameters(params: Mapping[str, inspect.Parameter]) -> str:
    """'a, b=1, c=0.5' from a signature's parameters, so errors show what the factory accepts."""
    parts = [p if v.default is inspect.Parameter.empty else f"{p}={v.default!r}" for p, v in params.items()]
    return ", ".join(parts) if parts else "(none)"


def annotations(factory: Callable) -> dict[str, Any]:
    """The factory's parameter annotations, resolved (empty where it has none or they do not resolve)."""
    try:
        return typing.get_type_hints(factory)
    except Exception:  # a plugin's forward reference that does not resolve: check nothing rather than fail
        return {}


def matches(value: Any, expected: Any) -> bool:
    """Whether a recipe value fits a parameter annotation (int, float, bool, str, unions, sequences); annotations
    of other kinds are not checked. Floats must be finite; an integer is a fine float; a bool is not a number."""
    if expected is inspect.Parameter.empty or expected is Any:
        return True
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if expected is str:
        return isinstance(value, str)
    if expected is type(None):
        return value is None
    if origin is tuple and args and args[-1] is not Ellipsis:
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(map(matches, value, args))
    if origin in (tuple, list, collections.abc.Sequence):
        return isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value) if args else True
    return True


def type_name(expected: Any) -> str:
    """An annotation in words: 'a number', 'a list of integers', 'an integer or a list of integers'."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} values ({', '.join(type_name(a) for a in args)})"
    if origin in (tuple, list, collections.abc.Sequence):
        return f"a list of {plural(type_name(args[0]))}" if args else "a list"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
            type(None): "nothing"}.get(expected, getattr(expected, "__name__", str(expected)))


def plural(name: str) -> str:
    """'an integer' -> 'integers', 'a finite number' -> 'finite numbers'."""
    words = name.split(" ", 1)
    noun = words[-1] if words[0] in ("a", "an") else name
    return noun if noun.endswith("s") or " or " in noun else noun + "s"

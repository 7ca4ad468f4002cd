"""Factories registered by name, built from TOML tables checked against the factory's own signature."""

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from mnist_kit.errors import UserError


def closest(name: str, choices) -> str:
    """A ' Did you mean X?' hint for a misspelt name, or '' when nothing is close."""
    match = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


class Registry:
    """A named table of factories: `@REG.register("name")` adds one, `REG.build(table)` calls one."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator that registers a factory under `name` (a later registration replaces an earlier one)."""

        def add(factory: Callable) -> Callable:
            self._factories[name] = factory
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

    def user_parameters(self, name: str, supplied: Mapping[str, Any] = ()) -> dict[str, inspect.Parameter]:
        """The factory's keyword parameters a recipe may set (those the code supplies are left out)."""
        signature = inspect.signature(self.get(name))
        return {p: v for p, v in signature.parameters.items() if p not in supplied}

    def check(self, table: Mapping[str, Any] | str, supplied: Mapping[str, Any] = ()) -> None:
        """Raise UserError unless `table` names a factory and gives it only arguments it takes."""
        name, kwargs = split_table(table, self.kind)
        params = self.user_parameters(name, supplied)
        described = describe_parameters(params)
        for key in kwargs:
            if key not in params:
                raise UserError(
                    f"{self.kind} {name!r} takes no argument {key!r}.{closest(key, params)}"
                    f" Its parameters: {described}"
                )
        missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in kwargs]
        if missing:
            raise UserError(
                f"{self.kind} {name!r} needs argument(s) {', '.join(missing)}. Its parameters: {described}"
            )

    def build(self, table: Mapping[str, Any] | str, **supplied: Any) -> Any:
        """Call the factory that `table["name"]` names with the table's other keys plus `supplied`."""
        self.check(table, supplied)
        name, kwargs = split_table(table, self.kind)
        try:
            return self.get(name)(**kwargs, **supplied)
        except UserError:
            raise
        except Exception as error:  # the factory (or torch under it) refused these values: say which
            raise UserError(f"{self.kind} {name!r} rejected its arguments {kwargs}: "
                            f"{type(error).__name__}: {error}") from error


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

"""The package's import graph points one way: no module imports one that imports it back (lazy imports count)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mnist_kit"


def imports_of(path: Path) -> set[str]:
    """The mnist_kit modules a file imports anywhere in it, functions included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist_kit"):
            if node.module == "mnist_kit":
                found |= {f"mnist_kit.{alias.name}" for alias in node.names if (PACKAGE / f"{alias.name}.py").exists()}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mnist_kit.")}
    return found


def graph() -> dict[str, set[str]]:
    return {f"mnist_kit.{p.stem}": imports_of(p) for p in PACKAGE.glob("*.py")}


def cycle_from(start: str, edges: dict[str, set[str]]) -> list[str] | None:
    """A path start -> ... -> start, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in edges.get(node, ()):
            if nxt == start:
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_import_graph_has_no_cycle():
    edges = graph()
    assert {"mnist_kit.sweep", "mnist_kit.cluster", "mnist_kit.plots", "mnist_kit.predict"} <= set(edges)
    cycles = [cycle for module in edges if (cycle := cycle_from(module, edges))]
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


def test_plots_holds_figures_only():
    assert imports_of(PACKAGE / "plots.py") <= {"mnist_kit.atomic"}


TORCH_FREE = {f"mnist_kit.{name}" for name in
              ("errors", "atomic", "registry", "settings", "recipebook", "record", "catalog", "invocation",
               "fetch", "exclude")}


def test_the_torch_free_modules_import_only_each_other():
    """What recipes, runs list and runs diff read stays free of torch (docs/architecture.md); test_record checks
    the same in a fresh interpreter."""
    edges = graph()
    assert {module: edges[module] - TORCH_FREE for module in TORCH_FREE if edges[module] - TORCH_FREE} == {}


def names_imported_from(path: Path, module: str) -> set[str]:
    return {alias.name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module == module for alias in node.names}


def test_only_the_cli_writes_command_lines():
    """invocation.command and .tool spell `mnist-kit ...` and torchrun lines: only cli.py may use them; the library
    raises exceptions carrying facts instead."""
    users = {path.stem for path in PACKAGE.glob("*.py")
             if names_imported_from(path, "mnist_kit.invocation") & {"command", "tool"}}
    assert users == {"cli"}


def test_fetching_data_does_not_import_the_training_display():
    edges = graph()
    assert "mnist_kit.progress" not in edges["mnist_kit.fetch"] | edges["mnist_kit.data"]


def test_recipes_are_resolved_below_the_code_that_builds_them():
    """recipe.py resolves against the registries (parts.py) and builds nothing; assemble.check_recipe builds."""
    edges = graph()
    assert "mnist_kit.assemble" not in edges["mnist_kit.recipe"] and "mnist_kit.parts" in edges["mnist_kit.recipe"]

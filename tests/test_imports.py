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

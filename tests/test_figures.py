"""Every figure a recipe's description or the README's results table quotes comes from a committed results file
(bench/results/<machine>/<recipe>/, written by `make bench-seeds`): the docs cannot drift from the measurements."""

import json
import re
from pathlib import Path

import pytest

from mnist_kit.recipe import RECIPES_DIR, list_recipes

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
# Seeds a recipe's figures need (the honest-numbers rule: fast 10, recipes over 5 minutes at least 3), and the
# recipes whose seeds are still being measured (best: 21 min a seed): they quote what is measured "so far".
SEEDS = {"fast": 10}
PENDING = {"best"}
PERCENT = re.compile(r"(\d+\.\d+)%")
SECONDS = re.compile(r"(\d+(?:\.\d+)?) (s|min)\b")


def measured(recipe: str) -> set[str]:
    """Every figure the recipe's results files hold, as the docs write them: 99.14%, 8.3 s, 1.4 min."""
    figures = set()
    for path in RESULTS.glob(f"*/{recipe}/*.json"):
        record = json.loads(path.read_text())
        for key, value in record.items():
            numbers = value.values() if isinstance(value, dict) else [value]
            for number in numbers:
                if not isinstance(number, float):
                    continue
                if key.endswith("accuracy"):
                    figures.add(f"{100 * number:.2f}%")
                elif key.endswith("seconds"):
                    figures |= {f"{number:.1f} s", f"{number:.0f} s", f"{number / 60:.1f} min"}
    return figures


def quoted(text: str) -> set[str]:
    return {f"{m}%" for m in PERCENT.findall(text)} | {f"{n} {unit}" for n, unit in SECONDS.findall(text)}


def seeds(recipe: str) -> int:
    summaries = list(RESULTS.glob(f"*/{recipe}/summary.json"))
    return max((len(json.loads(path.read_text())["seeds"]) for path in summaries), default=0)


@pytest.mark.parametrize("name, description", list_recipes())
def test_a_recipe_description_quotes_only_measured_figures(name, description):
    if name in PENDING:
        assert seeds(name) < SEEDS.get(name, 3), f"{name} has its seeds now: take it out of PENDING"
        assert "so far" in description
    else:
        assert seeds(name) >= SEEDS.get(name, 3), f"{name}: {seeds(name)} seeds measured, {SEEDS.get(name, 3)} needed"
    figures = quoted(description)
    assert figures, f"{name}: its description quotes no measured figure"
    missing = figures - measured(name)
    assert not missing, f"{name}: {sorted(missing)} are in no results file under bench/results/*/{name}/"


def test_the_readme_results_table_quotes_only_measured_figures():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| recipe | what |"):].split("\n\n", 1)[0]
    rows = [row for row in table.splitlines()[2:] if row.startswith("| `")]
    assert {row.split("`")[1] for row in rows} == {p.stem for p in RECIPES_DIR.glob("*.toml")}
    for row in rows:
        name = row.split("`")[1]
        cells = row.split("|")[3:]  # the figures, not the description of the network
        missing = quoted("|".join(cells)) - measured(name)
        assert not missing, f"README results row {name}: {sorted(missing)} are in no results file"

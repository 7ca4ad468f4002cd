"""Every figure a recipe's description or a table in the README or docs/ quotes comes from a committed results file
under bench/results/<machine>/ (written by `make bench` and `make bench-seeds`): the docs cannot drift from the
measurements. A table with a figure in it (a %, s, min, ms or MiB) names its results files in a comment just above
it: <!-- results: bench/results/amd-epyc-avx512-bf16-2-cores/loop.json -->, globs allowed. A recipe's figures count
only from results files of the recipe as it resolves today (its recipe_hash), not from an older version of it."""

import functools
import json
import re
from pathlib import Path

import pytest

from mnist_kit.recipe import RECIPES_DIR, list_recipes, load_recipe, recipe_hash

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
# Seeds a recipe's figures need (the honest-numbers rule: fast 10, recipes over 5 minutes at least 3), and the
# recipes whose seeds are still being measured (none now): they quote what is measured "so far".
SEEDS = {"fast": 10, "fast-995": 5, "fast-996": 5}
PENDING: set[str] = set()
PERCENT = re.compile(r"(\d+\.\d+)%")
UNITS = re.compile(r"(\d+(?:\.\d+)?) (s|min|ms|MiB)\b")
SOURCE = re.compile(r"<!-- results: (.+?) -->")
SHARES = ("digit", "unsure", "not a digit")  # shares of images, as percentages (bench/verdict.py)
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def figures_of(key: str, value) -> set[str]:
    """A results file's value as the docs may write it, by what its key says it is: 0.9914 under an accuracy key (or
    an ECE, a coverage, a share) is 99.14%; 8.33 under a seconds key is 8.3 s, 8 s, 8.33 s, 0.1 min or 8330 ms; ms
    and MiB likewise."""
    if isinstance(value, dict):  # a key inside ("median") inherits what the key outside says ("process_seconds")
        return set().union(set(), *(figures_of(f"{key}.{k}", v) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(set(), *(figures_of(key, v) for v in value))
    if not isinstance(value, float):
        return set()
    parts = key.lower().split(".")
    if any("accuracy" in part or part.startswith("ece") or "coverage" in part or part in SHARES for part in parts):
        return {f"{100 * value:.2f}%"}
    if any("seconds" in part for part in parts):
        return {f"{value:.2f} s", f"{value:.1f} s", f"{value:.0f} s", f"{value / 60:.1f} min", f"{1000 * value:.0f} ms"}
    if any(part == "ms" or part.endswith("_ms") for part in parts):
        return {f"{value:.1f} ms"}
    if any("mib" in part for part in parts):
        return {f"{value:.0f} MiB"}
    return set()


def measured_in(paths) -> set[str]:
    return set().union(*(figures_of("", json.loads(path.read_text())) for path in paths))


@functools.cache
def current_hash(recipe: str, overrides: tuple[str, ...], seed: int) -> str:
    return recipe_hash(load_recipe(recipe, [*overrides, f"train.seed={seed}"]))


def is_current(path: Path) -> bool:
    """A results file of the recipe as it is now: a seed's file whose recipe_hash is today's resolved recipe's (with
    its overrides and seed), or a summary whose every seed has such a file beside it. A file measured from an older
    version of the recipe no longer vouches for a figure."""
    results = json.loads(path.read_text())
    if "seeds" in results:
        return bool(results["seeds"]) and all(
            (path.parent / f"seed-{seed}.json").is_file() and is_current(path.parent / f"seed-{seed}.json")
            and json.loads((path.parent / f"seed-{seed}.json").read_text())["overrides"] == results["overrides"]
            for seed in results["seeds"])
    return "recipe_hash" in results and results["recipe_hash"] == current_hash(
        results["recipe"], tuple(results["overrides"]), results["seed"])


def measured(recipe: str) -> set[str]:
    """Every figure the recipe's current results files hold (see is_current), as the docs write them: 99.14%,
    8.3 s, 1.4 min."""
    return measured_in(path for path in RESULTS.glob(f"*/{recipe}/*.json") if is_current(path))


def quoted(text: str) -> set[str]:
    return {f"{m}%" for m in PERCENT.findall(text)} | {f"{n} {unit}" for n, unit in UNITS.findall(text)}


def tables(text: str) -> list[tuple[str | None, str]]:
    """Each markdown table (outside code blocks) with the results comment just above it, if any."""
    found, lines, fenced, i = [], text.splitlines(), False, 0
    while i < len(lines):
        fenced ^= lines[i].startswith("```")
        if not fenced and lines[i].startswith("|"):
            start = i
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            above = [line for line in lines[max(0, start - 3):start] if line.strip()]
            source = SOURCE.search(above[-1]) if above else None
            found.append((source.group(1) if source else None, "\n".join(lines[start:i])))
        i += 1
    return found


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


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_table_with_figures_quotes_only_its_results_files(doc):
    for source, table in tables(doc.read_text()):
        figures = quoted(table)
        if not figures:
            continue
        head = table.splitlines()[0]
        assert source, f"{doc.name}: the table {head!r} quotes figures but names no results file above it"
        paths = [path for pattern in source.split(",") for path in sorted(REPO.glob(pattern.strip()))]
        assert paths, f"{doc.name}: {source!r} matches no results file"
        missing = figures - measured_in(p for p in paths if p.suffix == ".json")
        assert not missing, f"{doc.name}, table {head!r}: {sorted(missing)} are in none of {source}"


def test_the_results_comment_is_found_and_figures_are_checked():
    """The checker itself: a figure not in the named file is caught, one in it passes."""
    text = "<!-- results: bench/results/*/fast/summary.json -->\n\n| a | b |\n| - | - |\n| x | 12.34% |\n"
    ((source, table),) = tables(text)
    assert source == "bench/results/*/fast/summary.json"
    assert quoted(table) == {"12.34%"} and "12.34%" not in measured("fast")
    assert figures_of("process_seconds", {"median": 8.333}) == {"8.33 s", "8.3 s", "8 s", "0.1 min", "8333 ms"}


def test_a_results_file_of_an_older_recipe_vouches_for_nothing(tmp_path):
    """Figures count only from results of the recipe as it resolves today: a seed file whose recipe_hash is another
    recipe's (an older version of it), and a summary over such a seed, are not current."""
    (seed_file,) = sorted(RESULTS.glob("*/fast/seed-0.json"))[:1]
    results = json.loads(seed_file.read_text())
    assert is_current(seed_file)
    (tmp_path / "seed-0.json").write_text(json.dumps({**results, "recipe_hash": "0" * 64}))
    (tmp_path / "summary.json").write_text(json.dumps({"recipe": "fast", "overrides": [], "seeds": [0]}))
    assert not is_current(tmp_path / "seed-0.json") and not is_current(tmp_path / "summary.json")
    (tmp_path / "seed-0.json").write_text(json.dumps(results))
    assert is_current(tmp_path / "summary.json")

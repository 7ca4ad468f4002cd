"""The original pipeline's rule: when a run falls short of its recipe's [fallback] threshold, train the recipe it
names instead (and so on down the chain). The one choice ever read on the test split, and only where a recipe holds
no validation images out."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnist_kit.recipe import Recipe, fallback_recipe, run_recipe
from mnist_kit.settings import fallback_settings, train_settings
from mnist_kit.train import RunResult, resume, train


@dataclass(frozen=True)
class Shortfall:
    """A run under its recipe's fallback threshold, and what the rule does about it."""

    run: RunResult
    split: str  # "validation", or "test" where the recipe holds no images out (as the original pipeline read it)
    accuracy: float
    threshold: float
    fallback: str  # the recipe the rule names
    next: Recipe | None  # the recipe trained next; None when the rule is turned off
    carried: dict  # --set values the next recipe takes
    dropped: list[str]  # --set keys it has no place for

    @property
    def next_epochs(self) -> int | None:
        return train_settings(self.next.config).epochs if self.next else None


def shortfall(result: RunResult, recipe: Recipe) -> tuple[str, float, float] | None:
    """(split, accuracy, threshold) when the run is under its recipe's threshold; None when it is not, or the recipe
    has no [fallback]."""
    threshold = fallback_settings(recipe.config).min_test_accuracy
    if threshold is None:
        return None
    split, accuracy = (("validation", result.validation_accuracy) if result.validation_accuracy is not None
                       else ("test", result.test_accuracy))
    return (split, accuracy, threshold) if accuracy < threshold else None


def train_with_fallback(recipe: Recipe | None = None, *, resume_dir: Path | str | None = None, fallback: bool = True,
                        on_shortfall: Callable[[Shortfall], None] | None = None, **options) -> list[RunResult]:
    """Train `recipe` (or resume a run); while a run falls short of its [fallback] threshold, train the next.

    It reads the validation accuracy where the recipe holds images out, else the test accuracy as the original did.
    The fallback takes the --set values it has keys for; `fallback=False` turns the rule off. `on_shortfall` hears
    each shortfall before the next recipe trains (the CLI says it)."""
    if resume_dir:
        results = [resume(resume_dir, **{k: v for k, v in options.items() if k != "out_dir"})]
    else:
        results = [train(recipe, **options)]
    recipe = run_recipe(results[-1].metadata)
    while found := shortfall(results[-1], recipe):
        name = fallback_settings(recipe.config).recipe
        recipe, carried, dropped = fallback_recipe(recipe) if fallback else (None, {}, [])
        if on_shortfall:
            on_shortfall(Shortfall(results[-1], *found, name, recipe, carried, dropped))
        if recipe is None:
            break
        results.append(train(recipe, **options))
    return results

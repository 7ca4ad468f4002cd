"""The learning-rate range test (issue 29, part 1): the suggestion rule on loss curves with a known answer, and the
test itself on a real recipe and through the CLI."""

import json
import math
import random

import pytest
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.lrfind import lr_range_test, schedule, smooth, suggest
from mnist_kit.recipe import load_recipe
from tests.conftest import one_line_error

LRS = schedule(1e-7, 10.0, 200)
STEP = LRS[1] / LRS[0]  # the grid's spacing: no rule can answer finer than this


def logistic(lr: float, middle: float = 1e-3, blows_up: float = 0.1) -> float:
    """A textbook range test: flat at 2.3, falls to 0.3 around `middle`, explodes past `blows_up`."""
    falls = 0.3 + 2.0 / (1 + (lr / middle) ** 2)
    return falls if lr < blows_up else falls * (lr / blows_up) ** 3


def test_schedule_grows_exponentially_from_start_to_end():
    assert LRS[0] == pytest.approx(1e-7) and LRS[-1] == pytest.approx(10.0) and len(LRS) == 200
    ratios = [b / a for a, b in zip(LRS, LRS[1:])]
    assert max(ratios) == pytest.approx(min(ratios))


def test_smoothing_is_an_unbiased_moving_average():
    assert smooth([2.0] * 5) == pytest.approx([2.0] * 5)  # bias-corrected: a constant stays itself
    step = smooth([1.0] * 20 + [0.0] * 20)
    assert step[19] == pytest.approx(1.0) and 0 < step[25] < 1 and step[-1] < 0.2


@pytest.mark.parametrize("middle", [1e-4, 1e-3, 3e-2])
def test_the_suggestion_is_the_middle_of_the_descent_in_log_scale(middle):
    blows_up = 100 * middle
    losses = [logistic(lr, middle, blows_up) for lr in LRS]
    # known answer: the loss has fallen 10% of its 2.0 drop where (lr/middle)^2 = 1/9, and is lowest just below
    # blows_up; the suggestion is their geometric mean
    expected = math.sqrt(middle / 3 * blows_up)
    assert suggest(LRS, losses) == pytest.approx(expected, rel=STEP - 1)


def test_the_suggestion_survives_noise_and_smoothing():
    noise = random.Random(0)
    losses = [logistic(lr) * (1 + 0.1 * noise.uniform(-1, 1)) for lr in LRS]
    clean = suggest(LRS, [logistic(lr) for lr in LRS])
    noisy = suggest(LRS, smooth(losses))
    assert clean / 2 < noisy < clean * 2  # the smoothing's lag moves it right, by well under an octave


def test_no_suggestion_without_a_descent():
    assert suggest(LRS, [2.3] * 200) is None  # flat: the range missed it
    assert suggest(LRS, [2.3 + lr for lr in LRS]) is None  # only rising
    assert suggest(LRS[:2], [2.3, 1.0]) is None  # too short to tell
    assert suggest(LRS, [2.3] * 100 + [float("nan")] * 100) is None


def test_a_real_range_test_descends_then_stops_where_the_loss_diverges(data_root):
    recipe = load_recipe("baseline", ["data.limit=4096", "train.device=\"cpu\""])
    seen = []
    result = lr_range_test(recipe, start=1e-5, end=10.0, steps=60, on_step=lambda *a: seen.append(a))
    assert result.stopped.startswith("diverged") and len(result.lrs) < 60  # Adam at lr 10 does not train
    assert len(seen) == len(result.lrs) == len(result.losses) == len(result.smoothed)
    assert result.lrs == pytest.approx(schedule(1e-5, 10.0, 60)[:len(result.lrs)])
    assert min(result.smoothed) < 0.7 * result.smoothed[0]  # it learned on the way
    assert 1e-4 < result.suggestion < 0.1 and result.shipped_lr == 1e-3


def test_cli_writes_the_plot_and_the_record_and_prints_the_set_line(tmp_path):
    out = tmp_path / "lr"
    result = CliRunner().invoke(app, ["lr-find", "baseline", "--set", "data.limit=4096", "--steps", "40",
                                      "--start", "1e-5", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "lr-find.json").read_text())
    assert (out / "lr-find.png").read_bytes()[:4] == b"\x89PNG"
    assert f"--set optimizer.lr={record['suggestion_rounded']:g}" in result.stdout
    assert "train baseline --set data.limit=4096 --set optimizer.lr=" in result.stdout
    assert record["recipe_config"]["config"]["data"]["limit"] == 4096 and record["machine"]["kind"]


def test_cli_refuses_what_it_cannot_run_in_one_line(tmp_path):
    runner = CliRunner()
    one_line_error(runner.invoke(app, ["lr-find", "baseline", "--start", "1", "--end", "0.1"]), "must grow")
    one_line_error(runner.invoke(app, ["lr-find", "baseline", "--steps", "3"]), "at least 10 steps")
    one_line_error(runner.invoke(app, ["lr-find", "basline"]), "baseline")
    flat = runner.invoke(app, ["lr-find", "baseline", "--set", "data.limit=1024", "--start", "1e-12", "--end",
                               "1e-11", "--steps", "10", "--out", str(tmp_path), "--quiet"])
    one_line_error(flat, "never fell")
    assert (tmp_path / "lr-find.png").exists()  # the plot that shows why is still written


def test_a_recipe_whose_optimizer_has_no_learning_rate_is_refused():
    from mnist_kit.errors import UserError
    from mnist_kit.lrfind import check_lr_recipe

    recipe = load_recipe("baseline")
    del recipe.config["optimizer"]["lr"]
    with pytest.raises(UserError, match="has no `lr`"):
        check_lr_recipe(recipe)

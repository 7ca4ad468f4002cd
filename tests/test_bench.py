"""The benchmark scripts run against what training writes (a run folder and the `latest` link beside it)."""

import json
import subprocess
import sys

from tests.conftest import REPO


def test_speedrun_measures_and_keeps_a_run(tmp_path):
    keep = tmp_path / "kept"
    result = subprocess.run([sys.executable, "bench/speedrun.py", "--recipe", "fast", "--seeds", "3", "--set",
                             "data.limit=1500", "--keep", str(keep), "--results", str(tmp_path / "results")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    kept = keep / "fast-data.limit=1500-seed-3"
    assert (kept / "model.safetensors").is_file() and not (keep / "latest").exists()
    (record,) = (tmp_path / "results").glob("*/fast/seed-3.json")
    measured = json.loads(record.read_text())
    assert measured["test_accuracy"] == json.loads((kept / "metadata.json").read_text())["test_accuracy"]
    assert measured["process_seconds"] > measured["phase_seconds"]["train"] > 0


def test_robust_choice_keeps_the_recipes_own_augmentations_and_adds_background(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from robust_choice import candidate_overrides

    from mnist_kit.recipe import load_recipe, parse_overrides

    # fast has none: the override is the one choice-fast.json was measured with (so its candidates are reused)
    assert parse_overrides(candidate_overrides("background", "fast")) == \
        parse_overrides(['augment=[{name="background", level=2.0, p=0.5}]'])
    (measured,) = REPO.glob("bench/results/*/robustness/choice-fast.json")
    for name, row in json.loads(measured.read_text())["candidates"].items():
        assert parse_overrides(candidate_overrides(name, "fast")) == parse_overrides(row["overrides"]), name
    augment = load_recipe("best", candidate_overrides("background", "best")).config["augment"]
    assert augment == [*load_recipe("best").config["augment"], {"name": "background", "level": 2.0, "p": 0.5}]
    assert [a["name"] for a in augment] == ["affine", "elastic", "background"]


def test_best_robust_is_the_background_candidate_robust_choice_measured_on_best(monkeypatch):
    # docs/robustness.md quotes the candidate's runs as best-robust's: that holds while the two resolve alike
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from robust_choice import candidate_overrides

    from mnist_kit.recipe import load_recipe, recipe_hash

    candidate = load_recipe("best", ["data.validation=5000", *candidate_overrides("background", "best")])
    assert recipe_hash(load_recipe("best-robust")) == recipe_hash(candidate)
    assert recipe_hash(load_recipe("best-robust")) != recipe_hash(load_recipe("best", ["data.validation=5000"]))


def test_verdict_scores_an_ensemble_by_its_mean_probability_and_each_letter_alone(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import torch
    from verdict import Member, ensemble_figures, ensemble_scores, separations

    from mnist_kit.outliers import LETTERS
    from mnist_kit.verdict import auroc, digit_scores

    generator = torch.Generator().manual_seed(0)
    digits = torch.randn(200, 10, generator=generator) + 6 * torch.nn.functional.one_hot(torch.arange(200) % 10, 10)
    letters = torch.randn(3 * len(LETTERS), 10, generator=generator)
    letters[LETTERS.index("C")::len(LETTERS)] += 8 * torch.nn.functional.one_hot(torch.tensor(0), 10)  # C reads as 0
    one = Member(0.5, digits, torch.arange(200) % 10, {"letters": letters})
    other = Member(2.0, digits.flip(1), torch.arange(200) % 10, {"letters": letters.flip(1)})
    for score in ("confidence", "energy"):  # one run's score is its own
        assert torch.equal(ensemble_scores([one], [digits], score), digit_scores(digits, 0.5, score))
    mean = ((digits / 0.5).softmax(1) + (digits.flip(1) / 2.0).softmax(1)) / 2
    assert torch.allclose(ensemble_scores([one, other], [digits, digits.flip(1)], "confidence"), mean.max(1).values)
    energy = (0.5 * (digits / 0.5).logsumexp(1) + 2.0 * (digits.flip(1) / 2.0).logsumexp(1)) / 2
    assert torch.allclose(ensemble_scores([one, other], [digits, digits.flip(1)], "energy"), energy)
    found = separations([one])
    assert list(found["auroc_by_letter"]) == list(LETTERS) and found["auroc"]["letters"]["energy"] > 0.9
    by_letter = found["auroc_by_letter"]
    assert by_letter["C"]["confidence"] == min(v["confidence"] for v in by_letter.values()) < 0.5
    assert found["auroc"]["letters"]["confidence"] == auroc(digit_scores(digits, 0.5, "confidence"),
                                                            digit_scores(letters, 0.5, "confidence"))
    together = ensemble_figures([one, other])
    assert together["members"] == 2
    assert together["test_accuracy"] == (mean.argmax(1) == one.labels).float().mean().item()

"""Explanations (issue 27, part 4): integrated gradients from the black image add up to the output's change, and
the commands that draw them."""

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.inference import open_predictor
from tests.conftest import REPO, one_line_error

pytest.importorskip("captum", reason="the [explain] extra is not installed: pip install -e '.[explain]'")

from mnist_kit.explain import attributions, black_baseline, output_gap  # noqa: E402

EXAMPLES = [REPO / "docs" / "examples" / "photo-7.jpg", REPO / "tests" / "fixtures" / "not-digits" / "star.png"]


def test_integrated_gradients_add_up_to_the_change_from_the_black_image(trained_run, splits):
    predictor = open_predictor(trained_run.run_dir)
    inputs = predictor.normalized(splits.test_images[:16].float()[:, None] / 255)
    targets = splits.test_labels[:16]
    found, delta = attributions(predictor.scores, inputs, targets, "ig", predictor.mean, predictor.std)
    gap = output_gap(predictor.scores, inputs, targets, predictor.mean, predictor.std)
    assert found.shape == inputs.shape and torch.allclose(found.sum(dim=(1, 2, 3)) - gap, delta, atol=1e-3)
    assert (delta.abs() <= 0.02 * gap.abs() + 1e-3).all(), (delta, gap)  # completeness, to 2% of the change
    black = (splits.test_images[:16] == 0)[:, None]  # the path from black leaves black pixels nothing to explain
    assert found[black].abs().max() < 1e-6 * found[~black].abs().max()
    assert torch.allclose(black_baseline(inputs, predictor.mean, predictor.std),
                          predictor.normalized(torch.zeros_like(inputs)))


def test_explain_draws_each_image_and_reports_the_delta(trained_run, tmp_path):
    result = CliRunner().invoke(app, ["explain", str(trained_run.run_dir), *map(str, EXAMPLES), "--out",
                                      str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [e["digit"] for e in entries][0] == "7" and all(e["runner_up"] != e["digit"] for e in entries)
    assert all(e["delta"] <= 0.02 * e["output_difference"] + 1e-3 for e in entries)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo-7-ig.png", "star-ig.png"]
    saliency = CliRunner().invoke(app, ["explain", str(trained_run.run_dir), str(EXAMPLES[0]), "--method",
                                        "saliency", "--out", str(tmp_path)])
    assert saliency.exit_code == 0 and (tmp_path / "photo-7-saliency.png").is_file()
    plotted = CliRunner().invoke(app, ["plot", "explanations", str(trained_run.run_dir), "--out", str(tmp_path),
                                       "--count", "3"])
    assert plotted.exit_code == 0 and (tmp_path / "explanations.png").is_file(), plotted.output


def test_the_draw_page_answer_carries_the_map_when_asked(trained_run, monkeypatch):
    import base64
    import io

    from PIL import Image

    from mnist_kit.protocol import predict_canvas

    predictor, body = open_predictor(trained_run.run_dir), EXAMPLES[0].read_bytes()
    assert "map" not in predict_canvas(predictor, body)
    shown = predict_canvas(predictor, body, explain=True)
    with Image.open(io.BytesIO(base64.b64decode(shown["map"].split(",", 1)[1]))) as image:
        assert image.size == (28, 28) and image.mode == "RGBA"
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # no extra: the answer stands, the map says why not
    shown = predict_canvas(predictor, body, explain=True)
    assert shown["top"] and shown["map"] is None and "[explain]" in shown["map_error"]


def test_explain_refuses_what_it_cannot_do_in_one_line(trained_run, monkeypatch):
    one_line_error(CliRunner().invoke(app, ["explain", str(trained_run.run_dir), str(EXAMPLES[0]), "--method",
                                            "shap"]), "unknown method 'shap'")
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # as if the extra were not installed
    one_line_error(CliRunner().invoke(app, ["explain", str(trained_run.run_dir), str(EXAMPLES[0])]),
                   "explanations need captum", "[explain]")

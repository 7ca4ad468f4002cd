"""Every plot kind writes a real PNG of sensible size, without a display."""

import pytest
from PIL import Image
from typer.testing import CliRunner

from mnist_kit.cli import app
from mnist_kit.errors import UserError
from mnist_kit.plots import PLOT_KINDS
from mnist_kit.runs import plot_run

runner = CliRunner()


def check_png(path, min_width=300):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_width and image.height >= 200
        assert len(image.convert("L").getcolors(maxcolors=256) or range(256)) > 10  # something was drawn
    assert path.stat().st_size > 5_000


@pytest.mark.parametrize("kind", PLOT_KINDS)
def test_each_kind_writes_a_png(trained_run, tmp_path, kind):
    (path,) = plot_run(kind, trained_run.run_dir, out_dir=tmp_path)
    assert path == tmp_path / f"{kind}.png"
    check_png(path)


def test_mistakes_are_all_wrong_and_named_apart(trained_run, tmp_path):
    (path,) = plot_run("predictions", trained_run.run_dir, out_dir=tmp_path, mistakes=True, count=8)
    assert path.name == "predictions-mistakes.png"
    check_png(path)


def test_plot_all_through_the_cli(trained_run):
    result = runner.invoke(app, ["plot", "all", str(trained_run.run_dir)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (trained_run.run_dir / "plots").iterdir())
    assert written == sorted(f"{kind}.png" for kind in PLOT_KINDS)


def test_unknown_kind_suggests_the_closest(trained_run):
    with pytest.raises(UserError, match="unknown plot 'curve'.*Did you mean 'curves'"):
        plot_run("curve", trained_run.run_dir)

"""Regenerate the README's pictures from a trained run: `make docs RUN=runs/baseline-...`.

Writes docs/img/*.png (the `mnist-kit plot` kinds, what `predict` made of docs/examples/, baseline's lr-find) and
docs/eval-report.txt (what `mnist-kit eval` prints), all through the library the CLI uses.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from mnist_kit.lrfind import lr_range_test
from mnist_kit.plots import CORRECT, PLOT_KINDS, WRONG, lr_find_figure, robustness_figure, save_png
from mnist_kit.predict import mnist_like, predict_files, read_gray
from mnist_kit.recipe import load_recipe
from mnist_kit.robustness import robustness_of_runs
from mnist_kit.runs import plot_run

DOCS = Path(__file__).resolve().parent


def predict_figure(results: list[dict], caption=None, suptitle: str = "mnist-kit predict: the file, and the 28x28 "
                   "input the model saw, with its answer", width: float = 2.0) -> Figure:
    """Each example image above the 28x28 input the model saw, titled by `caption(entry)` -> (text, colour); by
    default the prediction, green when it is the digit the file's name ends with."""
    def right_or_wrong(entry: dict) -> tuple[str, str]:
        truth = Path(entry["file"]).stem.split("-")[-1]
        return f"{entry['digit']} ({entry['probability']:.0%})", CORRECT if entry["digit"] == truth else WRONG

    fig = Figure(figsize=(width * len(results), 4.4), layout="constrained")
    for column, entry in zip(fig.subplots(2, len(results)).T, results):
        path = Path(entry["file"])
        with Image.open(path) as image:
            column[0].imshow(np.asarray(image.convert("RGBA")))
        column[0].set_title(path.name, fontsize=9)
        column[1].imshow(mnist_like(read_gray(path)), cmap="gray", vmin=0, vmax=1)
        text, colour = (caption or right_or_wrong)(entry)
        column[1].set_title(text, fontsize=11, color=colour)
        for ax in column:
            ax.set_axis_off()
    fig.suptitle(suptitle)
    return fig


def main(run: str) -> None:
    img = DOCS / "img"
    kinds = [kind for kind in PLOT_KINDS if kind != "calibration"]  # a calibrated run's: docs/make_confidence.py
    paths = [path for kind in kinds for path in plot_run(kind, run, out_dir=img)]
    for path in paths + plot_run("predictions", run, out_dir=img, mistakes=True):
        print(path)
    examples = sorted((DOCS / "examples").iterdir())
    print(save_png(predict_figure(predict_files(run, examples)), img / "predict.png"))
    report = subprocess.run([sys.executable, "-m", "mnist_kit", "eval", run], capture_output=True, text=True,
                            check=True, env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}).stdout
    (DOCS / "eval-report.txt").write_text(report)
    print(DOCS / "eval-report.txt")
    print(save_png(robustness_figure(robustness_of_runs([run])), img / "robustness.png"))  # 15 corruptions: ~40 s
    test = lr_range_test(load_recipe("baseline"))  # the range test docs/training.md shows
    print(save_png(lr_find_figure(test.lrs, test.losses, test.smoothed, test.suggestion, test.shipped_lr, test.recipe),
                   img / "lr-find.png"))


if __name__ == "__main__":
    main(sys.argv[1])

"""Regenerate the README's pictures from a trained run: `make docs RUN=runs/baseline-...`.

Writes docs/img/*.png (the `mnist-kit plot` kinds, and what `predict` made of docs/examples/) and
docs/eval-report.txt (what `mnist-kit eval` prints), all through the library the CLI uses.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from mnist_kit.plots import CORRECT, PLOT_KINDS, WRONG, save_png
from mnist_kit.predict import mnist_like, predict_files, read_gray
from mnist_kit.runs import plot_run

DOCS = Path(__file__).resolve().parent


def predict_figure(results: list[dict]) -> Figure:
    """Each example image above the 28x28 input the model saw, titled with the prediction."""
    fig = Figure(figsize=(2.0 * len(results), 4.4), layout="constrained")
    axes = fig.subplots(2, len(results))
    for column, entry in zip(axes.T, results):
        path = Path(entry["file"])
        truth = path.stem.split("-")[-1]
        with Image.open(path) as image:
            column[0].imshow(np.asarray(image.convert("RGBA")))
        column[0].set_title(path.name, fontsize=9)
        column[1].imshow(mnist_like(read_gray(path)), cmap="gray", vmin=0, vmax=1)
        column[1].set_title(f"{entry['digit']} ({entry['probability']:.0%})", fontsize=11,
                            color=CORRECT if entry["digit"] == truth else WRONG)
        for ax in column:
            ax.set_axis_off()
    fig.suptitle("mnist-kit predict: the file, and the 28x28 input the model saw, with its answer")
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


if __name__ == "__main__":
    main(sys.argv[1])

"""Regenerate docs/confidence.md's pictures from a calibrated run: `make docs-confidence RUN=runs/fast-...`.

Writes docs/img/reliability.png (`mnist-kit plot calibration`), docs/img/verdicts.png (what `predict` says of
docs/examples/ and of tests/fixtures/not-digits/) and docs/img/explanations.png (`mnist-kit plot explanations`,
the 6 most confident mistakes), through the library the CLI uses.
"""

import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from mnist_kit.explain import plot_explanations
from mnist_kit.plots import CORRECT, WRONG, save_png
from mnist_kit.predict import mnist_like, predict_files, read_gray
from mnist_kit.runs import plot_run

DOCS = Path(__file__).resolve().parent
NOT_DIGITS = DOCS.parent / "tests" / "fixtures" / "not-digits"
COLOURS = {"digit": CORRECT, "unsure": "#9a6700", "not a digit": WRONG}


def verdicts_figure(results: list[dict]) -> Figure:
    """Each image above the 28x28 input the model saw, titled with the top answer and the verdict."""
    fig = Figure(figsize=(1.9 * len(results), 4.6), layout="constrained")
    for column, entry in zip(fig.subplots(2, len(results)).T, results):
        path = Path(entry["file"])
        with Image.open(path) as image:
            column[0].imshow(np.asarray(image.convert("RGBA")))
        column[0].set_title(path.name, fontsize=8)
        column[1].imshow(mnist_like(read_gray(path)), cmap="gray", vmin=0, vmax=1)
        column[1].set_title(f"{entry['digit']} {entry['probability']:.0%}\n{entry['verdict']}", fontsize=10,
                            color=COLOURS[entry["verdict"]])
        for ax in column:
            ax.set_axis_off()
    fig.suptitle("mnist-kit predict with a verdict: digits (left) and images that are not digits (right)")
    return fig


def main(run: str) -> None:
    img = DOCS / "img"
    (path,) = plot_run("calibration", run, out_dir=img)
    print(path.rename(img / "reliability.png"))
    images = sorted((DOCS / "examples").iterdir()) + sorted(NOT_DIGITS.iterdir())
    print(save_png(verdicts_figure(predict_files(run, images)), img / "verdicts.png"))
    print(plot_explanations(run, img, count=6))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/make_confidence.py RUN (a run trained with data.validation and calibrated)")
    main(sys.argv[1])

"""Regenerate docs/confidence.md's pictures from a calibrated run: `make docs-confidence RUN=runs/fast-...`.

Writes docs/img/reliability.png (`mnist-kit plot calibration`), docs/img/verdicts.png (what `predict` says of
docs/examples/ and of tests/fixtures/not-digits/) and docs/img/explanations.png (`mnist-kit plot explanations`,
the 6 most confident mistakes), through the library the CLI uses.
"""

import sys
from pathlib import Path

from make_docs import predict_figure  # this folder's script, beside this one
from matplotlib.figure import Figure

from mnist_kit.explain import plot_explanations
from mnist_kit.plots import CORRECT, WRONG, save_png
from mnist_kit.predict import predict_files
from mnist_kit.runs import plot_run

DOCS = Path(__file__).resolve().parent
NOT_DIGITS = DOCS.parent / "tests" / "fixtures" / "not-digits"
COLOURS = {"digit": CORRECT, "unsure": "#9a6700", "not a digit": WRONG}


def verdicts_figure(results: list[dict]) -> Figure:
    """Each image above the 28x28 input the model saw, titled with the top answer and the verdict."""
    return predict_figure(results, lambda e: (f"{e['digit']} {e['probability']:.0%}\n{e['verdict']}",
                                              COLOURS[e["verdict"]]),
                          "mnist-kit predict with a verdict: digits (left) and images that are not digits (right)",
                          width=1.9)


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

"""Where a model breaks: its accuracy on the test split as it is and under each MNIST-C-style corruption
(mnist_kit.corrupt), and their mean. One function, used by `mnist-kit robustness`, the Hub model card and the
README and docs/robustness.md."""

import torch

from mnist_kit.corrupt import CORRUPTIONS, corrupted
from mnist_kit.data import normalize


def robustness(predictor, splits, names: list[str] | None = None) -> dict:
    """Accuracy of a mnist_kit.inference.Predictor on the clean test split and on each corruption of it (float32
    inputs; a run's own figure used its training precision), with the mean over the corruptions."""
    labels = splits.test_labels

    def accuracy(pixels: torch.Tensor) -> float:
        outputs = predictor.scores_in_batches(normalize(pixels, splits.mean, splits.std))
        return float((outputs.argmax(dim=1) == labels).float().mean())

    scores = {name: accuracy(corrupted(splits.test_images, name)) for name in (names or list(CORRUPTIONS))}
    return {"clean": accuracy(splits.test_images), "corruptions": scores,
            "mean": sum(scores.values()) / len(scores)}


def robustness_of_runs(paths: list, data_dir=None) -> list[dict]:
    """One row per run (each scored alone, not as an ensemble): its recipe, seed and robustness."""
    from mnist_kit.inference import open_run
    from mnist_kit.runs import run_dataset

    rows = []
    for path in paths:
        predictor = open_run(path)
        run = predictor.run
        rows.append({"run": str(run.run_dir), "recipe": run.recipe.name, "seed": run.metadata.get("seed"),
                     **robustness(predictor, run_dataset(run, data_dir))})
    return rows

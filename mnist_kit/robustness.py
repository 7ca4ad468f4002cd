"""Where a model breaks: its accuracy on the test split as it is and under each MNIST-C-style corruption
(mnist_kit.corrupt), and their mean. One function, used by `mnist-kit robustness`, the Hub model card and the
README and docs/robustness.md."""

import torch

from mnist_kit.corrupt import CORRUPTIONS, corrupted
from mnist_kit.data import normalize


def robustness(predictor, splits, names: list[str] | None = None, images: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> dict:
    """Accuracy of a mnist_kit.inference.Predictor on the clean test split (or on `images` (uint8) and `labels`:
    the held-out training images, which may choose) and on each corruption of it (float32 inputs; a run's own figure
    used its training precision), with the mean over the corruptions."""
    images = splits.test_images if images is None else images
    labels = splits.test_labels if labels is None else labels

    def accuracy(pixels: torch.Tensor) -> float:
        outputs = predictor.scores_in_batches(normalize(pixels, splits.mean, splits.std))
        return float((outputs.argmax(dim=1) == labels).float().mean())

    scores = {name: accuracy(corrupted(images, name)) for name in (names or list(CORRUPTIONS))}
    return {"clean": accuracy(images), "corruptions": scores,
            "mean": sum(scores.values()) / len(scores)}


def robustness_of_runs(paths: list, data_dir=None, split: str = "test") -> list[dict]:
    """One row per run (each scored alone, not as an ensemble): its recipe, seed and robustness, on the test split
    or (split="validation") on the training images the run held out: the corruptions of those may choose a recipe,
    the test split's only measure one."""
    from mnist_kit.inference import open_run
    from mnist_kit.runs import run_dataset, split_of

    rows = []
    for path in paths:
        predictor = open_run(path)
        run = predictor.run
        splits = run_dataset(run, data_dir)
        images, labels = split_of(run, splits, split)
        rows.append({"run": str(run.run_dir), "recipe": run.recipe.name, "seed": run.metadata.get("seed"),
                     "split": split, **robustness(predictor, splits, images=images, labels=labels)})
    return rows

"""Plots as pure functions (arrays in, matplotlib Figure out, no display) and a writer of PNG files."""

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mnist_kit.atomic import write_bytes_atomic

CORRECT, WRONG = "#1a7f37", "#cf222e"  # green and red


def curves_figure(history: list[dict]) -> Figure:
    """Training and test loss and accuracy per epoch, and the learning rate."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    loss, acc, lr = fig.subplots(1, 3)
    splits = ["train", *(["val"] if "val_accuracy" in history[0] else []), "test"]
    for split in splits:
        loss.plot(epochs, [r[f"{split}_loss"] for r in history], "o-", label=split)
        acc.plot(epochs, [100 * r[f"{split}_accuracy"] for r in history], "o-", label=split)
    loss.set(title="loss", xlabel="epoch")
    chooser = "val" if "val" in splits else "test"  # what picks the best epoch: validation, where there is one
    best = max(history, key=lambda r: r[f"{chooser}_accuracy"])
    acc.set(title=f"accuracy (%), best {chooser} {100 * best[f'{chooser}_accuracy']:.2f}% at epoch {best['epoch']}",
            xlabel="epoch")
    lr.plot(epochs, [r["lr"] for r in history], "o-", color="gray")
    lr.set(title="learning rate (start of epoch)", xlabel="epoch", yscale="log")
    for ax in (loss, acc):
        ax.legend()
    for ax in (loss, acc, lr):
        ax.grid(alpha=0.3)
    return fig


def compare_curves_figure(runs: list[tuple[str, list[dict]]]) -> Figure:
    """Several runs' curves overlaid, one colour a run: loss and accuracy per epoch, training solid and validation
    dashed (the test split dotted, for a run that held no images out)."""
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    loss, acc = fig.subplots(1, 2)
    for (label, history), color in zip(runs, [f"C{i % 10}" for i in range(len(runs))]):
        epochs = [row["epoch"] for row in history]
        held = "val" if history and "val_accuracy" in history[0] else "test"
        for split, style in (("train", "-"), (held, "--" if held == "val" else ":")):
            name = {"train": "train", "val": "validation", "test": "test"}[split]
            loss.plot(epochs, [r[f"{split}_loss"] for r in history], style, color=color, label=f"{label}: {name}")
            acc.plot(epochs, [100 * r[f"{split}_accuracy"] for r in history], style, color=color,
                     label=f"{label}: {name}")
    loss.set(title="loss", xlabel="epoch")
    acc.set(title="accuracy (%)", xlabel="epoch")
    for ax in (loss, acc):
        ax.grid(alpha=0.3)
    acc.legend(fontsize=7)
    return fig


def image_grid(images: np.ndarray, titles: list[str], colors: list[str] | None = None, columns: int = 8,
               suptitle: str = "") -> Figure:
    """Grey-scale images (N, H, W) in a grid, each with a title (optionally coloured)."""
    rows = max(1, -(-len(images) // columns))
    fig = Figure(figsize=(1.4 * columns, 1.6 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255 if images.dtype == np.uint8 else 1)
            ax.set_title(titles[i], fontsize=10, color=(colors[i] if colors else "black"))
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def samples_figure(images: np.ndarray, labels: np.ndarray, classes: list[str]) -> Figure:
    """Training images as they look (uint8, unnormalized), with their labels."""
    return image_grid(images, [f"label {classes[y]}" for y in labels], suptitle="training samples")


def classes_figure(train_counts: list[int], test_counts: list[int], classes: list[str]) -> Figure:
    """Images per class in the training and test splits, side by side."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(classes))
    for offset, counts, label in ((-0.2, train_counts, "train"), (0.2, test_counts, "test")):
        bars = ax.bar(x + offset, counts, width=0.4, label=f"{label} ({sum(counts):,})")
        ax.bar_label(bars, fontsize=7)
    ax.set(xticks=x, xticklabels=classes, xlabel="class", ylabel="images", title="class distribution")
    ax.legend()
    return fig


def predictions_figure(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                       classes: list[str], title: str = "test predictions") -> Figure:
    """Test images titled 'predicted (true)' with confidence, green when right and red when wrong."""
    titles = [f"{classes[p]} ({classes[t]}) {c:.0%}" for p, t, c in zip(predicted, labels, confidence)]
    colors = [CORRECT if p == t else WRONG for p, t in zip(predicted, labels)]
    return image_grid(images, titles, colors, suptitle=f"{title}: predicted (true) confidence")


def confusion_figure(confusion: list[list[int]], classes: list[str]) -> Figure:
    """The confusion matrix as a heatmap (log colour scale so small errors show), with counts."""
    counts = np.asarray(confusion)
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.log1p(counts), cmap="Blues")
    threshold = np.log1p(counts).max() / 2
    for (t, p), count in np.ndenumerate(counts):
        if count:
            ax.text(p, t, str(count), ha="center", va="center", fontsize=8,
                    color="white" if np.log1p(count) > threshold else "black")
    ax.set(xticks=range(len(classes)), xticklabels=classes, yticks=range(len(classes)), yticklabels=classes,
           xlabel="predicted", ylabel="true", title=f"confusion matrix ({counts.trace():,} of {counts.sum():,} right)")
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    return fig


def calibration_figure(panels: list[tuple[str, dict, dict]]) -> Figure:
    """Reliability diagrams side by side, one per (title, bins from calibration.reliability_bins, scores): each
    bin's accuracy against its mean confidence (on the diagonal: calibrated), the bin's image count above its
    bar."""
    fig = Figure(figsize=(5.2 * len(panels), 4.8), layout="constrained")
    for ax, (title, bins, score) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        edges = np.asarray(bins["edges"])
        width, left = np.diff(edges), edges[:-1]
        filled = [i for i, n in enumerate(bins["count"]) if n]
        accuracy = np.array([bins["accuracy"][i] for i in filled])
        confidence = np.array([bins["confidence"][i] for i in filled])
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="calibrated")
        ax.bar(left[filled], accuracy, width=width[filled], align="edge", color="#4c72b0", edgecolor="white",
               label="accuracy")
        ax.bar(left[filled], confidence - accuracy, bottom=accuracy, width=width[filled], align="edge", fill=False,
               edgecolor=WRONG, hatch="///", lw=0.8, label="gap to mean confidence")
        for i in filled:
            ax.text(left[i] + width[i] / 2, 1.03, f"{bins['count'][i]:,}", ha="center", va="bottom", fontsize=7,
                    rotation=90)
        ax.set(xlim=(0, 1), ylim=(0, 1.16), xlabel="confidence (top probability)", ylabel="accuracy",
               title=f"{title}\nECE {score['ece']:.2%}, NLL {score['nll']:.4f}, Brier {score['brier']:.4f}")
        ax.legend(loc="upper left", bbox_to_anchor=(0, 0.87), fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("reliability on the test split (images per bin above each bar)")
    return fig


def sweep_figure(rows: list[dict], keys: list[str], ranked_on: str = "validation_accuracy") -> Figure:
    """The accuracy the sweep chooses by (validation, else test) of each point as bars, the best one highlighted,
    failures marked."""
    fig = Figure(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    scored = [r[ranked_on] for r in rows if r.get(ranked_on) is not None]
    best = max(scored) if scored else None
    labels = ["\n".join(f"{k.split('.')[-1]}={r.get(k)}" for k in keys) for r in rows]
    heights = [100 * (r.get(ranked_on) or 0) for r in rows]
    colors = [WRONG if "error" in r else (CORRECT if r.get(ranked_on) == best else "#8c959f") for r in rows]
    bars = ax.bar(range(len(rows)), heights, color=colors)
    ax.bar_label(bars, labels=[f"{h:.2f}" if h else "failed" for h in heights], fontsize=8)
    low = min((h for h in heights if h), default=0)
    split = ranked_on.split("_")[0]
    ax.set(xticks=range(len(rows)), ylabel=f"{split} accuracy (%)", ylim=(max(0, low - 1), 100),
           title=f"sweep: {split} accuracy per point (best in green)")
    ax.set_xticklabels(labels, fontsize=8)
    return fig


def robustness_figure(rows: list[dict]) -> Figure:
    """Accuracy on the clean test split, under each corruption and their mean, one bar per run in each group."""
    names = ["as it is", *rows[0]["corruptions"], "mean"]
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        values = [row["clean"], *row["corruptions"].values(), row["mean"]]
        label = f"{row['recipe']} ({row['run'].rstrip('/').split('/')[-1]})"
        ax.bar(np.arange(len(names)) + (i - (len(rows) - 1) / 2) * width, [100 * v for v in values], width=width,
               label=label)
    ax.set(xticks=range(len(names)), ylabel="test accuracy (%)", ylim=(0, 100),
           title="accuracy under MNIST-C-style corruptions (generated by mnist-kit, not the published files)")
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def save_png(fig: Figure, path: Path | str, dpi: int = 100) -> Path:
    """Render a figure to PNG and write it atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return write_bytes_atomic(path, buffer.getvalue())


PLOT_KINDS = ("curves", "samples", "classes", "predictions", "confusion", "calibration")


def explanations_figure(images: np.ndarray, maps: np.ndarray, titles: list[list[str]], suptitle: str) -> Figure:
    """One row per image: the 28x28 input, then each attribution map (maps: N x M x 28 x 28) over it in red
    (for the class) and blue (against), on one colour scale per row."""
    rows, columns = len(images), 1 + maps.shape[1]
    fig = Figure(figsize=(2.3 * columns, 2.3 * rows + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(rows, columns)).reshape(rows, columns)
    for row, image, row_maps, row_titles in zip(axes, images, maps, titles):
        limit = float(np.abs(row_maps).max()) or 1.0
        row[0].imshow(image, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(row_titles[0], fontsize=9)
        for ax, attribution, title in zip(row[1:], row_maps, row_titles[1:]):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.imshow(attribution, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.7)
            ax.set_title(title, fontsize=9)
        for ax in row:
            ax.set_axis_off()
    fig.suptitle(suptitle, fontsize=10)
    return fig


def lr_find_figure(lrs: list[float], losses: list[float], smoothed: list[float], suggestion: float | None,
                   shipped: float | None, recipe: str) -> Figure:
    """A range test: each step's loss (faint) and the smoothed loss against the learning rate (log scale), with the
    suggestion and the recipe's own learning rate marked."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(lrs, losses, color="gray", alpha=0.35, linewidth=0.8, label="loss per step")
    ax.plot(lrs, smoothed, color="#0969da", label="smoothed")
    if suggestion:
        ax.axvline(suggestion, color=CORRECT, linestyle="--", label=f"suggested {suggestion:.2g}")
    if shipped:
        ax.axvline(shipped, color="gray", linestyle=":", label=f"recipe's optimizer.lr {shipped:g}")
    finite = [v for v in smoothed if np.isfinite(v)]
    if finite:  # the smoothed curve sets the scale: a single step's spike would squash the descent
        ax.set_ylim(0, 1.2 * max(finite))
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title=f"learning-rate range test: {recipe}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig

"""Seconds per training epoch: the reference pipeline against mnist-kit's loop, same network, same batch size.

    python bench/loop.py [--epochs 2] [--batch-size 64] [--precision fp32|bf16|both] [--results bench/results]

(a) reference: torchvision's MNIST dataset + DataLoader(shuffle=True) + ToTensor + Normalize, one PIL image at a
    time, torch.optim.Adam as constructed by default, loss.item() and accuracy read every batch, as the original
    pipeline did. (b) mnist-kit: the same baseline network from recipes/baseline.toml, the split in memory as one
    tensor, index-slice batches, the optimizer as the registry builds it (fused where torch has it), statistics
    kept on the device. Each side trains `--epochs` epochs; the best epoch is reported (the first warms caches).
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from record import machine_folder, write_results
from rich.console import Console
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from mnist_kit.assemble import build_model, build_parts
from mnist_kit.data import data_root, load_dataset, normalize
from mnist_kit.distributed import ALONE
from mnist_kit.evaluate import evaluate
from mnist_kit.progress import PlainDisplay
from mnist_kit.recipe import load_recipe
from mnist_kit.train import Loop, Tensors, train_epoch


def reference_epoch(model, loader, optimizer) -> float:
    """One epoch exactly as the reference pipeline ran it; returns seconds."""
    start = time.perf_counter()
    model.train()
    running_loss, correct = 0.0, 0
    for data, target in loader:
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        correct += output.argmax(dim=1).eq(target).sum().item()
    return time.perf_counter() - start


def reference(config, splits, epochs, batch_size):
    torch.manual_seed(0)
    model = build_model(config, splits.spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["optimizer"]["lr"],
                                 weight_decay=config["optimizer"]["weight_decay"])
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = DataLoader(datasets.MNIST(data_root(), train=True, transform=transform), batch_size=batch_size,
                        shuffle=True)
    times = [reference_epoch(model, loader, optimizer) for _ in range(epochs)]
    return min(times), model


def ours(config, splits, epochs, batch_size, precision):
    torch.manual_seed(0)
    config = {**config, "scheduler": {"name": "none"}, "data": {**config["data"], "batch_size": batch_size}}
    parts = build_parts(config, splits.spec, steps_per_epoch=-(-len(splits.train_labels) // batch_size))
    x = normalize(splits.train_images, splits.mean, splits.std)
    none = (x[:0], splits.test_labels[:0])  # the bench evaluates on its own
    data = Tensors(x, splits.train_labels, *none, *none)
    loop = Loop(parts, parts.model, data, batch_size, precision, ALONE, torch.Generator().manual_seed(0))
    times = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        train_epoch(loop, PlainDisplay(Console(quiet=True)), epoch)
        times.append(time.perf_counter() - start)
    return min(times), parts.model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--results", type=Path, help="also write <this folder>/<machine>/loop.json")
    args = parser.parse_args()
    splits = load_dataset("mnist")
    config = load_recipe("baseline").config
    test_x = normalize(splits.test_images, splits.mean, splits.std)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; baseline MLP, batch {args.batch_size}, "
          f"best of {args.epochs} epochs, 60,000 images")
    ref_seconds, ref_model = reference(config, splits, args.epochs, args.batch_size)
    rows = [("reference (DataLoader + ToTensor + Normalize)", ref_seconds, ref_model)]
    for precision in (["fp32", "bf16"] if args.precision == "both" else [args.precision]):
        seconds, model = ours(config, splits, args.epochs, args.batch_size, precision)
        rows.append((f"mnist-kit loop ({precision})", seconds, model))
    print(f"{'pipeline':48} {'s/epoch':>8} {'images/s':>9} {'ratio':>6} {'test acc':>9}")
    figures = []
    for name, seconds, model in rows:
        accuracy = evaluate(model, test_x, splits.test_labels, 10)["accuracy"]
        figures.append({"pipeline": name, "epoch_seconds": seconds, "images_per_second": 60000 / seconds,
                        "ratio": seconds / ref_seconds, "test_accuracy": accuracy})
        print(f"{name:48} {seconds:8.2f} {60000 / seconds:9.0f} {seconds / ref_seconds:6.2f} {accuracy:9.2%}")
    if args.results:
        path = machine_folder(args.results) / "loop.json"
        write_results(path, ["python", *sys.argv], {"epochs": args.epochs, "batch_size": args.batch_size,
                                                     "rows": figures})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Where the floor of a speedrun is on this machine: start-up that no recipe avoids, and the arithmetic of a
recipe's network against the CPU's measured throughput.

    python bench/floor.py [--recipe fast] [--results bench/results]

Start-up: fresh interpreters that only start, import torch, import torch and torch._dynamo (torch.optim's own
classes import it on an optimizer's first use; mnist-kit's registered optimizers do not), and import what
`mnist-kit train` imports; the median of 5 each. Throughput: the
best of 10 square 2048x2048 matrix products (fewer where 10 s are spent) in fp32 and under bf16 autocast, in
GFLOP/s. Arithmetic: the FLOPs of
one training step of the recipe (forward and backward, counted by torch.utils.flop_counter on a real batch) times
the steps of its epochs, divided by that throughput: the seconds training would take if every FLOP ran at the
matrix-product rate. The floor is `import torch` plus that, in the recipe's precision; where the recipe's speedrun
was measured on this machine (bench/speedrun.py), its whole-process median is set against it.
Writes <results>/<machine>/floor-<recipe>.json.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from record import machine_folder, write_results
from torch.utils.flop_counter import FlopCounterMode

from mnist_kit.assemble import build_parts
from mnist_kit.data import load_dataset, normalize
from mnist_kit.device import precision_context, resolve_precision
from mnist_kit.recipe import load_recipe

STARTUP = {"interpreter": "pass", "torch": "import torch", "torch_and_dynamo": "import torch, torch._dynamo",
           "train_imports": "import mnist_kit.cli, mnist_kit.train"}


def startup_seconds(code: str, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(precision: str, n: int = 2048, repeat: int = 10, budget: float = 10.0) -> float:
    """The best of `repeat` products, stopping once `budget` seconds are spent (bf16 without native support runs
    at well under 1 GFLOP/s: a minute a product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best, spent = float("inf"), 0.0
    with precision_context(precision, torch.device("cpu")):
        for attempt in range(repeat + 1):  # the first one warms up, unless it alone spends the budget
            start = time.perf_counter()
            a @ b
            took = time.perf_counter() - start
            spent += took
            if attempt or spent > budget:
                best = min(best, took)
            if spent > budget:
                break
    return 2 * n**3 / best / 1e9


def step_flops(recipe_name: str) -> tuple[int, int, str]:
    """FLOPs of one training step (forward + backward) of the recipe on a real batch, its steps per epoch and
    the precision it trains in."""
    recipe = load_recipe(recipe_name)
    config, splits = recipe.config, load_dataset(recipe.config["data"]["dataset"])
    batch = config["data"]["batch_size"]
    steps = -(-len(splits.train_labels) // batch)
    parts = build_parts(config, splits.spec, steps, torch.device("cpu"), fill=splits.fill)
    x = normalize(splits.train_images[:batch], splits.mean, splits.std)
    precision = resolve_precision(config["train"]["precision"], torch.device("cpu"))
    with FlopCounterMode(display=False) as counter, precision_context(precision, torch.device("cpu")):
        parts.loss(parts.model(x).float(), splits.train_labels[:batch]).backward()
    return counter.get_total_flops(), steps * config["train"]["epochs"], precision


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    startup = {name: startup_seconds(code) for name, code in STARTUP.items()}
    for name, seconds in startup.items():
        print(f"start-up {name:18} {seconds:6.2f} s")
    throughput = {p: matmul_gflops(p) for p in ("fp32", "bf16")}
    print(f"2048x2048 matrix product: fp32 {throughput['fp32']:.0f} GFLOP/s, bf16 {throughput['bf16']:.0f} GFLOP/s")
    flops, steps, precision = step_flops(args.recipe)
    total = flops * steps
    floor = {p: total / (throughput[p] * 1e9) for p in throughput}
    print(f"{args.recipe}: {flops / 1e9:.2f} GFLOP a step x {steps} steps = {total / 1e12:.3f} TFLOP; at the matrix "
          f"rate: {floor['fp32']:.2f} s fp32, {floor['bf16']:.2f} s bf16 (it trains in {precision})")
    figures = {"recipe": args.recipe, "startup_seconds": startup, "matmul_gflops": throughput, "step_flops": flops,
               "steps": steps, "training_flops": total, "precision": precision,
               "training_seconds_at_matmul_rate": floor}
    summary = machine_folder(args.results) / args.recipe / "summary.json"
    if summary.exists():  # what its speedrun measured: the rate its training really ran at
        trained = json.loads(summary.read_text()).get("phase_seconds", {}).get("train")
        if trained:
            figures |= {"measured_train_seconds": trained, "measured_gflops": total / trained / 1e9}
            print(f"its speedrun trained in {trained:.2f} s (median): {figures['measured_gflops']:.0f} GFLOP/s")
        whole = json.loads(summary.read_text()).get("process_seconds", {}).get("median")
        floor_seconds = startup["torch"] + floor[precision]
        if whole:
            figures |= {"floor_seconds": floor_seconds, "process_seconds": whole, "over_floor": whole / floor_seconds}
            print(f"floor: import torch + training at the {precision} rate = {floor_seconds:.2f} s; its whole process "
                  f"(median) {whole:.2f} s = {whole / floor_seconds:.2f}x the floor (goal: 1.2x)")
    path = machine_folder(args.results) / f"floor-{args.recipe}.json"
    write_results(path, ["python", *sys.argv], figures)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

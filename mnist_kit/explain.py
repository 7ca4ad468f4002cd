"""Why the model says what it says: pixel attributions with Captum (the [explain] extra).

Integrated gradients (Sundararajan et al. 2017) integrate the gradient of a class's output along the straight path
from a baseline to the image; their sum over pixels is that output at the image minus at the baseline
(completeness), and Captum reports how far the numerical integral misses it (the convergence delta). The baseline is
the black image in pixel space: every pixel 0 before normalization, (0 - mean) / std after, not a normalized 0
(which is a grey image). Saliency is the plain gradient, cheaper and noisier. Outputs are what the model ends in:
logits, or log-probabilities for a model that ends in LogSoftmax.
"""

from pathlib import Path

import torch
from torch import nn

from mnist_kit.errors import UserError
from mnist_kit.invocation import install_hint
from mnist_kit.record import PLOTS

METHODS = ("ig", "saliency")
STEPS = 64  # integrated gradients' path steps: the delta of a `fast` run is ~1e-3 of the output difference


def require_captum():
    """captum's attribution classes, or a one-line error that says how to install them."""
    try:
        from captum.attr import IntegratedGradients, Saliency
    except ImportError:
        raise UserError(f"explanations need captum: {install_hint('explain')}") from None
    return IntegratedGradients, Saliency


def black_baseline(inputs: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The black image (pixels 0) as the model sees it: (0 - mean) / std everywhere."""
    return torch.full_like(inputs, (0.0 - mean) / std)


def attributions(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, method: str, mean: float,
                 std: float, steps: int = STEPS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-pixel attributions (like `inputs`) of each input's output for its target class, and for integrated
    gradients the convergence delta of each (the sum of its attributions minus the output difference)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    integrated_gradients, saliency = require_captum()
    model.eval()
    inputs = inputs.detach().float().contiguous().requires_grad_(True)
    if method == "saliency":
        return saliency(model).attribute(inputs, target=targets, abs=False).detach(), None
    found, delta = integrated_gradients(model).attribute(
        inputs, baselines=black_baseline(inputs, mean, std), target=targets, n_steps=steps, method="gausslegendre",
        internal_batch_size=8 * steps, return_convergence_delta=True)
    return found.detach(), delta.detach()


def output_gap(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Each target's output at the input minus at the black baseline: what integrated gradients' sum should be."""
    with torch.inference_mode():
        at_input = model(inputs).gather(1, targets[:, None])[:, 0]
        at_black = model(black_baseline(inputs, mean, std)).gather(1, targets[:, None])[:, 0]
    return at_input - at_black


def explain_inputs(predictor, canvases: torch.Tensor, method: str, second: torch.Tensor | None = None,
                   top_only: bool = False) -> dict:
    """Attributions for [0, 1] images (N, 28, 28): for the predicted class and for `second` (default: the runner-up;
    none with `top_only`), with the probabilities and (integrated gradients) the convergence deltas against the
    output differences."""
    if not isinstance(predictor.scores, nn.Module):
        raise UserError(f"{predictor.source}: explanations need the PyTorch model (a run folder, its weights or a Hub "
                        f"folder); an .onnx file is run by onnxruntime, which has no gradients here")
    inputs = predictor.normalized(canvases.float()[:, None])
    probabilities = predictor.probabilities(inputs)
    top2 = probabilities.topk(2, dim=1).indices
    classes = top2[:, :1] if top_only else torch.stack([top2[:, 0], top2[:, 1] if second is None else second], dim=1)
    maps, deltas, gaps = [], [], []
    with predictor.lock:
        for column in classes.T:
            found, delta = attributions(predictor.scores, inputs, column, method, predictor.mean, predictor.std)
            maps.append(found[:, 0])
            if delta is not None:
                deltas.append(delta)
                gaps.append(output_gap(predictor.scores, inputs, column, predictor.mean, predictor.std))
    stacked = {"deltas": torch.stack(deltas, dim=1) if deltas else None,
               "gaps": torch.stack(gaps, dim=1) if gaps else None}
    return {"classes": classes, "probabilities": probabilities, "maps": torch.stack(maps, dim=1), **stacked}


def explain_files(model, images: list, method: str = "ig", out_dir=None) -> list[dict]:
    """For each image file: the 28x28 input and the attribution maps of its predicted class and runner-up, drawn
    into OUT/<stem>-<method>.png (OUT default: RUN/explanations); a file that fails gets an 'error' entry."""
    from mnist_kit.inference import Predictor, open_predictor
    from mnist_kit.plots import explanations_figure, save_png
    from mnist_kit.predict import mnist_like, read_gray

    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    require_captum()
    predictor = model if isinstance(model, Predictor) else open_predictor(model)
    out = Path(out_dir) if out_dir else predictor.source / "explanations"
    results = []
    for image in images:
        try:
            canvas = torch.from_numpy(mnist_like(read_gray(image), str(image))).float()
        except UserError as error:
            results.append({"file": str(image), "error": str(error)})
            continue
        canvas = (canvas * 255).round() / 255  # quantized to bytes, as predict and MNIST's pixels
        found = explain_inputs(predictor, canvas[None], method)
        names = [predictor.classes[i] for i in found["classes"][0].tolist()]
        chances = [found["probabilities"][0, i].item() for i in found["classes"][0].tolist()]
        titles = [[Path(image).name, *(f"{'why' if k == 0 else 'runner-up'} {n} ({p:.1%})"
                                       for k, (n, p) in enumerate(zip(names, chances)))]]
        figure = explanations_figure(canvas[None].numpy(), found["maps"].numpy(), titles,
                                     f"{method}: red pixels raise the class's output, blue lower it")
        entry = {"file": str(image), "digit": names[0], "probability": chances[0], "runner_up": names[1],
                 "runner_up_probability": chances[1]}
        if found["deltas"] is not None:
            entry["delta"] = found["deltas"][0].abs().max().item()
            entry["output_difference"] = found["gaps"][0].abs().min().item()
        path = out / f"{Path(image).stem}-{method}.png"
        try:
            entry["png"] = str(save_png(figure, path))
        except OSError as error:
            raise UserError(f"cannot write {path}: {error.strerror or error}") from None
        results.append(entry)
    return results


def plot_explanations(path, out_dir=None, data_dir=None, count: int = 8, method: str = "ig") -> Path:
    """OUT/explanations.png (OUT default: RUN/plots): the test split's `count` most confident mistakes (12 at most),
    each with the attribution maps of the class it was taken for and of its true class."""
    from mnist_kit.inference import open_run
    from mnist_kit.plots import explanations_figure, save_png
    from mnist_kit.runs import outputs_on_split, run_dataset

    require_captum()
    predictor = open_run(path)
    run = predictor.run
    out = Path(out_dir) if out_dir else run.run_dir / PLOTS
    splits = run_dataset(run, data_dir)
    outputs = outputs_on_split(run, predictor.scores, splits).float()
    confidence, predicted = (outputs / predictor.temperature).softmax(dim=1).max(dim=1)
    wrong = (predicted != splits.test_labels).nonzero().squeeze(1)
    pick = wrong[confidence[wrong].argsort(descending=True)][:min(count, 12)]
    canvases = splits.test_images[pick].float() / 255
    found = explain_inputs(predictor, canvases, method, second=splits.test_labels[pick])
    names = run.classes
    titles = [[f"test image {i}", f"taken for {names[p]} ({found['probabilities'][n, p]:.0%})",
               f"true {names[t]} ({found['probabilities'][n, t]:.0%})"]
              for n, (i, p, t) in enumerate(zip(pick.tolist(), *found["classes"].T.tolist()))]
    figure = explanations_figure(canvases.numpy(), found["maps"].numpy(), titles,
                                 f"the {len(pick)} most confident mistakes of {len(wrong)}: integrated gradients "
                                 f"(red raises the class, blue lowers it)")
    try:
        return save_png(figure, out / "explanations.png")
    except OSError as error:
        raise UserError(f"cannot write plots to {out}: {error.strerror or error}") from error

"""A run folder (or a bare weights file with metadata.json beside it): find it and rebuild its model."""

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mnist_kit.assemble import build_model, check_registered, check_size, model_skeleton
from mnist_kit.atomic import write_json_atomic
from mnist_kit.calibration import recorded_temperature, reliability_bins, scores
from mnist_kit.data import DatasetSpec, Splits, class_counts, load_dataset, normalize, validation_split
from mnist_kit.device import precision_context
from mnist_kit.errors import Notice, UserError
from mnist_kit.evaluate import confusion_matrix, full_report, mean_probability, predict_logits, predict_with_tta
from mnist_kit.export import load_state_dict
from mnist_kit.recipe import Recipe, recipe_from_dict
from mnist_kit.record import (
    METADATA,
    PLOTS,
    PTH,
    SAFETENSORS,
    metadata_path,
    parse_metadata,
    pointed_run,
    weights_intact,
)
from mnist_kit.registry import closest

SPLITS = ("test", "validation")


def eval_file(split: str, tta: bool) -> str:
    """eval.json, eval-tta.json, eval-validation.json, eval-validation-tta.json."""
    return "eval" + ("-validation" if split == "validation" else "") + ("-tta" if tta else "") + ".json"


@dataclass(frozen=True)
class Run:
    """What a trained run left behind: its folder, the weights file to use, and its metadata."""

    run_dir: Path
    weights: Path
    metadata: dict

    @functools.cached_property
    def recipe(self) -> Recipe:
        """The recipe it was trained with (the metadata is upgraded to today's schema when it is read)."""
        return recipe_from_dict(self.metadata["recipe"])

    @property
    def classes(self) -> list[str]:
        return self.metadata["classes"]

    @property
    def spec(self) -> DatasetSpec:
        """The images and classes the model was built for."""
        data = self.metadata.get("data", {})
        return DatasetSpec(tuple(self.metadata["input_shape"]), self.classes, data.get("train_images", 0),
                           data.get("test_images", 0))


def find_run(path: Path | str) -> Run:
    """A run from its folder (model.safetensors, else model.pth; metadata.json, or a Hub folder's config.json) or
    from one of its weights files."""
    path = pointed_run(Path(path))
    if path.is_dir():
        run_dir = path
        weights = next((run_dir / name for name in (SAFETENSORS, PTH) if (run_dir / name).is_file()), None)
        if weights is None:
            raise UserError(f"{path} is not a run folder: it has no {SAFETENSORS} or {PTH}")
    elif path.is_file() and path.suffix in (".safetensors", ".pth"):
        run_dir, weights = path.parent, path
    elif path.exists():
        raise UserError(f"{path} is not a run folder or a .safetensors/.pth weights file")
    else:
        raise UserError(f"no run at {path}")
    meta_path = metadata_path(run_dir)
    if meta_path is None:
        raise UserError(f"{run_dir} is not a run folder: no {METADATA} beside the weights")
    try:
        metadata = parse_metadata(meta_path)
        run = Run(run_dir=run_dir, weights=weights, metadata=metadata)
        run.recipe.config["model"]["name"], run.spec  # noqa: B018 (must exist)
        check_metadata(metadata)
    except (OSError, ValueError, KeyError, TypeError, UserError) as error:
        what = f"{error} is missing" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
        raise UserError(f"{meta_path}: not mnist-kit run metadata ({what})") from None
    return run


def check_metadata(metadata: dict) -> None:
    """What opening a run reads, each of the type it must be (a KeyError names a missing key)."""
    data = metadata["data"]
    for key in ("mean", "std"):
        if isinstance(data[key], bool) or not isinstance(data[key], (int, float)) or not math.isfinite(data[key]):
            raise ValueError(f"data.{key} must be a finite number, got {data[key]!r}")
    if not data["std"] > 0 or not isinstance(data["dataset"], str):
        raise ValueError(f"data.std must be > 0 and data.dataset a name, got {data['std']!r}, {data['dataset']!r}")
    shape, classes = metadata["input_shape"], metadata["classes"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise ValueError(f"input_shape must be 3 positive integers, got {shape!r}")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"classes must be a list of names, got {classes!r}")


class RunWarning(Notice):
    """Something about a run the user should know, that does not stop the command (the CLI prints one line)."""


warnings.simplefilter("always", Notice)  # every run opened says it, not only the first


def weights_check(run: Run, path: Path) -> bool | None:
    """Whether a weights file still has the SHA-256 its run recorded (None: the run recorded none)."""
    return weights_intact(run.metadata, run.run_dir, path)


def load_weights(run: Run) -> tuple[dict, Path]:
    """The run's state dict and the file it came from. A folder's model.safetensors that does not load, or no longer
    matches the SHA-256 recorded at training while model.pth does, gives way to model.pth; either way a warning
    says so. A file that loads but does not match what was recorded is used with a warning."""
    changed = "does not match the SHA-256 recorded when it was written (changed or damaged since)"
    other = run.run_dir / PTH
    spare = other if run.weights == run.run_dir / SAFETENSORS and other.is_file() else None
    intact = weights_check(run, run.weights)  # each file is hashed once
    if spare and intact is False and weights_check(run, spare):
        warnings.warn(f"{run.weights} {changed}; using {spare.name}, which does", RunWarning, stacklevel=2)
        return load_state_dict(spare), spare
    try:
        state = load_state_dict(run.weights)
    except UserError as first:
        if not spare:
            raise
        try:
            state = load_state_dict(spare)
        except UserError as second:
            raise UserError(f"{first}; and the fallback {second}") from second
        warnings.warn(f"{first}; using {spare.name}", RunWarning, stacklevel=2)
        return state, spare
    if intact is False:
        warnings.warn(f"{run.weights} {changed}: its numbers may not be the run's", RunWarning, stacklevel=2)
    return state, run.weights


def build_run_model(run: Run) -> nn.Module:
    """The run's model rebuilt from its recipe through the registries, with its trained weights, in eval mode."""
    return build_run_model_from(run)[0]


def build_run_model_from(run: Run) -> tuple[nn.Module, Path]:
    """The run's model with its trained weights, in eval mode, and the weights file actually used."""
    recipe = run.recipe
    check_registered(recipe.config, str(run.run_dir), parts=("model",))
    skeleton = model_skeleton(recipe.config, run.spec)  # what the metadata asks for, checked before it is built
    if skeleton is not None:
        check_size(skeleton, recipe.config)
    state, used = load_weights(run)  # memory bounded by the file, which exists
    model = skeleton if skeleton is not None else build_model(recipe.config, run.spec)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                if k in state and state[k].shape != v.shape]
    if missing or unexpected or reshaped:
        parts = [f"missing {', '.join(missing[:5])}" if missing else "",
                 f"unexpected {', '.join(unexpected[:5])}" if unexpected else "",
                 f"shape differs: {'; '.join(reshaped[:5])}" if reshaped else ""]
        raise UserError(f"{used} does not fit the recipe's model: " + "; ".join(p for p in parts if p))
    if skeleton is not None:
        model = build_model(recipe.config, run.spec)
    model.load_state_dict(state)
    return model.eval(), used


def run_dataset(run: Run, data_dir: Path | str | None = None) -> Splits:
    """The data set the run was trained on (fetched and verified if needed)."""
    return load_dataset(run.metadata["data"]["dataset"], data_dir)


def split_of(run: Run, splits: Splits, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images, labels) of the run's test split, or of the training images it held out for validation (the
    same ones: data.validation and data.split_seed from its metadata)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose {' or '.join(SPLITS)}" + closest(split, SPLITS))
    if split == "test":
        return splits.test_images, splits.test_labels
    data = run.metadata["data"]
    count = data.get("validation_images") or 0
    if not count:
        raise UserError(f"{run.run_dir} held out no validation images (its recipe has no data.validation): only "
                        f"its test split can be scored")
    _, held = validation_split(splits.train_labels, count, data.get("split_seed", 0), splits.num_classes)
    return splits.train_images[held], splits.train_labels[held]


def outputs_on_split(run: Run, model: nn.Module, splits: Splits, tta: bool = False,
                     split: str = "test", temperature: float = 1.0) -> torch.Tensor:
    """The model's outputs on a whole split, normalized and in the precision of its training; with `tta`, the log
    of the mean probability, softmax(outputs / temperature), over each image and its 8 one-pixel shifts."""
    images = normalize(split_of(run, splits, split)[0], splits.mean, splits.std)
    with precision_context(run.metadata.get("precision", "fp32"), torch.device("cpu")):
        if tta:
            return predict_with_tta(model, images, fill=splits.fill, temperature=temperature)
        return predict_logits(model, images)


def run_temperature(run: Run) -> float | None:
    """The temperature `mnist-kit calibrate` recorded for the run (checked), or None: not calibrated."""
    return recorded_temperature(run.metadata, run.run_dir) if run.metadata.get("calibration") else None


def calibration_report(before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor,
                       temperature: float | None) -> dict:
    """NLL, ECE and Brier score of raw outputs (`before`) and of calibrated ones (`after`: already divided or
    averaged; None when the run is not calibrated)."""
    return {"temperature": temperature, "before": scores(before, labels),
            "after": scores(after, labels) if temperature is not None else None}


def evaluate_run(path: Path | str, data_dir: Path | str | None = None, write: bool = True,
                 tta: bool = False, split: str = "test") -> dict:
    """Evaluate a run's weights on the test split (or on the training images it held out: split="validation"); the
    report also goes to RUN/eval.json (eval-tta.json, eval-validation.json, ...) unless write=False."""
    run = find_run(path)
    model, weights = build_run_model_from(run)
    splits = run_dataset(run, data_dir)
    temperature, labels = run_temperature(run), split_of(run, splits, split)[1]
    outputs = outputs_on_split(run, model, splits, tta, split)
    calibrated = None if temperature is None else \
        outputs_on_split(run, model, splits, tta, split, temperature) if tta else outputs / temperature
    recorded = run.metadata.get("validation_accuracy" if split == "validation" else "test_accuracy")
    # a single model's classes are the same before and after (T scales all of an image's scores alike); averaged
    # views (TTA) are averaged calibrated probabilities, so their classes come from `calibrated`
    report = {"run": str(run.run_dir), "weights": str(weights), "dataset": splits.name, "split": split, "tta": tta,
              "classes": splits.classes, "recorded_accuracy": recorded,
              **full_report(calibrated if tta and calibrated is not None else outputs, labels, splits.classes),
              "calibration": calibration_report(outputs, calibrated, labels, temperature)}
    if write:  # a folder that cannot take the file (read-only, full) keeps the report: it says why instead
        target = run.run_dir / eval_file(split, tta)
        try:
            report["written"] = str(write_json_atomic(target, report))
        except OSError as error:
            report["not_written"] = f"cannot write {target}: {error.strerror or error}"
    return report


def evaluate_ensemble(paths: list[Path | str], data_dir: Path | str | None = None, tta: bool = False) -> dict:
    """Evaluate the mean probability of several runs (trained on the same data set) on its test split: each
    member's calibrated probabilities where it was calibrated (softmax(outputs / T)), its raw ones where not."""
    runs = [find_run(path) for path in paths]
    datasets = sorted({run.metadata["data"]["dataset"] for run in runs})
    if len(datasets) > 1:
        raise UserError(f"an ensemble needs runs of one data set; these were trained on {', '.join(datasets)}")
    splits = run_dataset(runs[0], data_dir)
    members, outputs = [], []
    for run in runs:
        model, weights = build_run_model_from(run)
        temperature = run_temperature(run)
        raw = outputs_on_split(run, model, splits, tta, temperature=temperature or 1.0).float()
        outputs.append((raw if tta else raw / (temperature or 1.0)).log_softmax(dim=1))
        accuracy = (outputs[-1].argmax(dim=1) == splits.test_labels).double().mean().item()
        members.append({"run": str(run.run_dir), "weights": str(weights), "accuracy": accuracy,
                        "temperature": temperature})
    ensemble = mean_probability(outputs)
    return {"runs": [m["run"] for m in members], "members": members, "dataset": splits.name, "tta": tta,
            "classes": splits.classes, **full_report(ensemble, splits.test_labels, splits.classes),
            "calibration": {"members_calibrated": sum(m["temperature"] is not None for m in members),
                            "scores": scores(ensemble, splits.test_labels)}}


def export_run(path: Path | str, fmt: str = "onnx", int8: bool = False, data_dir: Path | str | None = None,
               calibration_images: int = 1000) -> Path:
    """Write the run's model as RUN/model.onnx (the preprocessing in its metadata), and with `int8` also
    RUN/model-int8.onnx, calibrated on training images; returns the last written. (The Hub folder:
    mnist_kit.hub.save_hub_folder.)"""
    from mnist_kit.export import onnx_properties, save_onnx, save_onnx_int8

    if fmt != "onnx":
        raise UserError(f"unknown export format {fmt!r}; known: onnx, hf" + closest(fmt, ("onnx", "hf")))
    run = find_run(path)
    target = run.run_dir / "model.onnx"
    try:
        written = save_onnx(build_run_model(run), tuple(run.metadata["input_shape"]), target,
                            onnx_properties(run.metadata, run.recipe.name, run.run_dir.name))
        if int8:
            images, _ = calibration_split(run, data_dir, calibration_images)
            written = save_onnx_int8(written, run.run_dir / "model-int8.onnx", images)
    except OSError as error:
        raise UserError(f"cannot write beside {target}: {error.strerror or error}") from None
    return written


def calibration_split(run: Run, data_dir, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` normalized training images (evenly spread over the split, none from the test split) to calibrate
    a quantized model on."""
    splits = run_dataset(run, data_dir)
    step = max(1, len(splits.train_labels) // count)
    images = splits.train_images[::step][:count]
    return normalize(images, splits.mean, splits.std), splits.train_labels[::step][:count]


def plot_run(kind: str, path: Path | str, out_dir: Path | str | None = None, data_dir: Path | str | None = None,
             mistakes: bool = False, count: int = 32, seed: int = 0) -> list[Path]:
    """Write one kind of plot (or `all`) for a run as PNG files into out_dir (default RUN/plots)."""
    from mnist_kit.plots import (  # matplotlib only where a plot is made: eval, predict and serve start faster
        PLOT_KINDS,
        calibration_figure,
        classes_figure,
        confusion_figure,
        curves_figure,
        predictions_figure,
        samples_figure,
        save_png,
    )

    kinds = PLOT_KINDS if kind == "all" else (kind,)
    if kind != "all" and kind not in PLOT_KINDS:
        known = (*PLOT_KINDS, "explanations")  # explanations: mnist_kit.explain.plot_explanations (the CLI's plot)
        raise UserError(f"unknown plot {kind!r}; known: {', '.join(known)}, all." + closest(kind, known))
    run = find_run(path)
    out = Path(out_dir) if out_dir else run.run_dir / PLOTS
    figures = {}
    if "curves" in kinds:
        figures["curves"] = curves_figure(run.metadata["history"])
    if set(kinds) & {"samples", "classes", "predictions", "confusion", "calibration"}:
        splits = run_dataset(run, data_dir)
        classes = splits.classes
    if "samples" in kinds:
        pick = torch.randperm(len(splits.train_labels), generator=torch.Generator().manual_seed(seed))[:count]
        figures["samples"] = samples_figure(splits.train_images[pick].numpy(), splits.train_labels[pick].numpy(),
                                            classes)
    if "classes" in kinds:
        figures["classes"] = classes_figure(class_counts(splits.train_labels, len(classes)),
                                            class_counts(splits.test_labels, len(classes)), classes)
    if set(kinds) & {"predictions", "confusion", "calibration"}:
        outputs, temperature = outputs_on_split(run, build_run_model(run), splits).float(), run_temperature(run)
        confidence, predicted = (outputs / (temperature or 1.0)).softmax(dim=1).max(dim=1)
        labels = splits.test_labels
    if "predictions" in kinds:
        if mistakes:
            wrong = (predicted != labels).nonzero().squeeze(1)
            pick = wrong[confidence[wrong].argsort(descending=True)][:count]
            title = f"the {len(pick)} most confident mistakes of {len(wrong)}"
        else:
            pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:count]
            title = "test predictions"
        figures["predictions"] = predictions_figure(
            splits.test_images[pick].numpy(), labels[pick].numpy(), predicted[pick].numpy(),
            confidence[pick].numpy(), classes, title)
    if "confusion" in kinds:
        figures["confusion"] = confusion_figure(confusion_matrix(predicted, labels, len(classes)).tolist(), classes)
    if "calibration" in kinds:
        panels = [("before calibration (raw softmax)" if temperature else "not calibrated (raw softmax)", 1.0)]
        panels += [(f"after: temperature {temperature:.3f}", temperature)] if temperature else []
        figures["calibration"] = calibration_figure(
            [(title, reliability_bins((outputs / t).softmax(dim=1), labels), scores(outputs, labels, t))
             for title, t in panels])
    suffix = "-mistakes" if mistakes else ""
    try:
        return [save_png(fig, out / f"{name}{suffix if name == 'predictions' else ''}.png")
                for name, fig in figures.items()]
    except OSError as error:
        raise UserError(f"cannot write plots to {out}: {error.strerror or error}") from error

"""A model ready to predict, whatever it came from: a run folder (or one of its weights files), a Hub folder, or an
exported .onnx file alone. It knows its preprocessing (mean, std, input shape) and its classes, and answers
probabilities and top-k; `predict`, the server's draw page and its v2 protocol all go through it. No HTTP here.
"""

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mnist_kit.calibration import MAX_TEMPERATURE, MIN_TEMPERATURE, recorded_temperature
from mnist_kit.errors import UserError
from mnist_kit.evaluate import EVAL_BATCH
from mnist_kit.invocation import install_hint
from mnist_kit.verdict import recorded_verdict, verdicts

SIDE = 28  # a model's input is a SIDE x SIDE grey image, as MNIST's (mnist_kit.predict makes them)
MIN_STD = 1e-3  # of pixels in [0, 1]: MNIST's is 0.3081; a std near 0 turns every input into inf and nan


@dataclass
class Predictor:
    """Scores for normalized inputs, with what they need: the normalization, the input shape and the class names.
    One forward pass at a time (`lock`): a pass uses every core."""

    scores: Callable[[torch.Tensor], torch.Tensor]  # normalized (N, *input_shape) -> (N, classes) log-probs or
    # logits: a run's model itself (in eval mode), or an onnxruntime session's run
    mean: float
    std: float
    input_shape: tuple[int, ...]
    classes: list[str]
    name: str  # the recipe's name (the v2 model name by default)
    source: Path  # the run folder or the .onnx file
    run: object = None  # the mnist_kit.runs.Run it was opened from (None for an .onnx file)
    weights: Path | None = None  # the weights file its tensors came from (a run's; None for an .onnx file)
    temperature: float = 1.0  # probabilities are softmax(scores / temperature): `mnist-kit calibrate` fits it
    calibrated: bool = False  # a temperature was fitted on held-out images; if not, probabilities are the raw softmax
    verdict: dict | None = None  # the rule `mnist-kit calibrate` chose (mnist_kit.verdict); None: no verdicts
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def normalized(self, images: torch.Tensor) -> torch.Tensor:
        """Images with pixels in [0, 1] (white ink on black) as the model's inputs."""
        return (images - self.mean) / self.std

    def normalized_canvas(self, canvas: np.ndarray) -> torch.Tensor:
        """A 28x28 [0, 1] image made by mnist_kit.predict as a (1, 1, 28, 28) input, quantized to bytes first as
        MNIST's pixels are."""
        return self.normalized(torch.from_numpy(np.round(canvas * 255) / 255).float())[None, None]

    def probabilities(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, classes) probabilities for normalized inputs (an empty batch gives an empty answer)."""
        return (self.raw_scores(inputs) / self.temperature).softmax(dim=1)

    def scores_in_batches(self, inputs: torch.Tensor, batch: int = EVAL_BATCH) -> torch.Tensor:
        """The scores of many inputs (a whole split), `batch` at a time."""
        with self.lock, torch.inference_mode():
            return torch.cat([self.scores(chunk) for chunk in inputs.split(batch)])

    def raw_scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, classes) outputs of the model itself, before the temperature."""
        if not len(inputs):
            return torch.zeros(0, len(self.classes))
        with self.lock, torch.inference_mode():
            return self.scores(inputs).float()

    def judged(self, raw: torch.Tensor) -> tuple[list[str], torch.Tensor] | None:
        """Each input's verdict ("digit", "unsure", "not a digit") and score from its raw outputs; None for a model
        without a verdict rule (not calibrated)."""
        return verdicts(raw, self.temperature, self.verdict) if self.verdict else None

    def top_k(self, inputs: torch.Tensor, k: int = 3) -> list[dict]:
        """For each input: the most probable class, its probability, the top k, and (a calibrated model) its
        verdict and the verdict's score."""
        raw = self.raw_scores(inputs)
        values, indices = (raw / self.temperature).softmax(dim=1).topk(min(k, len(self.classes)), dim=1)
        answers = [{"digit": self.classes[idx[0]], "probability": val[0].item(),
                    "top_k": [{"digit": self.classes[i], "probability": v.item()} for v, i in zip(val, idx)]}
                   for val, idx in zip(values, indices.tolist())]
        if judged := self.judged(raw):
            for answer, said, score in zip(answers, judged[0], judged[1].tolist()):
                answer.update(verdict=said, verdict_score=score)
        return answers


def open_predictor(path: Path | str, name: str | None = None) -> Predictor:
    """The model at `path` ready to predict: a run folder, its .safetensors/.pth, a Hub folder, or an .onnx file
    written by `mnist-kit export` (run by onnxruntime, preprocessing from its metadata). `name` defaults to the
    recipe's name."""
    path = Path(path)
    return open_onnx(path, name) if path.suffix == ".onnx" else open_run(path, name)


def open_run(path: Path | str, name: str | None = None) -> Predictor:
    """A run folder, one of its weights files, or a Hub folder, ready to predict (with its run and weights file)."""
    from mnist_kit.runs import build_run_model_from, find_run

    run = find_run(path)
    data = run.metadata["data"]
    model, weights = build_run_model_from(run)
    temperature = recorded_temperature(run.metadata, run.run_dir)
    return Predictor(model, data["mean"], data["std"], tuple(run.metadata["input_shape"]), run.classes,
                     name or run.recipe.name, run.run_dir, run, weights, temperature,
                     calibrated=bool(run.metadata.get("calibration")),
                     verdict=recorded_verdict(run.metadata, run.run_dir) if run.metadata.get("calibration") else None)


def not_calibrated_note(predictor: Predictor) -> str:
    """Said once where a model's probabilities are shown: why they are raw (empty for a calibrated model)."""
    if predictor.calibrated:
        return ""
    why = ("its run has no temperature: `mnist-kit calibrate RUN` fits one on the images a run held out "
           "(data.validation); a run trained on every training image cannot be calibrated honestly")
    return f"{predictor.source}: probabilities are the model's raw softmax, not calibrated, and no verdict (digit, " \
           f"unsure, not a digit) is given ({why})"


def open_onnx(path: Path, name: str | None = None) -> Predictor:
    """An .onnx file written by `mnist-kit export RUN --format onnx` (or --int8), from the file alone."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"{path}: an .onnx model runs on onnxruntime: {install_hint('onnx')}") from None
    if not path.is_file():
        raise UserError(f"no ONNX model at {path}")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for a file it cannot read
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: not an ONNX model onnxruntime can run ({first})") from None
    properties = session.get_modelmeta().custom_metadata_map
    try:
        mean, std = float(properties["mnist_kit.mean"]), float(properties["mnist_kit.std"])
        classes, shape = json.loads(properties["mnist_kit.classes"]), json.loads(properties["mnist_kit.input_shape"])
    except KeyError as missing:
        raise UserError(f"{path}: no {missing.args[0]} in its metadata: predict reads models exported by `mnist-kit "
                        f"export RUN --format onnx`, whose metadata says how to preprocess") from None
    except (ValueError, RecursionError) as error:
        raise UserError(f"{path}: unreadable mnist-kit metadata ({str(error)[:100] or type(error).__name__})") from None
    if not (math.isfinite(mean) and math.isfinite(std) and MIN_STD <= std <= 1 and 0 <= mean <= 1):
        raise UserError(f"{path}: its mnist-kit metadata has mean {mean!r} and std {std!r}: pixels in [0, 1] have "
                        f"a mean in [0, 1] and a std in [{MIN_STD}, 1]")
    outputs = session.get_outputs()[0].shape[-1]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)) or \
            (isinstance(outputs, int) and len(classes) != outputs):
        raise UserError(f"{path}: its mnist-kit metadata names {len(classes) if isinstance(classes, list) else 0} "
                        f"classes for a model with {outputs} outputs")
    if shape != [1, SIDE, SIDE]:
        raise UserError(f"{path}: takes images of shape {shape}; predict makes 1x{SIDE}x{SIDE} grey images")
    input_name = session.get_inputs()[0].name

    def scores(inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {input_name: inputs.numpy()})[0])

    temperature = onnx_temperature(properties, path)
    try:
        written = properties.get("mnist_kit.verdict") if temperature else None
        rule = json.loads(written) if written else None
    except (ValueError, RecursionError):
        rule = "unreadable"
    return Predictor(scores, mean, std, tuple(shape), classes, name or properties.get("mnist_kit.recipe", path.stem),
                     path, temperature=temperature or 1.0, calibrated=temperature is not None,
                     verdict=recorded_verdict({"verdict": rule}, path))


def onnx_temperature(properties: dict[str, str], path: Path) -> float | None:
    """The temperature an exported model's metadata records (mnist_kit.temperature), checked; None: none."""
    if "mnist_kit.temperature" not in properties:
        return None
    try:
        temperature = float(properties["mnist_kit.temperature"])
    except ValueError:
        temperature = math.nan
    if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        raise UserError(f"{path}: mnist_kit.temperature is {properties['mnist_kit.temperature'][:40]!r} in its "
                        f"metadata; a calibrated model records a number in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]")
    return temperature

"""What the server answers, as plain functions of a Predictor (mnist_kit.inference): the draw page's top 3 with the
28x28 input the model saw, and the Open Inference Protocol (v2, as KServe, Triton and Seldon speak it) as JSON
tensors. No HTTP here: mnist_kit.serve puts these behind routes.

v2: model metadata lists input `image` (FP32, [N, 1, 28, 28], MNIST-like pixels in [0, 1]: white ink on black,
centred) and `image_file` (BYTES, [N], each an image file in base64, preprocessed here); outputs `probabilities`
(FP32, [N, classes]) and `label` (INT64, [N]), and for a calibrated model `verdict` (BYTES, [N]: "digit", "unsure"
or "not a digit") and `verdict_score` (FP32, [N]: the score its rule thresholds, higher for digits).
"""

import base64
import binascii
import io
import json

import numpy as np
import torch
from PIL import Image

from mnist_kit.errors import UserError
from mnist_kit.inference import Predictor
from mnist_kit.predict import SERVE_MAX_PIXELS, decode_gray, gray_png, image_pixels, mnist_like

MAX_BATCH = 512  # images in one v2 infer request
MAX_LISTS = 65_536  # JSON lists one request may hold
MAX_REQUEST_PIXELS = 64_000_000  # what one request's image files may hold together (16 phone photos, 1,600 at 200x200)


def png_data_url(image: np.ndarray) -> str:
    """A [0, 1] grey image as a PNG data URL."""
    return "data:image/png;base64," + base64.b64encode(gray_png(image)).decode()


def predict_canvas(predictor: Predictor, body: bytes, top_k: int = 3, explain: bool = False) -> dict:
    """What the draw page shows for an image file: the top k, the 28x28 input the model saw, and with `explain`
    the integrated-gradients map of the top class over it (None, with the reason, where it cannot be made)."""
    seen = mnist_like(decode_gray(body, "image", SERVE_MAX_PIXELS), "image")  # a phone's JPEG: decoded at 1/8
    (answer,) = predictor.top_k(predictor.normalized_canvas(seen), top_k)
    shown = {"top": answer["top_k"], "input": png_data_url(seen), "calibrated": predictor.calibrated,
             "verdict": answer.get("verdict")}
    if explain:
        try:
            shown["map"] = png_data_url_rgba(attribution_overlay(predictor, seen))
        except UserError as error:  # no captum, or an .onnx model: the answer stands, the map says why not
            shown["map"], shown["map_error"] = None, str(error)
    return shown


def attribution_overlay(predictor: Predictor, seen: np.ndarray) -> np.ndarray:
    """The input in grey with the top class's integrated gradients over it (red for, blue against) as RGBA bytes."""
    from mnist_kit.explain import explain_inputs

    found = explain_inputs(predictor, torch.from_numpy(np.round(seen * 255) / 255).float()[None], "ig", top_only=True)
    attribution = found["maps"][0, 0].numpy()
    strength = np.clip(attribution / (np.abs(attribution).max() or 1.0), -1, 1)
    grey = 0.35 * seen
    rgb = np.stack([grey + np.clip(strength, 0, 1), grey, grey + np.clip(-strength, 0, 1)], axis=-1)
    return np.concatenate([np.clip(rgb, 0, 1), np.ones((*seen.shape, 1))], axis=-1)


def png_data_url_rgba(image: np.ndarray) -> str:
    """An (H, W, 4) [0, 1] image as a PNG data URL."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8), mode="RGBA").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def output_names(predictor: Predictor) -> tuple[str, ...]:
    """What the model answers: probabilities and label, and a calibrated model's verdict and its score."""
    return ("probabilities", "label", *(("verdict", "verdict_score") if predictor.verdict else ()))


def model_metadata(predictor: Predictor) -> dict:
    """v2 model metadata: the two ways in, the answers."""
    platform = "onnx_onnxv1" if predictor.source.suffix == ".onnx" else "pytorch_safetensors"
    outputs = {"probabilities": ("FP32", [-1, len(predictor.classes)]), "label": ("INT64", [-1]),
               "verdict": ("BYTES", [-1]), "verdict_score": ("FP32", [-1])}
    return {"name": predictor.name, "versions": ["1"], "platform": platform,
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, *predictor.input_shape]},
                       {"name": "image_file", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": name, "datatype": outputs[name][0], "shape": outputs[name][1]}
                        for name in output_names(predictor)]}


def tensor_input(predictor: Predictor, tensor: dict) -> torch.Tensor:
    """A v2 request's input tensor as a normalized model batch."""
    name, datatype, shape, data = (tensor.get(k) for k in ("name", "datatype", "shape", "data"))
    if not isinstance(shape, list) or not shape or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise UserError(f"input {name!r}: shape must be a list of sizes")
    if shape[0] > MAX_BATCH:
        raise UserError(f"input {name!r}: at most {MAX_BATCH} images a request, got {shape[0]}")
    if not isinstance(data, list):
        raise UserError(f"input {name!r}: data must be a JSON list (binary tensors are not accepted here)")
    if name == "image":
        if datatype != "FP32" or shape[1:] != list(predictor.input_shape):
            raise UserError(f"input 'image': expected FP32 of shape [N, {', '.join(map(str, predictor.input_shape))}], "
                            f"got {datatype} {shape}")
        values = pixel_values(data, shape)
        return predictor.normalized(torch.from_numpy(values).view(shape[0], *predictor.input_shape))
    if name == "image_file":
        if datatype != "BYTES" or len(shape) != 1 or len(data) != shape[0]:
            raise UserError(f"input 'image_file': expected BYTES of shape [N] with N base64 strings, got {datatype} "
                            f"{shape} with {len(data)} items")
        files = []
        for i, item in enumerate(data):
            try:
                files.append(base64.b64decode(item, validate=True))
            except (binascii.Error, TypeError, ValueError):
                raise UserError(f"input 'image_file' item {i}: not base64 text") from None
        pixels = sum(image_pixels(raw) for raw in files)  # from the headers, before anything is decoded
        if pixels > MAX_REQUEST_PIXELS:
            raise UserError(f"input 'image_file': {len(files)} images hold {pixels:,} pixels, over the "
                            f"{MAX_REQUEST_PIXELS:,} a request may (send fewer or smaller images a request)")
        batch = [predictor.normalized_canvas(mnist_like(decode_gray(raw, f"image_file {i}", SERVE_MAX_PIXELS),
                                                        f"image_file {i}")) for i, raw in enumerate(files)]
        return torch.cat(batch) if batch else torch.zeros(0, *predictor.input_shape)
    raise UserError(f"unknown input {name!r}; this model takes 'image' (FP32) or 'image_file' (BYTES)")


def pixel_values(data: list, shape: list[int]) -> np.ndarray:
    """A v2 'image' tensor's data (flat or nested JSON numbers, as many as `shape` holds) as float32 pixels, each in
    [0, 1] as the contract says: strings, booleans, numbers too large for a float and anything outside [0, 1] are
    refused."""
    try:
        values = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise UserError("input 'image': data must be a list of numbers (nested lists of one shape)") from None
    if values.dtype.kind not in "iuf":  # strings ('U'), booleans ('b'), huge integers and ragged lists ('O')
        raise UserError(f"input 'image': data must be numbers, got {values.dtype.kind!r} values (strings, booleans, "
                        f"integers too large or lists of different lengths)")
    if values.size != np.prod(shape):
        raise UserError(f"input 'image': {values.size} values for shape {shape}, expected {np.prod(shape)}")
    if any(type(v) is bool for v in np.asarray(data, dtype=object).ravel()):  # [0.5, true] made a float array
        raise UserError("input 'image': data must be numbers, got true or false among them")
    values = values.astype(np.float32).reshape(-1)
    if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
        raise UserError("input 'image': pixels must be finite numbers in [0, 1] (white ink on black, as MNIST)")
    return values


def parse_request(body: bytes) -> dict:
    """A v2 request body as JSON (an object), or one line saying why not. Lists are counted before parsing: 8 MiB
    of `[[],[],...]` took 3.8 s of CPU, holding the GIL (so the event loop too) while Python built them."""
    if (lists := body.count(b"[")) > MAX_LISTS:
        raise UserError(f"the body holds {lists:,} '[', over the {MAX_LISTS:,} a request may (a full batch of "
                        f"{MAX_BATCH} nested 28x28 images needs {MAX_BATCH * 30 + 1:,})")
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        raise UserError("the body is not JSON (a v2 request: {\"inputs\": [...]}), or is nested too deeply") from None
    if not isinstance(request, dict):
        raise UserError("a v2 request is a JSON object: {\"inputs\": [...]}")
    return request


def infer_body(predictor: Predictor, body: bytes) -> dict:
    """A v2 request body in, its answer out: parsing and all (the server runs this off its event loop)."""
    return infer(predictor, parse_request(body))


def infer(predictor: Predictor, request: dict) -> dict:
    """A v2 inference request (JSON tensors) and its response."""
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
        raise UserError("a v2 request has 'inputs': a list of exactly one tensor ('image' or 'image_file')")
    if not isinstance(request["inputs"][0], dict):
        raise UserError("each input is a JSON object with name, datatype, shape and data")
    batch = tensor_input(predictor, request["inputs"][0])
    asked = request.get("outputs") or []
    if not isinstance(asked, list):
        raise UserError("'outputs' must be a list of {\"name\": ...} objects")
    known = output_names(predictor)
    wanted = [o.get("name") if isinstance(o, dict) else None for o in asked] or list(known)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        why = "" if predictor.verdict or unknown[0] not in ("verdict", "verdict_score") else \
            " (a verdict needs a calibrated model: mnist-kit calibrate)"
        raise UserError(f"unknown output {unknown[0]!r}; this model answers {', '.join(map(repr, known))}{why}")
    raw = predictor.raw_scores(batch)
    probabilities = (raw / predictor.temperature).softmax(dim=1)
    outputs = {"probabilities": {"name": "probabilities", "datatype": "FP32", "shape": list(probabilities.shape),
                                 "data": probabilities.flatten().tolist()},
               "label": {"name": "label", "datatype": "INT64", "shape": [len(batch)],
                         "data": probabilities.argmax(dim=1).tolist()}}
    if judged := predictor.judged(raw):
        outputs["verdict"] = {"name": "verdict", "datatype": "BYTES", "shape": [len(batch)], "data": judged[0]}
        outputs["verdict_score"] = {"name": "verdict_score", "datatype": "FP32", "shape": [len(batch)],
                                    "data": judged[1].tolist()}
    answer = {"model_name": predictor.name, "model_version": "1", "outputs": [outputs[n] for n in wanted]}
    if "id" in request:
        answer["id"] = request["id"]
    return answer

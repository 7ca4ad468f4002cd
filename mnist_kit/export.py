"""A run's weights as files: written twice (.pth and .safetensors, atomically), read back safely, and exported
(ONNX, INT8 ONNX). Where they lie in the run folder and what records them: mnist_kit.record."""

import hashlib
import json
import pickle
import platform
import struct
import subprocess
import sys
import warnings
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

import numpy
import safetensors.torch
import torch
from torch import nn

import mnist_kit
from mnist_kit.atomic import torch_bytes, write_bytes_atomic
from mnist_kit.errors import UserError
from mnist_kit.invocation import install_hint
from mnist_kit.record import PTH, SAFETENSORS


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors, detached."""
    return {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}


def checkpoint(model: nn.Module, recipe: dict, test_accuracy: float) -> dict:
    """The .pth dict: the reference pipeline's three keys, plus the resolved recipe to rebuild the model."""
    return {
        "model_state_dict": cpu_state_dict(model),
        "model_architecture": str(model),
        "test_accuracy": test_accuracy,
        "recipe": recipe,  # the recipe in its dict form (mnist_kit.recipe.recipe_to_dict)
    }


def save_weights(run_dir: Path, model: nn.Module, recipe: dict, test_accuracy: float) -> dict[str, str]:
    """model.pth and model.safetensors (the same tensors, key for key) in `run_dir`; returns each file's name and
    the SHA-256 of the bytes written (metadata records them; opening the run checks them)."""
    ckpt = checkpoint(model, recipe, test_accuracy)
    header = {"model_architecture": ckpt["model_architecture"], "test_accuracy": repr(test_accuracy),
              "recipe": json.dumps(recipe)}
    blob = safetensors_bytes(ckpt["model_state_dict"], header)
    files = {PTH: torch_bytes(ckpt), SAFETENSORS: blob}
    for name, data in files.items():
        write_bytes_atomic(run_dir / name, data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A .safetensors file whose bytes depend on its contents only: the same tensors and metadata give the same
    SHA-256 in every process (see canonical_safetensors)."""
    return canonical_safetensors(safetensors.torch.save(tensors, metadata=metadata))


def canonical_safetensors(blob: bytes) -> bytes:
    """A .safetensors file's bytes with its header written again with sorted keys.

    safetensors writes its header's metadata in hash-map order, which changes from one process to the next; the
    tensor data and its offsets are untouched, and the header is padded with spaces to a multiple of 8 bytes as
    the format allows. Also turns a file written before this into the bytes mnist-kit writes now.
    """
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.dumps(json.loads(blob[8:8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + blob[8 + length:]


def load_checkpoint_file(path: Path) -> object:
    """torch.load with weights_only=True: tensors and plain data only, never code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserError(f"{path}: refused: it holds Python objects that could run code when loaded, and "
                        f"weights_only=True loads tensors and plain data only") from error
    except Exception as error:
        raise UserError(f"{path}: not a readable checkpoint (truncated or not a torch file): "
                        f"{' '.join(str(error).split())[:200]}") from error


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a .pth checkpoint (loaded with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no weights file {path}")
    if path.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(path)
        except Exception as error:
            raise UserError(f"{path}: not a readable safetensors file (truncated?): {error}") from error
    ckpt = load_checkpoint_file(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state_dict"), dict):
        raise UserError(f"{path}: not an mnist-kit checkpoint (no model_state_dict)")
    return ckpt["model_state_dict"]


def package_version(name: str) -> str | None:
    """An installed package's version without importing it (torchvision takes seconds to import)."""
    try:
        return installed_version(name)
    except PackageNotFoundError:
        return None


def versions() -> dict[str, str]:
    """Versions of what produced a run."""
    return {"mnist_kit": mnist_kit.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": package_version("torchvision"), "numpy": numpy.__version__, "platform": platform.platform()}


def git_commit() -> str | None:
    """The source tree's git commit (with '-dirty' if changed), or None outside a git checkout."""
    source = Path(mnist_kit.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def command_line() -> list[str]:
    """How this process was started."""
    program = Path(sys.argv[0]).name
    return ["mnist-kit" if program == "__main__.py" else program, *sys.argv[1:]]


def onnx_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """The model (in eval mode) as ONNX with a dynamic batch dimension: input 'image', output 'scores'; with
    PyTorch's current exporter (torch.export, dynamo=True)."""
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own progress
            program = torch.onnx.export(model, (torch.zeros(2, *input_shape),), dynamo=True, input_names=["image"],
                                        output_names=["scores"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                        verbose=False)
    except ModuleNotFoundError as error:
        raise UserError(f"ONNX export needs the onnx extra: {install_hint('onnx')} ({error})") from error
    return program.model_proto.SerializeToString()


def with_metadata(onnx_model: bytes, properties: dict[str, str]) -> bytes:
    """ONNX bytes with `properties` as the model's metadata_props (what a user of the file alone needs)."""
    import onnx

    proto = onnx.load_from_string(onnx_model)
    del proto.metadata_props[:]
    for key, value in properties.items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def onnx_properties(metadata: dict, recipe_name: str, run_name: str) -> dict[str, str]:
    """How to feed and read the model: normalization, input shape, class names, the recipe and run it came from, and
    a calibrated run's temperature (probabilities are softmax(outputs / temperature)) and verdict rule."""
    data, calibration = metadata["data"], metadata.get("calibration")
    return {"mnist_kit.preprocessing": "grey 28x28, white ink on black, pixel / 255, then (x - mean) / std",
            "mnist_kit.mean": repr(data["mean"]), "mnist_kit.std": repr(data["std"]),
            "mnist_kit.input_shape": json.dumps(metadata["input_shape"]),
            "mnist_kit.classes": json.dumps(metadata["classes"]),
            "mnist_kit.output": "scores: log-probabilities or logits per class (softmax gives probabilities)",
            "mnist_kit.recipe": recipe_name, "mnist_kit.run": run_name,
            "mnist_kit.test_accuracy": repr(metadata.get("test_accuracy")), "mnist_kit.version": mnist_kit.__version__,
            # a property, not a division folded into the graph: the graph's outputs stay the model's own scores
            **({"mnist_kit.temperature": repr(calibration["temperature"])}
               if isinstance(calibration, dict) and "temperature" in calibration else {}),
            **({"mnist_kit.verdict": json.dumps(metadata["verdict"])} if metadata.get("verdict") else {})}


def save_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path,
              properties: dict[str, str] | None = None) -> Path:
    """model.onnx: the exported model, with `properties` in its metadata, written atomically."""
    blob = onnx_bytes(model, input_shape)
    return write_bytes_atomic(path, with_metadata(blob, properties) if properties else blob)


class CalibrationImages:
    """onnxruntime's calibration reader: batches of normalized training images."""

    def __init__(self, images: torch.Tensor, batch: int = 100):
        self.batches = iter(images.split(batch))

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {"image": batch.numpy()}


def save_onnx_int8(float_path: Path, path: Path, calibration: torch.Tensor) -> Path:
    """An INT8 copy of an exported model (static quantization, QDQ, per-channel weights, calibrated on
    `calibration`: normalized training images), written atomically; the metadata carries over."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)  # fold BatchNorm, infer shapes
        quantized = Path(folder) / "int8.onnx"
        quantize_static(str(prepared), str(quantized), CalibrationImages(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        proto = onnx.load(str(quantized))
    source = onnx.load(str(float_path), load_external_data=False)
    del proto.metadata_props[:]
    for entry in source.metadata_props:
        proto.metadata_props.add(key=entry.key, value=entry.value)
    proto.metadata_props.add(key="mnist_kit.quantization", value=f"int8 static QDQ per-channel, MinMax over "
                                                                  f"{len(calibration)} training images")
    return write_bytes_atomic(path, proto.SerializeToString())

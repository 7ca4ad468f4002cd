"""Where and in what precision the numbers are computed: device selection and bfloat16 autocast."""

import os
import platform
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from mnist_kit.errors import UserError


def select_device(requested: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; a named device must be available."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device = {requested!r} but CUDA is not available here; use auto or cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise UserError("train.device = 'mps' but MPS is not available here; use auto or cpu")
    return torch.device(requested)


def cpu_model() -> str:
    """The CPU's model name, as the operating system tells it (another CPU gives other weights for the same seed:
    results say where they came from); the machine type where it tells none."""
    try:
        if sys.platform == "darwin":
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip() or platform.machine()
        if sys.platform == "win32":
            import winreg

            key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\CentralProcessor\0")
            return str(winreg.QueryValueEx(key, "ProcessorNameString")[0]).strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):  # x86; most ARM kernels do not say
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


# The instruction sets that decide how fast training runs here, best last, as torch itself detects them (on any
# operating system): bf16 matrix products are native with AVX-512 BF16 or AMX and emulated (slower than fp32)
# without; fp32 runs about 1.5-2x faster with AVX-512 than with AVX2 alone.
CPU_FEATURES = (("AVX2", "_is_avx2_supported"), ("AVX-512", "_is_avx512_supported"),
                ("AVX-512 BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))


def cpu_features() -> list[str]:
    """The CPU's speed-deciding instruction sets that torch finds here: AVX2, AVX-512, AVX-512 BF16, AMX."""
    return [name for name, check in CPU_FEATURES if getattr(torch.cpu, check, lambda: False)()]


def cpu_numbers() -> dict:
    """Vendor, family and model numbers where the operating system tells them (Linux x86): they tell two CPUs
    with the same generic name apart (an "AMD EPYC" of family 25 model 17 is Zen 4, model 1 is Zen 3)."""
    found = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "vendor_id":
                found["vendor"] = value
            elif key in ("cpu family", "model") and value.isdigit():
                found["family" if key == "cpu family" else "model"] = int(value)
            elif not line.strip() and found:
                break  # the first processor is enough
    except OSError:
        pass
    return found


def machine_kind(cpu: str, cores: int | None, features: list[str], gpu: str | None = None) -> str:
    """The machine in words, as figures name it: '2-core AMD EPYC with AVX-512 BF16', '2-core AMD EPYC with AVX2
    (no AVX-512)', or the GPU's name."""
    if gpu:
        return gpu
    if not features:
        best = "without AVX2"
    else:
        best = f"with {features[-1]}" + (" (no AVX-512)" if features[-1] == "AVX2" else "")
    return f"{cores}-core {cpu} {best}"


def machine(device: torch.device) -> dict:
    """Where a run's numbers were computed: the CPU (name, vendor, family and model, cores, the instruction sets
    that decide speed), the GPU's name when it trained on one, and the machine kind in words."""
    cpu, cores, features = cpu_model(), os.cpu_count(), cpu_features()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": cpu, **cpu_numbers(), "cores": cores, "features": features, "gpu": gpu,
            "kind": machine_kind(cpu, cores, features, gpu)}


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), as torch detects it on any operating
    system; elsewhere bf16 would be emulated, slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(requested: str, device: torch.device) -> str:
    """'auto' is bf16 where the device computes it natively (recent CUDA GPUs, bf16 CPUs), else fp32."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def precision_context(precision: str, device: torch.device):
    """Autocast to bfloat16 (matrix products and convolutions; the rest stays float32), or nothing.

    Wrap each forward pass alone while training: a longer region keeps reusing its cached bf16 copy of
    weights the optimizer has since changed.
    """
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()

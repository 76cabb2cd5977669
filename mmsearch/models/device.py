"""Where a model runs and at what precision: "auto" picks CUDA when present, else the CPU.

Precision "auto": fp16 on CUDA; on the CPU bf16 when the CPU computes it natively (AMX or
AVX-512 BF16, detected at run time) and the model is big enough to gain from it, else fp32.
On the CPU bf16 means the model is *cast* once (`model.to(torch.bfloat16)`): measured on such a
CPU, a cast ViT-B-32 encodes 4x faster than fp32, while `torch.autocast` under
`torch.inference_mode()` re-casts the weights at every call and was slower than fp32.

Precision "int8" (CPU only; what "auto" picks for a big ViT on a CPU without native bf16): the
image transformer's linear layers are quantised dynamically (int8 weights, activations quantised
per batch); the text tower stays fp32, so queries and tag prompts give the same vectors as fp32.
`benchmarks/precision_agreement.py` and `benchmarks/int8_trained_vit.py` measure its speed and
its agreement with fp32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import TYPE_CHECKING, Any

from mmsearch.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic
BF16_MIN_PARAMS = 20_000_000
"""Below this many parameters "auto" keeps fp32 on the CPU: a small model (`tiny`, 4.6M) encodes
hundreds of pictures a second either way, decoding is its limit, and fp32 keeps its vectors
identical on every machine."""


def resolve_device(device: str = "auto") -> str:
    """Turn "auto"/"cpu"/"cuda"/"cuda:N" into a usable torch device string, or say why not."""
    import torch

    wanted = (device or "auto").strip().lower()
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(wanted)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from exc
    if parsed.type == "cuda":
        _check_cuda(device, parsed.index)
    return str(parsed)


def _check_cuda(device: str, index: int | None) -> None:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(
            f"Device {device!r} was asked for, but no CUDA GPU is usable here. "
            "Use --device cpu, or --device auto to take a GPU only when there is one."
        )
    if index is not None and index >= count:
        raise ConfigError(
            f"Device {device!r} was asked for, but this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1})."
        )


def resolve_precision(
    precision: str, device: str, params: int | None = None, int8_ok: bool = False
) -> str:
    """Auto means fp16 on CUDA (CLIP inference loses nothing that matters); on the CPU, for a
    model of at least `BF16_MIN_PARAMS` parameters, bf16 where the CPU has native bf16, else int8
    where the model's image tower is a transformer (`int8_ok`); fp32 otherwise (also while
    `params` is not known yet)."""
    wanted = (precision or "auto").lower()
    if wanted not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    if wanted == "int8" and device.startswith("cuda"):
        raise ConfigError(
            "Precision int8 runs on the CPU only; on a GPU use fp16 (or auto), or --device cpu."
        )
    if wanted != "auto":
        return wanted
    if device.startswith("cuda"):
        return "fp16"
    if params is None or params < BF16_MIN_PARAMS:
        return "fp32"
    if cpu_has_native_bf16():
        return "bf16"
    return "int8" if int8_ok else "fp32"


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX-512 BF16), read from the CPU flags.

    `MMSEARCH_CPU_BF16=0|1` overrides the detection (to compare, or for a CPU that hides flags).
    """
    forced = os.environ.get("MMSEARCH_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return bool(cpu_flags() & set(BF16_CPU_FLAGS))


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cast_for_precision(model: Any, device: str, precision: str) -> Any:
    """Cast the weights where that is how the precision runs: bf16 on the CPU, int8 image-tower
    linears on the CPU. CUDA keeps fp32 weights under autocast, and fp32 stays as it is."""
    import torch

    if torch.device(device).type != "cpu":
        return model
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        quantize_image_tower(model)
    return model


def quantize_image_tower(model: Any) -> None:
    """Swap the image tower's transformer `nn.Linear` layers for dynamically quantised int8 ones,
    in place.

    Dynamic quantisation needs no calibration data: weights are int8 once, each batch's
    activations are scaled on the fly. In open_clip's ViT, attention's fused input projection is a
    bare parameter and torch excludes its output projection, so the MLPs (two thirds of the matrix
    work) run in int8. Only a transformer image tower qualifies: a ResNet tower (`tiny`) is
    convolutions, and its attention pool reads its linear weights directly. The text tower is
    left alone (queries stay exact)."""
    import warnings

    import torch

    blocks = int8_target(model)
    if blocks is None:
        raise ConfigError(
            "Precision int8 speeds up a transformer (ViT) image tower; this model's image tower "
            "is not one. Use --precision fp32 (or auto)."
        )
    with warnings.catch_warnings():  # torch.ao's eager API warns of its move to torchao
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(
            blocks, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )


def int8_target(model: Any) -> Any:
    """The module `quantize_image_tower` converts: open_clip's ViT `visual.transformer`, or a timm
    tower's `visual.trunk`; None for any other image tower."""
    visual = getattr(model, "visual", None)
    for name in ("transformer", "trunk"):
        module = getattr(visual, name, None)
        if module is not None:
            return module
    return None


def input_dtype(model: Any) -> torch.dtype:
    """The floating dtype a (possibly cast) model takes its pixels in."""
    import torch

    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager[object]:
    """Mixed precision around a forward pass; a no-op for fp32 so the CPU path stays exact, and
    for bf16 on the CPU, which runs a cast model (`cast_for_precision`) instead."""
    import torch

    if precision in ("fp32", "int8") or (precision == "bf16" and torch.device(device).type == "cpu"):
        return contextlib.nullcontext()
    dtype: torch.dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)

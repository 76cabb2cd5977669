"""Where a model runs and at what precision: "auto" picks CUDA when present, else the CPU."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from mmsearch.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


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


def resolve_precision(precision: str, device: str) -> str:
    """Auto means fp16 on CUDA (CLIP inference loses nothing that matters) and fp32 elsewhere."""
    wanted = (precision or "auto").lower()
    if wanted not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    if wanted == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    return wanted


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager[object]:
    """Mixed precision around a forward pass; a no-op for fp32 so the CPU path stays exact."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype: torch.dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)

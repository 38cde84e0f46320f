"""Choosing the torch device and dtype: CUDA, then MPS, then CPU."""

from __future__ import annotations

import logging
import os

import torch

from .errors import OptionError

#: Environment variable that overrides automatic device selection.
DEVICE_ENV = "RVC_DEVICE"

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device to run on.

    `None` or "auto" picks CUDA, then MPS, then CPU (after `$RVC_DEVICE`, if set).
    An explicit device that is not available raises `OptionError`.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as e:
        raise OptionError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("device 'cuda' was asked for but CUDA is not available; use 'cpu' or 'auto'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError("device 'mps' was asked for but MPS is not available; use 'cpu' or 'auto'")
    return resolved


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Map a precision name ("fp32", "fp16", "bf16") to a dtype valid on `device`.

    fp32 is the exact path. fp16 is offered on CUDA; bf16 on CPU (AMX/AVX-512) and CUDA.
    """
    try:
        dtype = _DTYPES[precision]
    except KeyError as e:
        raise OptionError(f"unknown precision {precision!r}; use one of {sorted(_DTYPES)}") from e
    if dtype == torch.float16 and device.type == "cpu":
        raise OptionError("fp16 is not supported on the CPU; use fp32 (exact) or bf16 (fast)")
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning(
            "bf16 on this CPU (no AVX512-BF16/AMX) runs emulated and is many times slower "
            "than fp32; use fp32 here"
        )
    return dtype


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels here (AVX512-BF16 or AMX); else bf16 is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False

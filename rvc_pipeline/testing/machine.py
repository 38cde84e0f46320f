"""The machine a benchmark or load test ran on, in the words its report prints.

    machine_line()            "AMD EPYC, 2 cores, 24 GiB RAM, no GPU (Linux 6.1)"
    cpu_flags(("avx2", ...))  {"avx2": True, ...} from /proc/cpuinfo (all False elsewhere)
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Iterable

#: CPU flags that decide whether bf16 is native (oneDNN's AVX512-BF16 / AMX kernels) or emulated.
BF16_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo_field(name: str) -> str | None:
    """The first `name : value` of /proc/cpuinfo, or None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else the architecture."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags(names: Iterable[str] = BF16_FLAGS) -> dict[str, bool]:
    """Whether the CPU reports each flag (all False where /proc/cpuinfo is absent)."""
    present = set((_cpuinfo_field("flags") or "").split())
    return {name: name in present for name in names}


def memory_gib() -> float | None:
    """Physical memory in GiB, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def gpu_name() -> str:
    """The first CUDA device's name, "no GPU", or "GPU unknown" when torch cannot tell."""
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # a broken driver must not stop a report
        return "GPU unknown"


def machine_line() -> str:
    """CPU model, cores, memory and GPU of this machine, with the OS."""
    mem = memory_gib()
    mem_text = f", {mem:.0f} GiB RAM" if mem is not None else ""
    return f"{cpu_model()}, {os.cpu_count()} cores{mem_text}, {gpu_name()} ({platform.system()} {platform.release()})"


def cpu_flags_line(names: Iterable[str] = BF16_FLAGS) -> str:
    """"CPU flags: avx2 yes, avx512f no, ..." for a report."""
    return "CPU flags: " + ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in cpu_flags(names).items())

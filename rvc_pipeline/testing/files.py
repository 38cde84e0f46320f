"""Atomic file writes for the model writers: a temporary file in the same folder, then a rename.

Readers never see a half-written file, and writers racing on one path (several replicas
writing the demo assets) each replace it with a whole one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it to `path` (mode 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_torch(path: str | Path, obj: Any) -> Path:
    """`torch.save(obj, path)`, atomically; the same object gives the same bytes at any path."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # through a stream, so the temporary name is not recorded in the zip
            torch.save(obj, f)

    return atomic_write(path, write)

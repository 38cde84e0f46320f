"""RVC's synthesizer: content features (+ F0) -> waveform (rvc-formats.md §2)."""

from __future__ import annotations

from .config import STANDARD_CONFIGS, SynthesizerConfig
from .synthesizer import Synthesizer, build_synthesizer, export_state_dict
from .weight_norm import fold_weight_norm

__all__ = [
    "STANDARD_CONFIGS",
    "Synthesizer",
    "SynthesizerConfig",
    "build_synthesizer",
    "export_state_dict",
    "fold_weight_norm",
]

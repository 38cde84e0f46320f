"""Shared pieces of the F0 extractors: constants, the extractor interface, frame fitting.

Every extractor works on 16 kHz mono float32 audio and reports one F0 value (Hz) per
10 ms frame (hop 160), 0 meaning unvoiced, for exactly the `p_len` frames the pipeline
asks for (rvc-formats.md §5.2 step 6: p_len = len(padded audio) // 160).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..constants import SAMPLE_RATE  # the rate every extractor expects
from ..constants import WINDOW as HOP_LENGTH  # samples per F0 frame: 10 ms at 16 kHz

#: Search range of every classic/crepe extractor, Hz (RVC `f0_min = 50`, `f0_max = 1100`).
F0_MIN = 50.0
F0_MAX = 1100.0
#: Below this many samples (one 1024-point analysis window, 64 ms) no extractor has a
#: single full frame to look at; such audio is reported as unvoiced.
MIN_SAMPLES = 1024


class F0Extractor(ABC):
    """One pitch-estimation method with its model (if any) already loaded.

    Implementations must be safe to call from several threads at once: no per-call
    mutation of shared state once constructed.
    """

    #: Registry name ("pm", "harvest", ...).
    name: str = ""

    @abstractmethod
    def extract(self, audio16k: np.ndarray, p_len: int, filter_radius: int) -> np.ndarray:
        """F0 of `audio16k` ((n_samples,) float32 at 16 kHz) as (p_len,) Hz, 0 = unvoiced."""


def fit_right(f0: np.ndarray, p_len: int) -> np.ndarray:
    """Truncate to `p_len` frames, or zero-pad on the right (frames past the end are unvoiced).

    This is what RVC does for harvest, crepe, rmvpe and fcpe: their first frame is
    centred on sample 0, so the frames already line up with the pipeline's grid and
    only the tail differs (they return n_samples // 160 + 1 frames).
    """
    f0 = np.asarray(f0, dtype=np.float32).reshape(-1)
    if f0.shape[0] >= p_len:
        return f0[:p_len]
    return np.pad(f0, (0, p_len - f0.shape[0]))


def fit_centered(f0: np.ndarray, p_len: int) -> np.ndarray:
    """Zero-pad `f0` to `p_len` frames, (p_len - n + 1) // 2 of them on the left (RVC's pm rule).

    Praat's first frame sits half an analysis window into the signal, so RVC centres
    its shorter track; a track that is already long enough is truncated on the right.
    """
    f0 = np.asarray(f0, dtype=np.float32).reshape(-1)
    missing = p_len - f0.shape[0]
    if missing <= 0:
        return f0[:p_len]
    left = (missing + 1) // 2
    return np.pad(f0, (left, missing - left))


def clean_f0(f0: np.ndarray) -> np.ndarray:
    """Float32 copy with NaN/Inf and negative values set to 0 (unvoiced)."""
    f0 = np.asarray(f0, dtype=np.float32).copy()
    f0[~np.isfinite(f0) | (f0 < 0)] = 0.0
    return f0

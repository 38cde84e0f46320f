"""F0 post-processing shared by every method: key shift and coarse quantisation.

rvc-formats.md §5.3 "Post-processing": f0 *= 2^(key/12), then the coarse pitch index
fed to the synthesizer's pitch embedding is a mel-scale quantisation into 1..255.
"""

from __future__ import annotations

import numpy as np

from .base import F0_MAX, F0_MIN

#: Mel value of the lowest / highest searched F0: 1127·ln(1 + f/700) at 50 Hz and
#: 1100 Hz (77.755 and 1064.408; RVC `f0_mel_min`, `f0_mel_max`).
MEL_MIN = 1127.0 * np.log(1.0 + F0_MIN / 700.0)
MEL_MAX = 1127.0 * np.log(1.0 + F0_MAX / 700.0)
#: Coarse pitch bins: 1 is unvoiced (and the floor), 255 the ceiling (256-entry embedding).
COARSE_MIN = 1
COARSE_MAX = 255


def shift_f0(f0: np.ndarray, semitones: float) -> np.ndarray:
    """Transpose F0 (Hz, any shape) by `semitones`; unvoiced frames (0) stay 0. float32."""
    f0 = np.asarray(f0, dtype=np.float32)
    return (f0 * np.float32(2.0 ** (float(semitones) / 12.0))).astype(np.float32)


def coarse_f0(f0: np.ndarray) -> np.ndarray:
    """Quantise F0 (Hz, any shape) to RVC's pitch indices: int64 in [1, 255], 0 Hz -> 1.

    f_mel = 1127·ln(1 + f/700); where f_mel > 0 it becomes
    (f_mel - MEL_MIN)·254/(MEL_MAX - MEL_MIN) + 1; then clipped to [1, 255] and rounded
    half-to-even with `np.rint` (RVC's `get_f0`). Computed in float64.
    """
    f0 = np.asarray(f0, dtype=np.float64)
    f0 = np.where(np.isfinite(f0) & (f0 > 0), f0, 0.0)
    f0_mel = 1127.0 * np.log(1.0 + f0 / 700.0)
    voiced = f0_mel > 0
    f0_mel[voiced] = (f0_mel[voiced] - MEL_MIN) * (COARSE_MAX - 1) / (MEL_MAX - MEL_MIN) + 1
    f0_mel = np.clip(f0_mel, COARSE_MIN, COARSE_MAX)
    return np.rint(f0_mel).astype(np.int64)

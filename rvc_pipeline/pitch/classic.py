"""Signal-processing F0 extractors: Praat autocorrelation ("pm") and WORLD ("harvest", "dio").

Parameters follow rvc-formats.md §5.3 (RVC-old `Pipeline.get_f0`):

- pm: `parselmouth.Sound(x, 16000).to_pitch_ac(time_step=0.01, voicing_threshold=0.6,
  pitch_floor=50, pitch_ceiling=1100)`, centred zero padding to p_len.
- harvest: `pyworld.harvest(x, 16000, f0_floor=50, f0_ceil=1100, frame_period=10)`
  refined by `pyworld.stonemask`; a 3-point median filter when filter_radius > 2
  (the radius only gates the filter, it never sets its size).
- dio: not in RVC itself (Mangio/Applio forks); the same call shape as harvest with
  `pyworld.dio` and the same filter gating.

WORLD returns n_samples // 160 + 1 frames; they are truncated / zero-padded on the right.
"""

from __future__ import annotations

import threading

import numpy as np
from scipy import signal

from .base import F0_MAX, F0_MIN, HOP_LENGTH, SAMPLE_RATE, F0Extractor, fit_centered, fit_right

#: WORLD frame period in milliseconds: one frame per 160 samples at 16 kHz.
FRAME_PERIOD_MS = 1000.0 * HOP_LENGTH / SAMPLE_RATE
#: Praat's autocorrelation voicing threshold used by RVC.
PM_VOICING_THRESHOLD = 0.6
#: Median-filter length RVC applies to WORLD tracks; `filter_radius` > this-1 enables it.
MEDFILT_KERNEL = 3
MEDFILT_MIN_RADIUS = 3

# Praat keeps process-wide state; serialise calls into it rather than trust re-entrancy.
_PRAAT_LOCK = threading.Lock()


class PraatPitch(F0Extractor):
    """Praat's autocorrelation pitch tracker (RVC "pm")."""

    name = "pm"

    def __init__(self) -> None:
        import parselmouth  # imported here so the package imports without it

        self._parselmouth = parselmouth

    def extract(self, audio16k: np.ndarray, p_len: int, filter_radius: int) -> np.ndarray:
        with _PRAAT_LOCK:
            sound = self._parselmouth.Sound(np.asarray(audio16k, dtype=np.float64), SAMPLE_RATE)
            pitch = sound.to_pitch_ac(
                time_step=HOP_LENGTH / SAMPLE_RATE,
                voicing_threshold=PM_VOICING_THRESHOLD,
                pitch_floor=F0_MIN,
                pitch_ceiling=F0_MAX,
            )
            f0 = pitch.selected_array["frequency"]
        return fit_centered(f0, p_len)


class WorldPitch(F0Extractor):
    """WORLD's harvest or dio, refined with stonemask (RVC "harvest"; fork "dio")."""

    def __init__(self, algorithm: str) -> None:
        import pyworld  # imported here so the package imports without it

        if algorithm not in ("harvest", "dio"):
            raise ValueError(f"unknown WORLD algorithm {algorithm!r}")
        self.name = algorithm
        self._pyworld = pyworld
        self._track = pyworld.harvest if algorithm == "harvest" else pyworld.dio

    def extract(self, audio16k: np.ndarray, p_len: int, filter_radius: int) -> np.ndarray:
        x = np.ascontiguousarray(audio16k, dtype=np.float64)
        f0, t = self._track(
            x, fs=SAMPLE_RATE, f0_floor=F0_MIN, f0_ceil=F0_MAX, frame_period=FRAME_PERIOD_MS
        )
        f0 = self._pyworld.stonemask(x, f0, t, SAMPLE_RATE)
        if filter_radius >= MEDFILT_MIN_RADIUS:
            f0 = signal.medfilt(f0, MEDFILT_KERNEL)
        return fit_right(f0, p_len)

"""`PitchEstimator`: one entry point for every F0 method, with models loaded once and cached.

Unvoiced frames stay at 0 Hz. This follows classic RVC and Applio, which feed the raw
track to the synthesizer; RVC-2026 instead fills unvoiced gaps with `np.interp`
(rvc-formats.md §5.3 post-processing step 1). Keeping the zeros lets `protect` see
unvoiced frames and keeps breaths and consonants unpitched.

Frame contract (§5.2 step 6): the pipeline passes the whole reflect-padded 16 kHz signal
and p_len = n_samples // 160; every method returns exactly p_len frames of 10 ms.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..constants import PITCH_METHODS  # every method name `estimate` accepts
from ..device import resolve_device
from ..errors import AssetNotFoundError, AudioError, OptionError
from .base import MIN_SAMPLES, F0Extractor, clean_f0
from .rmvpe import RMVPE_HINT

#: RVC-old's UI default (RVC-2026 defaults to rmvpe, which needs a separate download).
DEFAULT_PITCH_METHOD = "harvest"

#: Python package each method needs (import name, pip name).
_PACKAGES = {
    "pm": ("parselmouth", "praat-parselmouth"),
    "harvest": ("pyworld", "pyworld"),
    "dio": ("pyworld", "pyworld"),
    "crepe": ("torchcrepe", "torchcrepe"),
    "crepe-tiny": ("torchcrepe", "torchcrepe"),
    "rmvpe": ("librosa", "librosa"),
    "fcpe": ("torchfcpe", "torchfcpe"),
}


def check_method(method: str) -> str:
    """Normalise a method name; OptionError listing the valid names if it is unknown."""
    name = str(method).strip().lower()
    if name not in PITCH_METHODS:
        raise OptionError(f"unknown pitch method {method!r}; valid methods are {', '.join(PITCH_METHODS)}")
    return name


class PitchEstimator:
    """F0 extraction by name. Models load lazily, once per estimator; `estimate` is thread-safe.

    `device`: torch device for crepe, rmvpe and fcpe (None = auto). `rmvpe_path`: the
    user's `rmvpe.pt`; without it "rmvpe" is unavailable.
    """

    def __init__(self, *, device: str | torch.device | None = None, rmvpe_path: str | Path | None = None) -> None:
        self.device = resolve_device(device)
        self.rmvpe_path = Path(rmvpe_path) if rmvpe_path is not None else None
        self._extractors: dict[str, F0Extractor] = {}
        self._load_lock = threading.Lock()

    def available_methods(self) -> list[str]:
        """Methods usable now: their package is installed and, for rmvpe, the weights exist."""
        return [m for m in PITCH_METHODS if self._unavailable_reason(m) is None]

    def estimate(self, audio16k: np.ndarray, p_len: int, method: str, *, filter_radius: int = 3) -> np.ndarray:
        """F0 of `audio16k` ((n_samples,) float32 mono at 16 kHz) -> (p_len,) float32 Hz, 0 = unvoiced.

        `filter_radius` > 2 enables the 3-point median filter of harvest/dio (RVC);
        other methods ignore it. Audio shorter than 1024 samples is all unvoiced.
        """
        name = check_method(method)
        if isinstance(p_len, bool) or not isinstance(p_len, (int, np.integer)) or p_len < 0:
            raise OptionError(f"p_len must be a non-negative frame count, got {p_len!r}")
        audio = np.asarray(audio16k, dtype=np.float32)
        if audio.ndim != 1:
            raise AudioError(f"pitch estimation needs mono audio of shape (n_samples,), got {audio.shape}")
        if not np.all(np.isfinite(audio)):
            raise AudioError("audio contains NaN or infinite samples")
        extractor = self._extractor(name)  # before the short-input shortcut: errors stay consistent
        if p_len == 0 or audio.shape[0] < MIN_SAMPLES:
            return np.zeros(int(p_len), dtype=np.float32)
        f0 = clean_f0(extractor.extract(audio, int(p_len), int(filter_radius)))
        assert f0.shape == (p_len,), (name, f0.shape, p_len)
        return f0

    def close(self) -> None:
        """Drop every loaded model (they reload on the next call)."""
        with self._load_lock:
            self._extractors.clear()

    def _unavailable_reason(self, method: str) -> str | None:
        module, pip_name = _PACKAGES[method]
        if importlib.util.find_spec(module) is None:
            return f"pitch method {method!r} needs the {pip_name} package (pip install {pip_name})"
        if method == "rmvpe":
            if self.rmvpe_path is None:
                return f"pitch method 'rmvpe' needs rmvpe.pt, which is not bundled; {RMVPE_HINT}"
            if not self.rmvpe_path.is_file():
                return f"RMVPE weights not found at {self.rmvpe_path}; {RMVPE_HINT}"
        return None

    def _extractor(self, name: str) -> F0Extractor:
        extractor = self._extractors.get(name)
        if extractor is not None:
            return extractor
        with self._load_lock:
            extractor = self._extractors.get(name)
            if extractor is None:
                reason = self._unavailable_reason(name)
                if reason is not None:
                    raise AssetNotFoundError(reason)
                extractor = self._factories()[name]()
                self._extractors[name] = extractor
            return extractor

    def _factories(self) -> dict[str, Callable[[], F0Extractor]]:
        from .classic import PraatPitch, WorldPitch

        def crepe(method: str) -> Callable[[], F0Extractor]:
            def build() -> F0Extractor:
                from .crepe import CrepePitch

                return CrepePitch(method, self.device)

            return build

        def rmvpe() -> F0Extractor:
            from .rmvpe import RMVPEPitch

            assert self.rmvpe_path is not None
            return RMVPEPitch(self.rmvpe_path, self.device)

        def fcpe() -> F0Extractor:
            from .fcpe import FCPEPitch

            return FCPEPitch(self.device)

        return {
            "pm": PraatPitch,
            "harvest": lambda: WorldPitch("harvest"),
            "dio": lambda: WorldPitch("dio"),
            "crepe": crepe("crepe"),
            "crepe-tiny": crepe("crepe-tiny"),
            "rmvpe": rmvpe,
            "fcpe": fcpe,
        }

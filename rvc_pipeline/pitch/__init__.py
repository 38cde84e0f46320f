"""F0 (pitch) extraction: pm, harvest, dio, crepe, crepe-tiny, rmvpe, fcpe.

`PitchEstimator.estimate(audio16k, p_len, method)` returns one F0 value per 10 ms frame
(Hz, 0 = unvoiced); `shift_f0` transposes it and `coarse_f0` quantises it to the
synthesizer's 1..255 pitch indices (rvc-formats.md §5.3). Unvoiced frames stay 0, as in
classic RVC and Applio (no interpolation across gaps; see `estimator`).
"""

from __future__ import annotations

from .estimator import DEFAULT_PITCH_METHOD, PITCH_METHODS, PitchEstimator
from .postprocess import coarse_f0, shift_f0

__all__ = ["DEFAULT_PITCH_METHOD", "PITCH_METHODS", "PitchEstimator", "coarse_f0", "shift_f0"]

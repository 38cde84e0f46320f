"""Signal effects around the conversion: formant shift of the input, noise reduction of the output.

Both are off by default. Formant shift follows Applio: stftpitchshift's envelope
warping at 16 kHz with a 1024-sample frame and a 32-sample hop, pitch factor 1,
`quefrency` = the lifter in seconds and `distortion` = the envelope factor (Applio's
`formant_qfrency` and `formant_timbre`). Noise reduction is noisereduce's spectral
gating with `prop_decrease` = strength, as Applio's `clean_audio` does, but against a
noise profile taken from the quietest frames (see `reduce_noise`).
"""

from __future__ import annotations

import numpy as np

from .constants import SAMPLE_RATE

#: Noise reduction measures the noise in the quietest NOISE_PROFILE_SHARE of frames this long.
NOISE_FRAME_S = 0.05
NOISE_PROFILE_SHARE = 0.15
#: STFT frame and hop of the formant shifter, samples at 16 kHz (Applio's StftPitchShift(1024, 32, sr)).
FORMANT_FRAME_SIZE = 1024
FORMANT_HOP_SIZE = 32


def shift_formants(audio: np.ndarray, factor: float, quefrency_ms: float = 1.0,
                   sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Scale the spectral envelope of mono audio (N,) by `factor`, keeping its pitch.

    `quefrency_ms` is the cepstral lifter that separates the envelope from the harmonics.
    The signal is reflect-padded by one frame on each side so that its edges get whole
    frames (stftpitchshift fades unpadded edges). Returns (N,) float32 at `sample_rate`.
    """
    from stftpitchshift import StftPitchShift

    x = np.asarray(audio, dtype=np.float64)
    padded = np.pad(x, FORMANT_FRAME_SIZE, mode="reflect")
    shifter = StftPitchShift(FORMANT_FRAME_SIZE, FORMANT_HOP_SIZE, sample_rate)
    shifted = shifter.shiftpitch(padded, factors=1, quefrency=quefrency_ms * 1e-3, distortion=float(factor))
    return np.asarray(shifted[FORMANT_FRAME_SIZE:FORMANT_FRAME_SIZE + x.shape[0]], dtype=np.float32)


def noise_profile(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The quietest NOISE_PROFILE_SHARE of the audio's NOISE_FRAME_S frames, joined: what the
    gate takes for noise. (N,) -> (M,) float32 at `sample_rate` Hz."""
    y = np.asarray(audio, dtype=np.float32)
    size = max(1, int(sample_rate * NOISE_FRAME_S))
    count = y.shape[0] // size
    if count < 2:
        return y.copy()
    frames = y[: count * size].reshape(count, size)
    quietest = np.sort(np.argsort((frames.astype(np.float64) ** 2).mean(axis=1))[: max(2, int(np.ceil(count * NOISE_PROFILE_SHARE)))])
    return frames[quietest].reshape(-1)


def reduce_noise(audio: np.ndarray, sample_rate: int, strength: float) -> np.ndarray:
    """Spectral gating of mono audio (N,) at `sample_rate` Hz against `noise_profile`:
    strength 0 leaves it, 1 removes all of what lies under the gate. Returns (N,) float32.

    Applio runs noisereduce's non-stationary mode, which takes any sound steady over its
    2 s time constant for noise (a held note or a tone in bursts loses 10-20 dB). This
    uses the stationary mode with the noise measured in the quietest frames instead.
    """
    import noisereduce

    y = np.asarray(audio, dtype=np.float32)
    if y.size == 0 or strength == 0:
        return y.copy()
    out = noisereduce.reduce_noise(y=y, sr=int(sample_rate), y_noise=noise_profile(y, sample_rate), stationary=True,
                                   prop_decrease=float(strength), n_jobs=1)
    return np.asarray(out, dtype=np.float32)

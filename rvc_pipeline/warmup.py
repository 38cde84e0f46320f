"""One-time initialisation paid before the first request rather than inside it.

The first call of several stages costs seconds that later calls do not: librosa's lazy
imports and numba compilation (loudness mix, resampling), FFT plans, torch's first
kernels, pyworld/parselmouth set-up. A service replica calls the warm-up of its stage in
its constructor, so it reports healthy only once the first real request will run as fast
as the rest.
"""

from __future__ import annotations

import numpy as np

from .audio import decode_audio, encode_wav
from .constants import SAMPLE_RATE, WINDOW
from .content import ContentEncoder
from .options import ChunkingConfig, ConversionOptions
from .pipeline import extract_features, finish, prepare
from .pitch import PitchEstimator

#: Length of the warm-up signal: long enough for every stage to run its real code path.
WARMUP_SECONDS = 1.0


def warmup_signal(seconds: float = WARMUP_SECONDS) -> np.ndarray:
    """(N,) float32 at 16 kHz: a voiced 150 Hz harmonic tone, so pitch methods find voicing."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    return (0.3 * tone / np.abs(tone).max()).astype(np.float32)


def warm_up_edges(output_rates: tuple[int, ...] = (40000, 48000, 32000)) -> None:
    """Decode, prepare, finish (loudness mix and resampling) and encode once: the ingress's stages."""
    audio = warmup_signal()
    wav = encode_wav(audio, SAMPLE_RATE)
    decoded = decode_audio(wav)
    prepared = prepare(decoded, ChunkingConfig.CPU_FP32)
    for rate in output_rates:
        fake_output = np.resize(audio, int(WARMUP_SECONDS * rate))
        finish([fake_output], prepared, rate, ConversionOptions(resample_sr=44100))
        out, out_rate = finish([fake_output], prepared, rate, ConversionOptions())
    encode_wav(out, out_rate)


def warm_up_encoder(encoder: ContentEncoder) -> None:
    """One feature extraction per voice version the encoder supports."""
    chunk = prepare(warmup_signal(), ChunkingConfig.CPU_FP32)
    audio = chunk.chunk_audio(chunk.chunks[0])
    for version in ("v1", "v2"):
        if encoder.problem_with(version) is None:
            extract_features(encoder, audio, version)


def warm_up_pitch(estimator: PitchEstimator, methods: tuple[str, ...]) -> None:
    """One estimate per method in `methods` (those that need no model download)."""
    padded = prepare(warmup_signal(), ChunkingConfig.CPU_FP32).padded
    available = set(estimator.available_methods())
    for method in methods:
        if method in available:
            estimator.estimate(padded, padded.shape[0] // WINDOW, method)

"""Test audio: synthetic tones, a voiced clip, real speech made offline with espeak-ng, WAV bytes.

Everything is (N,) float32 at 16 kHz (`constants.SAMPLE_RATE`) unless a rate is given.
`espeak_speech` raises `AssetNotFoundError` when espeak-ng is not installed.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from ..constants import SAMPLE_RATE
from ..tts import espeak_wav


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(|reference|^2 / |reference - test|^2) in dB over the common length, in float64."""
    n = min(len(reference), len(test))
    ref = np.asarray(reference[:n], dtype=np.float64)
    noise = np.sum((ref - np.asarray(test[:n], dtype=np.float64)) ** 2)
    return float(10 * np.log10(np.sum(ref**2) / max(noise, 1e-30)))


def espeak_speech(text: str, *, voice: str = "en", speed_wpm: int | None = 150) -> np.ndarray:
    """(N,) float32 speech at 16 kHz spoken by espeak-ng (`speed_wpm` None: espeak-ng's default)."""
    from ..audio import resample

    audio, rate = sf.read(io.BytesIO(espeak_wav(text, voice=voice, speed_wpm=speed_wpm)), dtype="float32")
    return resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def tone(frequency_hz: float, seconds: float, *, amplitude: float = 0.5, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(N,) float32 sine tone."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


def voiced_clip(seconds: float = 1.5, f0_hz: float = 150.0) -> np.ndarray:
    """(N,) float32 at 16 kHz: a harmonic tone with vibrato, voiced enough for every pitch method."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = f0_hz * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    audio = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    return (0.3 * audio * envelope / np.max(np.abs(audio))).astype(np.float32)


def wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV of `audio` ((N,) or (N, channels) float; samples beyond ±1 clip)."""
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()

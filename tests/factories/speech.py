"""Real speech for tests, made offline with espeak-ng, and synthetic tones."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

SAMPLE_RATE = 16000


def espeak_speech(text: str, *, voice: str = "en", speed_wpm: int = 150) -> np.ndarray:
    """(N,) float32 speech at 16 kHz spoken by espeak-ng; skips the test if it is missing."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, "-s", str(speed_wpm), text], check=True, capture_output=True
    ).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    from rvc_pipeline.audio import resample

    return resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def tone(frequency_hz: float, seconds: float, *, amplitude: float = 0.5, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(N,) float32 sine tone."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)

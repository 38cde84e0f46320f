"""Request material without Locust (importing Locust monkey-patches the process with gevent):
spoken clips made by espeak-ng and the voice names of a running service."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import urllib.request

import numpy as np
import soundfile as sf

#: Sentences of about 1-3 s at espeak-ng's default speed.
SENTENCES = (
    "Hello there.",
    "How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back tomorrow.",
)
SAMPLE_RATE = 16000


def speak(text: str) -> bytes:
    """16 kHz mono 16-bit WAV of `text`, spoken by espeak-ng."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed; install it (apt-get install espeak-ng) to make the clips")
    wav = subprocess.run(["espeak-ng", "--stdout", text], check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if rate != SAMPLE_RATE:
        positions = np.arange(int(len(audio) * SAMPLE_RATE / rate)) * rate / SAMPLE_RATE
        audio = np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def make_clips() -> list[bytes]:
    """One WAV per sentence."""
    return [speak(text) for text in SENTENCES]


def fetch_voices(host: str) -> list[str]:
    """Usable voice names from GET /voices (rows with an error are skipped)."""
    with urllib.request.urlopen(f"{host.rstrip('/')}/voices", timeout=30) as response:
        rows = json.load(response)["voices"]
    return [row["name"] for row in rows if not row.get("error")]

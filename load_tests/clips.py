"""Request material without Locust (importing Locust monkey-patches the process with gevent):
spoken clips made by espeak-ng and the voice names of a running service.

Imported by the locustfile as a sibling module (Locust puts this folder on sys.path) and by
the runner as `load_tests.clips`, so it imports only installed packages.
"""

from __future__ import annotations

import json
import urllib.request

from rvc_pipeline.testing.audio import espeak_speech, wav_bytes

#: Sentences of about 1-3 s at espeak-ng's default speed.
SENTENCES = (
    "Hello there.",
    "How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back tomorrow.",
)


def speak(text: str) -> bytes:
    """16 kHz mono 16-bit WAV of `text`, spoken by espeak-ng at its default speed."""
    return wav_bytes(espeak_speech(text, speed_wpm=None))


def make_clips() -> list[bytes]:
    """One WAV per sentence."""
    return [speak(text) for text in SENTENCES]


def wav_seconds(clip: bytes) -> float:
    """Duration of a WAV clip in seconds."""
    import io

    import soundfile as sf

    info = sf.info(io.BytesIO(clip))
    return info.frames / info.samplerate


def fetch_voices(host: str) -> list[str]:
    """Usable voice names from GET /voices (rows with an error are skipped)."""
    with urllib.request.urlopen(f"{host.rstrip('/')}/voices", timeout=30) as response:
        rows = json.load(response)["voices"]
    return [row["name"] for row in rows if not row.get("error")]

"""Offline text-to-speech with espeak-ng: the one place that runs it.

Used by the service's /tts route (in a thread), by the test and benchmark audio of
`rvc_pipeline.testing.audio` and by the load tests' clips.
"""

from __future__ import annotations

import shutil
import subprocess

from .errors import AssetNotFoundError, RVCError

#: What to do when espeak-ng is missing.
ESPEAK_HINT = "espeak-ng is not installed (apt-get install espeak-ng)"


class TTSError(RVCError):
    """espeak-ng ran but produced no speech (bad voice name, crash)."""


class TTSTimeoutError(TTSError):
    """espeak-ng did not finish within the time allowed."""


def espeak_wav(text: str, *, voice: str = "en", speed_wpm: int | None = None, timeout_s: float = 30.0) -> bytes:
    """WAV bytes (espeak-ng's own rate, 22.05 kHz mono) of `text` spoken by espeak-ng.

    The text goes through stdin, never a shell or the argument list, so text that starts
    with '-' cannot be taken for an option. `speed_wpm` None keeps espeak-ng's default
    (175 words per minute). Raises `AssetNotFoundError` when espeak-ng is not installed,
    `TTSTimeoutError` after `timeout_s` (the process is killed) and `TTSError` when it fails.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AssetNotFoundError(ESPEAK_HINT)
    command = [exe, "--stdout", "-v", voice]
    if speed_wpm is not None:
        command += ["-s", str(int(speed_wpm))]
    try:
        done = subprocess.run(command, input=text.encode(), capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise TTSTimeoutError(f"espeak-ng took longer than {timeout_s:g} s") from None
    if done.returncode != 0 or not done.stdout:
        raise TTSError(f"espeak-ng failed: {done.stderr.decode(errors='replace')[:200]}")
    return done.stdout

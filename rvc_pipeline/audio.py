"""Reading, resampling and writing audio.

Decoding goes through libsndfile (via `soundfile`), which reads WAV, FLAC, OGG
(Vorbis/Opus) and MP3 from a path or from bytes. Every input becomes mono float32
at 16 kHz, the rate the content encoder and pitch extractors expect.

Resampling is soxr at "HQ" quality, the same resampler and quality as
`librosa.resample`'s default (`res_type="soxr_hq"`), with the output length fixed
to ceil(n * target / orig) as librosa does. Decoding therefore matches Applio's
`librosa.load(path, sr=16000)` sample for sample. The reference RVC WebUI decodes
through ffmpeg (`-ac 1 -ar 16000`, swresample's default filter); that differs from
this only in resampler ripple, far below anything audible.

Long inputs are decoded block by block: each block is downmixed (mean over
channels) and pushed through a streaming soxr resampler, so the full-rate
multichannel signal never exists in memory at once. Streaming soxr gives exactly
the samples one-shot soxr gives.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .constants import SAMPLE_RATE as SAMPLE_RATE_16K  # the rate of everything `decode_audio` returns
from .errors import AudioError, AudioTooLongError

#: Suffixes `write_audio` can write (and the formats `decode_audio` is tested on).
SUPPORTED_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".ogg", ".opus", ".mp3")

#: soxr quality preset; "HQ" is what librosa's default `res_type="soxr_hq"` selects.
RESAMPLE_QUALITY = "HQ"

# Samples (frames x channels) read per block while decoding: 1 MiB of float32, i.e. about
# 3 s of 44.1 kHz stereo, whatever channel count a header declares.
_BLOCK_SAMPLES = 1 << 18

# Lowest input rate accepted. Upsampling multiplies the sample count by 16000/rate, so a
# header claiming, say, 1 Hz would turn a small file into gigabytes.
MIN_INPUT_RATE = 1000

# libsndfile's frame count for a header that does not state the length (SF_COUNT_MAX).
_UNKNOWN_FRAMES = 2**63 - 1

# Without a duration limit, never pre-allocate more than this (10 minutes at 16 kHz)
# on the word of a header; the buffer grows if the audio really is longer.
_MAX_PREALLOCATED = 10 * 60 * SAMPLE_RATE_16K

_HELP_FORMATS = "use WAV, FLAC, OGG (Vorbis/Opus) or MP3, e.g. `ffmpeg -i input output.wav`"


def decode_audio(source: bytes | str | Path, *, max_duration_s: float | None = None) -> np.ndarray:
    """Decode a whole file (path or bytes) to mono float32 at 16 kHz, shape (n,).

    `max_duration_s` limits the input duration: it is checked against the header
    before any decoding and again while decoding (headers can lie), raising
    `AudioTooLongError`. `None` means no limit. Silence decodes to zeros; the
    signal is returned as decoded (no normalisation).
    Raises `AudioError` for empty, undecodable or non-finite audio.
    """
    if max_duration_s is not None and not (max_duration_s > 0 and math.isfinite(max_duration_s)):
        raise AudioError(f"max_duration_s must be a positive number of seconds, got {max_duration_s!r}")
    with _open(source) as f:
        return _decode_open_file(f, _describe(source), max_duration_s)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono float audio (n,) from `orig_sr` to `target_sr` Hz.

    Same result as `librosa.resample(audio, orig_sr=..., target_sr=...)` (soxr HQ,
    length ceil(n * target_sr / orig_sr)). Returns float32.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"resample expects mono audio of shape (n,), got {audio.shape}")
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return audio.copy()
    out = soxr.resample(audio, orig_sr, target_sr, quality=RESAMPLE_QUALITY)
    return _fix_length(np.asarray(out, dtype=np.float32), _resampled_length(len(audio), orig_sr, target_sr))


def to_int16_pcm(audio: np.ndarray) -> np.ndarray:
    """Convert float audio (n,) to int16 by RVC's rule (spec §5.2 step 11).

    a = max|y| / 0.99; y_int16 = (y * 32768 / max(a, 1)).astype(int16): quiet audio
    is scaled by 32768 as is, louder audio is brought down to a 0.99 peak. The scale
    factor is computed in float64 and applied in float32, as the reference does under
    the numpy 1.x it pins.
    """
    y = np.asarray(audio, dtype=np.float32)
    if y.size == 0:
        return np.zeros(y.shape, dtype=np.int16)
    if not np.isfinite(y).all():
        raise AudioError("cannot convert audio with NaN or infinite samples to 16-bit PCM")
    return (y * np.float32(32768.0 / peak_divisor(y))).astype(np.int16)


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """Encode mono float audio (n,) at `sample_rate` Hz as a 16-bit PCM WAV file."""
    from .output_format import encode_audio

    return encode_audio(audio, sample_rate, "wav")


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, format_name: str | None = None) -> Path:
    """Write mono float audio (n,) at `sample_rate` Hz; returns the path written.

    The format is `format_name` (an `output_format.OUTPUT_FORMATS` name) or else follows
    the suffix: .wav and .flac are 16-bit PCM by RVC's int16 rule (`to_int16_pcm`); .ogg
    (Vorbis), .opus and .mp3 keep float samples with the same peak rule. MP3 and Opus only
    allow some rates; other rates (e.g. 40 kHz models) are resampled up to the next one.
    """
    from .output_format import FORMAT_BY_SUFFIX, encode_audio

    path = Path(path)
    suffix = path.suffix.lower()
    if format_name is None:
        if suffix not in FORMAT_BY_SUFFIX:
            raise AudioError(
                f"cannot write {path.name!r}: unknown suffix {suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
        format_name = FORMAT_BY_SUFFIX[suffix]
    path.write_bytes(encode_audio(np.asarray(audio, dtype=np.float32), sample_rate, format_name))
    return path


# --- decoding internals -------------------------------------------------------------


def _describe(source: bytes | str | Path) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"audio data ({len(source)} bytes)"
    return f"audio file {str(source)!r}"


def _open(source: bytes | str | Path) -> sf.SoundFile:
    """Open `source` with libsndfile, mapping every failure to `AudioError`."""
    what = _describe(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError("the audio is empty (0 bytes); send a WAV, FLAC, OGG or MP3 file")
        handle: io.BytesIO | str = io.BytesIO(bytes(source))
    else:
        p = Path(source)
        if not p.exists():
            raise AudioError(f"{what} does not exist")
        if not p.is_file():
            raise AudioError(f"{what} is not a file")
        if p.stat().st_size == 0:
            raise AudioError(f"{what} is empty (0 bytes)")
        handle = str(p)
    try:
        return sf.SoundFile(handle)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"could not decode {what}: {_short(e)}; {_HELP_FORMATS}") from e


def _decode_open_file(f: sf.SoundFile, what: str, max_duration_s: float | None) -> np.ndarray:
    sr, channels = int(f.samplerate), int(f.channels)
    if sr < MIN_INPUT_RATE or channels <= 0:
        raise AudioError(f"{what} has an unusable header (rate {sr} Hz, {channels} channels); "
                         f"rates of at least {MIN_INPUT_RATE} Hz are supported; {_HELP_FORMATS}")
    if f.frames >= _UNKNOWN_FRAMES:  # libsndfile cannot read such a file block by block
        raise AudioError(f"{what} does not state its length (a streamed FLAC?); re-encode it, "
                         "e.g. `ffmpeg -i input output.wav`")
    header_frames = int(f.frames) if f.frames and f.frames > 0 else 0
    limit_frames = None if max_duration_s is None else int(math.floor(max_duration_s * sr))
    if limit_frames is not None and header_frames > limit_frames:
        _too_long(header_frames / sr, max_duration_s)

    # Pre-allocate the output from the header, bounded by the limit (or 10 min without one).
    expected = _resampled_length(header_frames, sr, SAMPLE_RATE_16K)
    bound = _MAX_PREALLOCATED if limit_frames is None else _resampled_length(limit_frames, sr, SAMPLE_RATE_16K)
    out = np.empty(max(1, min(expected, bound)), dtype=np.float32)
    n_out = 0
    n_in = 0
    stream = None
    if sr != SAMPLE_RATE_16K:
        stream = soxr.ResampleStream(sr, SAMPLE_RATE_16K, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    block = np.empty((max(1, _BLOCK_SAMPLES // channels), channels), dtype=np.float32)
    while True:
        try:
            frames = f.read(len(block), dtype="float32", always_2d=True, out=block)
        except (sf.SoundFileError, RuntimeError) as e:
            raise AudioError(f"could not decode {what} (corrupt after {n_in / sr:.2f} s): {_short(e)}") from e
        if len(frames) == 0:
            break
        mono = np.ascontiguousarray(frames[:, 0]) if channels == 1 else frames.mean(axis=1, dtype=np.float32)
        if not np.isfinite(mono).all():
            bad = int(np.argmin(np.isfinite(mono)))
            raise AudioError(f"{what} contains NaN or infinite samples (first at {(n_in + bad) / sr:.3f} s); "
                             "re-export it as 16-bit PCM")
        n_in += len(frames)
        if limit_frames is not None and n_in > limit_frames:
            _too_long(n_in / sr, max_duration_s, at_least=True)
        chunk = mono if stream is None else stream.resample_chunk(mono, last=False)
        out, n_out = _append(out, n_out, chunk)
    if n_in == 0:
        raise AudioError(f"{what} contains no audio samples")
    if stream is not None:
        out, n_out = _append(out, n_out, stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    target = _resampled_length(n_in, sr, SAMPLE_RATE_16K)
    if n_out < target:
        out, n_out = _append(out, n_out, np.zeros(target - n_out, dtype=np.float32))
    # Copy only when the pre-allocated buffer is noticeably larger than the result.
    return out[:target] if len(out) - target < 4096 else out[:target].copy()


def _append(out: np.ndarray, n: int, chunk: np.ndarray) -> tuple[np.ndarray, int]:
    """Append `chunk` to the growable buffer `out[:n]`; grows by 1.5x when full."""
    need = n + len(chunk)
    if need > len(out):
        grown = np.empty(max(need, int(len(out) * 1.5)), dtype=np.float32)
        grown[:n] = out[:n]
        out = grown
    out[n:need] = chunk
    return out, need


def _too_long(duration_s: float, limit_s: float, *, at_least: bool = False) -> None:
    qualifier = "at least " if at_least else ""
    raise AudioTooLongError(
        f"the audio is {qualifier}{duration_s:.1f} s long but the limit is {limit_s:g} s; "
        "trim it or split it into shorter files"
    )


def _resampled_length(n: int, orig_sr: int, target_sr: int) -> int:
    """ceil(n * target / orig), the length librosa.resample fixes its output to."""
    return -(-n * target_sr // orig_sr)


def _fix_length(y: np.ndarray, size: int) -> np.ndarray:
    if len(y) >= size:
        return y[:size]
    return np.concatenate([y, np.zeros(size - len(y), dtype=y.dtype)])


def peak_divisor(y: np.ndarray) -> float:
    """max(a, 1) with a = max|y| / 0.99 (RVC's peak rule; 0.99 is its target peak)."""
    return max(float(np.abs(y).max()) / 0.99, 1.0)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    text = re.sub(r"^Error opening <[^>]*>: ", "", text)  # soundfile names an in-memory file by its repr
    return text[:200]

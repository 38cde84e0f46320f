"""Realtime conversion: a stateful block-by-block converter, usable without Ray.

    settings = StreamSettings(sample_rate=48000, sample_format="f32le", block_ms=250)
    converter = StreamConverter(settings, voice.sample_rate)
    engine = LocalStreamEngine(voice, encoder, pitch_estimator)
    for block in blocks:                       # each settings.bytes_per_block long
        out = converter.process(block, engine) # one block at 48 kHz, float32
        send(converter.encode(out))

The state (input ring buffers, SOLA tail, counters) lives in `StreamConverter`; the model
work for one block lives in a `StreamWindow` handed to an engine, so a server can run it
remotely between `push` and `finish`:

    window = converter.push(block)                           # None: under the silence gate
    converted = None if window is None else engine.run(window)   # audio at the voice's rate
    out = converter.finish(window, converted)

Follows RVC's realtime path (RVC `gui_v1.py` with `infer/lib/rtrvc.py`):
- every size is a whole number of 10 ms frames, zc = sample_rate // 100 samples;
- the input ring holds extra (left context) + crossfade + SOLA search + block;
- the synthesizer decodes only frames [skip_head, skip_head + return_length) with
  skip_head = extra frames and return_length = block + SOLA buffer + search frames;
- the SOLA buffer is min(crossfade, 4 * zc) and the search window one frame (zc);
- SOLA picks the offset maximising the normalised cross-correlation of the new output's
  head with the previous tail, then crossfades with sin^2 / 1 - sin^2 windows;
- the loudness envelope (rms_mix_rate < 1) is RMS over 4 * zc every zc samples.
Differences: the silence gate acts per block (a gated block is zeroed and skips the
models), F0 is estimated over the whole window each block (no pitch cache), and the
formant control is the offline one (`shape_input`) applied to the window.
"""

from __future__ import annotations

import math
import numbers
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import numpy as np

from .audio import resample
from .constants import SAMPLE_RATE, WINDOW
from .errors import AudioError, OptionError, RVCError
from .options import ConversionOptions
from .pipeline import chunk_seed, estimate_pitch, extract_features, shape_input, synthesize_window

__all__ = [
    "LocalStreamEngine",
    "SAMPLE_FORMATS",
    "StreamConverter",
    "StreamEngine",
    "StreamSettings",
    "StreamStateError",
    "StreamWindow",
    "decode_samples",
    "encode_samples",
    "synthesize_stream_window",
]

#: Bytes per sample of each wire format (mono, little-endian).
SAMPLE_FORMATS: dict[str, int] = {"pcm_s16le": 2, "f32le": 4}
#: RVC realtime works in 10 ms frames of zc = sample_rate // 100 samples (gui_v1 `zc`).
FRAME_MS = 10
FRAMES_PER_SECOND = 1000 // FRAME_MS
#: gui_v1 `sola_buffer_frame = min(crossfade_frame, 4 * zc)`.
SOLA_BUFFER_MAX_FRAMES = 4
#: gui_v1 `sola_search_frame = zc`.
SOLA_SEARCH_FRAMES = 1
#: Loudness envelope: librosa RMS with frame_length 4 * zc, hop zc (gui_v1 rms_mix_rate).
RMS_FRAME_FRAMES = 4
#: Floor of the output's RMS in the realtime envelope mix (gui_v1: max(rms2, 1e-3)).
RMS_OUTPUT_FLOOR = 1e-3
#: Resampling to 16 kHz redoes the last 2 * zc of client audio before the new block and
#: drops the first 10 ms of the result (gui_v1 `input_wav_res[-block_16k - 160:]`).
RESAMPLE_CONTEXT_FRAMES = 2
#: 10 ms frames per content-encoder frame (HuBERT's 320-sample stride at 16 kHz).
CONTENT_FRAME_FRAMES = 2
#: Added to the SOLA energy before the square root (gui_v1 `+ 1e-8`).
SOLA_EPS = 1e-8
#: int16 full scale used to decode and encode pcm_s16le.
PCM16_SCALE = 32768.0

# Settings ranges: (minimum, maximum) and unit.
SAMPLE_RATE_RANGE = (8000, 96000)
BLOCK_MS_RANGE = (50, 2000)
EXTRA_MS_RANGE = (0, 5000)
CROSSFADE_MS_RANGE = (0, 500)
SILENCE_DB_RANGE = (-120.0, 0.0)
#: Processing times kept for the percentiles of `stats()`.
_TIMES_KEPT = 1000


class StreamStateError(RVCError):
    """`push`/`finish` called out of order (each push needs exactly one finish)."""


def _number(name: str, value: Any, low: float, high: float, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise OptionError(f"{name} must be a finite number ({low:g} to {high:g} {unit}), got {value!r}")
    if not low <= float(value) <= high:
        raise OptionError(f"{name} must be {low:g} to {high:g} {unit}, got {float(value):g}")
    return float(value)


def _frames(ms: float) -> int:
    """Milliseconds rounded to whole 10 ms frames (gui_v1: np.round(time * sr / zc))."""
    return int(np.round(ms / FRAME_MS))


@dataclass(frozen=True)
class StreamSettings:
    """One stream's fixed settings, validated when built (`OptionError` naming the range).

    Durations are rounded to whole 10 ms frames when built, so the fields hold the
    effective values. `options` may also be a mapping (parsed by
    `ConversionOptions.from_mapping`). Streaming refuses the controls that need the whole
    recording or another output: auto_key, f0_curve, denoise and resample_sr.
    """

    sample_rate: int = 48000
    sample_format: str = "f32le"
    block_ms: float = 250
    extra_ms: float = 2500
    crossfade_ms: float = 50
    silence_db: float = -60.0
    options: ConversionOptions = field(default_factory=ConversionOptions)

    def __post_init__(self) -> None:
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, numbers.Integral):
            raise OptionError(f"sample_rate must be an integer number of Hz, got {rate!r}")
        low, high = SAMPLE_RATE_RANGE
        if not low <= rate <= high or rate % FRAMES_PER_SECOND:
            raise OptionError(f"sample_rate must be {low} to {high} Hz and a multiple of {FRAMES_PER_SECOND} "
                              f"(10 ms must be whole samples), got {rate}")
        object.__setattr__(self, "sample_rate", int(rate))
        if self.sample_format not in SAMPLE_FORMATS:
            raise OptionError(f"sample_format must be one of {', '.join(SAMPLE_FORMATS)}, got {self.sample_format!r}")
        for name, (low, high) in (("block_ms", BLOCK_MS_RANGE), ("extra_ms", EXTRA_MS_RANGE),
                                  ("crossfade_ms", CROSSFADE_MS_RANGE)):
            value = _number(name, getattr(self, name), low, high, "ms")
            object.__setattr__(self, name, _frames(value) * FRAME_MS)
        object.__setattr__(self, "silence_db", _number("silence_db", self.silence_db, *SILENCE_DB_RANGE, "dBFS"))
        options = self.options
        if isinstance(options, Mapping):
            options = ConversionOptions.from_mapping(options)
        if not isinstance(options, ConversionOptions):
            raise OptionError(f"options must be ConversionOptions or a mapping, got {type(options).__name__}")
        check_stream_options(options)
        object.__setattr__(self, "options", options)

    # --- sizes in 10 ms frames ------------------------------------------------------

    @property
    def block_frames(self) -> int:
        """New audio per block, in 10 ms frames."""
        return _frames(self.block_ms)

    @property
    def extra_frames(self) -> int:
        """Left context, in 10 ms frames (= `skip_head`)."""
        return _frames(self.extra_ms)

    @property
    def crossfade_frames(self) -> int:
        """Crossfade length in 10 ms frames (its part of the input ring)."""
        return _frames(self.crossfade_ms)

    @property
    def sola_buffer_frames(self) -> int:
        """SOLA buffer (the crossfade actually applied): min(crossfade, 4 frames)."""
        return min(self.crossfade_frames, SOLA_BUFFER_MAX_FRAMES)

    @property
    def sola_search_frames(self) -> int:
        """SOLA search window: one frame."""
        return SOLA_SEARCH_FRAMES

    @property
    def window_frames(self) -> int:
        """The input ring: extra + crossfade + search + block frames."""
        return self.extra_frames + self.crossfade_frames + self.sola_search_frames + self.block_frames

    @property
    def skip_head(self) -> int:
        """First decoded frame of the window: the left context."""
        return self.extra_frames

    @property
    def return_length(self) -> int:
        """Decoded frames per block: block + SOLA buffer + search."""
        return self.block_frames + self.sola_buffer_frames + self.sola_search_frames

    # --- sizes in samples -----------------------------------------------------------

    @property
    def frame_samples(self) -> int:
        """Samples per 10 ms frame at the client rate (zc)."""
        return self.sample_rate // FRAMES_PER_SECOND

    @property
    def block_samples(self) -> int:
        """Samples per block at the client rate."""
        return self.block_frames * self.frame_samples

    @property
    def extra_samples(self) -> int:
        """Left context in samples at the client rate."""
        return self.extra_frames * self.frame_samples

    @property
    def crossfade_samples(self) -> int:
        """Crossfade part of the ring in samples at the client rate."""
        return self.crossfade_frames * self.frame_samples

    @property
    def sola_buffer_samples(self) -> int:
        """SOLA buffer in samples at the client rate."""
        return self.sola_buffer_frames * self.frame_samples

    @property
    def sola_search_samples(self) -> int:
        """SOLA search window in samples at the client rate."""
        return self.sola_search_frames * self.frame_samples

    @property
    def window_samples(self) -> int:
        """Input ring length in samples at the client rate."""
        return self.window_frames * self.frame_samples

    @property
    def block_samples_16k(self) -> int:
        """Samples per block at 16 kHz."""
        return self.block_frames * WINDOW

    @property
    def extra_samples_16k(self) -> int:
        """Left context in samples at 16 kHz."""
        return self.extra_frames * WINDOW

    @property
    def crossfade_samples_16k(self) -> int:
        """Crossfade part of the ring in samples at 16 kHz."""
        return self.crossfade_frames * WINDOW

    @property
    def sola_buffer_samples_16k(self) -> int:
        """SOLA buffer in samples at 16 kHz."""
        return self.sola_buffer_frames * WINDOW

    @property
    def sola_search_samples_16k(self) -> int:
        """SOLA search window in samples at 16 kHz."""
        return self.sola_search_frames * WINDOW

    @property
    def window_samples_16k(self) -> int:
        """Model input per block (`StreamWindow.audio16k`) in samples at 16 kHz."""
        return self.window_frames * WINDOW

    @property
    def bytes_per_block(self) -> int:
        """Size of one input (and output) block on the wire."""
        return self.block_samples * SAMPLE_FORMATS[self.sample_format]

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency: block + crossfade + SOLA search (10 ms), in ms.

        A sample waits for its block to fill (block); its output is decoded from the ring
        position extra, i.e. crossfade + search + block before the ring's end, and SOLA may
        advance that by up to the search window. The worst case is block + crossfade +
        search, which is block + SOLA buffer + search for crossfades up to 40 ms (RVC's
        GUI shows block_time + crossfade_time + 0.01 s). Device and processing time are extra.
        """
        return float((self.block_frames + self.crossfade_frames + self.sola_search_frames) * FRAME_MS)

    def replace(self, **changes: Any) -> StreamSettings:
        """A copy with stream fields and/or conversion options changed, validated again."""
        own = {k: v for k, v in changes.items() if k in _SETTING_FIELDS}
        option_changes = {k: v for k, v in changes.items() if k not in _SETTING_FIELDS}
        options = own.pop("options", self.options)
        if isinstance(options, Mapping):
            options = ConversionOptions.from_mapping(options)
        if option_changes:
            options = options.replace(**option_changes)
        values = {name: getattr(self, name) for name in _SETTING_FIELDS if name != "options"}
        values.update(own)
        return StreamSettings(**values, options=options)

    def effective(self) -> dict[str, Any]:
        """The effective settings after rounding, as a JSON-ready dict."""
        return {
            "sample_rate": self.sample_rate,
            "sample_format": self.sample_format,
            "block_ms": self.block_ms,
            "extra_ms": self.extra_ms,
            "crossfade_ms": self.crossfade_ms,
            "sola_buffer_ms": self.sola_buffer_frames * FRAME_MS,
            "sola_search_ms": self.sola_search_frames * FRAME_MS,
            "silence_db": self.silence_db,
            "latency_ms": self.latency_ms,
            "block_samples": self.block_samples,
            "bytes_per_block": self.bytes_per_block,
            "window_ms": self.window_frames * FRAME_MS,
            "skip_head": self.skip_head,
            "return_length": self.return_length,
            "options": self.options.to_dict(),
        }


_SETTING_FIELDS = ("sample_rate", "sample_format", "block_ms", "extra_ms", "crossfade_ms", "silence_db", "options")
#: Settings that size the buffers: fixed for a session.
_FIXED_FIELDS = ("sample_rate", "sample_format", "block_ms", "extra_ms", "crossfade_ms")


def check_stream_options(options: ConversionOptions) -> None:
    """`OptionError` for options a stream cannot honour (they need the whole recording or
    change the output rate)."""
    if options.auto_key != "off":
        raise OptionError("auto_key is not available when streaming (it measures the whole recording); "
                          "set f0_up_key instead")
    if options.f0_curve:
        raise OptionError("f0_curve is not available when streaming (its times refer to a whole recording)")
    if options.denoise != 0:
        raise OptionError("denoise is not available when streaming; set it to 0")
    if options.resample_sr != 0:
        raise OptionError("resample_sr does not apply to streams: the output has the stream's sample_rate")


@dataclass(frozen=True)
class StreamWindow:
    """What one block needs from the models.

    audio16k: (window_samples_16k,) float32 at 16 kHz, or one 10 ms frame more (see
    `StreamConverter._window_audio`): left context + crossfade + search + the new block,
    after the formant control. Decode only 10 ms frames
    [skip_head, skip_head + return_length); `seed` seeds this block's noise; `options`
    are the conversion options in force for this block; `index` counts the session's
    blocks from 0 (finish checks it belongs to the last push).
    """

    audio16k: np.ndarray
    skip_head: int
    return_length: int
    seed: int
    options: ConversionOptions
    index: int = 0


class StreamEngine(Protocol):
    """Runs the models for one window: returns (return_length * hop,) float32 at `sample_rate`."""

    sample_rate: int

    def run(self, window: StreamWindow) -> np.ndarray: ...


def encode_samples(audio: np.ndarray, sample_format: str) -> bytes:
    """(n,) float audio -> wire bytes (mono little-endian `pcm_s16le` or `f32le`), clipped to [-1, 1]."""
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    if sample_format == "pcm_s16le":
        return np.round(clipped * (PCM16_SCALE - 1)).astype("<i2").tobytes()
    return clipped.astype("<f4").tobytes()


def decode_samples(data: bytes, sample_format: str) -> np.ndarray:
    """Wire bytes (mono little-endian `pcm_s16le` or `f32le`) -> (n,) float32 in [-1, 1]."""
    if sample_format == "pcm_s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(PCM16_SCALE)
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def _fade_windows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """sin^2 fade-in over n samples (0 -> 1) and its complement (gui_v1)."""
    fade_in = (np.sin(0.5 * np.pi * np.linspace(0.0, 1.0, n)) ** 2).astype(np.float32)
    return fade_in, (1.0 - fade_in).astype(np.float32)


def _rms_envelope(y: np.ndarray, frame: int, size: int) -> np.ndarray:
    """librosa-style centred RMS (frame `4 * frame`, hop `frame`, zero padding) resized to
    `size` samples by linear interpolation with aligned corners (gui_v1's F.interpolate
    to size + 1, then the last value dropped)."""
    import librosa

    rms = librosa.feature.rms(y=np.ascontiguousarray(y, dtype=np.float32), frame_length=RMS_FRAME_FRAMES * frame,
                              hop_length=frame)[0].astype(np.float64)
    positions = np.linspace(0.0, rms.shape[0] - 1, size + 1)[:-1]
    return np.interp(positions, np.arange(rms.shape[0]), rms)


class StreamConverter:
    """One realtime session's state: input rings, SOLA tail, counters.

    Not thread-safe: one caller at a time, each `push` followed by one `finish`. Many
    converters may share one engine; they never share state.
    """

    def __init__(self, settings: StreamSettings, voice_sample_rate: int) -> None:
        if not isinstance(settings, StreamSettings):
            raise OptionError(f"settings must be StreamSettings, got {type(settings).__name__}")
        self.settings = settings
        self.set_voice_sample_rate(voice_sample_rate)
        s = settings
        self._input = np.zeros(s.window_samples, dtype=np.float32)  # client rate
        # One frame more than a window: the alignment frame (see `_window_audio`).
        self._input16k = np.zeros(s.window_samples_16k + WINDOW, dtype=np.float32)
        self._sola_buffer = np.zeros(s.sola_buffer_samples, dtype=np.float32)
        self._fade_in, self._fade_out = _fade_windows(s.sola_buffer_samples)
        self._pending: tuple[StreamWindow | None, float] | None = None
        self._index = 0
        self._counts = {"blocks_in": 0, "blocks_out": 0, "gated": 0, "rejected": 0}
        self._times_ms: deque[float] = deque(maxlen=_TIMES_KEPT)

    # --- settings -------------------------------------------------------------------

    @property
    def options(self) -> ConversionOptions:
        """The conversion options in force."""
        return self.settings.options

    def set_voice_sample_rate(self, sample_rate: int) -> None:
        """The rate the engine's output has (call when the voice changes)."""
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
            raise OptionError(f"voice sample rate must be a positive integer, got {sample_rate!r}")
        self.voice_sample_rate = int(sample_rate)

    def update(self, **changes: Any) -> StreamSettings:
        """Change conversion options (f0_up_key, index_rate, protect, ...) or silence_db
        mid-session; the next `push` uses them. Buffer sizes and formats cannot change.
        Raises OptionError (state unchanged) for a bad value. Returns the new settings."""
        fixed = sorted(set(changes) & set(_FIXED_FIELDS))
        if fixed:
            raise OptionError(f"{', '.join(fixed)} cannot change during a stream; start a new one")
        self.settings = self.settings.replace(**changes)
        return self.settings

    # --- blocks ---------------------------------------------------------------------

    def decode(self, block: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
        """One block of the wire format (or an array) -> (block_samples,) float32; AudioError
        for a wrong size, type or non-finite samples."""
        s = self.settings
        if isinstance(block, (bytes, bytearray, memoryview)):
            data = bytes(block)
            if len(data) != s.bytes_per_block:
                raise AudioError(f"a block must be {s.bytes_per_block} bytes ({s.block_samples} samples of "
                                 f"{s.sample_format} = {s.block_ms:g} ms at {s.sample_rate} Hz), got {len(data)} bytes")
            audio = decode_samples(data, s.sample_format)
        elif isinstance(block, np.ndarray):
            if block.ndim != 1 or block.shape[0] != s.block_samples:
                raise AudioError(f"a block must have shape ({s.block_samples},) ({s.block_ms:g} ms at "
                                 f"{s.sample_rate} Hz), got {block.shape}")
            if block.dtype == np.int16:
                audio = block.astype(np.float32) / np.float32(PCM16_SCALE)
            elif np.issubdtype(block.dtype, np.floating):
                audio = block.astype(np.float32)
            else:
                raise AudioError(f"a block array must be float or int16, got {block.dtype}")
        else:
            raise AudioError(f"a block must be bytes or a numpy array, got {type(block).__name__}")
        if not np.isfinite(audio).all():
            raise AudioError("the block contains NaN or infinite samples")
        return audio

    def encode(self, block: np.ndarray) -> bytes:
        """(n,) float audio -> bytes of the stream's sample format, clipped to [-1, 1]."""
        return encode_samples(block, self.settings.sample_format)

    def push(self, block: bytes | np.ndarray) -> StreamWindow | None:
        """Take one input block (bytes of the sample format, or (block_samples,) array at the
        client rate) into the rings. Returns the window for the models, or None when the
        block is under the silence gate (it enters the rings as silence). A bad block
        raises AudioError and changes nothing; a push before the previous block's `finish`
        raises StreamStateError."""
        if self._pending is not None:
            raise StreamStateError("push called twice: call finish for the previous block first")
        try:
            audio = self.decode(block)
        except AudioError:
            self._counts["rejected"] += 1
            raise
        started = time.perf_counter()
        s = self.settings
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        gated = 20 * math.log10(max(rms, 1e-300)) < s.silence_db
        if gated:
            audio = np.zeros_like(audio)
        self._shift_in(audio)
        self._counts["blocks_in"] += 1
        window = None
        if gated:
            self._counts["gated"] += 1
        else:
            audio16k, skip_head = self._window_audio()
            window = StreamWindow(
                audio16k=np.asarray(shape_input(audio16k, s.options), dtype=np.float32),
                skip_head=skip_head, return_length=s.return_length,
                seed=chunk_seed(s.options.seed, self._index), options=s.options, index=self._index)
        self._index += 1
        self._pending = (window, started)
        return window

    def _window_audio(self) -> tuple[np.ndarray, int]:
        """The models' input for the block just pushed, at 16 kHz, and its skip_head.

        The content encoder makes one frame per 20 ms counted from the start of its input, and
        the synthesizer repeats each to two 10 ms frames. A window that starts an odd number of
        10 ms frames after the stream's start would put every content frame 10 ms off the pitch
        frames (and off the offline conversion's grid: correlation 0.87 against 0.95 measured by
        bench.stream_fidelity). Such a window takes one more frame of left context instead, so
        content and pitch frames stay on one grid whatever the block and context lengths.
        """
        s = self.settings
        start = (self._index + 1) * s.block_frames - s.window_frames  # in 10 ms frames from the stream's start
        if start % CONTENT_FRAME_FRAMES:
            return self._input16k.copy(), s.skip_head + 1
        return self._input16k[WINDOW:].copy(), s.skip_head

    def _shift_in(self, audio: np.ndarray) -> None:
        """Append one block to both rings (16 kHz: resampled with 2 frames of left context,
        the first 10 ms of the result dropped, as gui_v1 does)."""
        s = self.settings
        n, n16 = s.block_samples, s.block_samples_16k
        self._input[:-n] = self._input[n:]
        self._input[-n:] = audio
        self._input16k[:-n16] = self._input16k[n16:]
        if s.sample_rate == SAMPLE_RATE:
            self._input16k[-n16:] = audio
            return
        context = RESAMPLE_CONTEXT_FRAMES * s.frame_samples
        source = self._input[-(n + context):] if context + n <= self._input.shape[0] else \
            np.concatenate([np.zeros(context + n - self._input.shape[0], np.float32), self._input])
        resampled = resample(source, s.sample_rate, SAMPLE_RATE)  # (block + 2) frames at 16 kHz
        tail = resampled[WINDOW:]
        self._input16k[-tail.shape[0]:] = tail

    def finish(self, window: StreamWindow | None, converted: np.ndarray | None) -> np.ndarray:
        """The output block for the last push: (block_samples,) float32 at the client rate.

        converted: the engine's output for `window` at `voice_sample_rate`
        ((return_length * hop,) float). For a gated block (window None), or when no output
        came back (converted None), returns silence and the next block fades in from it.
        Otherwise: resample to the client rate, loudness envelope, SOLA against the
        previous tail and crossfade.
        """
        if self._pending is None:
            raise StreamStateError("finish called without a pushed block")
        pending, started = self._pending
        if (window is None) != (pending is None) or (window is not None and window.index != pending.index):
            raise StreamStateError("finish got a window other than the one the last push returned")
        s = self.settings
        if window is None or converted is None:
            out = np.zeros(s.block_samples, dtype=np.float32)
            self._sola_buffer[:] = 0
        else:
            out = self._join(self._to_client_rate(converted, window.options), window.options)
        self._pending = None
        self._counts["blocks_out"] += 1
        self._times_ms.append((time.perf_counter() - started) * 1000)
        return out

    def _to_client_rate(self, converted: np.ndarray, options: ConversionOptions) -> np.ndarray:
        """Engine output -> exactly (return_length * zc,) float32 at the client rate, with
        the loudness envelope mixed when rms_mix_rate < 1."""
        s = self.settings
        audio = np.asarray(converted, dtype=np.float32).reshape(-1)
        if not np.isfinite(audio).all():
            raise AudioError("the converted audio contains NaN or infinite samples")
        audio = resample(audio, self.voice_sample_rate, s.sample_rate)
        size = s.return_length * s.frame_samples
        if audio.shape[0] < size:
            audio = np.concatenate([audio, np.zeros(size - audio.shape[0], np.float32)])
        audio = audio[:size].copy()
        if options.rms_mix_rate < 1:
            reference = self._input[s.extra_samples:][:size]
            rms_in = _rms_envelope(reference, s.frame_samples, size)
            rms_out = np.maximum(_rms_envelope(audio, s.frame_samples, size), RMS_OUTPUT_FLOOR)
            audio *= np.power(rms_in / rms_out, 1 - options.rms_mix_rate).astype(np.float32)
        return audio

    def _join(self, audio: np.ndarray, options: ConversionOptions) -> np.ndarray:
        """SOLA: align the new output's head with the previous tail, crossfade, keep the
        next tail; returns one block."""
        s = self.settings
        n_buf, n_search, n_block = s.sola_buffer_samples, s.sola_search_samples, s.block_samples
        offset = 0
        if n_buf > 0:
            head = audio[: n_buf + n_search].astype(np.float64)
            numerator = np.correlate(head, self._sola_buffer.astype(np.float64), mode="valid")
            energy = np.convolve(head**2, np.ones(n_buf), mode="valid")
            offset = int(np.argmax(numerator / np.sqrt(energy + SOLA_EPS)))
        audio = audio[offset:]
        audio[:n_buf] = audio[:n_buf] * self._fade_in + self._sola_buffer * self._fade_out
        self._sola_buffer[:] = audio[n_block : n_block + n_buf]
        return audio[:n_block].astype(np.float32, copy=True)

    def process(self, block: bytes | np.ndarray, engine: StreamEngine) -> np.ndarray:
        """push + engine.run + finish: one input block -> (block_samples,) float32 at the client rate."""
        if engine.sample_rate != self.voice_sample_rate:
            raise OptionError(f"the engine's voice runs at {engine.sample_rate} Hz but the stream expects "
                              f"{self.voice_sample_rate} Hz; call set_voice_sample_rate")
        window = self.push(block)
        try:
            converted = engine.run(window) if window is not None else None
        except BaseException:
            self.finish(window, None)  # keep push/finish paired; the error still surfaces
            raise
        return self.finish(window, converted)

    def stats(self) -> dict[str, Any]:
        """Counters (blocks_in, blocks_out, gated, rejected) and push-to-finish times in ms
        (p50, p95 over the last 1000 blocks; None before the first)."""
        times = np.asarray(self._times_ms, dtype=np.float64)
        return {
            **self._counts,
            "process_ms_p50": float(np.percentile(times, 50)) if times.size else None,
            "process_ms_p95": float(np.percentile(times, 95)) if times.size else None,
            "latency_ms": self.settings.latency_ms,
        }


class LocalStreamEngine:
    """In-process model work for one window: content features, F0 (key shift, autotune),
    retrieval, protect and synthesis of the decoded frames only. Stateless: any number of
    converters may share one engine.

    encoder: a loaded content encoder or a `ContentEncoders` set (the voice's own is used).
    pitch_estimator: required for pitch-guided voices.
    """

    def __init__(self, voice: Any, encoder: Any, pitch_estimator: Any = None) -> None:
        from .encoders import ContentEncoders

        if isinstance(encoder, ContentEncoders):
            encoder = encoder.for_voice(voice)
        if voice.f0 and pitch_estimator is None:
            raise OptionError(f"voice {voice.name!r} is pitch-guided: a PitchEstimator is required")
        self.voice = voice
        self.encoder = encoder
        self.pitch_estimator = pitch_estimator

    @property
    def sample_rate(self) -> int:
        """The output rate: the voice's."""
        return self.voice.sample_rate

    def run(self, window: StreamWindow) -> np.ndarray:
        """(return_length * hop,) float32 at the voice's rate for `window`."""
        features = extract_features(self.encoder, window.audio16k, self.voice.version)
        pitch = estimate_pitch(window.audio16k, self.pitch_estimator, window.options) if self.voice.f0 else None
        return synthesize_stream_window(self.voice, features, pitch, window)


def synthesize_stream_window(voice: Any, features: np.ndarray, pitch: Any, window: StreamWindow) -> np.ndarray:
    """The synthesis step of one window, wherever its features and F0 were made (in process
    or by the service's deployments): (T, C) content features of `window.audio16k` and its
    PitchTrack (None without pitch guidance) -> (return_length * hop,) float32 at the voice's rate.

    RVC realtime repeats the last content frame so that 2T covers every 10 ms frame up to
    the window's end (rtrvc `torch.cat((feats, feats[:, -1:, :]), 1)`).
    """
    features = np.concatenate([features, features[-1:]], axis=0)
    return synthesize_window(voice, features, pitch, window.audio16k.shape[0], window.skip_head,
                             window.return_length, window.options, window.seed)

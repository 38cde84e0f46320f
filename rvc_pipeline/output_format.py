"""Encodings of converted audio: WAV (16-bit or float), FLAC, Ogg Vorbis, Ogg Opus, MP3.

All through soundfile/libsndfile (>= 1.1 writes Opus and MP3). Every format takes the
same mono float audio in [-1, 1]; 16-bit formats use RVC's int16 rule
(`audio.to_int16_pcm`), the others keep float samples under the same peak rule. Opus and
MP3 allow only some sample rates: other rates (a 40 kHz voice, say) are resampled up to
the next allowed rate, so the file's rate may differ from the conversion's.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from .audio import peak_divisor, resample, to_int16_pcm
from .errors import AudioError

#: Rates MPEG-1/2/2.5 layer III allows (libsndfile refuses any other).
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
#: Rates the Opus codec runs at (RFC 6716).
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@dataclass(frozen=True)
class OutputFormat:
    """One encoding: libsndfile's container and subtype, the HTTP media type and file suffix."""

    name: str
    container: str
    subtype: str
    media_type: str
    suffix: str
    rates: tuple[int, ...] | None = None  # None = any rate
    int16: bool = False  # 16-bit PCM by RVC's rule; otherwise float samples

    def file_rate(self, sample_rate: int) -> int:
        """The rate the file is written at: `sample_rate`, or the next rate the codec allows."""
        if self.rates is None or sample_rate in self.rates:
            return int(sample_rate)
        return next((r for r in self.rates if r >= sample_rate), self.rates[-1])


#: Every output format by its option value (`ConversionOptions.output_format`).
OUTPUT_FORMATS: dict[str, OutputFormat] = {f.name: f for f in (
    OutputFormat("wav", "WAV", "PCM_16", "audio/wav", ".wav", int16=True),
    OutputFormat("wav_float", "WAV", "FLOAT", "audio/wav", ".wav"),
    OutputFormat("flac", "FLAC", "PCM_16", "audio/flac", ".flac", int16=True),
    OutputFormat("ogg", "OGG", "VORBIS", "audio/ogg", ".ogg"),
    OutputFormat("opus", "OGG", "OPUS", "audio/ogg; codecs=opus", ".opus", rates=OPUS_RATES),
    OutputFormat("mp3", "MP3", "MPEG_LAYER_III", "audio/mpeg", ".mp3", rates=MP3_RATES),
)}
DEFAULT_OUTPUT_FORMAT = "wav"
#: The format a file suffix stands for (`.wav` is 16-bit).
FORMAT_BY_SUFFIX: dict[str, str] = {".wav": "wav", ".flac": "flac", ".ogg": "ogg", ".opus": "opus", ".mp3": "mp3"}


def output_format(name: str) -> OutputFormat:
    """The format called `name`; AudioError naming the known ones otherwise."""
    try:
        return OUTPUT_FORMATS[name]
    except KeyError:
        raise AudioError(f"unknown output format {name!r}; use one of {', '.join(OUTPUT_FORMATS)}") from None


def encode_audio(audio: np.ndarray, sample_rate: int, format_name: str = DEFAULT_OUTPUT_FORMAT) -> bytes:
    """Encode mono float audio (n,) at `sample_rate` Hz as a file of the named format."""
    fmt = output_format(format_name)
    y = np.asarray(audio, dtype=np.float32)
    if y.ndim != 1:
        raise AudioError(f"expected mono audio of shape (n,), got {y.shape}")
    if not np.isfinite(y).all():
        raise AudioError("cannot encode audio with NaN or infinite samples")
    rate = fmt.file_rate(int(sample_rate))
    if fmt.int16:
        samples = to_int16_pcm(y)
    else:
        samples = y / np.float32(peak_divisor(y)) if y.size else y
        if rate != sample_rate:
            samples = np.clip(resample(samples, int(sample_rate), rate), -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt.container, subtype=fmt.subtype)
    return buf.getvalue()

"""Decoding every format to 16 kHz mono, the error cases, and writing audio back."""

from __future__ import annotations

import io
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rvc_pipeline import audio
from rvc_pipeline.audio import (
    SAMPLE_RATE_16K,
    SUPPORTED_SUFFIXES,
    decode_audio,
    encode_wav,
    resample,
    to_int16_pcm,
    write_audio,
)
from rvc_pipeline.errors import AudioError, AudioTooLongError

FORMATS = {  # name -> (soundfile format, subtype)
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


def tone(sr: int, seconds: float, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """(n, channels) float32 sine; channel c is scaled by 1/(c+1) so downmixing is visible."""
    t = np.arange(int(round(sr * seconds))) / sr
    mono = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([mono / (c + 1) for c in range(channels)], axis=1).astype(np.float32)


def encode(x: np.ndarray, sr: int, fmt: str = "wav") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=FORMATS[fmt][0], subtype=FORMATS[fmt][1])
    return buf.getvalue()


def dominant_hz(y: np.ndarray, sr: int = SAMPLE_RATE_16K) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spectrum) * sr / len(y))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("sr,channels", [(44100, 2), (48000, 1), (22050, 1)])
def test_every_format_decodes_to_16k_mono(fmt: str, sr: int, channels: int) -> None:
    y = decode_audio(encode(tone(sr, 1.0, 440.0, channels), sr, fmt))
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - SAMPLE_RATE_16K) < 0.02 * SAMPLE_RATE_16K  # MP3 adds encoder delay/padding
    assert abs(dominant_hz(y) - 440.0) < 3.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # librosa imports audioread's aifc/audioop/sunau
def test_matches_librosa_load_exactly() -> None:
    """Same samples as librosa.load(sr=16000, mono=True), i.e. Applio's loader (soxr HQ)."""
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((44100 * 2 + 7, 2))).astype(np.float32)
    data = encode(x, 44100, "flac")
    expected, _ = librosa.load(io.BytesIO(data), sr=16000, mono=True)
    np.testing.assert_array_equal(decode_audio(data), expected)


def test_path_and_bytes_agree(tmp_path: Path) -> None:
    data = encode(tone(32000, 0.5, channels=2), 32000, "wav")
    path = tmp_path / "in.wav"
    path.write_bytes(data)
    np.testing.assert_array_equal(decode_audio(path), decode_audio(data))
    np.testing.assert_array_equal(decode_audio(str(path)), decode_audio(data))


def test_16k_mono_passes_through_unchanged() -> None:
    x = (np.random.default_rng(1).uniform(-0.9, 0.9, (16000, 1))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
    np.testing.assert_array_equal(decode_audio(buf.getvalue()), x[:, 0])


def test_downmix_is_the_channel_mean() -> None:
    x = np.zeros((16000, 2), np.float32)
    x[:, 0], x[:, 1] = 0.5, -0.25
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
    np.testing.assert_allclose(decode_audio(buf.getvalue()), 0.125)


@pytest.mark.parametrize("sr,channels", [(192000, 2), (96000, 8), (8000, 1), (11025, 6)])
def test_unusual_rates_and_channel_counts(sr: int, channels: int) -> None:
    y = decode_audio(encode(tone(sr, 0.5, 1000.0, channels), sr))
    assert len(y) == -(-len(tone(sr, 0.5)) * 16000 // sr)
    assert abs(dominant_hz(y) - 1000.0) < 5.0


def test_silence_and_single_sample_decode() -> None:
    silence = decode_audio(encode(np.zeros((44100, 2), np.float32), 44100))
    assert len(silence) == 16000 and not silence.any()
    one = decode_audio(encode(np.full((1, 1), 0.5, np.float32), 16000))
    assert one.shape == (1,)
    assert decode_audio(encode(np.full((1, 1), 0.5, np.float32), 44100)).shape == (1,)


def test_block_boundaries_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(tone(44100, 2.0, channels=2), 44100)
    whole = decode_audio(data)
    monkeypatch.setattr(audio, "_BLOCK_SAMPLES", 2000)
    np.testing.assert_array_equal(decode_audio(data), whole)


@pytest.mark.parametrize("source,match", [(b"", "empty"), (b"not audio at all" * 10, "could not decode")])
def test_empty_and_undecodable_bytes(source: bytes, match: str) -> None:
    with pytest.raises(AudioError, match=match):
        decode_audio(source)


def test_missing_empty_and_truncated_files(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="does not exist"):
        decode_audio(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        decode_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError):
        decode_audio(encode(tone(16000, 1.0), 16000, "flac")[:30])


def test_zero_sample_file() -> None:
    with pytest.raises(AudioError, match="no audio samples"):
        decode_audio(encode(np.zeros((0, 1), np.float32), 16000))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(bad: float) -> None:
    x = np.zeros((16000, 2), np.float32)
    x[8000, 1] = bad
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite.*0.500 s"):
        decode_audio(buf.getvalue())


def test_too_long_is_refused_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(tone(44100, 3.0), 44100)
    assert len(decode_audio(data, max_duration_s=3.0)) == 48000
    read_calls = []
    original_read = sf.SoundFile.read
    def counting_read(self: sf.SoundFile, *args: object, **kwargs: object) -> np.ndarray:
        read_calls.append(1)
        return original_read(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    with pytest.raises(AudioTooLongError, match=r"3\.0 s long but the limit is 2\.5 s"):
        decode_audio(data, max_duration_s=2.5)
    assert not read_calls  # refused before decoding a single block


def lying_wav(n_frames_real: int, n_frames_claimed: int, sr: int = 16000) -> bytes:
    """A 16-bit mono WAV whose RIFF and data sizes claim `n_frames_claimed` frames."""
    data = np.zeros(n_frames_real, np.int16).tobytes()
    claimed = 2 * n_frames_claimed
    header = b"RIFF" + struct.pack("<I", 36 + claimed) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, 2 * sr, 2, 16)
    header += b"data" + struct.pack("<I", claimed)
    return header + data


def test_lying_header_cannot_exceed_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A header that understates the length is caught while decoding."""
    data = lying_wav(16000 * 10, 16000 * 10)
    monkeypatch.setattr(sf.SoundFile, "frames", property(lambda self: 16000))  # header says 1 s
    with pytest.raises(AudioTooLongError, match="at least"):
        decode_audio(data, max_duration_s=2.0)


def test_header_overstating_the_length_still_decodes() -> None:
    y = decode_audio(lying_wav(16000, 16000 * 3600))  # claims an hour, holds 1 s
    assert len(y) == 16000


def test_absurd_sample_rate_is_refused() -> None:
    with pytest.raises(AudioError, match="at least 1000 Hz"):
        decode_audio(lying_wav(100, 100, sr=10))


def test_bad_limit_value() -> None:
    with pytest.raises(AudioError, match="max_duration_s"):
        decode_audio(encode(tone(16000, 0.1), 16000), max_duration_s=0)


def test_memory_stays_near_the_decoded_size() -> None:
    """60 s of 44.1 kHz stereo: peak allocation is the 16 kHz output plus a few MiB of
    block buffers, far below the 21 MB the full-rate stereo float32 signal would take."""
    sr, seconds = 44100, 60
    data = encode(tone(sr, seconds, channels=2), sr)
    out_bytes = 16000 * seconds * 4
    tracemalloc.start()
    try:
        y = decode_audio(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(y) == 16000 * seconds
    assert peak < out_bytes + 4 * 2**20


def test_resample_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    x = np.random.default_rng(2).standard_normal(40000).astype(np.float32) * 0.1
    np.testing.assert_array_equal(resample(x, 40000, 48000), librosa.resample(x, orig_sr=40000, target_sr=48000))
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)


def test_int16_rule() -> None:
    quiet = np.array([0.5, -0.5, 0.25], np.float32)
    np.testing.assert_array_equal(to_int16_pcm(quiet), [16384, -16384, 8192])
    loud = np.array([2.0, -1.0, 0.0], np.float32)  # a = 2/0.99: peak lands at 0.99 * 32768
    out = to_int16_pcm(loud)
    assert out.dtype == np.int16 and out[0] == int(0.99 * 32768) and out[1] == -(int(0.99 * 32768) // 2)
    assert to_int16_pcm(np.zeros(0, np.float32)).shape == (0,)
    with pytest.raises(AudioError):
        to_int16_pcm(np.array([np.nan], np.float32))


def test_encode_wav_round_trip() -> None:
    x = tone(40000, 0.5)[:, 0]
    data = encode_wav(x, 40000)
    y, sr = sf.read(io.BytesIO(data), dtype="int16")
    info = sf.info(io.BytesIO(data))
    assert sr == 40000 and info.subtype == "PCM_16" and info.format == "WAV"
    np.testing.assert_array_equal(y, to_int16_pcm(x))


@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
@pytest.mark.parametrize("sr", [40000, 48000])
def test_write_audio_every_suffix(tmp_path: Path, suffix: str, sr: int) -> None:
    x = tone(sr, 1.0, 440.0)[:, 0]
    path = write_audio(tmp_path / f"out{suffix}", x, sr)
    info = sf.info(str(path))
    assert info.channels == 1
    if suffix == ".mp3":
        assert info.samplerate == (44100 if sr == 40000 else sr)  # MP3 has no 40 kHz: next rate up
    elif suffix == ".opus":
        assert info.samplerate == 48000  # Opus runs at 8/12/16/24/48 kHz only
    else:
        assert info.samplerate == sr
    if suffix in (".wav", ".flac"):
        y, _ = sf.read(str(path), dtype="int16")
        np.testing.assert_array_equal(y, to_int16_pcm(x))
    assert abs(dominant_hz(decode_audio(path)) - 440.0) < 3.0


def test_write_audio_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="unknown suffix"):
        write_audio(tmp_path / "out.xyz", np.zeros(10, np.float32), 16000)

"""Controls beyond the reference: auto_key, autotune (with scales), F0 curves, formant shift,
denoise and output formats, checked against their formulas; and every control off by default."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from rvc_pipeline import OPTION_SPECS, ConversionOptions, OptionError, convert
from rvc_pipeline.effects import reduce_noise, shift_formants
from rvc_pipeline.options import ChunkingConfig
from rvc_pipeline.output_format import OUTPUT_FORMATS, encode_audio
from rvc_pipeline.pipeline import estimate_pitch, finish, prepare, shape_input
from rvc_pipeline.pitch import coarse_f0, shift_f0
from rvc_pipeline.pitch.controls import (
    F0Curve,
    autotune,
    choose_auto_key,
    f0_curve_csv,
    hz_to_midi,
    scale_pitch_classes,
)
from rvc_pipeline.testing.audio import snr_db, tone, voiced_clip


class FixedPitch:
    """A PitchEstimator stand-in that returns a given F0 track (Hz per 10 ms frame)."""

    def __init__(self, f0: np.ndarray) -> None:
        self.f0 = np.asarray(f0, dtype=np.float32)

    def estimate(self, padded, n_frames, method, filter_radius=3):
        return self.f0[:n_frames]


def _padded(n_frames: int) -> np.ndarray:
    return np.zeros(n_frames * 160)


# --- autotune -------------------------------------------------------------------------------


def test_autotune_at_strength_one_maps_a_glide_to_exact_semitones():
    glide = np.geomspace(100.0, 400.0, 500).astype(np.float32)  # two octaves, every cent in between
    tuned = autotune(glide, 1.0)
    midi = hz_to_midi(tuned)
    np.testing.assert_allclose(midi, np.round(midi), atol=1e-4)  # on the equal-tempered grid
    assert np.all(np.abs(midi - hz_to_midi(glide)) <= 0.5 + 1e-4)  # the nearest note
    assert len(np.unique(np.round(midi))) == 25  # 100 Hz (G2 + 0.35) .. 400 Hz (G4 - 0.04)


def test_autotune_at_strength_zero_changes_nothing_and_unvoiced_stays_zero():
    f0 = np.array([0, 101.3, 0, 227.0, 0], dtype=np.float32)
    np.testing.assert_array_equal(autotune(f0, 0.0), f0)
    half = autotune(f0, 0.5)
    assert np.all(half[f0 == 0] == 0)
    full = autotune(f0, 1.0)
    np.testing.assert_allclose(half[f0 > 0], (f0[f0 > 0] + full[f0 > 0]) / 2, rtol=1e-6)


def test_autotune_to_a_scale_uses_only_its_notes():
    assert scale_pitch_classes("A minor") == (0, 2, 4, 5, 7, 9, 11)  # the white keys
    assert scale_pitch_classes("f# major") == (1, 3, 5, 6, 8, 10, 11)
    glide = np.geomspace(110.0, 440.0, 400).astype(np.float32)
    classes = np.mod(np.round(hz_to_midi(autotune(glide, 1.0, "A minor"))), 12).astype(int)
    assert set(classes) == {0, 2, 4, 5, 7, 9, 11}
    c_sharp = 277.18  # C#4 is not in A minor: it goes to C4 or D4, whichever is nearer (C4 on a tie)
    assert autotune(np.array([c_sharp], np.float32), 1.0, "A minor")[0] == pytest.approx(261.63, abs=0.01)
    with pytest.raises(OptionError, match="autotune_scale"):
        ConversionOptions(autotune_scale="H minor")


# --- auto key -------------------------------------------------------------------------------


def test_auto_key_picks_plus_twelve_for_a_77_5_hz_voice_targeting_155():
    f0 = np.r_[np.zeros(50), np.full(300, 77.5), np.zeros(50)]
    assert choose_auto_key(f0, 155.0) == 12
    assert choose_auto_key(f0 * 4, 155.0) == -12
    assert choose_auto_key(np.full(10, 40.0), 1100.0) == 12  # limited to +/-12
    assert choose_auto_key(np.zeros(100), 155.0) == 0  # nothing voiced: no shift


def test_auto_key_is_added_to_the_key_and_reported():
    n, pad = 400, 100
    f0 = np.r_[np.zeros(pad), np.full(n - 2 * pad, 77.5), np.zeros(pad)].astype(np.float32)
    options = ConversionOptions(auto_key="male", f0_up_key=1)
    track = estimate_pitch(_padded(n), FixedPitch(f0), options, input_start_frame=pad)
    assert track.auto_key == 12
    np.testing.assert_array_equal(track.f0, shift_f0(f0, 13))
    track = estimate_pitch(_padded(n), FixedPitch(f0), ConversionOptions(auto_key="310"), input_start_frame=pad)
    assert track.auto_key == 12  # 310 Hz = two octaves up, limited to one
    with pytest.raises(OptionError, match="auto_key"):
        ConversionOptions(auto_key="baritone")


# --- F0 curve -------------------------------------------------------------------------------


def test_f0_curve_replaces_exactly_the_frames_inside_its_time_range():
    n, pad = 500, 100
    f0 = np.linspace(100, 200, n).astype(np.float32)
    curve = "time_s,f0_hz\n0.50,300\n1.00,400\n"  # input time 0.5-1.0 s = frames 150-200
    track = estimate_pitch(_padded(n), FixedPitch(f0), ConversionOptions(f0_curve=curve), input_start_frame=pad)
    inside = np.arange(150, 201)
    np.testing.assert_allclose(track.f0[inside], 300 + (inside - 150) * 2.0, rtol=1e-6)
    outside = np.setdiff1d(np.arange(n), inside)
    np.testing.assert_array_equal(track.f0[outside], f0[outside])
    np.testing.assert_array_equal(track.coarse, coarse_f0(track.f0))


def test_f0_curve_csv_reads_back_to_the_same_values():
    f0 = np.r_[0, 0, np.geomspace(80, 900, 97), 0].astype(np.float32)
    curve = F0Curve.parse(f0_curve_csv(f0))
    np.testing.assert_array_equal(curve.apply(np.zeros(f0.size + 20, np.float32), 10)[10:-10], f0)


@pytest.mark.parametrize("text, message", [
    ("0.1,100\n0.1,120\n", "times must increase"),
    ("0.1,100,3\n", "row 1"),
    ("time,f0\n0.0,abc\n", "row 2"),
    ("-1,100\n", "time must be >= 0"),
    ("# only a comment\n", "no rows"),
])
def test_bad_f0_curves_are_refused_with_the_row(text, message):
    with pytest.raises(OptionError, match=message):
        ConversionOptions(f0_curve=text)


# --- formant shift --------------------------------------------------------------------------


def test_formant_shift_by_one_is_an_identity_within_the_shifters_tolerance():
    clip = voiced_clip(1.5, 140.0)
    assert snr_db(clip, shift_formants(clip, 1.0)) > 25  # stftpitchshift's own resynthesis error
    assert shift_formants(clip, 1.0).shape == clip.shape


def _spectral_centroid(audio: np.ndarray) -> float:
    f, p = signal.welch(audio, 16000, nperseg=2048)
    return float((f * p).sum() / p.sum())


def test_formant_shift_moves_the_envelope_and_keeps_the_pitch():
    pulses = np.zeros(32000)
    pulses[:: 16000 // 125] = 1.0  # 125 Hz glottal pulses
    # One broad formant at 1.5 kHz (the 1 ms lifter sees envelope detail of about 1 kHz and wider).
    b, a = signal.iirpeak(1500, 2, fs=16000)
    vowel = (0.5 * signal.lfilter(b, a, pulses) / np.abs(signal.lfilter(b, a, pulses)).max()).astype(np.float32)
    up, down = shift_formants(vowel, 1.25), shift_formants(vowel, 0.8)
    assert _spectral_centroid(up) > _spectral_centroid(vowel) * 1.06
    assert _spectral_centroid(down) < _spectral_centroid(vowel) * 0.95
    f, p = signal.welch(up, 16000, nperseg=4096)
    harmonics = f[signal.find_peaks(p, distance=20)[0][:3]]
    np.testing.assert_allclose(np.diff(harmonics), 125, atol=8)  # harmonics still 125 Hz apart


# --- denoise --------------------------------------------------------------------------------


def test_denoise_lowers_the_noise_floor_of_a_noisy_tone_by_10_db():
    """A tone in 300 ms bursts (as syllables come) in white noise: the floor between bursts
    drops by at least 10 dB, the bursts keep their level within 4 dB."""
    rate = 40000
    t = np.arange(4 * rate) / rate
    phase = np.mod(t, 0.5)
    noisy = (tone(440, 4.0, amplitude=0.3, sample_rate=rate) * (phase < 0.3)
             + 0.02 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    gaps, bursts = (phase > 0.34) & (phase < 0.46), (phase > 0.05) & (phase < 0.25)

    def level_db(y, where):
        return 10 * np.log10(np.mean(y[where].astype(np.float64) ** 2))

    cleaned = reduce_noise(noisy, rate, 1.0)
    assert cleaned.shape == noisy.shape
    assert level_db(noisy, gaps) - level_db(cleaned, gaps) >= 10
    assert abs(level_db(cleaned, bursts) - level_db(noisy, bursts)) < 4
    half = reduce_noise(noisy, rate, 0.5)
    assert level_db(cleaned, gaps) < level_db(half, gaps) < level_db(noisy, gaps)


# --- output formats -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OUTPUT_FORMATS))
@pytest.mark.parametrize("rate", [40000, 48000, 32000])
def test_every_output_format_decodes_to_the_right_length_and_rate(name, rate):
    audio = tone(330, 1.3, amplitude=0.4, sample_rate=rate)
    data = encode_audio(audio, rate, name)
    decoded, file_rate = sf.read(io.BytesIO(data), dtype="float32")
    fmt = OUTPUT_FORMATS[name]
    assert file_rate == (rate if fmt.rates is None or rate in fmt.rates else fmt.file_rate(rate))
    assert decoded.shape[0] == round(1.3 * file_rate)
    if fmt.rates is None and name != "ogg":  # lossless: same samples (16-bit or float)
        np.testing.assert_allclose(decoded, audio, atol=1 / 32768 if fmt.int16 else 0)
    else:
        assert snr_db(tone(330, 1.3, amplitude=0.4, sample_rate=file_rate)[2000:-2000], decoded[2000:-2000]) > 10


# --- the schema and defaults ----------------------------------------------------------------

NEW_CONTROLS = ("auto_key", "autotune", "autotune_scale", "f0_curve", "formant_shift", "formant_quefrency",
                "denoise", "output_format")


def test_every_control_is_in_the_one_schema():
    names = {spec.name for spec in OPTION_SPECS}
    assert set(NEW_CONTROLS) <= names
    for spec in OPTION_SPECS:
        assert spec.allowed() and spec.describe()  # README, CLI help and OpenAPI read these


def test_controls_at_their_defaults_leave_every_stage_as_the_reference(voice_v2, encoder):
    """Each stage with default controls equals the stage's reference formula, sample for sample."""
    defaults = ConversionOptions()
    clip = voiced_clip(2.0)
    assert shape_input(clip, defaults) is clip
    prepared = prepare(clip, ChunkingConfig.CPU_FP32)
    f0 = (np.abs(np.sin(np.arange(prepared.n_frames) / 7)) * 300).astype(np.float32)
    track = estimate_pitch(prepared.padded, FixedPitch(f0), defaults, input_start_frame=prepared.input_start_frame)
    np.testing.assert_array_equal(track.f0, shift_f0(f0, 0.0))
    np.testing.assert_array_equal(track.coarse, coarse_f0(shift_f0(f0, 0.0)))
    assert track.auto_key == 0
    out = np.sin(np.arange(80000) / 30).astype(np.float32) * 0.5
    audio, rate = finish([out], prepared, 40000, defaults)
    reference, _ = finish([out], prepared, 40000, defaults.replace(denoise=0.0))
    np.testing.assert_array_equal(audio, reference)
    noisy, _ = finish([out], prepared, 40000, defaults.replace(denoise=0.5))
    assert not np.array_equal(noisy, audio)


def test_each_control_changes_a_conversion(voice_v2, encoder, pitch_estimator):
    clip = voiced_clip(1.5, 130.0)
    base = convert(clip, voice_v2, encoder, pitch_estimator, ConversionOptions(seed=1)).audio
    for change in (dict(autotune=1.0), dict(auto_key="female"), dict(formant_shift=1.3),
                   dict(f0_curve="0,200\n1.0,260\n")):
        result = convert(clip, voice_v2, encoder, pitch_estimator, ConversionOptions(seed=1, **change))
        assert result.audio.shape == base.shape
        assert snr_db(base, result.audio) < 40, change
    assert convert(clip, voice_v2, encoder, pitch_estimator, ConversionOptions(seed=1, auto_key="female")).auto_key > 0

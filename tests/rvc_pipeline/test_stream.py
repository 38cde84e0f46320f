"""The realtime StreamConverter: block sizes and formats, SOLA joins, the silence gate,
bad blocks, isolation between sessions, real conversion and settings validation."""

from __future__ import annotations

import numpy as np
import pytest

from rvc_pipeline.audio import resample
from rvc_pipeline.errors import AudioError, OptionError
from rvc_pipeline.options import ConversionOptions
from rvc_pipeline.stream import (
    LocalStreamEngine,
    StreamConverter,
    StreamSettings,
    StreamStateError,
    StreamWindow,
)
from rvc_pipeline.testing.audio import snr_db

#: The fake "voice" rate of `EchoEngine`.
ECHO_RATE = 40000


class EchoEngine:
    """Returns the window's own decoded span, resampled to ECHO_RATE: an identity conversion."""

    sample_rate = ECHO_RATE

    def __init__(self) -> None:
        self.calls = 0

    def run(self, window: StreamWindow) -> np.ndarray:
        self.calls += 1
        start = window.skip_head * 160
        span = window.audio16k[start : start + window.return_length * 160]
        return resample(span, 16000, ECHO_RATE)


def continuous_tone(seconds: float, rate: int) -> np.ndarray:
    """(N,) float32: a harmonic tone with vibrato and no fades (aperiodic enough to locate)."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 180 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    audio = sum(np.sin(k * phase) / k for k in range(1, 5))
    return (0.3 * audio / np.max(np.abs(audio))).astype(np.float32)


def blocks_of(audio: np.ndarray, size: int) -> list[np.ndarray]:
    return [audio[i : i + size] for i in range(0, audio.shape[0] - size + 1, size)]


def small_settings(**changes) -> StreamSettings:
    values = dict(sample_rate=48000, sample_format="f32le", block_ms=100, extra_ms=300, crossfade_ms=50,
                  silence_db=-60.0)
    values.update(changes)
    return StreamSettings(**values)


@pytest.mark.parametrize("sample_format", ["pcm_s16le", "f32le"])
@pytest.mark.parametrize("rate", [16000, 44100])
def test_each_output_block_matches_the_input_block(sample_format, rate):
    settings = small_settings(sample_rate=rate, sample_format=sample_format)
    converter = StreamConverter(settings, ECHO_RATE)
    engine = EchoEngine()
    assert settings.block_samples == rate // 100 * 10
    for block in blocks_of(continuous_tone(0.5, rate), settings.block_samples):
        data = converter.encode(block)
        assert len(data) == settings.bytes_per_block
        out = converter.process(data, engine)
        assert out.dtype == np.float32 and out.shape == (settings.block_samples,)
        assert len(converter.encode(out)) == settings.bytes_per_block
    stats = converter.stats()
    assert stats["blocks_in"] == stats["blocks_out"] == 5 and stats["gated"] == 0
    assert stats["process_ms_p50"] is not None and stats["process_ms_p95"] >= stats["process_ms_p50"]


def test_sola_joins_blocks_into_the_delayed_input():
    settings = small_settings()
    converter = StreamConverter(settings, ECHO_RATE)
    audio = continuous_tone(2.0, settings.sample_rate)
    out = np.concatenate([converter.process(b, EchoEngine()) for b in blocks_of(audio, settings.block_samples)])
    assert out.shape == audio.shape

    # The delay by cross-correlation over 0..latency: crossfade + search (the block's own
    # wait is not a sample offset), within the algorithmic latency.
    latency = int(settings.latency_ms * settings.sample_rate / 1000)
    start = settings.window_samples + settings.block_samples  # after the ring has filled
    ref = audio[start - latency : start - latency + 48000]
    scores = [np.dot(out[start + d - latency : start + d - latency + 48000], ref) for d in range(latency)]
    delay = int(np.argmax(scores))
    assert delay == settings.crossfade_samples + settings.sola_search_samples
    assert delay + settings.block_samples <= latency

    steady_out, steady_in = out[start:], audio[start - delay : audio.shape[0] - delay]
    assert snr_db(steady_in, steady_out) > 35
    # No clicks: the largest sample-to-sample step anywhere (block joins included) stays
    # that of the input signal.
    assert np.abs(np.diff(steady_out)).max() < 1.1 * np.abs(np.diff(audio)).max()
    joins = np.arange(settings.block_samples, steady_out.shape[0], settings.block_samples)
    error = np.abs(steady_out - steady_in)
    assert error[joins].max() < 0.01 and error[joins - 1].max() < 0.01


def test_silence_gate_skips_the_engine():
    settings = small_settings(silence_db=-40.0)
    converter = StreamConverter(settings, ECHO_RATE)
    engine = EchoEngine()
    quiet = np.full(settings.block_samples, 10 ** (-50 / 20), dtype=np.float32)  # -50 dBFS
    assert converter.push(quiet) is None
    assert np.array_equal(converter.finish(None, None), np.zeros(settings.block_samples, np.float32))
    out = converter.process(np.zeros(settings.block_samples, np.float32), engine)
    assert engine.calls == 0 and not out.any()
    loud = continuous_tone(0.1, settings.sample_rate)
    assert converter.process(loud, engine).any() and engine.calls == 1
    assert converter.stats()["gated"] == 2


def test_bad_blocks_raise_and_leave_the_state_unchanged():
    settings = small_settings(sample_format="pcm_s16le")
    audio = continuous_tone(0.5, settings.sample_rate)
    good = blocks_of(audio, settings.block_samples)
    reference = StreamConverter(settings, ECHO_RATE)
    expected = [reference.process(reference.encode(b), EchoEngine()) for b in good]

    converter = StreamConverter(settings, ECHO_RATE)
    outputs = []
    for i, block in enumerate(good):
        data = converter.encode(block)
        if i == 2:
            with pytest.raises(AudioError, match=f"{settings.bytes_per_block} bytes"):
                converter.push(data[:-2])  # wrong size
            with pytest.raises(AudioError, match="shape"):
                converter.push(block[:-1])
            with pytest.raises(AudioError, match="float or int16"):
                converter.push(block.astype(np.int32))  # wrong format
            with pytest.raises(AudioError, match="bytes or a numpy array"):
                converter.push("text")
            with pytest.raises(AudioError, match="NaN"):
                converter.push(np.full(settings.block_samples, np.nan, np.float32))
        outputs.append(converter.process(data, EchoEngine()))
    for got, want in zip(outputs, expected):
        np.testing.assert_array_equal(got, want)
    assert converter.stats()["rejected"] == 5


def test_push_and_finish_must_alternate():
    settings = small_settings()
    converter = StreamConverter(settings, ECHO_RATE)
    block = continuous_tone(0.1, settings.sample_rate)
    with pytest.raises(StreamStateError):
        converter.finish(None, None)
    window = converter.push(block)
    with pytest.raises(StreamStateError):
        converter.push(block)
    extended = window.audio16k.shape[0] - settings.window_samples_16k  # the alignment frame, if taken
    assert extended in (0, 160)
    assert (window.skip_head, window.return_length) == (30 + extended // 160, 15)
    assert converter.finish(window, None).shape == (settings.block_samples,)  # no output: silence


def test_sessions_with_different_voices_are_isolated(voice_v2, voice_v2_32k, encoder, pitch_estimator):
    options = ConversionOptions(f0_method="pm", seed=7)
    settings = small_settings(extra_ms=100, options=options)
    engines = [LocalStreamEngine(voice_v2, encoder, pitch_estimator),
               LocalStreamEngine(voice_v2_32k, encoder, pitch_estimator)]
    inputs = [blocks_of(continuous_tone(0.2, 48000), settings.block_samples),
              blocks_of(0.7 * continuous_tone(0.2, 48000)[::-1].copy(), settings.block_samples)]

    alone = []
    for engine, blocks in zip(engines, inputs):
        converter = StreamConverter(settings, engine.sample_rate)
        alone.append([converter.process(b, engine) for b in blocks])

    converters = [StreamConverter(settings, e.sample_rate) for e in engines]
    together: list[list[np.ndarray]] = [[], []]
    for i in range(len(inputs[0])):
        for k in (0, 1):
            together[k].append(converters[k].process(inputs[k][i], engines[k]))
    for k in (0, 1):
        for got, want in zip(together[k], alone[k]):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(np.concatenate(alone[0]), np.concatenate(alone[1]))


def test_real_conversion_block_by_block_and_key_update(voice_v2, encoder, pitch_estimator):
    import copy

    settings = small_settings(sample_format="pcm_s16le", extra_ms=100,
                              options=ConversionOptions(f0_method="pm", seed=3))
    engine = LocalStreamEngine(voice_v2, encoder, pitch_estimator)
    audio = continuous_tone(0.4, settings.sample_rate)
    blocks = blocks_of(audio, settings.block_samples)

    converter = StreamConverter(settings, voice_v2.sample_rate)
    outputs = [converter.process(converter.encode(b), engine) for b in blocks[:3]]
    plain = copy.deepcopy(converter)  # the same session, forked: one keeps the key
    assert converter.update(f0_up_key=12).options.f0_up_key == 12
    window, plain_window = converter.push(converter.encode(blocks[3])), plain.push(plain.encode(blocks[3]))
    assert (window.options.f0_up_key, plain_window.options.f0_up_key) == (12, 0)
    np.testing.assert_array_equal(window.audio16k, plain_window.audio16k)
    outputs.append(converter.finish(window, engine.run(window)))
    plain_out = plain.finish(plain_window, engine.run(plain_window))

    total = np.concatenate(outputs)
    assert total.shape == (len(blocks) * settings.block_samples,) == audio.shape
    assert np.isfinite(total).all() and np.abs(total[settings.block_samples:]).max() > 0
    assert not np.allclose(outputs[3], plain_out)
    # The synthesizer gets the octave: the window's F0 doubles.
    from rvc_pipeline.pipeline import estimate_pitch

    f0_up = estimate_pitch(window.audio16k, pitch_estimator, window.options).f0
    f0_plain = estimate_pitch(window.audio16k, pitch_estimator, plain_window.options).f0
    voiced = f0_plain > 0
    assert voiced.sum() > 10
    np.testing.assert_allclose(f0_up[voiced], 2 * f0_plain[voiced], rtol=1e-5)


def test_update_validates_and_keeps_the_state():
    converter = StreamConverter(small_settings(), ECHO_RATE)
    with pytest.raises(OptionError, match="f0_up_key"):
        converter.update(f0_up_key=99)
    with pytest.raises(OptionError, match="block_ms cannot change"):
        converter.update(block_ms=200)
    with pytest.raises(OptionError, match="auto_key"):
        converter.update(auto_key="female")
    assert converter.options.f0_up_key == 0
    assert converter.update(index_rate=0.2, silence_db=-50).silence_db == -50
    converter.set_voice_sample_rate(48000)
    assert converter.voice_sample_rate == 48000
    with pytest.raises(OptionError, match="engine's voice runs at"):
        converter.process(np.zeros(converter.settings.block_samples, np.float32), EchoEngine())


def test_settings_sizes_and_effective():
    s = StreamSettings(sample_rate=44100, block_ms=254, extra_ms=2500, crossfade_ms=80, options={"f0_up_key": "3"})
    assert s.block_ms == 250 and s.block_frames == 25 and s.frame_samples == 441
    assert s.block_samples == 11025 and s.bytes_per_block == 44100
    assert s.sola_buffer_samples == 4 * 441 and s.sola_search_samples == 441
    assert s.window_samples == (250 + 8 + 1 + 25) * 441 and s.window_samples_16k == 284 * 160
    assert (s.skip_head, s.return_length) == (250, 25 + 4 + 1)
    assert s.latency_ms == 250 + 80 + 10
    eff = s.effective()
    assert eff["options"]["f0_up_key"] == 3.0 and eff["sola_buffer_ms"] == 40 and eff["latency_ms"] == 340
    import json

    json.dumps(eff)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(sample_rate=4000), "sample_rate must be 8000 to 96000 Hz"),
        (dict(sample_rate=22050), "multiple of 100"),
        (dict(sample_rate=48000.0), "sample_rate must be an integer"),
        (dict(sample_format="s24"), "sample_format must be one of pcm_s16le, f32le"),
        (dict(block_ms=20), "block_ms must be 50 to 2000 ms, got 20"),
        (dict(extra_ms=6000), "extra_ms must be 0 to 5000 ms"),
        (dict(crossfade_ms=-1), "crossfade_ms must be 0 to 500 ms"),
        (dict(silence_db=10), "silence_db must be -120 to 0 dBFS"),
        (dict(block_ms=float("nan")), "block_ms must be a finite number"),
        (dict(options=ConversionOptions(auto_key="male")), "auto_key is not available when streaming"),
        (dict(options=ConversionOptions(f0_curve="0,100\n1,200")), "f0_curve is not available"),
        (dict(options=ConversionOptions(resample_sr=48000)), "resample_sr does not apply"),
        (dict(options={"index_rate": 2}), "index_rate"),
        (dict(options=3), "options must be ConversionOptions"),
    ],
)
def test_settings_validation_messages(changes, message):
    with pytest.raises(OptionError, match=message):
        StreamSettings(**changes)


def test_synthesize_window_decodes_a_slice_of_the_full_output(voice_v2):
    from rvc_pipeline.pipeline import PitchTrack, synthesize_window
    from rvc_pipeline.pitch import coarse_f0

    rng = np.random.default_rng(0)
    n_frames = 60
    features = rng.standard_normal((n_frames // 2, voice_v2.content_dim)).astype(np.float32)
    f0 = np.full(n_frames, 200.0, dtype=np.float32)
    pitch = PitchTrack(coarse_f0(f0), f0)
    options = ConversionOptions(index_rate=0.5)
    full = synthesize_window(voice_v2, features, pitch, n_frames * 160, 0, n_frames, options, seed=5)
    part = synthesize_window(voice_v2, features, pitch, n_frames * 160, 40, 15, options, seed=5)
    hop = voice_v2.hop_length
    assert full.shape == (n_frames * hop,) and part.shape == (15 * hop,)
    np.testing.assert_allclose(part, full[40 * hop : 55 * hop], atol=1e-4)


@pytest.mark.parametrize("block_ms, extra_ms", [(250, 1000), (200, 250), (110, 0), (300, 330)])
def test_every_window_starts_on_the_content_encoders_20_ms_grid(block_ms, extra_ms):
    """Content frames (20 ms, counted from the window's start) and pitch frames (10 ms) stay on one
    grid, the offline one: every window starts an even number of 10 ms frames after the stream's
    start, and skip_head still points at the same audio."""
    settings = StreamSettings(sample_rate=16000, block_ms=block_ms, extra_ms=extra_ms, crossfade_ms=50,
                              silence_db=-120)
    converter = StreamConverter(settings, ECHO_RATE)
    tone = continuous_tone(6 * block_ms / 1000, 16000)
    n = settings.block_samples
    for k in range(6):
        window = converter.push(tone[k * n:(k + 1) * n])
        frames = window.audio16k.shape[0] // 160
        start = (k + 1) * settings.block_frames - frames  # the window's first frame, from the stream's start
        assert start % 2 == 0
        assert window.skip_head == settings.skip_head + frames - settings.window_frames
        decoded = window.audio16k[window.skip_head * 160:][:n]  # the same audio either way
        np.testing.assert_array_equal(decoded, converter._input16k[-(settings.window_frames - settings.skip_head) * 160:][:n])
        converter.finish(window, None)

"""End-to-end behaviour of the conversion pipeline against the reference algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from rvc_pipeline import ChunkingConfig, ConversionOptions, convert, prepare
from rvc_pipeline.errors import AudioError, OptionError
from rvc_pipeline.testing.audio import snr_db, tone

SR = 16000
FAST = ConversionOptions(f0_method="pm")


def reference_chunk_frames(chunk_samples: int, x_pad: int) -> int:
    """Output frames of one chunk, by the reference's arithmetic (RVC pipeline.vc).

    HuBERT gives T = (L - 400) // 320 + 1 frames, doubled to 10 ms; the synthesizer runs
    min(L // 160, 2T) frames; x_pad seconds (100 frames per second) are trimmed per side.
    """
    content_frames = (chunk_samples - 400) // 320 + 1
    return min(chunk_samples // 160, 2 * content_frames) - 2 * 100 * x_pad


def reference_cuts(audio: np.ndarray, chunking: ChunkingConfig) -> list[int]:
    """The RVC WebUI's silence search, written naively (rvc-formats.md §5.2 step 4:
    a moving sum of |x| over 160 samples, first argmin within ±x_query of each centre)."""
    x = audio.astype(np.float64)
    from scipy import signal

    b, a = signal.butter(N=5, Wn=48, btype="high", fs=SR)
    x = signal.filtfilt(b, a, x)
    padded = np.pad(x, (80, 80), mode="reflect")
    if padded.shape[0] <= chunking.x_max * SR:
        return []
    window_sum = np.zeros_like(x)
    for i in range(160):
        window_sum += np.abs(padded[i : i - 160])
    cuts = []
    t_query, t_center = chunking.x_query * SR, chunking.x_center * SR
    for t in range(t_center, x.shape[0], t_center):
        region = window_sum[t - t_query : t + t_query]
        cuts.append(t - t_query + np.where(region == region.min())[0][0])
    return cuts


@pytest.mark.parametrize("n_samples", [16000, 16100, 16250, 23999, 48000 + 77])
def test_output_length_follows_the_reference(voice_v2, encoder, pitch_estimator, n_samples):
    audio = tone(220, n_samples / SR)
    result = convert(audio, voice_v2, encoder, pitch_estimator, FAST)
    expected = reference_chunk_frames(n_samples + 2 * SR, x_pad=1) * voice_v2.hop_length
    assert result.sample_rate == 40000
    assert result.audio.shape == (expected,)
    # Within two 10 ms frames of the input's duration (the reference drops up to 2).
    assert n_samples // 160 - 2 <= expected // voice_v2.hop_length <= n_samples // 160


def test_no_pitch_48k_voice_converts(voice_v1_nof0, encoder, espeak_speech):
    audio = espeak_speech("Hello there, this is a test.")
    result = convert(audio, voice_v1_nof0, encoder, None, ConversionOptions())
    assert result.sample_rate == 48000
    assert result.audio.shape == (reference_chunk_frames(audio.shape[0] + 2 * SR, 1) * 480,)
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() <= 0.99 + 1e-6


def test_long_input_is_cut_at_the_reference_silence_points():
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(45 * SR)).astype(np.float32)
    audio[int(36.2 * SR) : int(36.5 * SR)] = 0  # the quietest place near the 38 s centre
    chunking = ChunkingConfig.CPU_FP32
    prepared = prepare(audio, chunking)
    cuts = reference_cuts(audio, chunking)
    assert len(cuts) == 1 and 36.2 * SR <= cuts[0] < 36.5 * SR
    starts = [c.start for c in prepared.chunks]
    assert starts == [0] + [t // 160 * 160 for t in cuts]


def test_long_tone_is_cut_inside_its_only_quiet_gap():
    # A loud tone with one 100 ms gap inside the search window around the 38 s centre. The
    # moving sum of |x| is smallest in the gap; a signed sum would cancel over the tone's
    # periods and could land anywhere.
    audio = tone(220, 44.0, amplitude=0.8)
    gap_start, gap_stop = int(34.0 * SR), int(34.1 * SR)
    audio[gap_start:gap_stop] = 0
    chunking = ChunkingConfig.CPU_FP32
    prepared = prepare(audio, chunking)
    assert len(prepared.chunks) == 2
    cut = prepared.chunks[1].start
    assert gap_start <= cut < gap_stop
    assert cut == reference_cuts(audio, chunking)[0] // 160 * 160


def test_chunked_output_has_reference_length_and_quiet_joins(voice_v2_32k, encoder, pitch_estimator):
    # Small chunking constants make the reference's cutting happen on a short clip.
    chunking = ChunkingConfig(x_pad=1, x_query=1, x_center=3, x_max=4)
    pieces = []
    for k in range(4):  # 2.5 s tone bursts separated by 0.6 s of silence
        pieces += [np.zeros(int(0.6 * SR), np.float32), tone(180 + 40 * k, 2.5, amplitude=0.4)]
    audio = np.concatenate(pieces[1:])
    prepared = prepare(audio, chunking)
    cuts = [t // 160 * 160 for t in reference_cuts(audio, chunking)]
    assert len(prepared.chunks) == len(cuts) + 1 >= 3

    result = convert(audio, voice_v2_32k, encoder, pitch_estimator, FAST, chunking=chunking)
    bounds = [0] + cuts
    lengths = [b - a + 2 * SR + 160 for a, b in zip(bounds[:-1], bounds[1:])]
    lengths.append(audio.shape[0] + 2 * SR - bounds[-1])
    frames = [reference_chunk_frames(n, chunking.x_pad) for n in lengths]
    assert result.audio.shape == (sum(frames) * 320,)

    # Every join falls in the input's silence (the cut search above), and the sample step
    # across each join is no larger than the steps around it: no click.
    out = result.audio
    steps = np.abs(np.diff(out))
    for cut, join in zip(cuts, np.cumsum(frames[:-1]) * 320):
        assert np.abs(audio[cut - 800 : cut + 800]).max() == 0
        neighbourhood = np.concatenate([steps[join - 640 : join - 1], steps[join : join + 640]])
        assert steps[join - 1] <= neighbourhood.max()


def test_silence_converts_to_silence(voice_v2, encoder, pitch_estimator):
    result = convert(np.zeros(2 * SR, np.float32), voice_v2, encoder, pitch_estimator, FAST)
    assert result.audio.size > 0 and np.abs(result.audio).max() == 0


def test_same_seed_same_output_different_seed_different(voice_v2, encoder, pitch_estimator):
    audio = tone(220, 1.0)
    a = convert(audio, voice_v2, encoder, pitch_estimator, FAST).audio
    b = convert(audio, voice_v2, encoder, pitch_estimator, FAST).audio
    c = convert(audio, voice_v2, encoder, pitch_estimator, FAST.replace(seed=7)).audio
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_index_rate_and_protect_change_the_output(voice_v2, encoder, pitch_estimator, espeak_speech):
    audio = espeak_speech("Protect the consonants.")
    base = convert(audio, voice_v2, encoder, pitch_estimator, FAST.replace(index_rate=0.0, protect=0.5)).audio
    retrieved = convert(audio, voice_v2, encoder, pitch_estimator, FAST.replace(index_rate=1.0, protect=0.5)).audio
    protected = convert(audio, voice_v2, encoder, pitch_estimator, FAST.replace(index_rate=1.0, protect=0.0)).audio
    assert base.shape == retrieved.shape == protected.shape
    assert not np.allclose(base, retrieved)
    assert not np.allclose(retrieved, protected)


def test_resample_sr_sets_the_output_rate(voice_v2, encoder, pitch_estimator):
    audio = tone(220, 1.0)
    native = convert(audio, voice_v2, encoder, pitch_estimator, FAST)
    resampled = convert(audio, voice_v2, encoder, pitch_estimator, FAST.replace(resample_sr=16000))
    assert resampled.sample_rate == 16000
    assert abs(resampled.audio.shape[0] - native.audio.shape[0] * 16000 / 40000) <= 1


def test_rms_mix_rate_zero_follows_the_input_envelope(voice_v2, encoder, pitch_estimator):
    # 1 s loud, 1 s quiet: with rms_mix_rate 0 the output's loudness follows the input's.
    audio = np.concatenate([tone(220, 1.0, amplitude=0.5), tone(220, 1.0, amplitude=0.05)])
    out = convert(audio, voice_v2, encoder, pitch_estimator, FAST.replace(rms_mix_rate=0.0)).audio
    half = out.shape[0] // 2
    first = np.sqrt(np.mean(out[int(0.2 * half) : int(0.8 * half)] ** 2))
    second = np.sqrt(np.mean(out[int(1.2 * half) : int(1.8 * half)] ** 2))
    assert 5 < first / second < 20  # the input's 10:1, blurred by 1 s RMS frames


def test_multi_speaker_voice_checks_the_speaker(voice_v2_32k, encoder, pitch_estimator):
    audio = tone(200, 1.0)
    a = convert(audio, voice_v2_32k, encoder, pitch_estimator, FAST.replace(speaker_id=0)).audio
    b = convert(audio, voice_v2_32k, encoder, pitch_estimator, FAST.replace(speaker_id=2)).audio
    assert not np.allclose(a, b)
    with pytest.raises(OptionError, match="speaker"):
        convert(audio, voice_v2_32k, encoder, pitch_estimator, FAST.replace(speaker_id=3))


def test_too_short_and_non_finite_audio_are_refused(voice_v2, encoder, pitch_estimator):
    with pytest.raises(AudioError, match="too short"):
        convert(np.zeros(1, np.float32), voice_v2, encoder, pitch_estimator, FAST)
    bad = tone(220, 1.0)
    bad[100] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        convert(bad, voice_v2, encoder, pitch_estimator, FAST)


def test_reference_fixture_voices_convert(shared_voices_dir, encoder, pitch_estimator, espeak_speech):
    from rvc_pipeline import load_voice

    audio = espeak_speech("Reference voices.")
    expected_frames = reference_chunk_frames(audio.shape[0] + 2 * SR, 1)
    for name, hop, rate in (("webui-v2-40k", 400, 40000), ("webui-v1-48k-nof0", 480, 48000)):
        voice = load_voice(shared_voices_dir / f"{name}.pth", shared_voices_dir / f"{name}.index", device="cpu")
        result = convert(audio, voice, encoder, pitch_estimator, FAST)
        assert result.sample_rate == rate
        assert result.audio.shape == (expected_frames * hop,)
        assert np.isfinite(result.audio).all()


def _chunk_job(voice, seconds: float, seed: int, options: ConversionOptions):
    """A padded chunk's inputs: random content features (50/s) and a gliding F0 track (100/s)."""
    from rvc_pipeline.pipeline import ChunkJob, PitchTrack
    from rvc_pipeline.pitch import coarse_f0

    samples = int(seconds * SR)
    rng = np.random.default_rng(seed)
    features = rng.standard_normal(((samples - 400) // 320 + 1, voice.content_dim)).astype(np.float32)
    f0 = np.linspace(120, 300, samples // 160 + 1).astype(np.float32)
    f0[::7] = 0.0  # unvoiced frames, so protect has something to do
    return ChunkJob(features, PitchTrack(coarse_f0(f0), f0), samples, options, ChunkingConfig.CPU_FP32, seed)


@pytest.mark.parametrize("voice_name", ["voice_v2", "voice_v2_32k", "voice_v1_nof0"])
def test_batched_synthesis_equals_each_chunk_alone(request, voice_name):
    """Chunks of different lengths, seeds and options synthesised as one padded batch give each
    chunk's unbatched output to float rounding; a chunk too short to keep frames gives nothing."""
    from rvc_pipeline.pipeline import synthesize_chunk, synthesize_chunks

    voice = request.getfixturevalue(voice_name)
    speakers = voice.n_speakers
    jobs = [
        _chunk_job(voice, 2.6, 1, ConversionOptions(f0_method="pm", index_rate=0.75, protect=0.33)),
        _chunk_job(voice, 3.4, 2, ConversionOptions(f0_method="pm", speaker_id=speakers - 1, protect=0.5)),
        _chunk_job(voice, 1.5, 3, ConversionOptions(f0_method="pm")),  # 1 s padding each side: keeps nothing
        _chunk_job(voice, 2.95, 4, ConversionOptions(f0_method="pm", index_rate=0.0)),
    ]
    if not voice.f0:
        jobs = [job.__class__(job.features, None, *[getattr(job, f) for f in ("chunk_samples", "options", "chunking", "seed")])
                for job in jobs]
    batched = synthesize_chunks(voice, jobs)
    for job, out in zip(jobs, batched):
        alone = synthesize_chunk(voice, job.features, job.pitch, job.chunk_samples, job.options, job.chunking, job.seed)
        assert out.shape == alone.shape
        if alone.size == 0:
            continue
        assert snr_db(alone, out) > 80
        assert np.max(np.abs(out - alone)) < 1e-4
    assert [o.size for o in batched].count(0) == 1

"""Pitch extraction: what a user of `PitchEstimator`, `shift_f0` and `coarse_f0` would notice."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
import torch

from rvc_pipeline.errors import AssetNotFoundError, AudioError, CheckpointError, OptionError
from rvc_pipeline.pitch import DEFAULT_PITCH_METHOD, PITCH_METHODS, PitchEstimator, coarse_f0, shift_f0
from rvc_pipeline.pitch import rmvpe as rmvpe_mod
from rvc_pipeline.testing.rmvpe import write_random_rmvpe

SR = 16000
HOP = 160
#: Methods whose model ships with their package (rmvpe needs the user's weights).
BUNDLED = ["pm", "harvest", "dio", "crepe", "crepe-tiny", "fcpe"]
#: crepe "full" costs ~0.15 s per 10 ms frame on a 2-core CPU: keep it to short clips.
FAST = ["pm", "harvest", "dio", "crepe-tiny", "fcpe"]


def harmonic_tone(freq: float, seconds: float, *, amplitude: float = 0.5) -> np.ndarray:
    """(N,) float32 tone with 6 decaying harmonics (WORLD's harvest cannot track a pure sine)."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 7))
    return (amplitude * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def estimator() -> PitchEstimator:
    return PitchEstimator(device="cpu")


@pytest.fixture(scope="module")
def tone_f0(estimator):
    """F0 of a 1 s 220 Hz tone per method, computed once per method."""
    cache: dict[str, np.ndarray] = {}
    audio = harmonic_tone(220.0, 1.0)

    def get(method: str) -> np.ndarray:
        if method not in cache:
            cache[method] = estimator.estimate(audio, len(audio) // HOP, method)
        return cache[method]

    return get


@pytest.fixture(scope="module")
def rmvpe_file(tmp_path_factory):
    return write_random_rmvpe(tmp_path_factory.mktemp("assets") / "rmvpe.pt", seed=3)


@pytest.fixture(scope="module")
def rmvpe_estimator(rmvpe_file) -> PitchEstimator:
    return PitchEstimator(device="cpu", rmvpe_path=rmvpe_file)


# --- registry and errors -----------------------------------------------------------


def test_method_names_and_default():
    assert PITCH_METHODS == ("pm", "harvest", "dio", "crepe", "crepe-tiny", "rmvpe", "fcpe")
    assert DEFAULT_PITCH_METHOD == "harvest"


def test_bundled_methods_are_available_without_rmvpe_weights(estimator):
    assert estimator.available_methods() == BUNDLED


def test_unknown_method_lists_the_valid_ones(estimator):
    with pytest.raises(OptionError) as info:
        estimator.estimate(np.zeros(SR, np.float32), 100, "yin")
    assert "'yin'" in str(info.value)
    for name in PITCH_METHODS:
        assert name in str(info.value)


def test_rmvpe_without_weights_says_where_they_go(estimator, tmp_path):
    for est in (estimator, PitchEstimator(device="cpu", rmvpe_path=tmp_path / "missing.pt")):
        assert "rmvpe" not in est.available_methods()
        with pytest.raises(AssetNotFoundError) as info:
            est.estimate(harmonic_tone(220, 0.2), 20, "rmvpe")
        message = str(info.value)
        assert "assets/rmvpe.pt" in message and "RVC_RMVPE" in message


def test_bad_audio_is_an_audio_error(estimator):
    with pytest.raises(AudioError):
        estimator.estimate(np.zeros((2, SR), np.float32), 100, "harvest")
    bad = harmonic_tone(220, 0.5)
    bad[100] = np.nan
    with pytest.raises(AudioError):
        estimator.estimate(bad, 50, "harvest")
    with pytest.raises(OptionError):
        estimator.estimate(bad, -1, "harvest")


# --- accuracy on a tone ------------------------------------------------------------


@pytest.mark.parametrize("method", BUNDLED)
def test_220hz_tone_is_found_within_2_percent(tone_f0, method):
    f0 = tone_f0(method)
    voiced = f0[f0 > 0]
    assert voiced.size >= 0.8 * f0.size, f"{method}: only {voiced.size}/{f0.size} frames voiced"
    assert abs(np.median(voiced) - 220.0) <= 0.02 * 220.0


@pytest.mark.parametrize("method", BUNDLED)
def test_plus_12_semitones_doubles_the_pitch(tone_f0, method):
    f0 = tone_f0(method)
    up = shift_f0(f0, 12)
    voiced = f0 > 0
    assert up.dtype == np.float32
    np.testing.assert_allclose(up[voiced], 2 * f0[voiced], rtol=1e-6)
    assert np.all(up[~voiced] == 0)
    assert abs(np.median(up[voiced]) - 440.0) <= 0.02 * 440.0


@pytest.mark.parametrize("method", FAST)
def test_voicing_starts_where_the_tone_starts(estimator, method):
    audio = np.concatenate([np.zeros(SR // 2, np.float32), harmonic_tone(220, 0.7)])
    f0 = estimator.estimate(audio, len(audio) // HOP, method)
    onset = int(np.argmax(f0 > 0))
    assert abs(onset - 50) <= 4, f"{method}: voicing starts at frame {onset}, tone at frame 50"
    assert np.all(f0[: max(onset - 1, 0)] == 0)


# --- frame contract ----------------------------------------------------------------


@pytest.mark.parametrize("method", BUNDLED)
def test_output_has_exactly_p_len_frames(estimator, method):
    for n in (1024, 2000) if method == "crepe" else (1024, 4321, 8000):
        audio = harmonic_tone(180, n / SR)
        for p_len in (n // HOP, n // HOP + 3, max(n // HOP - 2, 0)):
            f0 = estimator.estimate(audio, p_len, method)
            assert f0.shape == (p_len,) and f0.dtype == np.float32
            assert np.all(np.isfinite(f0)) and np.all(f0 >= 0)


@pytest.mark.parametrize("method", BUNDLED)
def test_silence_is_unvoiced(estimator, method):
    seconds = 0.3 if method == "crepe" else 1.0
    f0 = estimator.estimate(np.zeros(int(seconds * SR), np.float32), int(seconds * 100), method)
    assert f0.shape == (int(seconds * 100),)
    assert np.all(f0 == 0)


def test_too_short_audio_is_unvoiced(estimator):
    for method in BUNDLED:
        assert np.array_equal(estimator.estimate(harmonic_tone(220, 0.03), 3, method), np.zeros(3, np.float32))
        assert estimator.estimate(harmonic_tone(220, 0.5), 0, method).shape == (0,)


def test_crepe_keeps_tone_frames_and_silences_digital_silence(estimator):
    audio = np.concatenate([harmonic_tone(220, 0.5), np.zeros(SR // 2, np.float32)])
    f0 = estimator.estimate(audio, 100, "crepe-tiny")
    assert np.all(f0[5:40] > 0) and np.all(f0[60:] == 0)


def test_harvest_filter_radius_only_gates_a_3_point_median(estimator):
    from scipy.signal import medfilt

    rng = np.random.default_rng(0)
    audio = harmonic_tone(200, 1.0) + 0.05 * rng.standard_normal(SR).astype(np.float32)
    raw = estimator.estimate(audio, 100, "harvest", filter_radius=0)
    assert np.array_equal(estimator.estimate(audio, 100, "harvest", filter_radius=2), raw)
    expected = medfilt(raw.astype(np.float64), 3).astype(np.float32)
    for radius in (3, 7):
        np.testing.assert_allclose(estimator.estimate(audio, 100, "harvest", filter_radius=radius), expected, rtol=1e-6)


# --- concurrency and caching -------------------------------------------------------


def _run_concurrently(fn, n_threads: int):
    barrier = threading.Barrier(n_threads)
    results: list = [None] * n_threads
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize("method", FAST + ["rmvpe"])
def test_two_threads_at_once_match_serial(rmvpe_estimator, rmvpe_file, method):
    clips = [harmonic_tone(220, 0.8), harmonic_tone(150, 0.6) * 0.3]
    serial = [rmvpe_estimator.estimate(c, len(c) // HOP, method) for c in clips]
    fresh = PitchEstimator(device="cpu", rmvpe_path=rmvpe_file)  # threads also race the lazy load
    both = _run_concurrently(lambda i: fresh.estimate(clips[i], len(clips[i]) // HOP, method), 2)
    for got, want in zip(both, serial):
        # Concurrent torch calls may split reductions differently (seen: fcpe, 1e-6 relative).
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("method,module,cls", [("fcpe", "fcpe", "FCPEPitch"), ("crepe-tiny", "crepe", "CrepePitch")])
def test_each_model_loads_once_per_estimator(monkeypatch, method, module, cls):
    import importlib

    mod = importlib.import_module(f"rvc_pipeline.pitch.{module}")
    original = getattr(mod, cls)
    built = []

    class Counting(original):
        def __init__(self, *args, **kwargs):
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(mod, cls, Counting)
    est = PitchEstimator(device="cpu")
    audio = harmonic_tone(220, 0.3)
    _run_concurrently(lambda i: est.estimate(audio, 30, method), 4)
    est.estimate(audio, 30, method)
    assert len(built) == 1


# --- coarse quantisation -----------------------------------------------------------


def test_coarse_f0_matches_the_reference_formula():
    assert coarse_f0(np.array([0.0, 50.0, 1100.0, 3000.0, 20.0])).tolist() == [1, 1, 255, 255, 1]
    f0 = np.random.default_rng(0).uniform(0, 1500, 1000)
    f0[::7] = 0
    mel = 1127 * np.log(1 + f0 / 700)
    mel_min, mel_max = 1127 * np.log(1 + 50 / 700), 1127 * np.log(1 + 1100 / 700)
    mel[mel > 0] = (mel[mel > 0] - mel_min) * 254 / (mel_max - mel_min) + 1
    expected = np.rint(np.clip(mel, 1, 255)).astype(np.int64)
    got = coarse_f0(f0)
    assert got.dtype == np.int64 and np.array_equal(got, expected)
    assert got.min() >= 1 and got.max() <= 255
    assert np.all(got[f0 == 0] == 1)
    assert abs(1127 * np.log(1 + 50 / 700) - 77.755) < 1e-3 and abs(mel_max - 1064.408) < 1e-3


def test_shift_keeps_unvoiced_at_zero():
    f0 = np.array([0.0, 100.0, 0.0, 440.0], np.float32)
    np.testing.assert_allclose(shift_f0(f0, -12), [0, 50, 0, 220], rtol=1e-6)
    np.testing.assert_array_equal(shift_f0(f0, 0), f0)


# --- RMVPE ---------------------------------------------------------------------------


def _bin_hz(c: float) -> float:
    return 10.0 * 2.0 ** ((20.0 * c + 1997.3794084376191) / 1200.0)


def test_rmvpe_network_has_the_real_layout():
    state = rmvpe_mod.RMVPENet().state_dict()
    assert len(state) == 741
    assert sum(t.numel() for t in state.values()) == 90_472_917
    assert tuple(state["fc.0.gru.weight_ih_l0"].shape) == (768, 384)
    assert tuple(state["unet.decoder.layers.0.conv1.0.weight"].shape) == (512, 256, 3, 3)
    assert tuple(state["fc.1.weight"].shape) == (360, 512)


def test_rmvpe_decoder_reads_a_synthetic_salience_peak():
    sal = np.zeros((6, 360), np.float32)
    sal[0, 100] = 0.9  # lone peak: exactly the bin's frequency
    sal[1, 200], sal[1, 199], sal[1, 201] = 0.8, 0.4, 0.4  # symmetric: still the centre bin
    sal[2, 50], sal[2, 51] = 0.6, 0.6  # two equal bins: halfway (first argmax + neighbour)
    sal[3, 300] = 0.03  # at the threshold: unvoiced
    sal[4, 0] = 0.5  # edge bins use the zero padding
    f0 = rmvpe_mod.decode_salience(sal)
    np.testing.assert_allclose(f0[:3], [_bin_hz(100), _bin_hz(200), _bin_hz(50.5)], rtol=1e-6)
    assert f0[3] == 0 and f0[5] == 0
    np.testing.assert_allclose(f0[4], _bin_hz(0), rtol=1e-6)
    assert abs(_bin_hz(0) - 31.7) < 0.1 and abs(_bin_hz(359) - 2005.5) < 0.1


def test_rmvpe_mel_front_end_shape():
    mel = rmvpe_mod.MelFrontEnd()
    for n in (1024, 16000, 16123):
        out = mel(torch.from_numpy(harmonic_tone(220, n / SR))[None])
        assert tuple(out.shape) == (1, 128, n // HOP + 1)
        assert torch.isfinite(out).all() and out.min() >= np.log(1e-5) - 1e-4


def test_rmvpe_mel_matches_an_independent_librosa_computation():
    import librosa

    audio = harmonic_tone(220, 0.5) + 0.01 * np.random.default_rng(0).standard_normal(SR // 2).astype(np.float32)
    spec = np.abs(librosa.stft(audio, n_fft=1024, hop_length=160, window="hann", center=True, pad_mode="reflect"))
    basis = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=128, fmin=30, fmax=8000, htk=True)
    expected = np.log(np.maximum(basis @ spec, 1e-5))
    got = rmvpe_mod.MelFrontEnd()(torch.from_numpy(audio)[None])[0].numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_rmvpe_loads_strictly_and_returns_p_len_frames(rmvpe_file, rmvpe_estimator):
    assert rmvpe_estimator.available_methods() == ["pm", "harvest", "dio", "crepe", "crepe-tiny", "rmvpe", "fcpe"]
    net = rmvpe_mod.load_rmvpe_net(rmvpe_file)
    expected = torch.load(rmvpe_file, weights_only=True)
    for key in ("unet.encoder.bn.running_var", "fc.0.gru.weight_hh_l0_reverse", "cnn.bias"):
        torch.testing.assert_close(net.state_dict()[key], expected[key].float())
    plain = rmvpe_mod.RMVPENet().eval()
    plain.load_state_dict(expected, strict=True)
    mel = rmvpe_mod.MelFrontEnd()(torch.from_numpy(harmonic_tone(220, 0.3))[None])
    with torch.no_grad():
        torch.testing.assert_close(net(mel), plain(mel))
    for n, p_len in ((4000, 25), (4000, 27), (16123, 100)):
        audio = harmonic_tone(220, n / SR)
        f0 = rmvpe_estimator.estimate(audio, p_len, "rmvpe")
        assert f0.shape == (p_len,) and f0.dtype == np.float32 and np.all(np.isfinite(f0))


def test_rmvpe_refuses_files_that_are_not_its_weights(rmvpe_file, tmp_path):
    state = torch.load(rmvpe_file, weights_only=True)
    del state["cnn.bias"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="740 entries"):
        rmvpe_mod.load_rmvpe_net(tmp_path / "partial.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(CheckpointError):
        rmvpe_mod.load_rmvpe_net(tmp_path / "evil.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError):
        rmvpe_mod.load_rmvpe_net(tmp_path / "list.pt")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["crepe-tiny", "fcpe", "rmvpe"])
def test_cuda_matches_cpu(rmvpe_file, method):
    audio = harmonic_tone(220, 1.0)
    cpu = PitchEstimator(device="cpu", rmvpe_path=rmvpe_file).estimate(audio, 100, method)
    gpu = PitchEstimator(device="cuda", rmvpe_path=rmvpe_file).estimate(audio, 100, method)
    assert np.array_equal(cpu > 0, gpu > 0)
    np.testing.assert_allclose(gpu, cpu, rtol=0.01)

"""The capacity model's arithmetic (its agreement with real runs is `python -m load_tests.capacity validate`)."""

from __future__ import annotations

import math

import pytest

from load_tests.capacity import Profile, fit_profile, predict, size
from load_tests.load_plan import USER_WAIT_S

THINK_S = sum(USER_WAIT_S) / 2


def profile(cpu: float = 1.0, gpu: float = 0.0, cores: float = 2, gpus: int = 0) -> Profile:
    """1 s of CPU per audio second; one-user latency 0.2 s + 0.8 s per audio second; 2 s clips."""
    stages = {"pitch": cpu / 2, "features": gpu or cpu / 4, "synthesize": cpu / 4}
    return Profile(cpu, gpu, 0.8, 0.2, stages, cores, gpus, "harvest", 2.0)


def test_one_user_sees_the_measured_latency_and_many_users_saturate_the_cores():
    p = profile()
    one = predict(p, 1)
    assert one.latency_s == pytest.approx(0.2 + 0.8 * 2)
    assert one.requests_per_s == pytest.approx(1 / (one.latency_s + THINK_S))
    many = predict(p, 64)
    assert many.audio_s_per_s == pytest.approx(2 / 1.0, rel=0.01)  # 2 cores / 1 CPU-s per audio-s
    assert many.cpu_utilisation == pytest.approx(1.0, abs=0.01)
    # Little's law at saturation: N = X (R + Z).
    assert 64 == pytest.approx(many.requests_per_s * (many.latency_s + THINK_S), rel=1e-6)


def test_latency_grows_and_throughput_never_falls_with_users():
    runs = [predict(profile(), n) for n in (1, 2, 4, 8, 16)]
    assert all(a.latency_s <= b.latency_s for a, b in zip(runs, runs[1:]))
    assert all(a.audio_s_per_s <= b.audio_s_per_s + 1e-9 for a, b in zip(runs, runs[1:]))


def test_a_gpu_service_is_bounded_by_its_gpus():
    p = profile(cpu=0.1, gpu=0.05, cores=16, gpus=1)
    assert predict(p, 512).audio_s_per_s == pytest.approx(1 / 0.05, rel=0.02)
    assert predict(p, 512, gpus=2).audio_s_per_s == pytest.approx(2 / 0.05, rel=0.02)


def test_fit_recovers_costs_and_the_latency_line():
    samples = [(a, 0.3 + 0.5 * a, {"pitch": 0.2 * a, "features": 0.1 * a, "synthesize": 0.3 * a, "encode": 0.01})
               for a in (1.0, 2.0, 3.0)]
    p = fit_profile(samples, cores=2, gpus=0, f0_method="harvest")
    assert p.cpu_s_per_audio_s == pytest.approx(0.6 + 0.03 / 6)
    assert (p.latency_fixed_s, p.latency_s_per_audio_s) == (pytest.approx(0.3), pytest.approx(0.5))
    on_gpu = fit_profile(samples, cores=2, gpus=1, f0_method="harvest")
    assert on_gpu.gpu_s_per_audio_s == pytest.approx(0.4) and on_gpu.cpu_s_per_audio_s == pytest.approx(0.2 + 0.03 / 6)


def test_sizing_for_a_thousand_users():
    rows = dict(size(profile(), 1000, 10.0, 60.0, cores_per_node=16, gpus_per_node=0))
    cores = math.ceil(1000 / 60 * 10 * 1.0 / 0.7)
    assert rows["cores at 70% busy"] == str(cores)
    assert rows["nodes of 16 cores"] == str(math.ceil(cores / 16))

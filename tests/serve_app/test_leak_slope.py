"""The memory scenario's leak check (load_tests/reliability.py): the least-squares RSS slope in MB
per 100 conversions and its 1 MB/100 limit. Pure numpy, no cluster."""

from __future__ import annotations

import math

import numpy as np
import pytest

from load_tests.reliability import MIN_SLOPE_CONVERSIONS, SAMPLE_EVERY, SLOPE_LIMIT_MB_PER_100, rss_slope, slope_ok

#: Sample points as the scenario takes them: after warm-up (10), then every 10 conversions to 310.
COUNTS = np.arange(10, 10 + MIN_SLOPE_CONVERSIONS + 1, SAMPLE_EVERY)


def series(mb_per_100: float, start: float = 824.0) -> np.ndarray:
    return start + mb_per_100 / 100 * (COUNTS - COUNTS[0])


def test_the_exact_slope_of_a_linear_series():
    assert rss_slope(COUNTS, series(0.5)) == pytest.approx(0.5, abs=1e-9)
    assert rss_slope(COUNTS, series(2.0)) == pytest.approx(2.0, abs=1e-9)
    assert rss_slope(COUNTS, series(-13.4)) == pytest.approx(-13.4, abs=1e-9)
    assert rss_slope([0, 100], [5.0, 6.0]) == pytest.approx(1.0)  # the unit: MB per 100 conversions


def test_a_slow_trend_passes_and_a_leak_fails():
    assert slope_ok(rss_slope(COUNTS, series(0.5)))
    assert not slope_ok(rss_slope(COUNTS, series(2.0)))
    assert slope_ok(SLOPE_LIMIT_MB_PER_100) and not slope_ok(SLOPE_LIMIT_MB_PER_100 + 0.01)
    assert slope_ok(rss_slope(COUNTS, series(-20.0)))  # memory handed back is no leak


def test_one_spike_does_not_dominate():
    dx = COUNTS - COUNTS.mean()
    for where in range(COUNTS.size):
        flat = np.full(COUNTS.size, 1050.0)
        flat[where] += 10.0  # one sample 10 MB high (a transient buffer), even the last one
        slope = rss_slope(COUNTS, flat)
        # Least squares: the spike moves the slope by height x distance from the mean count / sum of squares,
        # at most 0.6 MB/100 here, where the last-minus-first growth would read 10 MB / 300 = 3.3 MB/100.
        assert slope == pytest.approx(10.0 * dx[where] / (dx @ dx) * 100)
        assert slope_ok(slope), (where, slope)
    middle = series(0.5)
    middle[COUNTS.size // 2] += 40.0  # at the mean count a spike of any height leaves the slope alone
    assert rss_slope(COUNTS, middle) == pytest.approx(0.5, abs=1e-9)
    leaking = series(2.0)
    leaking[COUNTS.size // 2] -= 40.0  # nor does one low sample hide a leak
    assert not slope_ok(rss_slope(COUNTS, leaking))


def test_noise_around_a_flat_line_passes():
    rng = np.random.default_rng(0)
    noisy = 1050 + rng.normal(0, 2.0, COUNTS.size)  # +-2 MB jitter, no trend
    assert slope_ok(rss_slope(COUNTS, noisy))


def test_missing_samples_are_left_out_and_too_few_fail():
    values = series(0.5)
    values[3] = float("nan")  # the process was gone at that sample
    assert rss_slope(COUNTS, values) == pytest.approx(0.5, abs=1e-9)
    assert math.isnan(rss_slope([10], [800.0]))
    assert math.isnan(rss_slope([10, 10], [800.0, 801.0]))
    assert not slope_ok(float("nan"))

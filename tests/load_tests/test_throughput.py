"""What a fixed-users run counts: answers that arrive inside the measured window."""

from __future__ import annotations

import pytest

from load_tests.report import Request
from load_tests.throughput import summarize_window


def test_only_answers_inside_the_window_count_and_audio_seconds_add_up():
    requests = [
        Request(start_s=1.0, latency_s=2.0, status=200, ok=True, audio_s=2.0),   # ends at 3: warm-up, dropped
        Request(start_s=4.0, latency_s=2.0, status=200, ok=True, audio_s=3.0),   # ends at 6: counted
        Request(start_s=8.0, latency_s=4.0, status=200, ok=True, audio_s=1.0),   # ends at 12: counted
        Request(start_s=9.0, latency_s=1.0, status=503, ok=False, audio_s=2.0),  # failed inside the window
        Request(start_s=13.0, latency_s=5.0, status=200, ok=True, audio_s=2.0),  # ends at 18: after the window
    ]
    m = summarize_window(requests, users=2, warmup_s=5.0, window_s=10.0)
    assert (m.ok, m.failed) == (2, 1)
    assert m.audio_s_per_s == pytest.approx((3.0 + 1.0) / 10.0)
    assert m.requests_per_s == pytest.approx(0.2)
    assert m.mean_audio_s == pytest.approx(2.0)
    assert 2.0 <= m.p50_s <= 4.0 and m.p95_s == pytest.approx(4.0, abs=0.2)

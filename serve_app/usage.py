"""Per-key limits that hold across ingress replicas: one small named Ray actor keeps the counts.

Requests per minute and audio seconds per minute are sliding 60 s windows; concurrent
realtime sessions are a count. The actor is detached and named per application, so the
counts survive an ingress replica's restart; an ingress asks it once per request.

`UsageWindow` is the plain-Python logic (tested without Ray); `UsageLedger` is the actor.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Any, Optional

import ray

#: Length of the sliding window, seconds.
WINDOW_S = 60.0
LEDGER_PREFIX = "rvc_usage_ledger"
LEDGER_NAMESPACE = "rvc_serve"


class UsageWindow:
    """Sliding-window counters per key id."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._events: dict[str, deque[tuple[float, float]]] = defaultdict(deque)  # (time, audio seconds)
        self._streams: dict[str, int] = defaultdict(int)

    def admit(self, key_id: str, limits: dict[str, Any], audio_s: float, now: Optional[float] = None) -> float:
        """Count one request of `audio_s` seconds if `limits` allow it: 0.0. Otherwise the seconds
        to wait until they would (nothing is counted)."""
        now = time.monotonic() if now is None else now
        events = self._events[key_id]
        while events and events[0][0] <= now - self.window_s:
            events.popleft()
        wait = 0.0
        rpm = limits.get("requests_per_minute")
        if rpm is not None and len(events) >= rpm:
            wait = max(wait, events[len(events) - rpm][0] + self.window_s - now)
        budget = limits.get("audio_seconds_per_minute")
        if budget is not None:
            if audio_s > budget:
                return float("inf")  # never fits: the caller says so instead of asking to retry
            excess = sum(a for _, a in events) + audio_s - budget
            for stamp, seconds in events:  # the oldest entries must expire to make room
                if excess <= 0:
                    break
                excess -= seconds
                wait = max(wait, stamp + self.window_s - now)
        if wait > 0:
            return wait
        events.append((now, audio_s))
        return 0.0

    def open_stream(self, key_id: str, max_streams: Optional[int]) -> bool:
        """Take one realtime-session slot; False when the key holds `max_streams` already."""
        if max_streams is not None and self._streams[key_id] >= max_streams:
            return False
        self._streams[key_id] += 1
        return True

    def close_stream(self, key_id: str) -> None:
        self._streams[key_id] = max(0, self._streams[key_id] - 1)

    def forget(self, key_ids: set[str]) -> None:
        """Drop the counts of keys that no longer exist."""
        for key_id in list(self._events):
            if key_id not in key_ids:
                del self._events[key_id]


@ray.remote(num_cpus=0, max_concurrency=1)
class UsageLedger(UsageWindow):
    """The actor every ingress replica of an application shares (one call per request)."""


def get_ledger(app_name: str):
    """This application's ledger, created on first use; it outlives ingress replicas."""
    return UsageLedger.options(
        name=f"{LEDGER_PREFIX}:{app_name or 'default'}", namespace=LEDGER_NAMESPACE,
        get_if_exists=True, lifetime="detached",
    ).remote()

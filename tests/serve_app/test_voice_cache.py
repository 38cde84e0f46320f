"""SharedVoice: eviction frees a voice exactly once, never while a request still uses it."""

from __future__ import annotations

import threading

from serve_app.voice_cache import SharedVoice


class FakeVoice:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_evicting_an_unused_voice_closes_it_once():
    voice, closed = FakeVoice(), []
    shared = SharedVoice("a", voice, on_closed=closed.append)
    shared.evict()
    shared.evict()
    shared.__del__()  # what the multiplexer calls, then garbage collection again
    assert voice.closed == 1 and closed == ["a"] and shared.closed


def test_close_waits_for_the_last_user():
    voice, evicted = FakeVoice(), []
    shared = SharedVoice("a", voice, on_evicted=lambda s, users: evicted.append(users))
    shared.acquire()
    shared.acquire()
    shared.evict()
    assert evicted == [2] and voice.closed == 0
    shared.release()
    assert voice.closed == 0
    shared.release()
    assert voice.closed == 1
    del shared
    assert voice.closed == 1


def test_concurrent_users_and_eviction_close_exactly_once():
    voice = FakeVoice()
    shared = SharedVoice("a", voice)
    start = threading.Barrier(9)

    def user():
        start.wait()
        for _ in range(200):
            try:
                with shared.use():
                    pass
            except RuntimeError:  # released: a real request never gets it from the cache
                return

    threads = [threading.Thread(target=user) for _ in range(8)]
    for t in threads:
        t.start()
    shared.acquire()
    start.wait()
    shared.evict()
    shared.release()
    for t in threads:
        t.join()
    assert voice.closed == 1

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


ARENA_PROBE = r"""
import ctypes, re, sys, tempfile, threading
libc = ctypes.CDLL("libc.so.6")
if sys.argv[1] == "limit":
    from serve_app.heap import limit_heap_arenas
    assert limit_heap_arenas(2)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype = ctypes.c_void_p
together = threading.Barrier(8)
def work():
    together.wait()  # eight threads allocating at once: glibc would give each its own arena
    blocks = [libc.malloc(64 * 1024) for _ in range(16)]
    together.wait()
    for block in blocks:
        libc.free(block)
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with tempfile.NamedTemporaryFile("r", suffix=".xml") as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(len(re.findall(r"<heap nr=", out.read())))
"""


def test_replicas_cap_the_heap_arenas_their_threads_use():
    """Eight threads allocating at once use eight-plus glibc arenas by default, at most two after
    `limit_heap_arenas` (what every replica calls at start), so resident memory levels off early."""
    import ctypes.util
    import subprocess
    import sys

    import pytest

    if "libc.so" not in (ctypes.util.find_library("c") or "") and not sys.platform.startswith("linux"):
        pytest.skip("glibc only")

    def arenas(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", ARENA_PROBE, mode], capture_output=True, text=True, check=True)
        return int(done.stdout.strip())

    assert arenas("default") > 4
    assert arenas("limit") <= 2

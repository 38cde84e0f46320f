"""A loaded voice shared by concurrent requests, released exactly once after its last user.

Ray Serve's multiplexer evicts the least recently used model by calling its `__del__`;
a request may still be synthesising with it at that moment. `SharedVoice` counts users:
eviction marks it, and memory is released (voice.close(), gc, CUDA cache, C heap) when both
"evicted" and "no users" hold -- exactly once, whichever comes last.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from .heap import release_free_heap


class SharedVoice:
    """Reference-counted wrapper of an `rvc_pipeline.Voice` (or anything with `close()`)."""

    def __init__(
        self,
        name: str,
        voice: Any,
        *,
        on_evicted: Optional[Callable[["SharedVoice", int], None]] = None,
        on_closed: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.name = name
        self.voice = voice
        self._on_evicted = on_evicted  # called once, with the number of users at eviction
        self._on_closed = on_closed
        self._lock = threading.Lock()
        self._users = 0
        self._evicted = False
        self._closed = False

    @property
    def users(self) -> int:
        return self._users

    @property
    def evicted(self) -> bool:
        return self._evicted

    @property
    def closed(self) -> bool:
        return self._closed

    def acquire(self) -> Any:
        """Register one user; returns the voice. Raises RuntimeError if already released."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"voice {self.name!r} was already released")
            self._users += 1
            return self.voice

    def release(self) -> None:
        """Unregister one user; frees the voice if it was evicted and this was the last user."""
        with self._lock:
            self._users -= 1
            close = self._evicted and self._users == 0 and not self._closed
            self._closed = self._closed or close
        if close:
            self._close()

    @contextmanager
    def use(self) -> Iterator[Any]:
        voice = self.acquire()
        try:
            yield voice
        finally:
            self.release()

    def evict(self) -> None:
        """Mark evicted; frees now if nobody uses it, else when the last user releases."""
        with self._lock:
            if self._evicted:
                return
            self._evicted = True
            users = self._users
            close = users == 0 and not self._closed
            self._closed = self._closed or close
        if self._on_evicted is not None:
            self._on_evicted(self, users)
        if close:
            self._close()

    # Ray Serve's multiplexer calls `__del__` on eviction; garbage collection may call it
    # again later, which `evict` ignores.
    def __del__(self) -> None:
        self.evict()

    def _close(self) -> None:
        voice, self.voice = self.voice, None
        try:
            close = getattr(voice, "close", None)
            if close is not None:
                close()
        finally:
            del voice
            gc.collect()
            _empty_cuda_cache()
            release_free_heap()
            if self._on_closed is not None:
                self._on_closed(self.name)


def _empty_cuda_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()

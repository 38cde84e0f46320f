"""The C heap of the service's replicas: which allocator runs it, and handing freed pages back.

Each deployment picks its allocator (`allocator` in its settings, serve_app/config.py):
glibc's malloc ("system"), or the jemalloc Ray ships in its Linux wheels
(`ray/core/libjemalloc.so`), preloaded through the deployment's runtime environment
(`allocator_env`). The ingress and ContentFeatures default to jemalloc: on glibc their private
memory crept up, the ingress's by 1.2-1.6 MB per 100 conversions in steps long after warm-up
(`python -m load_tests.reliability memory`, docs/reliability.md), and a bare Serve graph with
the same calls and no audio work crept too, while on jemalloc they stay flat and HuBERT costs
little more. Synthesis and pitch stay on glibc: a whole conversion ran much slower on jemalloc
(`python -m bench.bench_allocator`, docs/performance.md). On glibc, `limit_heap_arenas` caps
the arenas.

`release_free_heap` hands freed pages back to the OS after each request with whichever
allocator is running: jemalloc's purge of every arena, or glibc's `malloc_trim(0)`.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path
from typing import Callable, Literal, Optional

logger = logging.getLogger("ray.serve")

Allocator = Literal["jemalloc", "system"]

#: jemalloc's settings in the replicas: a background thread returns freed pages to the OS
#: (after jemalloc's default 10 s decay) even while a replica is idle.
REPLICA_JEMALLOC_CONF = "background_thread:true"
#: The environment variables `allocator_env` may set.
ALLOCATOR_VARIABLES = ("LD_PRELOAD", "MALLOC_CONF")
#: jemalloc's mallctl name that purges every arena's unused dirty pages (MALLCTL_ARENAS_ALL = 4096).
JEMALLOC_PURGE_ALL = b"arena.4096.purge"


def bundled_jemalloc() -> Optional[Path]:
    """Ray's own jemalloc (`ray/core/libjemalloc.so`, in Ray's Linux wheels), or None."""
    import ray

    path = Path(ray.__file__).parent / "core" / "libjemalloc.so"
    return path if path.is_file() else None


def allocator_env(allocator: Allocator) -> dict[str, str]:
    """Environment variables that give a replica process `allocator` (empty for "system").

    Without Ray's jemalloc (macOS, or a Ray build without it) the replicas keep the system
    allocator, with one warning. The path is this machine's: on a cluster every node must
    have Ray installed at the same place (as in one Docker image), or ld.so warns and the
    replica runs on the system allocator.
    """
    if allocator == "system":
        return {}
    library = bundled_jemalloc()
    if library is None:
        logger.warning("allocator: jemalloc was asked for, but this Ray has no ray/core/libjemalloc.so; "
                       "replicas use the system allocator (set allocator: system to silence this)")
        return {}
    return {"LD_PRELOAD": str(library), "MALLOC_CONF": REPLICA_JEMALLOC_CONF}


def process_env_with(allocator: Allocator) -> dict[str, str]:
    """This process's environment for a child process that should run on `allocator`: any
    inherited ALLOCATOR_VARIABLES dropped, then `allocator_env`'s set."""
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}
    return {**env, **allocator_env(allocator)}


@functools.lru_cache(maxsize=1)
def _jemalloc_mallctl() -> Optional[Callable[..., int]]:
    """jemalloc's `mallctl` when jemalloc is this process's malloc (preloaded), else None."""
    try:
        mallctl = ctypes.CDLL(None).mallctl
    except (OSError, AttributeError):
        return None
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    mallctl.restype = ctypes.c_int
    return mallctl


def running_allocator() -> str:
    """"jemalloc" when jemalloc serves this process's malloc, else "system"."""
    return "jemalloc" if _jemalloc_mallctl() is not None else "system"


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


#: glibc's mallopt parameter for the most heap arenas (malloc.h M_ARENA_MAX).
M_ARENA_MAX = -8
#: Arenas a replica on glibc may use. glibc's default is 8 per core: every new worker thread
#: (Serve's and asyncio's pools start them on demand) gets an arena of its own that then keeps
#: freed blocks, so resident memory climbs for hundreds of requests before it levels off.
REPLICA_MALLOC_ARENAS = 2


def limit_heap_arenas(arenas: int = REPLICA_MALLOC_ARENAS) -> bool:
    """Cap glibc's heap arenas for the threads this process starts from now on (mallopt
    M_ARENA_MAX); False where the C library has no mallopt (macOS, musl). Harmless under
    jemalloc, which then serves every allocation."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS: jemalloc's purge of every arena, or glibc's
    `malloc_trim(0)`; a no-op where neither exists.

    A synthesis step allocates and frees a few hundred MB of activations; an allocator keeps
    freed blocks for reuse, so without this a replica's resident memory swings by that much
    from request to request and looks like a leak to anyone watching it.
    """
    mallctl = _jemalloc_mallctl()
    if mallctl is not None:
        mallctl(JEMALLOC_PURGE_ALL, None, None, None, 0)
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

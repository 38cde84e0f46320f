"""The replicas' C heap (serve_app/heap.py): jemalloc preloaded by the app builder for the ingress and
ContentFeatures, glibc for pitch and synthesis, and freed pages handed back after each request under
either allocator. The long-run figure (private memory slope
per 100 conversions) is `python -m load_tests.reliability memory` (docs/reliability.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serve_app.app import build_app
from serve_app.config import AppArgs
from serve_app.heap import allocator_env, bundled_jemalloc, process_env_with

REPO = Path(__file__).resolve().parents[2]

needs_jemalloc = pytest.mark.skipif(bundled_jemalloc() is None or not sys.platform.startswith("linux"),
                                    reason="Ray ships libjemalloc.so in its Linux wheels only")

#: Allocates ~200 MB in 64 kB blocks (under glibc's mmap threshold, so they stay on the heap), frees
#: all but the last, and prints private resident memory (MB) before and after `release_free_heap`.
RELEASE_PROBE = r"""
import ctypes
from serve_app.heap import release_free_heap, running_allocator
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def private_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
blocks = []
for _ in range(3200):
    block = libc.malloc(64 * 1024)
    ctypes.memset(block, 1, 64 * 1024)
    blocks.append(block)
for block in blocks[:-1]:
    libc.free(block)
before = private_mb()
release_free_heap()
print(running_allocator(), before, private_mb())
"""


def _probe(env: dict[str, str]) -> tuple[str, float, float]:
    done = subprocess.run([sys.executable, "-c", RELEASE_PROBE], capture_output=True, text=True, check=True, env=env)
    name, before, after = done.stdout.split()
    return name, float(before), float(after)


@needs_jemalloc
def test_the_ingress_and_content_features_run_on_jemalloc_pitch_and_synthesis_on_glibc():
    env = allocator_env("jemalloc")
    assert env["LD_PRELOAD"].endswith("libjemalloc.so")
    # The shipped config sets some keys of every deployment: the rest of each one's defaults stay.
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())["applications"][0]["args"]
    for args in ({"device": "cpu"}, {**config, "device": "cpu"}):
        runtime_envs = {d.name: d.ray_actor_options.get("runtime_env") for d in _deployments(build_app(args))}
        assert runtime_envs == {"Ingress": {"env_vars": env}, "ContentFeatures": {"env_vars": env},
                                "PitchExtractor": None, "VoiceSynthesizer": None}
    chosen = build_app({"device": "cpu", "ingress": {"allocator": "system"}, "synthesizer": {"allocator": "jemalloc"}})
    runtime_envs = {d.name: d.ray_actor_options.get("runtime_env") for d in _deployments(chosen)}
    assert runtime_envs == {"Ingress": None, "ContentFeatures": {"env_vars": env},
                            "PitchExtractor": None, "VoiceSynthesizer": {"env_vars": env}}


def test_a_partial_deployment_setting_keeps_that_deployments_other_defaults():
    """serve_config.yaml sets only graceful_shutdown_timeout_s for the compute deployments: their
    GPU fractions, concurrency and allocators must stay (they used to fall back to 0 GPUs)."""
    defaults = AppArgs()
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())["applications"][0]["args"]
    args = AppArgs.model_validate(config)
    for name in ("ingress", "content", "pitch", "synthesizer"):
        got, default = getattr(args, name), getattr(defaults, name)
        assert (got.num_gpus, got.max_ongoing_requests, got.allocator) == (
            default.num_gpus, default.max_ongoing_requests, default.allocator), name
    assert (args.content.num_gpus, args.pitch.num_gpus, args.synthesizer.num_gpus) == (0.2, 0.1, 0.3)
    assert args.ingress.max_queued_requests == 64 and args.content.graceful_shutdown_timeout_s == 30


def _deployments(app):
    """The ingress deployment and every deployment bound into it."""
    root = app._bound_deployment
    return [root] + [arg._bound_deployment for arg in root.init_args if hasattr(arg, "_bound_deployment")]


@needs_jemalloc
def test_freed_pages_go_back_under_jemalloc():
    # Decay off: freed pages stay resident until purged, so only release_free_heap can drop them.
    name, before, after = _probe({**process_env_with("jemalloc"), "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"})
    assert name == "jemalloc"
    assert before > 150 and after < before - 150, (before, after)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_pages_go_back_under_glibc():
    name, before, after = _probe(process_env_with("system"))
    assert name == "system"
    assert before > 150 and after < before - 150, (before, after)

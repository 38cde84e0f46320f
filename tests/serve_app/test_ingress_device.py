"""The ingress has no GPU: with `device: cuda` it must start without touching CUDA, and the
chunking rule must come from the synthesis replica that knows its device. Starts no cluster."""

from __future__ import annotations

import types

import pytest
import torch

from rvc_pipeline import ChunkingConfig
from serve_app import ingress as ingress_module
from serve_app.config import AppArgs

CUDA_QUERIES = ("get_device_properties", "is_available", "device_count", "init", "current_device",
                "synchronize", "mem_get_info", "get_device_name")


@pytest.fixture
def cuda_forbidden(monkeypatch):
    """Every CUDA query raises, loudly, as it would on a node with no GPU driver."""
    def touched(*args, **kwargs):
        raise AssertionError("the ingress touched CUDA")

    for name in CUDA_QUERIES:
        monkeypatch.setattr(torch.cuda, name, touched)


def _user_class(deployment):
    """The class as written, under Serve's ASGI wrapper (whose own __init__ is a coroutine)."""
    return next(c for c in reversed(deployment.func_or_class.__mro__) if c.__name__ == deployment.name
                and "__init__" in c.__dict__)


def test_ingress_starts_with_device_cuda_without_touching_cuda(cuda_forbidden, monkeypatch, tmp_path):
    context = types.SimpleNamespace(replica_id=types.SimpleNamespace(deployment_id=types.SimpleNamespace(app_name="t")))
    monkeypatch.setattr(ingress_module.serve, "get_replica_context", lambda: context)
    args = AppArgs(models_dir=str(tmp_path), demo_dir=str(tmp_path / "demo"), device="cuda", precision="fp16")
    cls = _user_class(ingress_module.Ingress)
    ingress = object.__new__(cls)
    cls.__init__(ingress, None, None, None, args, "cuda")  # raised AssertionError before the fix
    assert ingress.device == "cuda" and not hasattr(ingress, "chunking")


def test_the_forbidden_fixture_does_fail_loudly(cuda_forbidden):
    with pytest.raises(AssertionError, match="touched CUDA"):
        ChunkingConfig.for_device(torch.device("cuda"), torch.float16)


def test_synthesis_side_rule_follows_the_gpu_it_runs_on(monkeypatch):
    """What VoiceSynthesizer.describe hands the ingress: RVC's rule for its own device and dtype."""
    class Props:
        total_memory = 80 * 1024**3

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props)
    assert ChunkingConfig.for_device(torch.device("cuda"), torch.float16) is ChunkingConfig.GPU_FP16
    Props.total_memory = 4 * 1024**3
    assert ChunkingConfig.for_device(torch.device("cuda"), torch.float16) is ChunkingConfig.LOW_MEMORY
    assert ChunkingConfig.for_device(torch.device("cpu"), torch.float32) is ChunkingConfig.CPU_FP32

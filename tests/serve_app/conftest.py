"""One local Ray cluster and one RVC app for every serve test (about 30 s to start on 2 cores).

Voices are random-weight files in the real RVC format (tests/factories/voices.py); the
content encoder is the small untrained HuBERT of rvc_pipeline.demo. References come from
rvc_pipeline.convert() in this process with the same torch thread count as the replicas.
"""

from __future__ import annotations

import io
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

#: Torch threads in every replica and in the in-process reference.
TORCH_THREADS = 1
MAX_UPLOAD_BYTES = 600_000
MAX_DURATION_S = 12.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    url: str
    models_dir: Path
    encoder_path: Path


def _deployment(**extra):
    from serve_app.config import DeploymentSettings

    return DeploymentSettings(num_cpus=0.25, graceful_shutdown_timeout_s=2, **extra)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    from rvc_pipeline.demo import write_demo_encoder
    from tests.factories.voices import write_index, write_webui_voice

    root = tmp_path_factory.mktemp("models")
    write_webui_voice(root / "alice.pth", "v2", 40000, f0=True, seed=1)
    write_index(root / "alice.index", dim=768, n=400, seed=1)
    write_webui_voice(root / "bob.pth", "v2", 40000, f0=True, n_speakers=2, seed=2)
    write_webui_voice(root / "carol.pth", "v2", 32000, f0=False, seed=3)
    write_demo_encoder(root / "assets" / "hubert_base")
    return root


@pytest.fixture(scope="session")
def ray_cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray
    from ray import serve

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def _wait_healthy(url: str, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become healthy")


@pytest.fixture(scope="session")
def service(ray_cluster, models_dir) -> Service:
    from ray import serve

    from serve_app.app import build_app
    from serve_app.config import AppArgs, ServiceLimits

    args = AppArgs(
        models_dir=str(models_dir), device="cpu", torch_threads=TORCH_THREADS, voices_per_replica=2,
        demo_fallback=False,
        limits=ServiceLimits(max_upload_bytes=MAX_UPLOAD_BYTES, max_duration_s=MAX_DURATION_S,
                             request_timeout_s=120, max_in_flight=16, max_tts_chars=200),
        ingress=_deployment(max_ongoing_requests=32), content=_deployment(max_ongoing_requests=32),
        pitch=_deployment(), synthesizer=_deployment(),
    )
    serve.run(build_app(args), name="rvc", route_prefix="/rvc")
    url = f"{ray_cluster}/rvc"
    _wait_healthy(url)
    return Service(url, models_dir, models_dir / "assets" / "hubert_base")


@pytest.fixture(scope="session")
def tight_service(ray_cluster, tmp_path_factory) -> str:
    """An app with no voices (demo fallback), one request at a time and a 1 ms time limit."""
    from ray import serve

    from serve_app.app import build_app
    from serve_app.config import AppArgs, ServiceLimits

    empty = tmp_path_factory.mktemp("empty_models")
    args = AppArgs(
        models_dir=str(empty), demo_dir=str(tmp_path_factory.mktemp("demo")), device="cpu",
        torch_threads=TORCH_THREADS,
        limits=ServiceLimits(request_timeout_s=0.001, max_in_flight=1),
        ingress=_deployment(), content=_deployment(), pitch=_deployment(), synthesizer=_deployment(),
    )
    serve.run(build_app(args), name="tight", route_prefix="/tight")
    url = f"{ray_cluster}/tight"
    _wait_healthy(url)
    yield url
    serve.delete("tight")


@pytest.fixture(scope="session")
def reference(models_dir):
    """convert() in this process, with the replicas' settings; cached models."""
    import torch

    from rvc_pipeline import ConversionOptions, PitchEstimator, convert, load_content_encoder, load_voice

    from rvc_pipeline.retrieval import set_search_threads

    torch.set_num_threads(TORCH_THREADS)
    set_search_threads(TORCH_THREADS)
    encoder = load_content_encoder(models_dir / "assets" / "hubert_base", device="cpu")
    estimator = PitchEstimator(device="cpu")
    voices: dict = {}

    def run(audio16k: np.ndarray, voice_name: str, **options) -> tuple[np.ndarray, int]:
        if voice_name not in voices:
            index = models_dir / f"{voice_name}.index"
            voices[voice_name] = load_voice(
                models_dir / f"{voice_name}.pth", index if index.exists() else None, name=voice_name, device="cpu"
            )
        result = convert(audio16k, voices[voice_name], encoder, estimator, ConversionOptions(**options))
        return result.audio, result.sample_rate

    return run


def wav_bytes(audio: np.ndarray, sample_rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data), dtype="int16")
    return audio, rate

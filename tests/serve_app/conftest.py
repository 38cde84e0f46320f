"""One local Ray cluster and one RVC app for every serve test (about 30 s to start on 2 cores).

Voices are random-weight files in the real RVC format and the content encoder is the small
untrained HuBERT of rvc_pipeline.demo (serve_app.testing.write_test_models, as the load
tests use). References come from rvc_pipeline.convert() in this process with the same
torch thread count as the replicas.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

from rvc_pipeline.testing.audio import wav_bytes  # noqa: E402,F401  (some test modules import it from here)
from serve_app.testing import app_args, deploy, start_local_cluster, stop_local_service, write_test_models  # noqa: E402

#: Torch threads in every replica and in the in-process reference.
TORCH_THREADS = 1
MAX_UPLOAD_BYTES = 600_000
MAX_DURATION_S = 12.0
#: /stream sessions one ingress replica holds (the limit test opens this many, then one more).
STREAM_SESSIONS = 3


@dataclass
class Service:
    url: str
    models_dir: Path
    encoder_path: Path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return write_test_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def ray_cluster():
    os.environ["RAY_AUTH_MODE"] = "token"  # as the README's command runs it (token in ~/.ray/auth_token)
    yield start_local_cluster(num_cpus=4)
    stop_local_service()


@pytest.fixture(scope="session")
def service(ray_cluster, models_dir) -> Service:
    limits = dict(max_upload_bytes=MAX_UPLOAD_BYTES, max_duration_s=MAX_DURATION_S, request_timeout_s=120,
                  max_in_flight=16, max_tts_chars=200, max_stream_sessions=STREAM_SESSIONS)
    url = deploy(app_args(models_dir, limits=limits, torch_threads=TORCH_THREADS), "rvc", ray_cluster)
    return Service(url, models_dir, models_dir / "assets" / "hubert_base")


@pytest.fixture(scope="session")
def tight_service(ray_cluster, tmp_path_factory) -> str:
    """An app with no voices (demo fallback), one request at a time and a 1 ms time limit."""
    from ray import serve

    args = app_args(tmp_path_factory.mktemp("empty_models"), limits=dict(request_timeout_s=0.001, max_in_flight=1),
                    demo_fallback=True, demo_dir=str(tmp_path_factory.mktemp("demo")), torch_threads=TORCH_THREADS)
    yield deploy(args, "tight", ray_cluster)
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


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data), dtype="int16")
    return audio, rate

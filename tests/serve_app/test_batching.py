"""Batching across requests in the serving graph (on by default on a GPU; forced on here, on the CPU)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rvc_pipeline.audio import decode_audio, encode_wav
from rvc_pipeline.testing.audio import wav_bytes
from serve_app.testing import app_args, deploy

from .conftest import read_wav

httpx = pytest.importorskip("httpx")

#: Long enough that concurrent requests' chunks meet in one synthesis batch.
BATCH_WAIT_S = 2.0


@pytest.fixture(scope="module")
def batching_service(ray_cluster, models_dir):
    from ray import serve

    args = app_args(models_dir, batching="on", synthesis_batch_size=4, synthesis_batch_wait_s=BATCH_WAIT_S,
                    feature_batch_wait_s=0.05)
    yield deploy(args, "batching", ray_cluster)
    serve.delete("batching")


def test_concurrent_requests_for_one_voice_share_a_batch_and_match_unbatched(batching_service, reference, espeak_speech):
    """Four simultaneous /convert of one voice (different seeds and lengths) are synthesised in
    shared batches, and each answer equals the in-process unbatched conversion to float rounding."""
    speech = espeak_speech("Batching keeps every request's own result.")
    clips = [wav_bytes(speech[: 16000 + 2500 * i]) for i in range(4)]

    async def run_all():
        async with httpx.AsyncClient(timeout=300) as client:
            return await asyncio.gather(*(
                client.post(f"{batching_service}/convert", data={"voice_name": "alice", "seed": str(seed)},
                            files={"audio": ("a.wav", clip, "audio/wav")})
                for seed, clip in enumerate(clips)))

    responses = asyncio.run(run_all())
    for seed, (clip, r) in enumerate(zip(clips, responses)):
        assert r.status_code == 200, r.text
        got = read_wav(r.content)[0]
        out, rate = reference(decode_audio(clip), "alice", seed=seed)
        expected = read_wav(encode_wav(out, rate))[0]
        assert got.shape == expected.shape
        # pcm16 samples: batched float rounding may flip a sample's last bit, nothing more.
        assert np.max(np.abs(got.astype(np.int32) - expected.astype(np.int32))) <= 2
    (replica,) = httpx.get(f"{batching_service}/health", timeout=30).json()["synthesis_replicas"]
    assert replica["batched_chunks"] == 4
    assert replica["batches"] < replica["batched_chunks"]  # at least two requests shared a batch

"""A content encoder per voice, in the service: each voice's chunks go to the encoder its checkpoint
names (ContentFeatures multiplexes encoders by name), /voices says whether each voice's encoder is
there, and a voice whose encoder is missing gets a 409 naming the file to add."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from rvc_pipeline import ConversionOptions, PitchEstimator, convert, load_content_encoder, load_voice
from rvc_pipeline.audio import decode_audio, encode_wav
from rvc_pipeline.content import HubertConfig
from rvc_pipeline.testing.audio import tone, wav_bytes
from rvc_pipeline.testing.hubert import write_fairseq_hubert, write_hf_hubert_folder
from rvc_pipeline.testing.voices import write_applio_voice, write_webui_voice
from serve_app.testing import app_args, deploy

from .conftest import TORCH_THREADS, read_wav

httpx = pytest.importorskip("httpx")

#: Small encoders v1 voices run on (final_proj to 256, 9 layers): quick to load and run.
V1_TINY = HubertConfig(hidden_size=96, num_layers=9, num_heads=12, intermediate_size=64,
                       conv_layers=((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2,
                       pos_conv_kernel=16, final_dim=256)
OPTIONS = dict(f0_method="pm", seed=5)


@pytest.fixture(scope="module")
def encoder_models(tmp_path_factory) -> Path:
    """ana (Applio, spin), ben (WebUI: contentvec), cid (Korean HuBERT, not installed), dee (custom)."""
    root = tmp_path_factory.mktemp("encoder_models")
    write_applio_voice(root / "ana.pth", "v1", 40000, overrides={"embedder_model": "spin"}, seed=1)
    write_webui_voice(root / "ben.pth", "v1", 40000, f0=True, seed=2)
    write_applio_voice(root / "cid.pth", "v1", 40000, overrides={"embedder_model": "korean-hubert-base"}, seed=3)
    write_applio_voice(root / "dee.pth", "v1", 40000, overrides={"embedder_model": "custom"}, seed=4)
    write_fairseq_hubert(root / "assets" / "spin.pt", config=V1_TINY, seed=21)
    write_hf_hubert_folder(root / "assets" / "hubert_base", config=V1_TINY, seed=22)
    return root


@pytest.fixture(scope="module")
def encoder_service(ray_cluster, encoder_models) -> str:
    from ray import serve

    # One encoder per replica, so the second voice's encoder evicts the first's.
    args = app_args(encoder_models, torch_threads=TORCH_THREADS, encoders_per_replica=1)
    yield deploy(args, "encoders", ray_cluster)
    serve.delete("encoders")


def _post(url: str, audio: bytes, voice: str) -> "httpx.Response":
    data = {"voice_name": voice, **{k: str(v) for k, v in OPTIONS.items()}}
    return httpx.post(f"{url}/convert", data=data, files={"audio": ("in.wav", audio, "audio/wav")}, timeout=180)


def _in_process(models: Path, voice: str, encoder: str, audio: bytes) -> np.ndarray:
    import torch

    from rvc_pipeline.retrieval import set_search_threads

    torch.set_num_threads(TORCH_THREADS)
    set_search_threads(TORCH_THREADS)
    with load_voice(models / f"{voice}.pth", name=voice, device="cpu") as v:
        result = convert(decode_audio(audio), v, load_content_encoder(models / "assets" / encoder, device="cpu"),
                         PitchEstimator(device="cpu"), ConversionOptions(**OPTIONS))
    return read_wav(encode_wav(result.audio, result.sample_rate))[0]


def _wait_loaded(url: str, expected: list[str]) -> dict:
    """/health once the encoder registry shows `expected` loaded (replicas report asynchronously)."""
    deadline = time.time() + 15
    while True:
        health = httpx.get(f"{url}/health", timeout=30).json()
        if health["loaded_encoders"] == expected or time.time() > deadline:
            assert health["loaded_encoders"] == expected
            return health
        time.sleep(0.2)


def test_each_voice_converts_with_its_own_encoder(encoder_service, encoder_models):
    audio = wav_bytes(tone(220, 0.6))
    for voice, encoder, name in (("ana", "spin.pt", "spin"), ("ben", "hubert_base", "contentvec")):
        r = _post(encoder_service, audio, voice)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(read_wav(r.content)[0], _in_process(encoder_models, voice, encoder, audio))
        health = _wait_loaded(encoder_service, [name])  # loaded lazily; the other one evicted (1 per replica)
    (replica,) = health["content_replicas"]
    assert replica["evictions"] >= 1 and health["encoders_per_replica"] == 1
    assert replica["encoders"][0]["path"] == "<models>/assets/hubert_base"


def test_batches_group_chunks_by_encoder():
    """ContentFeatures' batch step runs each encoder's chunks with that encoder only."""
    from rvc_pipeline import extract_features
    from rvc_pipeline.content.loading import build_content_encoder
    from rvc_pipeline.testing.hubert import make_hubert_state
    from serve_app.deployments import ContentFeatures, LoadedEncoder

    encoders = [build_content_encoder(V1_TINY, make_hubert_state(V1_TINY, seed), source=f"seed {seed}") for seed in (1, 2)]
    loaded = [LoadedEncoder(f"e{i}@0", e, {}, None) for i, e in enumerate(encoders)]
    chunks = [tone(220 + 20 * i, 0.5).astype(np.float32) for i in range(4)]
    owners, versions = [0, 1, 1, 0], ["v1", "v1", "v2", "v1"]
    results = ContentFeatures.func_or_class._extract_grouped(None, [loaded[o] for o in owners], chunks, versions)
    for chunk, owner, version, (feats, _) in zip(chunks, owners, versions, results):
        np.testing.assert_array_equal(feats, extract_features(encoders[owner], chunk, version))


def test_voices_say_whether_each_encoder_is_there(encoder_service, encoder_models):
    body = httpx.get(f"{encoder_service}/voices", timeout=60).json()
    voices = {v["name"]: v for v in body["voices"]}
    assert {n: (v["encoder"], v["encoder_present"], v["runnable"]) for n, v in voices.items()} == {
        "ana": ("spin", True, True), "ben": ("contentvec", True, True),
        "cid": ("korean-hubert-base", False, False), "dee": ("custom", False, False)}
    assert "<models>/assets/korean-hubert-base.pt" in voices["cid"]["problem"]
    assert "voice_encoders" in voices["dee"]["problem"]
    assert str(encoder_models) not in str(body)


def test_a_missing_encoder_is_409_naming_the_file(encoder_service, encoder_models):
    r = _post(encoder_service, wav_bytes(tone(220, 0.5)), "cid")
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["error"] == "voice_unusable"
    assert "<models>/assets/korean-hubert-base.pt" in body["detail"]
    assert str(encoder_models) not in r.text

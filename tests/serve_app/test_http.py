"""The HTTP API end to end on a real local Ray cluster: outputs equal convert(), /tts,
/voices, /health, multiplexing with LRU eviction, concurrency and every error status."""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np
import pytest

from rvc_pipeline import load_voice
from rvc_pipeline.audio import decode_audio, encode_wav
from rvc_pipeline.testing.audio import tone, wav_bytes
from serve_app.heap import bundled_jemalloc

from .conftest import MAX_UPLOAD_BYTES, read_wav

httpx = pytest.importorskip("httpx")


def _post(url: str, route: str, audio: bytes, voice: str, **fields) -> "httpx.Response":
    data = {"voice_name": voice, **{k: str(v) for k, v in fields.items()}}
    return httpx.post(f"{url}/{route}", data=data, files={"audio": ("in.wav", audio, "audio/wav")}, timeout=120)


def _expected(reference, audio: bytes, voice: str, **options) -> tuple[np.ndarray, int]:
    out, rate = reference(decode_audio(audio), voice, **options)
    return read_wav(encode_wav(out, rate))


@pytest.fixture(scope="module")
def speech(espeak_speech) -> bytes:
    return wav_bytes(espeak_speech("Hello there, this is a test of the voice service."))


def test_convert_equals_convert_in_process(service, reference, speech):
    options = dict(f0_up_key=3, index_rate=0.5, seed=7, f0_method="harvest")
    r = _post(service.url, "convert", speech, "alice", **options)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    got, rate = read_wav(r.content)
    want, want_rate = _expected(reference, speech, "alice", **options)
    assert rate == want_rate == 40000
    np.testing.assert_array_equal(got, want)
    stages = dict(item.split("=") for item in r.headers["x-stage-times"].split(";"))
    assert {"decode", "prepare", "pitch", "features", "synthesize", "finish"} <= set(stages)
    assert float(r.headers["x-processing-time"]) > 0


def test_multi_speaker_voice_equals_in_process(service, reference, espeak_speech):
    audio = wav_bytes(espeak_speech("one two three four"))
    r = _post(service.url, "convert", audio, "bob", seed=3, speaker_id=1)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(read_wav(r.content)[0], _expected(reference, audio, "bob", seed=3, speaker_id=1)[0])


def test_voice_without_pitch(service, reference, speech):
    r = _post(service.url, "convert", speech, "carol", resample_sr=16000)
    assert r.status_code == 200, r.text
    got, rate = read_wav(r.content)
    want, want_rate = _expected(reference, speech, "carol", resample_sr=16000)
    assert rate == want_rate == 16000
    np.testing.assert_array_equal(got, want)
    assert "pitch" not in r.headers["x-stage-times"]


def test_request_id_is_echoed(service):
    r = httpx.get(f"{service.url}/health", headers={"X-Request-ID": "abc123"}, timeout=30)
    assert r.headers["x-request-id"] == "abc123"
    assert httpx.get(f"{service.url}/health", timeout=30).headers.get("x-request-id")


def test_tts_returns_speech_length_audio(service):
    r = httpx.post(f"{service.url}/tts", data={"text": "Good morning, how are you today?", "voice_name": "alice"}, timeout=120)
    assert r.status_code == 200, r.text
    audio, rate = read_wav(r.content)
    assert 1.0 < audio.shape[0] / rate < 6.0
    assert "tts=" in r.headers["x-stage-times"]


def test_voices_lists_every_voice(service):
    r = httpx.get(f"{service.url}/voices", timeout=60)
    assert r.status_code == 200
    voices = {v["name"]: v for v in r.json()["voices"]}
    assert set(voices) == {"alice", "bob", "carol"}
    assert voices["alice"]["has_index"] and not voices["bob"]["has_index"]
    assert (voices["alice"]["version"], voices["alice"]["sample_rate"], voices["alice"]["f0"]) == ("v2", 40000, True)
    assert voices["bob"]["speakers"] == 2
    assert voices["carol"]["f0"] is False and voices["carol"]["sample_rate"] == 32000
    assert all(v["size_bytes"] > 1_000_000 and v["demo"] is False for v in voices.values())


def test_health_and_docs(service):
    body = httpx.get(f"{service.url}/health", timeout=30).json()
    assert body["status"] == "ok" and body["device"] == "cpu"
    assert body["content_encoder"]["hidden_size"] == 768
    assert {"pm", "harvest", "dio"} <= set(body["pitch_methods"])
    # The ingress and ContentFeatures run on the jemalloc Ray ships (serve_app/heap.py), where Ray's
    # Linux wheel has it; synthesis on glibc.
    jemalloc = "jemalloc" if bundled_jemalloc() is not None and sys.platform.startswith("linux") else "system"
    assert body["allocator"] == jemalloc
    assert [r["allocator"] for r in body["content_replicas"]] == [jemalloc]
    assert [r["allocator"] for r in body["synthesis_replicas"]] == ["system"]
    assert httpx.get(f"{service.url}/docs", timeout=30).status_code == 200
    spec = httpx.get(f"{service.url}/openapi.json", timeout=30).json()
    assert "/convert" in spec["paths"] and "/tts" in spec["paths"]


def _loaded(url: str) -> tuple[set[str], dict]:
    replicas = httpx.get(f"{url}/health", timeout=30).json()["synthesis_replicas"]
    assert len(replicas) == 1
    return set(replicas[0]["loaded_voices"]), replicas[0]


def _wait_loaded(url: str, expected: set[str]) -> dict:
    deadline = time.time() + 10
    while True:
        loaded, state = _loaded(url)
        if loaded == expected or time.time() > deadline:
            assert loaded == expected
            return state
        time.sleep(0.2)


def test_multiplexing_loads_lazily_and_evicts_lru(service):
    short = wav_bytes(tone(220, 0.5))
    for voice in ("alice", "bob", "carol"):
        assert _post(service.url, "convert", short, voice).status_code == 200
    before = _wait_loaded(service.url, {"bob", "carol"})
    assert before["closes"] == before["evictions"] >= 1
    assert _post(service.url, "convert", short, "alice").status_code == 200  # evicted -> loaded again
    after = _wait_loaded(service.url, {"carol", "alice"})
    assert after["loads"] == before["loads"] + 1
    assert after["evictions"] == before["evictions"] + 1
    assert after["closes"] == after["evictions"]  # each eviction released memory exactly once


def test_health_shows_each_loaded_voices_memory(service):
    """/health reports per loaded voice the bytes its weights take on the replica's device and its index's."""
    assert _post(service.url, "convert", wav_bytes(tone(220, 0.5)), "alice").status_code == 200
    _, state = _loaded(service.url)
    (alice,) = [v for v in state["voices"] if v["name"] == "alice"]
    index = service.models_dir / "alice.index"
    with load_voice(service.models_dir / "alice.pth", index if index.exists() else None, device="cpu") as voice:
        assert alice["weights_mb"] == round(voice.weight_bytes() / 1e6, 1) > 0
        assert alice["index_mb"] == round(voice.index_bytes() / 1e6, 1)
        assert (alice["index_mb"] > 0) == index.exists()


def test_concurrent_conversions_match_in_process(service, reference, espeak_speech):
    clip = wav_bytes(espeak_speech("Hi")[:12000])
    jobs = [("alice" if i % 2 else "bob", i) for i in range(8)]

    async def run_all():
        async with httpx.AsyncClient(timeout=300) as client:
            async def one(voice, seed):
                return await client.post(f"{service.url}/convert", data={"voice_name": voice, "seed": str(seed)},
                                         files={"audio": ("a.wav", clip, "audio/wav")})
            return await asyncio.gather(*(one(v, s) for v, s in jobs))

    responses = asyncio.run(run_all())
    for (voice, seed), r in zip(jobs, responses):
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(read_wav(r.content)[0], _expected(reference, clip, voice, seed=seed)[0])
    _, state = _loaded(service.url)
    assert state["closes"] == state["evictions"]


@pytest.mark.parametrize(
    "voice, fields, status",
    [
        ("alice", {"f0_up_key": "abc"}, 422),
        ("alice", {"index_rate": "5"}, 400),
        ("alice", {"f0_method": "nonsense"}, 400),
        ("alice", {"speaker_id": "3"}, 400),
        ("nobody", {}, 404),
        ("../x", {}, 404),
        ("%2e%2e%2fbob", {}, 404),
        ("..\\alice", {}, 404),
    ],
)
def test_bad_parameters(service, voice, fields, status):
    r = _post(service.url, "convert", wav_bytes(tone(200, 0.3)), voice, **fields)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "detail"}


def test_missing_fields_are_422(service):
    r = httpx.post(f"{service.url}/convert", data={"voice_name": "alice"}, timeout=30)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = httpx.post(f"{service.url}/tts", data={"voice_name": "alice"}, timeout=30)
    assert r.status_code == 422


def test_upload_over_the_limit_is_413(service):
    big = b"\0" * (MAX_UPLOAD_BYTES + 1000)
    r = _post(service.url, "convert", big, "alice")
    assert r.status_code == 413 and r.json()["error"] == "upload_too_large"

    def stream():  # no Content-Length: counted while reading
        boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\r\n"
        yield boundary
        for _ in range(20):
            yield b"\0" * 100_000

    r = httpx.post(f"{service.url}/convert", content=stream(), timeout=60,
                   headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413


def test_audio_over_the_duration_limit_is_413(service):
    r = _post(service.url, "convert", wav_bytes(np.zeros(8000 * 13, np.float32), 8000), "alice")
    assert r.status_code == 413, r.text


def test_undecodable_audio_is_415(service):
    r = _post(service.url, "convert", b"this is not audio at all" * 100, "alice")
    assert r.status_code == 415 and r.json()["error"] == "unsupported_audio"


def test_tts_text_over_the_limit_is_413(service):
    r = httpx.post(f"{service.url}/tts", data={"text": "a" * 500, "voice_name": "alice"}, timeout=30)
    assert r.status_code == 413


def test_demo_fallback_is_labelled(tight_service):
    voices = httpx.get(f"{tight_service}/voices", timeout=60).json()["voices"]
    assert [v["name"] for v in voices] == ["demo-untrained"]
    assert voices[0]["demo"] and "untrained" in voices[0]["label"]
    health = httpx.get(f"{tight_service}/health", timeout=30).json()
    assert health["content_encoder"]["demo"] is True and "demo" in health


def test_timeout_is_504(tight_service):
    r = _post(tight_service, "convert", wav_bytes(tone(200, 1.0)), "demo-untrained")
    assert r.status_code == 504 and r.json()["error"] == "timeout"


def test_full_queue_is_503(tight_service):
    clip = wav_bytes(tone(200, 0.5))

    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            async def slow_body():
                head = (b"--xyz\r\nContent-Disposition: form-data; name=\"voice_name\"\r\n\r\ndemo-untrained\r\n"
                        b"--xyz\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\r\n")
                yield head
                await asyncio.sleep(2.0)  # holds the only in-flight slot meanwhile
                yield clip + b"\r\n--xyz--\r\n"

            slow = asyncio.create_task(client.post(
                f"{tight_service}/convert", content=slow_body(),
                headers={"content-type": "multipart/form-data; boundary=xyz"}))
            await asyncio.sleep(1.0)
            busy = await client.post(f"{tight_service}/convert", data={"voice_name": "demo-untrained"},
                                     files={"audio": ("a.wav", clip, "audio/wav")})
            return busy, await slow

    busy, slow = asyncio.run(run())
    assert busy.status_code == 503 and busy.json()["error"] == "overloaded"
    assert slow.status_code == 504

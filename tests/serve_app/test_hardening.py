"""Defects found by a newcomer run and a code review, checked on the running service:
voices overwritten on disk, server paths in answers, repeated form fields, voices the
loaded content encoder cannot serve, and one option schema for every entry point."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from rvc_pipeline import OPTION_SPECS
from rvc_pipeline.audio import decode_audio, encode_wav
from rvc_pipeline.testing.audio import tone
from rvc_pipeline.testing.voices import write_index, write_webui_voice

from .conftest import read_wav, wav_bytes

httpx = pytest.importorskip("httpx")

OPTIONS = {"f0_method": "pm", "seed": "3", "index_rate": "0.5"}


def _post(url: str, voice: str, audio: bytes, **fields: str) -> "httpx.Response":
    return httpx.post(f"{url}/convert", data={"voice_name": voice, **fields},
                      files={"audio": ("in.wav", audio, "audio/wav")}, timeout=120)


def _server_paths(service) -> list[str]:
    """Folders of this machine that must never appear in an answer."""
    paths = {str(service.models_dir), str(service.models_dir.resolve()), str(Path.home()), "/etc/", "/tmp/"}
    return sorted(paths, key=len, reverse=True)


def _assert_no_server_path(text: str, service) -> None:
    for path in _server_paths(service):
        assert path not in text, f"{path} in {text[:300]}"


@pytest.fixture
def scratch_voices(service):
    """Voice files a test adds to the shared models folder, removed afterwards."""
    added: list[Path] = []
    yield added
    for path in added:
        if path.is_symlink() or path.is_file():
            path.unlink()


def test_a_voice_overwritten_on_disk_is_served_from_its_new_files(service, reference, scratch_voices):
    clip = wav_bytes(tone(180, 0.8))
    pth, index = service.models_dir / "dave.pth", service.models_dir / "dave.index"
    scratch_voices += [pth, index]
    shutil.copyfile(service.models_dir / "alice.pth", pth)
    shutil.copyfile(service.models_dir / "alice.index", index)

    first = _post(service.url, "dave", clip, **OPTIONS)
    assert first.status_code == 200, first.text
    as_alice = read_wav(encode_wav(*reference(decode_audio(clip), "alice", f0_method="pm", seed=3, index_rate=0.5)))
    np.testing.assert_array_equal(read_wav(first.content)[0], as_alice[0])

    # Overwrite in place (same inode), as `cp other.pth dave.pth` does: voice B, with an index of its own.
    time.sleep(0.01)
    write_webui_voice(service.models_dir / "dave-new.pth", "v2", 40000, f0=True, seed=11)
    write_index(service.models_dir / "dave-new.index", dim=768, n=300, seed=11)
    scratch_voices += [service.models_dir / "dave-new.pth", service.models_dir / "dave-new.index"]
    pth.write_bytes((service.models_dir / "dave-new.pth").read_bytes())
    index.write_bytes((service.models_dir / "dave-new.index").read_bytes())

    second = _post(service.url, "dave", clip, **OPTIONS)
    assert second.status_code == 200, second.text
    as_new = read_wav(encode_wav(*reference(decode_audio(clip), "dave-new", f0_method="pm", seed=3, index_rate=0.5)))
    np.testing.assert_array_equal(read_wav(second.content)[0], as_new[0])
    assert not np.array_equal(read_wav(second.content)[0], as_alice[0])

    # /health shows what is really loaded: one copy of dave, the current files.
    deadline = time.time() + 10
    while True:
        replicas = httpx.get(f"{service.url}/health", timeout=30).json()["synthesis_replicas"]
        daves = [v for r in replicas for v in r["voices"] if v["name"] == "dave"]
        if len(daves) == 1 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert len(daves) == 1 and daves[0]["current"] is True, daves
    assert daves[0]["pth"] == "<models>/dave.pth" and daves[0]["index"] == "<models>/dave.index"
    assert sum(r["superseded"] for r in replicas) >= 1


def test_repeated_form_fields_are_422(service):
    clip = ("in.wav", wav_bytes(tone(200, 0.3)), "audio/wav")
    cases = [
        ([("audio", clip), ("audio", clip)], {"voice_name": "alice"}),
        ([("audio", clip)], {"voice_name": ["alice", "bob"]}),
        ([("audio", clip)], {"voice_name": "alice", "f0_up_key": ["2", "12"]}),
    ]
    for files, data in cases:
        r = httpx.post(f"{service.url}/convert", files=files, data=data, timeout=60)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid_request" and "more than once" in r.json()["detail"]
    r = httpx.post(f"{service.url}/tts", data={"text": ["hi", "there"], "voice_name": "alice"}, timeout=60)
    assert r.status_code == 422 and "more than once" in r.json()["detail"]


def test_unknown_and_malformed_options_follow_the_one_schema(service):
    clip = wav_bytes(tone(200, 0.3))
    unknown = _post(service.url, "alice", clip, f0_upkey="2")
    assert unknown.status_code == 422 and "unknown option 'f0_upkey'" in unknown.json()["detail"]
    # "1e3" is a number (index_rate: out of range -> 400) but not an integer (seed: malformed -> 422),
    # exactly as ConversionOptions.from_mapping and the CLI read it.
    assert _post(service.url, "alice", clip, index_rate="1e3").status_code == 400
    assert _post(service.url, "alice", clip, seed="1e3").status_code == 422


def test_no_answer_contains_a_server_path(service, scratch_voices, tmp_path):
    outside = tmp_path / "elsewhere.pth"
    write_webui_voice(outside, "v2", 40000, f0=True, seed=5)
    link = service.models_dir / "linked_out.pth"
    link.symlink_to(outside)
    broken = service.models_dir / "broken_voice.pth"
    broken.write_bytes(b"not a checkpoint at all")
    scratch_voices += [link, broken]

    r = _post(service.url, "linked_out", wav_bytes(tone(200, 0.3)))
    assert r.status_code == 404 and "outside the models folder" in r.json()["detail"]
    _assert_no_server_path(r.text, service)
    assert str(outside) not in r.text

    r = _post(service.url, "broken_voice", wav_bytes(tone(200, 0.3)))
    assert r.status_code == 409 and r.json()["error"] == "voice_unusable"
    _assert_no_server_path(r.text, service)

    unknown = _post(service.url, "nobody-here", wav_bytes(tone(200, 0.3)))
    assert unknown.status_code == 404 and "<models>" in unknown.json()["detail"]
    _assert_no_server_path(unknown.text, service)

    voices = httpx.get(f"{service.url}/voices", timeout=60)
    assert "broken_voice" in {v["name"] for v in voices.json()["voices"]}
    _assert_no_server_path(voices.text, service)

    health = httpx.get(f"{service.url}/health", timeout=60)
    assert health.json()["models_dir"] == "<models>"
    assert health.json()["content_encoder"]["path"].startswith("<models>/")
    _assert_no_server_path(health.text, service)
    assert not re.search(r'"/[A-Za-z]', health.text), health.text[:500]


def test_a_voice_the_encoder_cannot_serve_is_listed_and_refused_with_the_fix(service, scratch_voices):
    # A v1 voice reads HuBERT layer 9; the service's (demo-sized) encoder has 2 layers.
    old = service.models_dir / "old_v1.pth"
    write_webui_voice(old, "v1", 40000, f0=True, seed=8)
    scratch_voices.append(old)

    voices = {v["name"]: v for v in httpx.get(f"{service.url}/voices", timeout=60).json()["voices"]}
    assert voices["old_v1"]["runnable"] is False
    assert "layer 9" in voices["old_v1"]["problem"] and "hubert_base.pt" in voices["old_v1"]["problem"]
    assert voices["alice"]["runnable"] is True and "problem" not in voices["alice"]

    r = _post(service.url, "old_v1", wav_bytes(tone(200, 0.5)), f0_method="pm")
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["error"] == "voice_unusable"
    assert "v1" in body["detail"] and "hubert_base.pt" in body["detail"] and "<models>/assets" in body["detail"]


def test_openapi_form_fields_come_from_the_option_schema(service):
    spec = httpx.get(f"{service.url}/openapi.json", timeout=30).json()
    form = spec["paths"]["/convert"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    for option in OPTION_SPECS:
        assert form[option.name]["type"] == option.type_name
        assert form[option.name]["default"] == option.default
        if option.maximum is not None:
            assert float(form[option.name]["maximum"]) == float(option.maximum)  # JSON numbers are doubles
    assert form["f0_method"]["enum"] == list(next(s for s in OPTION_SPECS if s.name == "f0_method").choices)


@pytest.fixture(scope="module")
def no_encoder_service(ray_cluster, tmp_path_factory):
    """An app whose models folder has a voice but no content encoder (and no demo fallback)."""
    from ray import serve

    from serve_app.app import build_app
    from serve_app.testing import app_args

    root = tmp_path_factory.mktemp("no_encoder_models")
    write_webui_voice(root / "solo.pth", "v2", 40000, f0=True, seed=4)
    serve.run(build_app(app_args(root)), name="noenc", route_prefix="/noenc")
    url = f"{ray_cluster}/noenc"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    yield url
    serve.delete("noenc")


def test_a_missing_content_encoder_is_reported_not_fatal(no_encoder_service):
    health = httpx.get(f"{no_encoder_service}/health", timeout=30).json()
    assert health["status"] == "degraded"
    assert any("no content encoder" in p and "<models>/assets" in p for p in health["problems"])
    (solo,) = httpx.get(f"{no_encoder_service}/voices", timeout=30).json()["voices"]
    assert solo["runnable"] is False and "hubert_base.pt" in solo["problem"]
    r = _post(no_encoder_service, "solo", wav_bytes(tone(200, 0.5)), f0_method="pm")
    assert r.status_code == 409 and "hubert_base.pt" in r.json()["detail"]

"""The conversion controls over HTTP: output formats, POST /pitch (JSON and CSV), an F0
curve sent back as a file, auto_key's header, and bad control values."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from rvc_pipeline.audio import decode_audio
from rvc_pipeline.output_format import OUTPUT_FORMATS
from rvc_pipeline.pitch.controls import F0Curve
from rvc_pipeline.testing.audio import voiced_clip, wav_bytes

httpx = pytest.importorskip("httpx")


def _post(url: str, route: str, audio: bytes, voice: str, files: dict | None = None, **fields) -> "httpx.Response":
    data = {"voice_name": voice, **{k: str(v) for k, v in fields.items()}}
    return httpx.post(f"{url}/{route}", data=data, files={"audio": ("in.wav", audio, "audio/wav"), **(files or {})},
                      timeout=120)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return wav_bytes(voiced_clip(1.6, 120.0))


@pytest.mark.parametrize("name", ["flac", "mp3", "opus", "wav_float"])
def test_output_format_sets_the_encoding_and_media_type(service, reference, clip, name):
    r = _post(service.url, "convert", clip, "alice", seed=2, output_format=name)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == OUTPUT_FORMATS[name].media_type
    decoded, rate = sf.read(io.BytesIO(r.content), dtype="float32")
    want, want_rate = reference(decode_audio(clip), "alice", seed=2)
    assert rate == OUTPUT_FORMATS[name].file_rate(want_rate)
    assert decoded.shape[0] == round(want.shape[0] * rate / want_rate)
    if name in ("flac", "wav_float"):  # lossless
        np.testing.assert_allclose(decoded, want / max(np.abs(want).max() / 0.99, 1.0), atol=1 / 32768 + 1e-6)


def test_pitch_returns_the_curve_a_conversion_uses_and_sending_it_back_changes_nothing(service, clip):
    r = _post(service.url, "pitch", clip, "alice", f0_method="pm", f0_up_key=2)
    assert r.status_code == 200, r.text
    body = r.json()
    n = len(decode_audio(clip)) // 160
    assert len(body["f0_hz"]) == len(body["times_s"]) >= n - 1
    voiced = np.array([f for f in body["f0_hz"] if f > 0])
    assert voiced.size > n // 2 and 120 * 2 ** (2 / 12) * 0.9 < np.median(voiced) < 120 * 2 ** (2 / 12) * 1.1

    csv = _post(service.url, "pitch", clip, "alice", f0_method="pm", f0_up_key=2, format="csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    curve = F0Curve.parse(csv.text)
    np.testing.assert_allclose(curve.f0_hz, body["f0_hz"], rtol=1e-6)

    plain = _post(service.url, "convert", clip, "alice", f0_method="pm", f0_up_key=2, seed=5)
    files = {"f0_curve": ("curve.csv", csv.content, "text/csv")}
    echoed = _post(service.url, "convert", clip, "alice", files=files, f0_method="pm", f0_up_key=2, seed=5)
    assert plain.status_code == echoed.status_code == 200, echoed.text
    assert plain.content == echoed.content  # the same curve: the same samples

    flat = "time_s,f0_hz\n" + "".join(f"{i / 100:.2f},220\n" for i in range(n))
    files = {"f0_curve": ("flat.csv", flat.encode(), "text/csv")}
    edited = _post(service.url, "convert", clip, "alice", files=files, f0_method="pm", f0_up_key=2, seed=5)
    assert edited.status_code == 200 and edited.content != plain.content


def test_auto_key_is_reported_in_a_header(service, clip):
    r = _post(service.url, "convert", clip, "alice", f0_method="pm", auto_key="female")
    assert r.status_code == 200, r.text
    assert r.headers["x-auto-key"] == "12"  # 120 Hz -> 255 Hz is 13 semitones, limited to 12
    pitch = _post(service.url, "pitch", clip, "alice", f0_method="pm", auto_key="female")
    assert pitch.json()["auto_key"] == 12 and pitch.headers["x-auto-key"] == "12"
    assert "x-auto-key" not in _post(service.url, "convert", clip, "alice", f0_method="pm").headers


@pytest.mark.parametrize("fields, files, status", [
    (dict(autotune=1.5), None, 400),
    (dict(autotune_scale="H minor"), None, 400),
    (dict(auto_key="tenor"), None, 400),
    (dict(output_format="aiff"), None, 400),
    (dict(f0_curve="0.5,100\n0.4,120\n"), None, 400),
    ({}, {"f0_curve": ("c.csv", b"\xff\xfe\x00bad", "text/csv")}, 422),
    ({}, {"seed": ("s.txt", b"1", "text/plain")}, 422),
])
def test_bad_control_values_are_refused(service, clip, fields, files, status):
    r = _post(service.url, "convert", clip, "alice", files=files, **fields)
    assert r.status_code == status, r.text
    assert r.json()["error"] in ("invalid_option", "invalid_request")


def test_pitch_of_a_voice_without_pitch_guidance_is_422(service, clip):
    r = _post(service.url, "pitch", clip, "carol")
    assert r.status_code == 422 and r.json()["error"] == "no_pitch_guidance"
    assert _post(service.url, "pitch", clip, "alice", format="xml").status_code == 422

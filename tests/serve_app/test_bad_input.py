"""Hostile input, sent for real to the running service: broken and lying audio files,
oversized forms, path-like voice names, out-of-range options and booby-trapped voice
files in the models folder.

Each request must get its documented JSON error (or a sensible conversion), the service
must keep converting correctly afterwards, nothing may run code or read a file outside
the models folder, and the models folder must not change. test_http.py covers the basic
error statuses; the cases here are the nastier variants.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import soundfile as sf

from rvc_pipeline.testing.audio import tone, wav_bytes
from rvc_pipeline.testing.voices import write_index, write_malicious_checkpoint, write_webui_voice

from .conftest import MAX_DURATION_S, MAX_UPLOAD_BYTES, read_wav

httpx = pytest.importorskip("httpx")

#: An error answer is a short JSON object, whatever the size of the request that caused it.
MAX_ERROR_BYTES = 4096
#: Generous bound for answering a request that must be refused without decoding it all.
QUICK_REFUSAL_S = 30.0
#: Voice and options of the control conversions, and the voice's output rate.
GOOD_VOICE, GOOD_VOICE_RATE = "alice", 40000
GOOD_OPTIONS = {"f0_method": "pm", "seed": "5"}
#: A one-second 200 Hz tone at 16 kHz as 16-bit PCM WAV (the base of the damaged files).
ONE_SECOND = tone(200, 1.0)
# Byte offsets of the canonical 44-byte WAV header soundfile writes.
WAV_RIFF_SIZE, WAV_CHANNELS, WAV_RATE, WAV_DATA_SIZE = 4, 22, 24, 40


# --------------------------------------------------------------------------- helpers


def _post(url: str, audio: bytes | None, voice: str = GOOD_VOICE, *, timeout: float = 120,
          **fields: str) -> "httpx.Response":
    data = {"voice_name": voice, **fields}
    files = None if audio is None else {"audio": ("in.wav", audio, "application/octet-stream")}
    return httpx.post(f"{url}/convert", data=data, files=files, timeout=timeout)


def _assert_error(r: "httpx.Response", status: int, error: str | None = None) -> dict:
    """`r` is the documented short JSON error with this status (and code)."""
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    assert len(r.content) <= MAX_ERROR_BYTES, f"error answer of {len(r.content)} bytes"
    body = r.json()
    assert set(body) == {"error", "detail"}
    if error is not None:
        assert body["error"] == error, body
    return body


def _duration(r: "httpx.Response") -> float:
    assert r.status_code == 200, r.text[:500]
    audio, rate = read_wav(r.content)
    assert rate == GOOD_VOICE_RATE
    return audio.shape[0] / rate


def _folder_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `root` (links not followed): relative path -> (size, mtime ns)."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            state[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return state


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _flac_of_silence(seconds: float, rate: int = 8000) -> bytes:
    """Silence as FLAC: two hours at 8 kHz take about 180 KB on the wire."""
    buf = io.BytesIO()
    minute = np.zeros(rate * 60, np.int16)
    with sf.SoundFile(buf, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        whole, rest = divmod(int(seconds * rate), minute.shape[0])
        for _ in range(whole):
            f.write(minute)
        f.write(minute[:rest])
    return buf.getvalue()


def _without_length(flac: bytes) -> bytes:
    """The FLAC with STREAMINFO's total-samples field zeroed ("unknown", as a streaming encoder writes)."""
    assert flac[:4] == b"fLaC"
    out = bytearray(flac)
    out[21] &= 0xF0  # the 36-bit count starts in the low nibble of STREAMINFO byte 13 (file byte 21)
    out[22:26] = bytes(4)
    return bytes(out)


def _float_wav_with(value: float) -> bytes:
    """The one-second tone as 32-bit float WAV with one sample set to `value` (NaN, inf)."""
    audio = ONE_SECOND.copy()
    audio[1234] = value
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


# --------------------------------------------------------------------------- fixtures


@dataclass
class Planted:
    """Files this module adds around the models folder (removed at the end)."""

    marker: Path  # created if the malicious pickle ever runs
    outside_voice: Path  # a valid voice outside the models folder: must never be reachable


@pytest.fixture(scope="module")
def planted(service, tmp_path_factory) -> Iterator[Planted]:
    """Booby-trapped voices in the models folder, plus a valid voice outside it and a link to it."""
    root = service.models_dir
    outside = tmp_path_factory.mktemp("outside_models")
    marker = tmp_path_factory.mktemp("markers") / "pwned"
    added = [root / "evil.pth", root / "evil_legacy.pth", root / "wrongdim.pth", root / "wrongdim.index",
             root / "linked.pth"]
    try:
        write_malicious_checkpoint(root / "evil.pth", marker, container="zip")
        write_malicious_checkpoint(root / "evil_legacy.pth", marker, container="pickle")
        write_webui_voice(root / "wrongdim.pth", "v2", 40000, f0=True, seed=4)
        write_index(root / "wrongdim.index", dim=256, n=200, seed=4)  # a v1-width index beside a v2 voice
        outside_voice = shutil.copy(root / "carol.pth", outside / "secret.pth")
        (root / "linked.pth").symlink_to(outside_voice)
        yield Planted(marker, Path(outside_voice))
    finally:
        for path in added:
            path.unlink(missing_ok=True)
        assert not marker.exists(), "the malicious checkpoint was executed"


@pytest.fixture(scope="module")
def control(service, planted) -> Callable[[], None]:
    """A good conversion whose output must stay byte-identical however hostile the traffic."""
    clip = wav_bytes(tone(220, 0.3))
    first = _post(service.url, clip, **GOOD_OPTIONS)
    assert first.status_code == 200, first.text

    def check() -> None:
        again = _post(service.url, clip, **GOOD_OPTIONS)
        assert again.status_code == 200, again.text
        assert again.content == first.content

    return check


@pytest.fixture(autouse=True)
def folder_untouched_and_serving(service, planted, control):
    """Around every test: the models folder is unchanged and the service still answers. (`control`
    takes its reference output before the first hostile request.)"""
    before = _folder_state(service.models_dir)
    yield
    assert _folder_state(service.models_dir) == before
    assert not planted.marker.exists()
    assert httpx.get(f"{service.url}/health", timeout=30).status_code == 200


# --------------------------------------------------------------------------- audio

#: name -> (file bytes, expected status, expected error code or None for 200)
_GOOD_WAV = wav_bytes(ONE_SECOND)
AUDIO_CASES: dict[str, tuple[Callable[[], bytes], int, str | None]] = {
    "random-bytes": (lambda: np.random.default_rng(0).bytes(4000), 415, "unsupported_audio"),
    "zero-length": (lambda: b"", 415, "unsupported_audio"),
    "wav-0-frames": (lambda: wav_bytes(np.zeros(0, np.float32)), 415, "unsupported_audio"),
    "wav-header-only": (lambda: _GOOD_WAV[:44], 415, "unsupported_audio"),
    "wav-1-sample": (lambda: wav_bytes(np.array([0.5], np.float32)), 415, "unsupported_audio"),
    "float-wav-nan": (lambda: _float_wav_with(np.nan), 415, "unsupported_audio"),
    "float-wav-inf": (lambda: _float_wav_with(np.inf), 415, "unsupported_audio"),
    "wav-rate-0": (lambda: _patched(_GOOD_WAV, WAV_RATE, "<I", 0), 415, "unsupported_audio"),
    "wav-rate-1hz": (lambda: _patched(_GOOD_WAV, WAV_RATE, "<I", 1), 415, "unsupported_audio"),
    "wav-rate-max": (lambda: _patched(_GOOD_WAV, WAV_RATE, "<I", 0xFFFFFFFF), 415, "unsupported_audio"),
    "wav-0-channels": (lambda: _patched(_GOOD_WAV, WAV_CHANNELS, "<H", 0), 415, "unsupported_audio"),
    # 1000 channels of 16 samples: too short to convert
    "wav-1000-channels": (lambda: _patched(_GOOD_WAV, WAV_CHANNELS, "<H", 1000), 415, "unsupported_audio"),
    # 16000 frames claimed to be at 1200 Hz: 13.3 s, over the 12 s limit
    "wav-rate-says-too-long": (lambda: _patched(_GOOD_WAV, WAV_RATE, "<I", 1200), 413, "audio_too_long"),
    # a FLAC that does not state its length cannot be decoded block by block
    "flac-unknown-length": (lambda: _without_length(_flac_of_silence(1.0)), 415, "unsupported_audio"),
}


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_broken_audio_gets_its_error(service, case):
    make, status, error = AUDIO_CASES[case]
    r = _post(service.url, make())
    body = _assert_error(r, status, error)
    assert "object at 0x" not in body["detail"], body  # no Python internals in what the user reads


#: name -> (file bytes, expected output duration in seconds)
CONVERTIBLE_CASES: dict[str, tuple[Callable[[], bytes], float]] = {
    # the data chunk claims 1 s but half of it is missing: convert what is there
    "wav-truncated": (lambda: _GOOD_WAV[: 44 + 16000], 0.5),
    # RIFF and data sizes of 4 GiB on a 1 s file: the real data counts
    "wav-sizes-4gib": (lambda: _patched(_patched(_GOOD_WAV, WAV_DATA_SIZE, "<I", 0xFFFFFFFF),
                                        WAV_RIFF_SIZE, "<I", 0xFFFFFFFF), 1.0),
    # a header that says 8 kHz for 16 kHz data: played (and converted) at half speed, as any player does
    "wav-rate-halved": (lambda: _patched(_GOOD_WAV, WAV_RATE, "<I", 8000), 2.0),
    "wav-8-channels": (lambda: wav_bytes(np.tile(ONE_SECOND[:, None], (1, 8))), 1.0),
    "wav-192khz": (lambda: wav_bytes(tone(200, 1.0, sample_rate=192000), 192000), 1.0),
}


@pytest.mark.parametrize("case", list(CONVERTIBLE_CASES))
def test_odd_but_valid_audio_converts(service, case):
    make, seconds = CONVERTIBLE_CASES[case]
    assert _duration(_post(service.url, make(), **GOOD_OPTIONS)) == pytest.approx(seconds, abs=0.05)


def test_two_hour_file_small_on_the_wire_is_refused_quickly(service):
    flac = _flac_of_silence(2 * 3600)
    assert len(flac) < MAX_UPLOAD_BYTES  # passes the upload limit: only the duration limit can stop it
    started = time.perf_counter()
    body = _assert_error(_post(service.url, flac), 413, "audio_too_long")
    assert time.perf_counter() - started < QUICK_REFUSAL_S
    assert "7200" in body["detail"] and f"{MAX_DURATION_S:g}" in body["detail"]


def test_hostile_audio_does_not_disturb_good_requests(service, control):
    """Every broken file at once, interleaved with good conversions: the good ones are unaffected."""
    clip = wav_bytes(tone(220, 0.3))
    bad = [make() for make, _, _ in AUDIO_CASES.values()]

    async def run():
        async with httpx.AsyncClient(timeout=300) as client:
            async def send(audio: bytes) -> "httpx.Response":
                return await client.post(f"{service.url}/convert", data={"voice_name": GOOD_VOICE, **GOOD_OPTIONS},
                                         files={"audio": ("in.wav", audio, "audio/wav")})
            return await asyncio.gather(*(send(a) for a in bad + [clip] * 2))

    responses = asyncio.run(run())
    for (case, (_, status, _)), r in zip(AUDIO_CASES.items(), responses):
        assert r.status_code == status, (case, r.text[:300])
    good = responses[len(bad):]
    assert all(r.status_code == 200 for r in good)
    assert len({r.content for r in good}) == 1
    control()


# --------------------------------------------------------------------------- form


def _many_parts(n: int) -> list[tuple[str, tuple[None, bytes]]]:
    return [(f"field{i}", (None, b"1")) for i in range(n)]


def test_huge_text_fields_are_413(service):
    """A 1 MB field is over the 600 KB body limit, whichever field it is."""
    audio = wav_bytes(tone(200, 0.3))
    _assert_error(_post(service.url, audio, "a" * 1_000_000), 413, "upload_too_large")
    _assert_error(_post(service.url, audio, f0_method="x" * 1_000_000), 413, "upload_too_large")


def test_large_fields_under_the_body_limit_get_short_errors(service):
    """Half a megabyte in one field: the answer names the problem without echoing it all back."""
    audio = wav_bytes(tone(200, 0.3))
    _assert_error(_post(service.url, audio, "a" * 500_000), 404, "voice_not_found")
    _assert_error(_post(service.url, audio, seed="9" * 500_000), 422, "invalid_request")
    _assert_error(_post(service.url, audio, f0_method="z" * 500_000), 400, "invalid_option")


def test_too_many_parts_is_400(service):
    """1000 text fields, or 20 files: refused while parsing (the form allows 32 fields, 2 files)."""
    audio = ("in.wav", wav_bytes(tone(200, 0.3)), "audio/wav")
    for parts in ([("audio", audio), *_many_parts(1000)], [("audio", audio)] * 20):
        r = httpx.post(f"{service.url}/convert", data={"voice_name": GOOD_VOICE}, files=parts, timeout=60)
        _assert_error(r, 400, "bad_request")


def test_malformed_bodies(service, control):
    bad_boundary = httpx.post(f"{service.url}/convert", content=b"--other\r\ngarbage\r\n", timeout=30,
                              headers={"content-type": "multipart/form-data; boundary=xyz"})
    _assert_error(bad_boundary, 400, "bad_request")
    audio_as_text = httpx.post(f"{service.url}/convert", data={"voice_name": GOOD_VOICE, "audio": "RIFF...."},
                               timeout=30)
    _assert_error(audio_as_text, 422, "invalid_request")
    json_body = httpx.post(f"{service.url}/convert", json={"voice_name": GOOD_VOICE, "audio": "x"}, timeout=30)
    _assert_error(json_body, 422, "invalid_request")
    control()


# --------------------------------------------------------------------------- voice names

PATH_LIKE_NAMES = [
    "../../etc/passwd", "/etc/passwd", "alice/../alice", "..%2f..%2fetc%2fpasswd", "%252e%252e%252falice",
    "..\\..\\windows\\win.ini", "C:alice", "alice\x00", "alice\x00.pth", "alice.pth", "assets", "hubert_base",
    "assets/hubert_base", ".alice", "file:///etc/passwd", "~", "a" * 129,
]


@pytest.mark.parametrize("name", PATH_LIKE_NAMES, ids=repr)
def test_path_like_voice_names_are_404(service, name):
    _assert_error(_post(service.url, wav_bytes(tone(200, 0.3)), name), 404, "voice_not_found")


def test_voice_outside_the_models_folder_is_unreachable(service, planted, control):
    """A valid voice sits next to the models folder: no name, link or encoding reaches it."""
    audio = wav_bytes(tone(200, 0.3))
    relative = os.path.relpath(planted.outside_voice.with_suffix(""), service.models_dir)
    for name in (relative, relative.replace("/", "%2f"), str(planted.outside_voice.with_suffix("")), "linked"):
        _assert_error(_post(service.url, audio, name), 404, "voice_not_found")
    names = {v["name"] for v in httpx.get(f"{service.url}/voices", timeout=60).json()["voices"]}
    assert "linked" not in names and "secret" not in names
    control()


# --------------------------------------------------------------------------- options

OPTION_CASES = [
    (GOOD_VOICE, {"f0_up_key": "100"}, 400),
    (GOOD_VOICE, {"index_rate": "2"}, 400),
    (GOOD_VOICE, {"protect": "-1"}, 400),
    (GOOD_VOICE, {"resample_sr": "7"}, 400),
    (GOOD_VOICE, {"resample_sr": "192001"}, 400),
    ("bob", {"speaker_id": "99"}, 400),
    (GOOD_VOICE, {"speaker_id": "-1"}, 400),
    (GOOD_VOICE, {"f0_method": "../../etc/passwd"}, 400),
    (GOOD_VOICE, {"f0_method": "rmvpe"}, 400),  # no rmvpe.pt in the models folder
    (GOOD_VOICE, {"f0_up_key": "NaN"}, 400),
    (GOOD_VOICE, {"index_rate": "inf"}, 400),
    (GOOD_VOICE, {"rms_mix_rate": "1e309"}, 400),
    (GOOD_VOICE, {"filter_radius": "8"}, 400),
    (GOOD_VOICE, {"seed": "-1"}, 400),
    (GOOD_VOICE, {"seed": str(2**64)}, 400),
    (GOOD_VOICE, {"seed": "1e3"}, 422),
    (GOOD_VOICE, {"protect": "0x1"}, 422),
]


@pytest.mark.parametrize("voice, fields, status", OPTION_CASES, ids=lambda v: repr(v)[:40])
def test_out_of_range_options(service, voice, fields, status):
    error = {400: "invalid_option", 422: "invalid_request"}[status]
    _assert_error(_post(service.url, wav_bytes(tone(200, 0.3)), voice, **fields), status, error)


def test_options_after_errors_still_convert(control):
    control()


# --------------------------------------------------------------------------- planted voice files


def test_voices_lists_broken_files_with_their_problem(service, planted):
    voices = {v["name"]: v for v in httpx.get(f"{service.url}/voices", timeout=60).json()["voices"]}
    assert {"alice", "bob", "carol"} <= set(voices)
    for name in ("evil", "evil_legacy"):
        assert "refusing to unpickle" in voices[name]["error"]
        assert voices[name]["version"] is None
    # The index's width is read from its header: the mismatch shows before anyone converts.
    assert voices["wrongdim"]["has_index"] and voices["wrongdim"]["version"] == "v2"
    assert "256" in voices["wrongdim"]["error"] and "768" in voices["wrongdim"]["error"]
    assert all(str(service.models_dir) not in v.get("error", "") for v in voices.values())
    assert not planted.marker.exists()


@pytest.mark.parametrize("name", ["evil", "evil_legacy"])
def test_malicious_voice_is_refused_not_run(service, planted, control, name):
    for _ in range(2):  # a failed load is not cached as a half-loaded voice
        body = _assert_error(_post(service.url, wav_bytes(tone(200, 0.3)), name), 409, "voice_unusable")
        assert "refusing to unpickle" in body["detail"] and "exec" in body["detail"]
        assert str(service.models_dir) not in body["detail"]  # no server paths in answers
    assert not planted.marker.exists()
    control()


def test_index_of_the_wrong_width_is_a_clear_error(service, control):
    body = _assert_error(_post(service.url, wav_bytes(tone(200, 0.3)), "wrongdim"), 409, "voice_unusable")
    assert "256" in body["detail"] and "768" in body["detail"]
    assert str(service.models_dir) not in body["detail"]
    control()

"""API keys, voice access and per-key limits on a real local cluster, with two ingress replicas
sharing one usage ledger: 401, 403, revocation without a restart, 429 with Retry-After and
recovery after the window, /voices and /health per key, and no key or hash in any answer or log."""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

import pytest
import yaml

from rvc_pipeline.testing.audio import tone
from serve_app.api_keys import new_key

from .conftest import wav_bytes

httpx = pytest.importorskip("httpx")

APP = "keyed"


def _write_keys(path: Path, entries: list[dict]) -> None:
    path.write_text(yaml.safe_dump({"keys": entries}))
    later = time.time_ns() + 10**9  # a new mtime even within the filesystem's resolution
    os.utime(path, ns=(later, later))


@pytest.fixture(scope="module")
def keyed(ray_cluster, models_dir, tmp_path_factory):
    """The app with API keys from a file, two ingress replicas, and the keys it was given."""
    from ray import serve

    from serve_app.app import build_app
    from serve_app.testing import app_args, wait_healthy

    folder = tmp_path_factory.mktemp("keys")
    keys, entries = {}, []
    for key_id, voices, limits in (("all", "*", {}), ("alice-only", ["alice"], {}),
                                   ("limited", "*", {"requests_per_minute": 2}), ("doomed", "*", {})):
        keys[key_id], stored = new_key(key_id)
        entries.append({"id": key_id, "hash": stored, "voices": voices, **limits})
    key_file = folder / "keys.yaml"
    _write_keys(key_file, entries)
    args = app_args(models_dir, ingress={"num_replicas": 2, "num_cpus": 0.1}, api_keys_file=str(key_file))
    serve.run(build_app(args), name=APP, route_prefix=f"/{APP}")
    url = f"{ray_cluster}/{APP}"
    deadline = time.time() + 180
    while time.time() < deadline and httpx.get(f"{url}/health", timeout=10).status_code != 200:
        time.sleep(0.5)
    wait_healthy(url)
    yield {"url": url, "keys": keys, "entries": entries, "file": key_file}
    serve.delete(APP)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _convert(url: str, key: str | None, voice: str = "alice") -> "httpx.Response":
    return httpx.post(f"{url}/convert", headers=_auth(key) if key else {}, timeout=120,
                      data={"voice_name": voice, "f0_method": "pm"},
                      files={"audio": ("in.wav", wav_bytes(tone(200, 0.5)), "audio/wav")})


def test_no_key_or_a_wrong_key_is_401(keyed):
    for key in (None, "rvc.all.not-the-secret-at-all-xxxxxxxx", "garbage"):
        r = _convert(keyed["url"], key)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", r.text
        assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{keyed['url']}/voices", timeout=30).status_code == 401


def test_a_key_converts_only_with_its_voices(keyed):
    assert _convert(keyed["url"], keyed["keys"]["all"], "bob").status_code == 200
    assert _convert(keyed["url"], keyed["keys"]["alice-only"], "alice").status_code == 200
    r = _convert(keyed["url"], keyed["keys"]["alice-only"], "bob")
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    # Not even whether a voice exists is told to a key that may not use it.
    assert _convert(keyed["url"], keyed["keys"]["alice-only"], "no-such-voice").status_code == 403


def test_voices_are_listed_per_key_and_health_is_terse_without_one(keyed):
    names = lambda key: {v["name"] for v in httpx.get(f"{keyed['url']}/voices", headers=_auth(key),  # noqa: E731
                                                       timeout=60).json()["voices"]}
    assert names(keyed["keys"]["alice-only"]) == {"alice"}
    assert {"alice", "bob", "carol"} <= names(keyed["keys"]["all"])
    assert httpx.get(f"{keyed['url']}/health", timeout=30).json() == {"status": "ok"}
    detailed = httpx.get(f"{keyed['url']}/health", headers=_auth(keyed["keys"]["all"]), timeout=30).json()
    assert detailed["status"] == "ok" and "synthesis_replicas" in detailed


def test_a_key_over_its_rate_gets_429_across_replicas_then_passes_after_the_window(keyed):
    key = keyed["keys"]["limited"]
    codes = [_convert(keyed["url"], key).status_code for _ in range(5)]
    # Two ingress replicas, one ledger: exactly the 2 allowed per minute pass, wherever they land.
    assert codes.count(200) == 2 and codes.count(429) == 3, codes
    refused = _convert(keyed["url"], key)
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    time.sleep(retry_after + 0.5)
    assert _convert(keyed["url"], key).status_code == 200


def test_a_revoked_key_stops_working_without_a_restart(keyed):
    doomed = keyed["keys"]["doomed"]
    assert _convert(keyed["url"], doomed).status_code == 200
    _write_keys(keyed["file"], [e for e in keyed["entries"] if e["id"] != "doomed"])
    deadline = time.time() + 10
    while time.time() < deadline and _convert(keyed["url"], doomed).status_code != 401:
        time.sleep(0.5)
    for _ in range(4):  # every replica has reloaded: several tries all refused
        assert _convert(keyed["url"], doomed).status_code == 401
    assert _convert(keyed["url"], keyed["keys"]["all"]).status_code == 200


def test_no_key_or_hash_in_any_answer_or_log_line(keyed):
    secrets_ = [key.split(".", 2)[2] for key in keyed["keys"].values()]
    hashes = [e["hash"].split("$")[2] for e in keyed["entries"]]
    answers = [_convert(keyed["url"], keyed["keys"]["all"]).text[:0],  # audio: no text to search
               httpx.get(f"{keyed['url']}/voices", headers=_auth(keyed["keys"]["all"]), timeout=30).text,
               httpx.get(f"{keyed['url']}/health", headers=_auth(keyed["keys"]["all"]), timeout=30).text,
               _convert(keyed["url"], keyed["keys"]["alice-only"], "bob").text]
    import ray

    logs_dir = ray._private.worker._global_node.get_logs_dir_path()  # this cluster's own session
    logs = "".join(Path(p).read_text(errors="replace") for p in glob.glob(f"{logs_dir}/serve/replica_{APP}_*.log"))
    assert "key=all" in logs  # each request's log line names its key by id
    for secret in secrets_ + hashes:
        assert all(secret not in text for text in answers)
        assert secret not in logs


def test_cors_stays_closed(keyed):
    preflight = httpx.options(f"{keyed['url']}/convert", timeout=30, headers={
        "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    plain = httpx.get(f"{keyed['url']}/health", headers={"Origin": "https://elsewhere.example"}, timeout=30)
    assert "access-control-allow-origin" not in plain.headers

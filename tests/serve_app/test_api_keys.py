"""API keys and per-key usage windows, without a cluster: hashing, parsing, reloading, limits."""

from __future__ import annotations

import os
import time

import pytest

from serve_app import api_keys
from serve_app.api_keys import KeyFileError, KeyStore, bearer_token, hash_secret, new_key, parse_keys
from serve_app.usage import UsageWindow


def _entry(key_id: str, stored: str, voices: object = "*", **limits: object) -> dict:
    return {"id": key_id, "hash": stored, "voices": voices, **limits}


def _write(path, entries) -> None:
    import yaml

    path.write_text(yaml.safe_dump({"keys": entries}))


def test_a_new_key_authenticates_and_only_its_hash_is_stored(tmp_path):
    key, stored = new_key("studio")
    assert key.startswith("rvc.studio.") and key.split(".")[2] not in stored
    path = tmp_path / "keys.yaml"
    _write(path, [_entry("studio", stored, ["alice"])])
    store = KeyStore(file=path)
    found = store.authenticate(key)
    assert found is not None and found.id == "studio" and found.may_use("alice") and not found.may_use("bob")
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # wrong secret
    assert store.authenticate(key.replace("studio", "other")) is None  # unknown id
    assert store.authenticate("") is None and store.authenticate("rvc..x") is None


def test_the_same_secret_hashes_differently_with_each_salt():
    assert hash_secret("s3cret") != hash_secret("s3cret")


@pytest.mark.parametrize("text,message", [
    ("keys: 3", "'keys' list"),
    ("keys:\n  - {id: a, hash: plain-key, voices: '*'}", "must be a hmac-sha256 hash"),
    ("keys:\n  - {id: 'bad id', hash: x, voices: '*'}", "'id' must be"),
    ("keys: [{id: a, hash: H, voices: '*'}, {id: a, hash: H, voices: '*'}]", "appears twice"),
    ("keys:\n  - {id: a, hash: H, voices: alice}", "'voices' must be"),
    ("keys:\n  - {id: a, hash: H, voices: '*', requests_per_minute: 0}", "positive integer"),
    ("keys:\n  - {id: a, hash: H, voices: '*', colour: red}", "unknown field"),
    ("keys: [", "not valid YAML"),
])
def test_bad_key_files_say_what_to_fix(text, message):
    text = text.replace("hash: H", f"hash: '{hash_secret('x')}'")
    with pytest.raises(KeyFileError, match=message):
        parse_keys(text, "keys.yaml")


def test_a_key_removed_from_the_file_stops_working_without_a_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(api_keys, "RELOAD_CHECK_S", 0.0)
    a, a_hash = new_key("a")
    b, b_hash = new_key("b")
    path = tmp_path / "keys.yaml"
    _write(path, [_entry("a", a_hash), _entry("b", b_hash)])
    store = KeyStore(file=path)
    assert store.authenticate(a) and store.authenticate(b)
    _write(path, [_entry("b", b_hash)])
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert store.authenticate(a) is None and store.authenticate(b) is not None
    # A broken edit keeps the keys read last (nothing already working is lost).
    path.write_text("keys: [")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert store.authenticate(b) is not None


def test_keys_from_an_environment_variable(monkeypatch):
    key, stored = new_key("env-key")
    monkeypatch.setenv("RVC_TEST_KEYS", f'{{"keys": [{{"id": "env-key", "hash": "{stored}", "voices": "*"}}]}}')
    assert KeyStore(env="RVC_TEST_KEYS").authenticate(key).id == "env-key"
    with pytest.raises(KeyFileError, match="not set"):
        KeyStore(env="RVC_TEST_KEYS_MISSING")
    assert KeyStore().enabled is False


def test_bearer_header():
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None and bearer_token("Bearer ") is None


def test_cli_creates_lists_and_revokes(tmp_path, capsys):
    path = tmp_path / "keys.yaml"
    assert api_keys.main(["new", "--file", str(path), "--id", "app", "--voices", "alice,bob", "--rpm", "5"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("rvc.app.") and key not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert KeyStore(file=path).authenticate(key).requests_per_minute == 5
    assert api_keys.main(["new", "--file", str(path), "--id", "app"]) == 1  # no duplicate ids
    assert api_keys.main(["list", "--file", str(path)]) == 0
    assert "app\tvoices=alice,bob" in capsys.readouterr().out
    assert api_keys.main(["revoke", "--file", str(path), "--id", "app"]) == 0
    assert KeyStore(file=path).authenticate(key) is None


def test_requests_per_minute_window():
    window = UsageWindow(window_s=60)
    limits = {"requests_per_minute": 2}
    assert window.admit("k", limits, 1.0, now=0) == 0 and window.admit("k", limits, 1.0, now=10) == 0
    assert window.admit("k", limits, 1.0, now=20) == pytest.approx(40)  # the first expires at 60
    assert window.admit("other", limits, 1.0, now=20) == 0  # keys are counted apart
    assert window.admit("k", limits, 1.0, now=60) == 0  # allowed again after the window


def test_audio_seconds_per_minute_window():
    window = UsageWindow(window_s=60)
    limits = {"audio_seconds_per_minute": 30}
    assert window.admit("k", limits, 20, now=0) == 0
    assert window.admit("k", limits, 20, now=5) == pytest.approx(55)
    assert window.admit("k", limits, 10, now=5) == 0
    assert window.admit("k", limits, 31, now=100) == float("inf")  # longer than the whole budget


def test_stream_slots():
    window = UsageWindow()
    assert window.open_stream("k", 1) and not window.open_stream("k", 1)
    window.close_stream("k")
    assert window.open_stream("k", 1) and window.open_stream("k", None)


def _cors_app(origins: list[str]):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from serve_app.access import CORSGate

    CORSGate.configure(origins)
    app = Starlette(routes=[Route("/x", lambda request: PlainTextResponse("ok"), methods=["GET", "POST"])])
    app.add_middleware(CORSGate)
    return app


@pytest.mark.parametrize("origins,allowed", [([], False), (["https://studio.example"], True)])
def test_cors_headers_only_for_configured_origins(origins, allowed):
    import asyncio

    import httpx

    async def run():
        transport = httpx.ASGITransport(app=_cors_app(origins))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            pre = await client.options("/x", headers={"Origin": "https://studio.example",
                                                      "Access-Control-Request-Method": "POST"})
            get = await client.get("/x", headers={"Origin": "https://studio.example"})
            other = await client.get("/x", headers={"Origin": "https://evil.example"})
            return pre, get, other

    pre, get, other = asyncio.run(run())
    assert ("access-control-allow-origin" in get.headers) is allowed
    assert ("access-control-allow-origin" in pre.headers) is allowed
    assert "access-control-allow-origin" not in other.headers and other.text == "ok"

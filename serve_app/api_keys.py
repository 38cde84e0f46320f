"""API keys: who may call the service, with which voices, and how much.

A key looks like `rvc.<id>.<secret>`: the id names the key in logs and limits (it is not a
secret), the secret is 32 random bytes. The server stores only a salted hash of the secret:

    keys:
      - id: studio-app
        hash: "hmac-sha256$<salt, base64>$<digest, base64>"
        voices: [alice, bob]           # or "*": every voice
        requests_per_minute: 60        # optional; absent = unlimited
        audio_seconds_per_minute: 600  # optional
        max_streams: 2                 # optional: concurrent realtime sessions

The key set comes from a YAML/JSON file or an environment variable holding the same text
(`api_keys_file` / `api_keys_env` in serve_config.yaml); with neither, the service is open.
A changed file is read again on the next request (at most once a second), so a key removed
from it stops working without a restart; a file that no longer parses keeps the keys read
last and logs an error. Secrets are compared in constant time and never logged.

    python -m serve_app.api_keys new --file keys.yaml --id studio-app --voices alice,bob --rpm 60
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

logger = logging.getLogger("ray.serve")

#: The scheme of a stored hash: HMAC-SHA256 of the secret keyed by a 16-byte random salt.
#: Keys carry 256 random bits, so a fast hash is safe (no password stretching needed).
HASH_SCHEME = "hmac-sha256"
KEY_PREFIX = "rvc"
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_KEY_PATTERN = re.compile(rf"{KEY_PREFIX}\.({_ID_PATTERN.pattern})\.([A-Za-z0-9_-]{{20,200}})")
#: Shortest interval between two looks at the key file.
RELOAD_CHECK_S = 1.0
#: Compared against when the id is unknown, so a wrong id takes as long as a wrong secret.
_DUMMY_SALT, _DUMMY_DIGEST = b"\0" * 16, b"\0" * 32


class KeyFileError(ValueError):
    """A key file or variable that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class ApiKey:
    """One key's stored form and what it may do."""

    id: str
    salt: bytes
    digest: bytes
    voices: Optional[frozenset[str]]  # None = every voice ("*")
    requests_per_minute: Optional[int] = None
    audio_seconds_per_minute: Optional[float] = None
    max_streams: Optional[int] = None

    def may_use(self, voice: str) -> bool:
        return self.voices is None or voice in self.voices

    def limits(self) -> dict[str, Any]:
        return {"requests_per_minute": self.requests_per_minute,
                "audio_seconds_per_minute": self.audio_seconds_per_minute, "max_streams": self.max_streams}


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """The stored form of a key's secret: "hmac-sha256$<salt>$<digest>" (base64)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    b64 = base64.b64encode
    return f"{HASH_SCHEME}${b64(salt).decode()}${b64(_digest(salt, secret)).decode()}"


def new_key(key_id: str) -> tuple[str, str]:
    """(the key to hand out once, its stored hash) for a new key called `key_id`."""
    if not _ID_PATTERN.fullmatch(key_id):
        raise KeyFileError(f"key id {key_id!r} must be 1-64 letters, digits, '-' or '_', starting with a letter or digit")
    secret = secrets.token_urlsafe(32)
    return f"{KEY_PREFIX}.{key_id}.{secret}", hash_secret(secret)


def parse_keys(text: str, source: str) -> dict[str, ApiKey]:
    """Keys by id from YAML/JSON text ({"keys": [...]}). Raises KeyFileError naming the problem."""
    import yaml

    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        raise KeyFileError(f"{source} is not valid YAML/JSON: {e}") from None
    entries = (data or {}).get("keys") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise KeyFileError(f"{source} must hold a mapping with a 'keys' list")
    keys: dict[str, ApiKey] = {}
    for number, entry in enumerate(entries, 1):
        key = _parse_entry(entry, f"{source}, key {number}")
        if key.id in keys:
            raise KeyFileError(f"{source}: key id {key.id!r} appears twice")
        keys[key.id] = key
    return keys


def _parse_entry(entry: Any, where: str) -> ApiKey:
    if not isinstance(entry, Mapping):
        raise KeyFileError(f"{where} must be a mapping with id, hash and voices")
    unknown = set(entry) - {"id", "hash", "voices", "requests_per_minute", "audio_seconds_per_minute", "max_streams"}
    if unknown:
        raise KeyFileError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    key_id = entry.get("id")
    if not isinstance(key_id, str) or not _ID_PATTERN.fullmatch(key_id):
        raise KeyFileError(f"{where}: 'id' must be 1-64 letters, digits, '-' or '_'")
    scheme, _, rest = str(entry.get("hash", "")).partition("$")
    salt_b64, _, digest_b64 = rest.partition("$")
    try:
        salt, digest = base64.b64decode(salt_b64, validate=True), base64.b64decode(digest_b64, validate=True)
    except ValueError:
        salt = digest = b""
    if scheme != HASH_SCHEME or len(salt) < 16 or len(digest) != 32:
        raise KeyFileError(f"{where} ({key_id}): 'hash' must be a {HASH_SCHEME} hash made by "
                           "`python -m serve_app.api_keys new` (never the key itself)")
    voices = entry.get("voices")
    if voices == "*":
        allowed = None
    elif isinstance(voices, list) and all(isinstance(v, str) and v for v in voices):
        allowed = frozenset(voices)
    else:
        raise KeyFileError(f"{where} ({key_id}): 'voices' must be a list of voice names or \"*\"")
    limits = {}
    for field, kind in (("requests_per_minute", int), ("audio_seconds_per_minute", float), ("max_streams", int)):
        value = entry.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (kind is int and value != int(value)):
            raise KeyFileError(f"{where} ({key_id}): {field} must be a positive {'integer' if kind is int else 'number'}")
        limits[field] = kind(value)
    return ApiKey(key_id, salt, digest, allowed, **limits)


class KeyStore:
    """The current key set, read from a file (re-read when it changes) or an environment variable.

    `enabled` is False when neither is configured: the service is then open to anyone.
    """

    def __init__(self, file: str | Path | None = None, env: str | None = None) -> None:
        if file is not None and env is not None:
            raise KeyFileError("set api_keys_file or api_keys_env, not both")
        self._file = Path(file) if file is not None else None
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._file_state: tuple | None = None
        self._keys: dict[str, ApiKey] = {}
        self.enabled = file is not None or env is not None
        if env is not None:
            text = os.environ.get(env)
            if text is None:
                raise KeyFileError(f"api_keys_env names ${env}, which is not set")
            self._keys = parse_keys(text, f"${env}")
        elif self._file is not None:
            self._keys = self._read_file()

    @property
    def source(self) -> str:
        return "file" if self._file is not None else ("environment" if self.enabled else "none")

    def keys(self) -> dict[str, ApiKey]:
        """The keys now in force (the file is looked at again at most once a second)."""
        if self._file is not None and time.monotonic() - self._checked_at >= RELOAD_CHECK_S:
            with self._lock:
                self._reload_if_changed()
        return self._keys

    def authenticate(self, presented: str | None) -> ApiKey | None:
        """The key whose secret `presented` ("rvc.<id>.<secret>") is, or None. Constant time per key."""
        if not presented:
            return None
        match = _KEY_PATTERN.fullmatch(presented.strip())
        key = self.keys().get(match.group(1)) if match else None
        secret = match.group(2) if match else presented
        salt, digest = (key.salt, key.digest) if key is not None else (_DUMMY_SALT, _DUMMY_DIGEST)
        same = hmac.compare_digest(_digest(salt, secret), digest)
        return key if key is not None and same else None

    def _file_signature(self) -> tuple:
        st = self._file.stat()
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _read_file(self) -> dict[str, ApiKey]:
        try:
            self._file_state = self._file_signature()
            text = self._file.read_text()
        except OSError as e:
            raise KeyFileError(f"the API key file cannot be read ({e.strerror}); check api_keys_file") from None
        self._checked_at = time.monotonic()
        return parse_keys(text, "the API key file")

    def _reload_if_changed(self) -> None:
        self._checked_at = time.monotonic()
        try:
            changed = self._file_signature() != self._file_state
        except OSError:
            changed = True
        if not changed:
            return
        try:
            self._keys = self._read_file()
            logger.info("API keys reloaded: %d key(s)", len(self._keys))
        except KeyFileError as e:
            logger.error("API key file changed but cannot be used, keeping the %d key(s) read before: %s",
                         len(self._keys), e)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


# ------------------------------------------------------------------------------ command line


def _write_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    """Write the key file atomically, readable by its owner only."""
    import yaml

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump({"keys": entries}, sort_keys=False))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _load_entries(path: Path) -> list[dict[str, Any]]:
    import yaml

    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    parse_keys(path.read_text(), str(path))  # refuse to extend a broken file
    return list(data.get("keys", []))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m serve_app.api_keys new|revoke|list --file keys.yaml ...`"""
    parser = argparse.ArgumentParser(prog="python -m serve_app.api_keys", description="Manage the service's API keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="create a key: prints it once, stores only its hash")
    new.add_argument("--file", type=Path, required=True)
    new.add_argument("--id", required=True)
    new.add_argument("--voices", default="*", help='comma-separated voice names, or "*" (default)')
    new.add_argument("--rpm", type=int, help="requests per minute")
    new.add_argument("--audio-spm", type=float, help="audio seconds per minute")
    new.add_argument("--streams", type=int, help="concurrent realtime sessions")
    revoke = sub.add_parser("revoke", help="remove a key (takes effect within a second, no restart)")
    revoke.add_argument("--file", type=Path, required=True)
    revoke.add_argument("--id", required=True)
    listing = sub.add_parser("list", help="key ids and what each may do (never secrets)")
    listing.add_argument("--file", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        entries = _load_entries(args.file)
        if args.command == "list":
            for key in parse_keys(args.file.read_text(), str(args.file)).values() if entries else []:
                voices = "*" if key.voices is None else ",".join(sorted(key.voices))
                print(f"{key.id}\tvoices={voices}\t" + "\t".join(f"{k}={v}" for k, v in key.limits().items() if v))
            return 0
        if args.command == "revoke":
            kept = [e for e in entries if e.get("id") != args.id]
            if len(kept) == len(entries):
                print(f"no key with id {args.id!r} in {args.file}", file=sys.stderr)
                return 1
            _write_entries(args.file, kept)
            print(f"revoked {args.id}")
            return 0
        if any(e.get("id") == args.id for e in entries):
            print(f"a key with id {args.id!r} exists; revoke it first or pick another id", file=sys.stderr)
            return 1
        key, stored = new_key(args.id)
        entry: dict[str, Any] = {"id": args.id, "hash": stored,
                                 "voices": "*" if args.voices.strip() == "*" else [v.strip() for v in args.voices.split(",") if v.strip()]}
        for field, value in (("requests_per_minute", args.rpm), ("audio_seconds_per_minute", args.audio_spm),
                             ("max_streams", args.streams)):
            if value is not None:
                entry[field] = value
        _parse_entry(entry, "the new key")
        _write_entries(args.file, entries + [entry])
        print(key)
        print(f"stored the hash of key {args.id!r} in {args.file}; the key above is shown only now", file=sys.stderr)
        return 0
    except (KeyFileError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

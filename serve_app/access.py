"""Who may call the ingress: API keys (401/403), per-key limits (429) and CORS.

The ingress asks `AccessControl` at three points of a request: `authenticate` before the
body is read, `authorize` once the voice is known, and `admit` once the audio's length is
known (one call to the application's shared usage ledger, so limits hold across replicas).
With no keys configured everything is allowed and the ingress logs one warning saying so.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Optional

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api_keys import ApiKey, KeyStore, bearer_token
from .config import AppArgs
from .http_utils import ServiceError

logger = logging.getLogger("ray.serve")

OPEN_WARNING = (
    "API keys are OFF: anyone who can reach this service's HTTP port can convert with every voice. "
    "Create keys with `python -m serve_app.api_keys new` and set api_keys_file (see docs/security.md)."
)
#: Longest wait for the usage ledger before the request is refused (503), seconds.
LEDGER_TIMEOUT_S = 5.0


class AccessControl:
    """API keys and per-key limits of one ingress replica."""

    def __init__(self, args: AppArgs, app_name: str) -> None:
        self.store = KeyStore(args.api_keys_file, args.api_keys_env)
        self._app_name = app_name
        self._ledger: Any = None
        if self.store.enabled:
            logger.info("API keys on (%s): %d key(s)", self.store.source, len(self.store.keys()))
        else:
            logger.warning(OPEN_WARNING)

    @property
    def enabled(self) -> bool:
        return self.store.enabled

    def identify(self, request: Request) -> Optional[ApiKey]:
        """The request's valid key, or None (no key, a wrong one, or keys off)."""
        if not self.enabled:
            return None
        return self.store.authenticate(bearer_token(request.headers.get("authorization")))

    def authenticate(self, request: Request) -> Optional[ApiKey]:
        """The request's key; 401 when keys are on and it has no valid one. None when keys are off."""
        if not self.enabled:
            return None
        key = self.identify(request)
        if key is None:
            given = "no API key was sent" if not request.headers.get("authorization") else "the API key is not valid"
            raise ServiceError(401, "unauthorized", f"{given}; send Authorization: Bearer <key>",
                               headers={"WWW-Authenticate": "Bearer"})
        return key

    @staticmethod
    def may_use(key: Optional[ApiKey], voice: str) -> bool:
        return key is None or key.may_use(voice)

    def authorize(self, key: Optional[ApiKey], voice: str) -> None:
        """403 when the key may not use `voice`."""
        if not self.may_use(key, voice):
            raise ServiceError(403, "forbidden", f"this API key may not use voice {voice!r}")

    async def admit(self, key: Optional[ApiKey], audio_seconds: float) -> None:
        """Count the request against the key's limits; 429 with Retry-After when over them."""
        if key is None or not any(v is not None for v in (key.requests_per_minute, key.audio_seconds_per_minute)):
            return
        if self._ledger is None:
            from .usage import get_ledger

            self._ledger = get_ledger(self._app_name)
        try:
            wait = await asyncio.wait_for(self._ledger.admit.remote(key.id, key.limits(), audio_seconds), LEDGER_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ServiceError(503, "overloaded", "the usage ledger did not answer; retry") from None
        if wait == math.inf:
            raise ServiceError(413, "audio_too_long", f"{audio_seconds:.1f} s of audio is more than this key's "
                               f"{key.audio_seconds_per_minute:g} audio seconds per minute")
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise ServiceError(429, "rate_limited", f"this API key is over its limits; retry in {retry} s",
                               headers={"Retry-After": str(retry)})


class CORSGate:
    """ASGI middleware: CORS headers only for the configured origins (none by default).

    `configure` is called by the ingress replica once it knows its arguments; until then,
    and with an empty list, no CORS header is ever sent, so browsers allow same-origin calls only.
    """

    allowed: frozenset[str] = frozenset()

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @classmethod
    def configure(cls, origins: list[str]) -> None:
        cls.allowed = frozenset(o.rstrip("/") for o in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin", "").rstrip("/")
        allowed = bool(origin) and origin in self.allowed
        if allowed and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await send({"type": "http.response.start", "status": 204, "headers": self._headers(origin, preflight=True)})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if allowed and message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + self._headers(origin)}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    def _headers(origin: str, *, preflight: bool = False) -> list[tuple[bytes, bytes]]:
        headers = [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]
        if preflight:
            headers += [(b"access-control-allow-methods", b"GET, POST"),
                        (b"access-control-allow-headers", b"Authorization, Content-Type"),
                        (b"access-control-max-age", b"600")]
        else:
            headers.append((b"access-control-expose-headers", b"X-Processing-Time, X-Stage-Times, Retry-After"))
        return headers

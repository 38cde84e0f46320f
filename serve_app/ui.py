"""The /ui page's files (serve_app/ui/: HTML and JavaScript, no build step, no CDN), served
by the ingress from this package with a Content-Security-Policy that allows this origin only."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi.responses import Response

from .http_utils import ServiceError

UI_DIR = Path(__file__).with_name("ui")
#: The only files served, with their media types (nothing else under /ui, so no path tricks).
UI_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
            "worklet.js": "text/javascript; charset=utf-8"}
#: Scripts, worklets, fetches and the WebSocket from this origin only; converted audio plays from blob: URLs.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; connect-src 'self'; media-src 'self' blob:; "
                           "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")


@lru_cache(maxsize=None)
def _read(name: str) -> bytes:
    return (UI_DIR / name).read_bytes()


def ui_response(name: str) -> Response:
    """One of the UI's files; 404 for any other name."""
    if name not in UI_FILES:
        raise ServiceError(404, "not_found", f"/ui has no file {name[:60]!r}")
    return Response(_read(name), media_type=UI_FILES[name],
                    headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                             "Cache-Control": "no-cache"})

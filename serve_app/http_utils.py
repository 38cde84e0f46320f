"""HTTP helpers of the ingress: the error type and status mapping, a size-limited
multipart reader, option parsing, and offline text-to-speech with espeak-ng."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any, Mapping

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from rvc_pipeline import (
    AssetNotFoundError,
    AudioError,
    AudioTooLongError,
    CheckpointError,
    ConversionOptions,
    OptionError,
    RetrievalIndexError,
    RVCError,
    VoiceNotFoundError,
)


#: Longest error detail answered; longer ones (e.g. echoing a 500 KB field) keep their start and end.
MAX_DETAIL_CHARS = 1000


class ServiceError(Exception):
    """An error answered as JSON {"error": code, "detail": text} with `status`."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        detail = _shorten(detail)
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _shorten(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """`text`, or its start and end around a note of how much was left out."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return f"{text[:keep]} ...[{len(text) - 2 * keep} characters left out]... {text[-keep:]}"


def _root_cause(exc: BaseException) -> BaseException:
    """The user's exception inside Ray's wrappers (RayTaskError keeps it as `.cause`). The wrapper
    also subclasses the cause's type ("RayTaskError(CheckpointError)"), so it is unwrapped whatever
    its type: its text is a remote traceback, not a message for the user."""
    seen = 0
    while seen < 5 and isinstance(getattr(exc, "cause", None), BaseException):
        exc, seen = exc.cause, seen + 1
    return exc


def to_service_error(exc: BaseException) -> ServiceError | None:
    """Map a library/Serve exception to its HTTP error, or None if it is unexpected (500)."""
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError

    exc = _root_cause(exc)
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, BackPressureError):
        return ServiceError(503, "overloaded", "the service is busy (queues are full); retry later")
    if isinstance(exc, RayActorError):  # a model replica died or is unreachable; Serve replaces it
        return ServiceError(503, "replica_unavailable", "a model replica stopped while handling the request; retry")
    if isinstance(exc, VoiceNotFoundError):
        return ServiceError(404, "voice_not_found", str(exc))
    if isinstance(exc, AudioTooLongError):
        return ServiceError(413, "audio_too_long", str(exc))
    if isinstance(exc, AudioError):
        return ServiceError(415, "unsupported_audio", str(exc))
    if isinstance(exc, (OptionError, AssetNotFoundError)):
        return ServiceError(400, "invalid_option", str(exc))
    if isinstance(exc, (CheckpointError, RetrievalIndexError)):
        # The voice's own files are broken: only whoever runs the service can fix them.
        return ServiceError(500, "voice_unusable", str(exc))
    if isinstance(exc, RVCError):
        return ServiceError(500, type(exc).__name__, str(exc))
    return None


def hide_server_paths(error: ServiceError, paths: Mapping[str, str]) -> ServiceError:
    """`error` with each server folder in its detail replaced by a label (e.g. models dir -> "<models>")."""
    detail = error.detail
    for path, label in paths.items():
        if path:
            detail = detail.replace(path.rstrip("/"), label)
    error.detail = detail
    error.args = (detail,)
    return error


async def read_form_limited(request: Request, max_bytes: int, *, max_fields: int = 32) -> FormData:
    """Parse a multipart/urlencoded body, refusing with 413 as soon as it exceeds `max_bytes`.

    Content-Length is checked first; the stream is then counted as it arrives, so an
    oversized or lying client is cut off without the body being buffered.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > max_bytes
        except ValueError:
            raise ServiceError(400, "bad_request", "invalid Content-Length header") from None
        if too_big:
            raise _too_large(max_bytes)
    received = 0
    receive = request.receive

    async def counting_receive() -> Mapping[str, Any]:
        nonlocal received
        message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise _too_large(max_bytes)
        return message

    limited = Request(request.scope, receive=counting_receive)
    try:
        return await limited.form(max_files=2, max_fields=max_fields)
    except ServiceError:
        raise
    except Exception as e:
        if isinstance(e.__cause__ or e.__context__, ServiceError):
            raise (e.__cause__ or e.__context__) from None
        raise ServiceError(400, "bad_request", f"could not parse the form: {e}") from e


def _too_large(max_bytes: int) -> ServiceError:
    return ServiceError(413, "upload_too_large", f"the request body exceeds the limit of {max_bytes} bytes")


_CASTS = {"f0_up_key": float, "index_rate": float, "rms_mix_rate": float, "protect": float,
          "filter_radius": int, "resample_sr": int, "speaker_id": int, "seed": int, "f0_method": str}


def parse_options(form: FormData) -> ConversionOptions:
    """ConversionOptions from form fields: 422 for a malformed value, 400 for one out of range."""
    values: dict[str, Any] = {}
    for name, cast in _CASTS.items():
        raw = form.get(name)
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            continue
        if isinstance(raw, UploadFile):
            raise ServiceError(422, "invalid_request", f"{name} must be a form field, not a file")
        try:
            values[name] = cast(raw.strip())
        except ValueError:
            raise ServiceError(422, "invalid_request", f"{name}={raw!r} is not a valid {cast.__name__}") from None
    try:
        return ConversionOptions(**values)
    except OptionError as e:
        raise ServiceError(400, "invalid_option", str(e)) from e


def require_text(form: FormData, name: str) -> str:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile) or not value.strip():
        raise ServiceError(422, "invalid_request", f"form field {name!r} is required")
    return value.strip()


async def speak(text: str, *, voice: str = "en", timeout_s: float = 30.0) -> bytes:
    """WAV bytes of `text` spoken by espeak-ng (offline). The text goes through stdin: no shell,
    and text that starts with '-' cannot be taken for an option."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ServiceError(501, "tts_unavailable", "espeak-ng is not installed on the server (apt-get install espeak-ng)")
    proc = await asyncio.create_subprocess_exec(
        exe, "--stdout", "-v", voice,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(text.encode()), timeout_s)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise ServiceError(504, "timeout", "text-to-speech took too long") from None
    if proc.returncode != 0 or not out:
        raise ServiceError(500, "tts_failed", f"espeak-ng failed: {err.decode(errors='replace')[:200]}")
    return out

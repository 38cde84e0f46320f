"""HTTP helpers of the ingress: the error type and status mapping, a size-limited
multipart reader, option parsing, and offline text-to-speech with espeak-ng."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Iterable, Mapping

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from rvc_pipeline import (
    AssetNotFoundError,
    AudioError,
    AudioTooLongError,
    CheckpointError,
    ConversionOptions,
    OptionError,
    OptionParseError,
    RetrievalIndexError,
    RVCError,
    VoiceNotFoundError,
)
from rvc_pipeline.errors import VoiceChangedError
from rvc_pipeline.pitch.controls import MAX_F0_CURVE_CHARS
from rvc_pipeline.tts import TTSError, TTSTimeoutError, espeak_wav


#: Longest error detail answered; longer ones (e.g. echoing a 500 KB field) keep their start and end.
MAX_DETAIL_CHARS = 1000


class ServiceError(Exception):
    """An error answered as JSON {"error": code, "detail": text} with `status`."""

    def __init__(self, status: int, error: str, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        detail = _shorten(detail)
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers = dict(headers or {})  # e.g. Retry-After, WWW-Authenticate


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
        # The voice cannot run here (broken or unsafe file, index of the wrong width, a vocoder or
        # content encoder it needs is missing): the detail names the fix; /voices lists it too.
        return ServiceError(409, "voice_unusable", str(exc))
    if isinstance(exc, VoiceChangedError):
        return ServiceError(503, "voice_changed", str(exc))
    if isinstance(exc, RVCError):
        return ServiceError(500, type(exc).__name__, str(exc))
    return None


#: An absolute path left in a message after the known folders were labelled: "/" where a word
#: starts (not inside "a/b", "<models>/x" or a URL), then the path's characters.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~<>:/-])/[^\s'\"()\[\],;]+")


def hide_paths(text: str, paths: Mapping[str, str]) -> str:
    """`text` with each server folder replaced by its label (models dir -> "<models>"), longest
    first, then any other absolute path replaced by "<server path>"."""
    for path in sorted(paths, key=len, reverse=True):
        if path:
            text = text.replace(path.rstrip("/"), paths[path])
    return _ABSOLUTE_PATH.sub("<server path>", text)


def hide_server_paths(error: ServiceError, paths: Mapping[str, str]) -> ServiceError:
    """`error` with server folders in its detail replaced by labels (see `hide_paths`)."""
    error.detail = hide_paths(error.detail, paths)
    error.args = (error.detail,)
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


def reject_repeated_fields(form: FormData) -> None:
    """422 when any form field (file or text) appears more than once: which one to use would be a guess."""
    seen: set[str] = set()
    for name, _ in form.multi_items():
        if name in seen:
            raise ServiceError(422, "invalid_request", f"form field {name[:100]!r} is given more than once; send it once")
        seen.add(name)


def parse_options(form: FormData, request_fields: Iterable[str]) -> ConversionOptions:
    """ConversionOptions from the form's option fields (the one schema, `ConversionOptions.from_mapping`).

    `request_fields` are the route's own fields (audio, voice_name, ...); any other field
    must be an option. 422 for a repeated, unknown or malformed field, 400 for a value out
    of range.
    """
    reject_repeated_fields(form)
    values: dict[str, Any] = {}
    own = set(request_fields)
    for name, raw in form.multi_items():
        if name in own:
            continue
        if isinstance(raw, UploadFile):
            if name not in FILE_OPTIONS:
                raise ServiceError(422, "invalid_request", f"{name[:100]} must be a form field, not a file")
            raw = _read_text_upload(raw, name)
        values[name] = raw
    try:
        return ConversionOptions.from_mapping(values)
    except OptionParseError as e:
        raise ServiceError(422, "invalid_request", str(e)) from e
    except OptionError as e:
        raise ServiceError(400, "invalid_option", str(e)) from e


#: Options that may also come as an uploaded file (its text is the value).
FILE_OPTIONS = frozenset({"f0_curve"})


def _read_text_upload(upload: UploadFile, name: str) -> str:
    """The UTF-8 text of a small uploaded file (already spooled by the form parser); 413 past the
    option's size limit, 422 for text that is not UTF-8."""
    data = upload.file.read(MAX_F0_CURVE_CHARS + 1)
    upload.file.seek(0)
    if len(data) > MAX_F0_CURVE_CHARS:
        raise ServiceError(413, "upload_too_large", f"{name} is larger than {MAX_F0_CURVE_CHARS} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ServiceError(422, "invalid_request", f"{name} must be UTF-8 text (CSV rows time_s,f0_hz)") from None


def require_text(form: FormData, name: str) -> str:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile) or not value.strip():
        raise ServiceError(422, "invalid_request", f"form field {name!r} is required")
    return value.strip()


async def speak(text: str, *, voice: str = "en", timeout_s: float = 30.0) -> bytes:
    """WAV bytes of `text` spoken by espeak-ng (offline), run in a thread by `rvc_pipeline.tts.espeak_wav`
    (text through stdin: no shell, and text that starts with '-' cannot be taken for an option)."""
    try:
        return await asyncio.to_thread(espeak_wav, text, voice=voice, timeout_s=timeout_s)
    except AssetNotFoundError:
        raise ServiceError(501, "tts_unavailable", "espeak-ng is not installed on the server (apt-get install espeak-ng)") from None
    except TTSTimeoutError:
        raise ServiceError(504, "timeout", "text-to-speech took too long") from None
    except TTSError as e:
        raise ServiceError(500, "tts_failed", str(e)) from None


def stage_times_header(timings: dict[str, float]) -> str:
    """The X-Stage-Times header: seconds per stage, "decode=0.010;pitch=3.200;..."."""
    return ";".join(f"{k}={v:.3f}" for k, v in timings.items())


def parse_stage_times(header: str) -> dict[str, float]:
    """X-Stage-Times "decode=0.010;pitch=3.2" -> {"decode": 0.01, "pitch": 3.2} (malformed parts skipped)."""
    stages = {}
    for part in filter(None, header.split(";")):
        name, _, value = part.partition("=")
        try:
            stages[name.strip()] = float(value)
        except ValueError:
            pass
    return stages

"""`WS /stream`: one realtime conversion session per WebSocket, held by the ingress replica.

Protocol (JSON text messages and binary audio blocks; docs/streaming.md has examples):
1. The client's first message is JSON settings: `voice`, the stream's `sample_rate`,
   `sample_format` (pcm_s16le | f32le), `block_ms`, `extra_ms` (left context),
   `crossfade_ms`, `silence_db`, optionally `stats_every` (blocks) and `api_key` (browsers
   cannot send headers), and any conversion option (`f0_up_key`, `f0_method`, ...).
2. The server answers {"type": "ready", "settings": {...effective...}, "latency_ms": ...}.
3. Each binary block in gets one converted block out, same size, rate and format, in order.
4. {"type": "update", ...} changes the voice or options mid-session (answer "updated");
   {"type": "stats"} asks for counters (answer "stats", also sent every `stats_every` blocks).
5. Errors are {"type": "error", "error": code, "detail": ...} with the HTTP API's codes. A
   bad block or message leaves the session running; a session that cannot go on is then
   closed with 1008 (policy: auth, voice, settings, idle), 1009 (message too big),
   1013 (overloaded, try again later) or 1011 (internal error).

The session's state (`rvc_pipeline.stream.StreamConverter`) stays in this replica; each block
runs through the same ContentFeatures, PitchExtractor and VoiceSynthesizer deployments as
/convert (the voice and its encoder multiplexed), so sessions never share state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from rvc_pipeline.errors import AudioError, CheckpointError, OptionError, OptionParseError
from rvc_pipeline.stream import StreamConverter, StreamSettings, StreamWindow

from .http_utils import ServiceError, hide_server_paths, to_service_error

logger = logging.getLogger("ray.serve")

#: WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_OVERLOAD = 1000, 1008, 1009, 1011, 1013
#: Settings of the stream itself in the start message; every other key is a conversion option.
STREAM_FIELDS = ("sample_rate", "sample_format", "block_ms", "extra_ms", "crossfade_ms", "silence_db")
#: Keys of the start and update messages that are neither stream settings nor options.
SESSION_FIELDS = ("type", "voice", "voice_name", "stats_every", "api_key")
#: Blocks waiting beyond this many are dropped: each still gets one block of silence back,
#: so the client's timeline holds, and the `dropped` counter says how many.
MAX_QUEUED_BLOCKS = 4


def close_code(status: int) -> int:
    """The WebSocket close code for an HTTP-style status."""
    if status in (429, 503):
        return CLOSE_OVERLOAD
    if status == 413:
        return CLOSE_TOO_BIG
    return CLOSE_INTERNAL if status >= 500 else CLOSE_POLICY


@dataclass
class StartRequest:
    """The parsed first message."""

    voice: str
    settings: StreamSettings
    stats_every: int
    api_key: str | None


def _as_json_object(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError:
        raise ServiceError(422, "invalid_request", "text messages must be JSON objects") from None
    if not isinstance(message, dict):
        raise ServiceError(422, "invalid_request", "text messages must be JSON objects")
    return message


def _split(message: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(stream settings, conversion options) of a start or update message."""
    settings = {k: message[k] for k in STREAM_FIELDS if k in message}
    options = {k: v for k, v in message.items() if k not in STREAM_FIELDS and k not in SESSION_FIELDS}
    return settings, options


def _settings_error(e: Exception) -> ServiceError:
    status = 422 if isinstance(e, OptionParseError) else 400
    return ServiceError(status, "invalid_option" if status == 400 else "invalid_request", str(e))


def parse_start(text: str) -> StartRequest:
    """The first message -> StartRequest; ServiceError (422/400) naming what is wrong."""
    message = _as_json_object(text)
    if message.get("type", "start") != "start":
        raise ServiceError(422, "invalid_request", 'the first message must be the settings ({"type": "start", ...})')
    voice = message.get("voice", message.get("voice_name"))
    if not isinstance(voice, str) or not voice.strip():
        raise ServiceError(422, "invalid_request", "the settings need 'voice', a voice listed by GET /voices")
    stats_every = message.get("stats_every", 0)
    if isinstance(stats_every, bool) or not isinstance(stats_every, int) or stats_every < 0:
        raise ServiceError(422, "invalid_request", "stats_every must be a whole number of blocks (0 = on request only)")
    api_key = message.get("api_key")
    if api_key is not None and not isinstance(api_key, str):
        raise ServiceError(422, "invalid_request", "api_key must be a string")
    stream, options = _split(message)
    try:
        settings = StreamSettings(**stream, options=options)
    except (OptionError, TypeError) as e:
        raise _settings_error(e) from None
    return StartRequest(voice.strip(), settings, stats_every, api_key)


class StreamSession:
    """One WebSocket's session: settings, the voice's handles, the converter and counters."""

    def __init__(self, ingress: Any, websocket: WebSocket) -> None:
        self.ingress, self.ws = ingress, websocket
        self.limits = ingress.limits
        self.key: Any = None
        self.converter: StreamConverter | None = None
        self.voice: dict[str, Any] = {}
        self.stats_every = 0
        self.dropped = 0
        self.queue: asyncio.Queue = asyncio.Queue()

    # ---------------------------------------------------------------- life cycle

    async def run(self) -> int:
        """Serve the session until the client leaves or it must end; returns an HTTP-style status for metrics."""
        receiver: asyncio.Task | None = None
        try:
            await self._start()
            receiver = asyncio.create_task(self._receive_loop())
            while True:
                item = await self.queue.get()
                if item is None:
                    return 200
                if isinstance(item, ServiceError):
                    raise item
                await self._handle(*item)
        except WebSocketDisconnect:
            return 200
        except Exception as e:  # the session cannot go on: say why, then close with the matching code
            error = self._service_error(e)
            await self._send_error(error)
            await self._close(close_code(error.status), error.error)
            return error.status
        finally:
            if receiver is not None:
                receiver.cancel()

    async def _start(self) -> None:
        text = await self._receive_first()
        request = parse_start(text)
        ingress = self.ingress
        self.key = ingress.access.identify(self.ws)
        if self.key is None and request.api_key and ingress.access.enabled:
            self.key = ingress.access.store.authenticate(request.api_key)
        if ingress.access.enabled and self.key is None:
            raise ServiceError(401, "unauthorized", "send a valid API key: Authorization: Bearer <key>, "
                                                    "or api_key in the settings message")
        self.voice = await self._open_voice(request.voice)
        try:
            self.converter = StreamConverter(request.settings, self.voice["sample_rate"])
        except OptionError as e:
            raise _settings_error(e) from None
        self.stats_every = request.stats_every
        await self._send_json({"type": "ready", "voice": self.voice["name"], "settings": self._effective(),
                               "latency_ms": request.settings.latency_ms})

    async def _open_voice(self, name: str) -> dict[str, Any]:
        """Authorize, find and load a voice (and its content encoder): what each block needs."""
        ingress = self.ingress
        ref = ingress._find_voice(self.key, name)
        synth = ingress._voice_handle(ref)
        content, encoder_id = await ingress._encoder_handle(ref)
        describe, encoder_info = synth.describe.remote(), content.describe.remote()  # both load at once
        info = await describe
        await ingress._accept_encoder(ref.name, info["version"], encoder_id, encoder_info)
        return {"name": ref.name, "synth": synth, "content": content, "version": info["version"],
                "f0": info["f0"], "sample_rate": info["sample_rate"]}

    # ---------------------------------------------------------------- messages

    async def _receive_first(self) -> str:
        message = await self._receive()
        if message is None:
            raise WebSocketDisconnect(CLOSE_NORMAL)
        if not isinstance(message, str):
            raise ServiceError(422, "invalid_request", "the first message must be the JSON settings, not audio")
        return message

    async def _receive(self) -> str | bytes | None:
        """The next message (None when the client left); ServiceError when idle too long or too big."""
        try:
            message = await asyncio.wait_for(self.ws.receive(), self.limits.stream_idle_timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError(408, "idle_timeout", f"nothing received for {self.limits.stream_idle_timeout_s:g} s; "
                                                    "the session is closed") from None
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("bytes")
        if data is None:
            data = message.get("text")
        if data is None:
            return None
        if len(data) > self.limits.max_stream_message_bytes:
            raise ServiceError(413, "message_too_large",
                               f"a message is {len(data)} bytes; the limit is {self.limits.max_stream_message_bytes}")
        return data

    async def _receive_loop(self) -> None:
        """Read messages into the queue; mark blocks beyond MAX_QUEUED_BLOCKS as dropped."""
        try:
            while True:
                message = await self._receive()
                if message is None:
                    break
                drop = isinstance(message, bytes) and self.queue.qsize() >= MAX_QUEUED_BLOCKS
                await self.queue.put((message, drop))
        except ServiceError as e:
            await self.queue.put(e)
            return
        except Exception:  # the socket went away
            pass
        await self.queue.put(None)

    async def _handle(self, message: str | bytes, drop: bool) -> None:
        """One message; a bad block or message is answered with an error and the session goes on."""
        try:
            if isinstance(message, bytes):
                await self._block(message, drop)
            else:
                await self._control(_as_json_object(message))
        except (AudioError, OptionError, ServiceError, CheckpointError) as e:
            error = self._service_error(e)
            if error.status in (401, 429) or error.status >= 500:
                raise
            await self._send_error(error)

    async def _block(self, data: bytes, drop: bool) -> None:
        converter = self.converter
        assert converter is not None
        started = time.perf_counter()
        try:
            window = converter.push(data)
        except AudioError as e:  # wrong size or format: nothing changed, the session goes on
            raise ServiceError(422, "invalid_block", str(e)) from None
        if window is None or drop:
            self.dropped += int(drop and window is not None)
            out = converter.finish(window, None)
        else:
            await self.ingress.access.admit(self.key, converter.settings.block_ms / 1000)
            try:
                converted = await asyncio.wait_for(self._convert(window), self.limits.request_timeout_s)
            except BaseException:
                converter.finish(window, None)
                raise
            out = converter.finish(window, converted)
        await self.ws.send_bytes(converter.encode(out))
        self.ingress.metrics.record("stream_block", 200, time.perf_counter() - started)
        if self.stats_every and converter.stats()["blocks_out"] % self.stats_every == 0:
            await self._send_stats()

    async def _convert(self, window: StreamWindow) -> Any:
        """Content features and F0 of the window in parallel, then synthesis of its kept frames."""
        voice = self.voice
        features = voice["content"].extract.remote(window.audio16k, voice["version"])
        pitch = self.ingress.pitch.estimate.remote(window.audio16k, window.options, 0) if voice["f0"] else None
        return await voice["synth"].synthesize_window.remote(features, pitch, window)

    async def _control(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        converter = self.converter
        assert converter is not None
        if kind == "stats":
            await self._send_stats()
        elif kind == "update":
            stream, options = _split(message)
            voice = self.voice
            name = message.get("voice", message.get("voice_name"))
            if isinstance(name, str) and name.strip() and name.strip() != voice["name"]:
                voice = await self._open_voice(name.strip())
            try:
                converter.update(**stream, **options)  # validated first: a bad value changes nothing
            except (OptionError, TypeError) as e:
                raise _settings_error(e) from None
            if voice is not self.voice:
                self.voice = voice
                converter.set_voice_sample_rate(voice["sample_rate"])
            await self._send_json({"type": "updated", "voice": self.voice["name"], "settings": self._effective()})
        else:
            raise ServiceError(422, "invalid_request", 'a text message must be {"type": "update", ...} or {"type": "stats"}')

    # ---------------------------------------------------------------- replies

    def _effective(self) -> dict[str, Any]:
        assert self.converter is not None
        return self.converter.settings.effective()

    async def _send_stats(self) -> None:
        assert self.converter is not None
        await self._send_json({"type": "stats", "voice": self.voice.get("name"), **self.converter.stats(),
                               "dropped": self.dropped, "queue_depth": self.queue.qsize()})

    def _service_error(self, e: BaseException) -> ServiceError:
        error = e if isinstance(e, ServiceError) else to_service_error(e)
        if error is None:
            logger.error("stream session failed", exc_info=e)
            return ServiceError(500, "internal_error", "an unexpected error occurred; the server log has it")
        return hide_server_paths(error, self.ingress._server_paths)

    async def _send_json(self, body: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(body))

    async def _send_error(self, error: ServiceError) -> None:
        try:
            await self._send_json({"type": "error", "error": error.error, "detail": error.detail})
        except Exception:  # the client is gone
            pass

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.client_state != WebSocketState.DISCONNECTED:
            try:
                await self.ws.close(code, reason[:120])
            except Exception:
                pass


async def serve_stream(ingress: Any, websocket: WebSocket) -> None:
    """Accept one /stream WebSocket and run its session; 1013 when the replica holds its maximum."""
    await websocket.accept()
    started = time.perf_counter()
    if ingress.stream_sessions >= ingress.limits.max_stream_sessions:
        session = StreamSession(ingress, websocket)
        error = ServiceError(503, "overloaded", f"{ingress.stream_sessions} streams are open on this replica; "
                                                "retry later")
        await session._send_error(error)
        await session._close(CLOSE_OVERLOAD, "overloaded")
        ingress.metrics.record("stream", 503, 0.0)
        return
    ingress.stream_sessions += 1
    session, status = StreamSession(ingress, websocket), 500
    try:
        status = await session.run()
        if status == 200:
            await session._close(CLOSE_NORMAL, "done")
    finally:
        ingress.stream_sessions -= 1
        ingress.metrics.record("stream", status, time.perf_counter() - started)

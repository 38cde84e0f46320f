"""The HTTP front door: FastAPI routes, validation, decoding, the fan-out over the model
deployments, and the WAV response. Never blocks its event loop (blocking work runs in
threads; model work runs in other replicas).

No `from __future__ import annotations` here: FastAPI must see real types on the routes.
"""


import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from rvc_pipeline import OPTION_SPECS, describe_checkpoint, finish, prepare
from rvc_pipeline.audio import decode_audio
from rvc_pipeline.constants import CONTENT_DIMS, SAMPLE_RATE
from rvc_pipeline.demo import DEMO_LABEL
from rvc_pipeline.errors import CheckpointError
from rvc_pipeline.output_format import OUTPUT_FORMATS, encode_audio
from rvc_pipeline.pipeline import chunk_seed, shape_input
from rvc_pipeline.pitch.controls import f0_curve_csv
from rvc_pipeline.retrieval import check_index_header

from .access import AccessControl, CORSGate
from .api_docs import install_offline_docs
from .assets import catalog_for
from .deployments import voice_model_id
from .config import AppArgs
from .http_utils import (
    ServiceError,
    hide_paths,
    hide_server_paths,
    parse_options,
    read_form_limited,
    reject_repeated_fields,
    require_text,
    speak,
    stage_times_header,
    to_service_error,
)
from .metrics import ServiceMetrics
from .registry import get_encoder_registry, get_registry
from .memory_trace import maybe_trace_python_memory
from .streaming import serve_stream
from .ui import ui_response
from .heap import limit_heap_arenas, release_free_heap, running_allocator

logger = logging.getLogger("ray.serve")

def _form_schema(first: dict[str, Any], required: list[str]) -> dict[str, Any]:
    props = {**first, **{spec.name: spec.json_schema() for spec in OPTION_SPECS}}
    schema = {"type": "object", "properties": props, "required": required}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


CONVERT_DOC = _form_schema(
    {"audio": {"type": "string", "format": "binary", "description": "WAV, MP3, OGG or FLAC"},
     "voice_name": {"type": "string", "description": "a voice listed by GET /voices"}},
    ["audio", "voice_name"],
)
TTS_DOC = _form_schema(
    {"text": {"type": "string", "description": "text to speak (espeak-ng, English)"},
     "voice_name": {"type": "string", "description": "a voice listed by GET /voices"}},
    ["text", "voice_name"],
)
PITCH_DOC = _form_schema(
    {"audio": {"type": "string", "format": "binary", "description": "WAV, MP3, OGG or FLAC"},
     "voice_name": {"type": "string", "description": "the voice whose conversion's pitch to return (its device "
                                                     "decides the padding, so the curve is exactly the one used)"},
     "format": {"type": "string", "enum": ["json", "csv"], "default": "json",
                "description": "json: {times_s, f0_hz, ...}; csv: rows time_s,f0_hz (send it back as f0_curve)"}},
    ["audio", "voice_name"],
)
# The file form of f0_curve (a CSV upload) is described by the same schema entry as its text form.
AUDIO_RESPONSE = {200: {"content": {fmt.media_type: {} for fmt in OUTPUT_FORMATS.values()},
                        "description": "the converted audio in `output_format` (default 16-bit PCM WAV); "
                                       "X-Auto-Key gives the key auto_key chose"}}
PITCH_RESPONSE = {200: {"content": {"application/json": {}, "text/csv": {}},
                        "description": "F0 at 100 frames/s over the input, as the conversion would use it"}}

app = FastAPI(
    title="RVC voice conversion",
    description="Retrieval-based Voice Conversion on Ray Serve. Errors are JSON {error, detail}.",
    version="0.1.0",
    docs_url=None,
    redoc_url=None,
)
install_offline_docs(app)
app.add_middleware(CORSGate)  # sends nothing until the replica configures allowed origins (none by default)


@app.middleware("http")
async def request_id_middleware(request: Request, call_next):
    """Tag the request with its id for the logs. Serve's proxy already echoes the client's
    X-Request-ID (or a generated one) in the response, so this only adds it when missing."""
    request_id = request.headers.get("x-request-id") or _serve_request_id() or uuid.uuid4().hex
    request.state.request_id = request_id
    response = await call_next(request)
    if "x-request-id" not in response.headers and not _serve_request_id():
        response.headers["X-Request-ID"] = request_id
    return response


def _serve_request_id() -> str:
    try:
        return serve.context._get_serve_request_context().request_id or ""
    except Exception:  # private API: fall back to our own id
        return ""


@app.exception_handler(ServiceError)
async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=exc.headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"error": "invalid_request", "detail": exc.errors()}, status_code=422)


@app.exception_handler(Exception)
async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Any other failure (outside the conversion routes' own mapping): JSON, with no internals."""
    request_id = getattr(request.state, "request_id", "-")
    logger.error("request_id=%s path=%s unexpected error", request_id, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal_error",
                         "detail": f"an unexpected error occurred; the server log has it under request id {request_id}"},
                        status_code=500)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": "http_error", "detail": exc.detail}, status_code=exc.status_code)


# Helpers sit above the deployment class: Serve pickles the class when it is decorated.
async def _timed(timings: dict[str, float], stage: str, fn, *args, **kwargs):
    started = time.perf_counter()
    result = await asyncio.to_thread(fn, *args, **kwargs)
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started
    return result


def _encoder_fix(voice_name: str, version: str, problem: str, assets: str, encoder: str = "contentvec") -> str:
    """The message for a voice its content encoder cannot serve, with the fix."""
    if problem.startswith("no content encoder"):
        return f"voice {voice_name!r} cannot run: {problem}."
    fix = (f"Put the full hubert_base.pt (ContentVec) in {assets}, or set RVC_CONTENT_ENCODER" if encoder == "contentvec"
           else f"Put the full {encoder!r} encoder ({encoder}.pt or {encoder}/) in {assets}")
    return (f"voice {voice_name!r} is an RVC {version} voice, which its content encoder {encoder!r} cannot serve: "
            f"{problem}. {fix}.")


@serve.deployment
@serve.ingress(app)
class Ingress:
    """Validates and decodes requests, then runs pitch, features and synthesis in parallel.

    Never touches a GPU: chunking is decided by the synthesis replica that knows its device.
    """

    def __init__(self, content: DeploymentHandle, pitch: DeploymentHandle, synth: DeploymentHandle,
                 args: AppArgs, device: str) -> None:
        import torch

        from rvc_pipeline.warmup import warm_up_edges

        limit_heap_arenas()  # resident memory levels off early (see serve_app/heap.py)
        maybe_trace_python_memory("Ingress")
        torch.set_num_threads(args.torch_threads)
        self.content, self.pitch, self.synth = content, pitch, synth
        self.args, self.limits, self.device = args, args.limits, device
        self.catalog = catalog_for(args)
        for notice in self.catalog.notices():  # said once, by the ingress only, in the service's log format
            logger.warning(notice)
        # Error details and /health name files by labels ("<models>/bob.pth"), never by server path.
        self._server_paths = self.catalog.path_labels()
        self.in_flight = 0
        self.stream_sessions = 0
        self._describe_cache: dict[tuple, dict[str, Any]] = {}
        self._encoder_info: dict[str, Any] | None = None
        self._encoder_infos: dict[str, dict[str, Any]] = {}  # encoder model id -> what its replica described
        self.metrics = ServiceMetrics()
        self.app_name = serve.get_replica_context().replica_id.deployment_id.app_name
        self.access = AccessControl(args, self.app_name)
        CORSGate.configure(args.cors_origins)
        started = time.perf_counter()
        warm_up_edges()
        logger.info("ingress warmed up in %.2fs", time.perf_counter() - started)

    # ---------------------------------------------------------------- routes

    @app.get("/health")
    async def health(self, request: Request) -> dict[str, Any]:
        """Status, voices loaded on each synthesis replica (with the files they came from), encoder, pitch methods.

        With API keys on, a request without a valid key gets only {"status": "ok" | "degraded"} (for probes)."""
        content, methods, replicas, encoder_replicas = await asyncio.gather(
            asyncio.wait_for(self.content.info.remote(), 10),
            asyncio.wait_for(self.pitch.methods.remote(), 10),
            asyncio.wait_for(get_registry(self.app_name).snapshot.remote(), 10),
            asyncio.wait_for(get_encoder_registry(self.app_name).snapshot.remote(), 10),
            return_exceptions=True,
        )
        failed = {name: r for name, r in (("content", content), ("pitch", methods), ("registry", replicas),
                                          ("encoder_registry", encoder_replicas)) if isinstance(r, BaseException)}
        synthesis = [] if "registry" in failed else sorted(replicas.values(), key=lambda r: r["replica"])
        features = [] if "encoder_registry" in failed else sorted(encoder_replicas.values(), key=lambda r: r["replica"])
        await asyncio.to_thread(self._mark_current, synthesis)
        body = {
            "status": "degraded" if failed else "ok",
            "device": self.device,
            "precision": self.args.precision,
            "models_dir": self.catalog.label(self.catalog.root),
            "content_encoder": None if "content" in failed else content,  # the default (contentvec) one
            # every encoder loaded on any ContentFeatures replica, and each replica's (names, files, shapes)
            "loaded_encoders": sorted({name for r in features for name in r.get("loaded_encoders", [])}),
            "content_replicas": features,
            "encoders_per_replica": self.args.encoders_per_replica,
            "pitch_methods": None if "pitch" in failed else methods,
            "synthesis_replicas": synthesis,
            "voices_per_replica": self.args.voices_per_replica,
            "in_flight": self.in_flight,
            "allocator": running_allocator(),  # the ingress's C heap; each replica reports its own
        }
        if content is not None and not isinstance(content, BaseException) and content.get("missing"):
            body["status"] = "degraded"
            body.setdefault("problems", []).append(content["missing"])
        if self.catalog.encoder_is_demo or self.catalog.voices_are_demo:
            body["demo"] = " ".join(self.catalog.notices())
        if failed:
            body.setdefault("problems", []).extend(f"{name}: {type(e).__name__}" for name, e in failed.items())
        if self.access.enabled and self.access.identify(request) is None:
            return {"status": body["status"]}
        return body

    @app.get("/voices")
    async def voices(self, request: Request) -> dict[str, Any]:
        """Every voice in the models folder (those the API key may use): version, rate, pitch guidance,
        speakers, index, size, and whether it can run here (`runnable`, with the `problem` and its fix when not)."""
        key = self.access.authenticate(request)  # 401 (JSON, via the ServiceError handler)
        encoder = await self._encoder()
        rows = await asyncio.to_thread(self._describe_all, encoder)
        return {"voices": [row for row in rows if self.access.may_use(key, row["name"])]}

    @app.post("/convert", openapi_extra=CONVERT_DOC, response_class=Response, responses=AUDIO_RESPONSE)
    async def convert(self, request: Request) -> Response:
        """Convert an uploaded recording into a voice; returns audio in `output_format` (WAV by default)."""
        async with self._request("convert", request) as (timings, key):
            _, upload, voice_name, options = await self._audio_form(request, ("audio", "voice_name"))
            ref = self._find_voice(key, voice_name)
            data = await upload.read()
            return await self._run(data, ref, options, timings, key)

    @app.post("/tts", openapi_extra=TTS_DOC, response_class=Response, responses=AUDIO_RESPONSE)
    async def tts(self, request: Request) -> Response:
        """Speak `text` with espeak-ng (offline), then convert it into the voice."""
        async with self._request("tts", request) as (timings, key):
            form = await read_form_limited(request, self.limits.max_upload_bytes)
            reject_repeated_fields(form)
            text, voice_name = require_text(form, "text"), require_text(form, "voice_name")
            if len(text) > self.limits.max_tts_chars:
                raise ServiceError(413, "text_too_long", f"text has {len(text)} characters; the limit is {self.limits.max_tts_chars}")
            options = parse_options(form, ("text", "voice_name"))
            ref = self._find_voice(key, voice_name)
            started = time.perf_counter()
            data = await speak(text, timeout_s=self.limits.request_timeout_s)
            timings["tts"] = time.perf_counter() - started
            return await self._run(data, ref, options, timings, key)

    @app.post("/pitch", openapi_extra=PITCH_DOC, response_class=Response, responses=PITCH_RESPONSE)
    async def pitch_curve(self, request: Request) -> Response:
        """The F0 curve (100 frames/s, input time 0 = the first frame) that converting this audio into
        this voice with these options would use: after the key, auto_key, autotune and f0_curve.
        Edit it and send it back as `f0_curve`."""
        async with self._request("pitch", request) as (timings, key):
            form, upload, voice_name, options = await self._audio_form(request, ("audio", "voice_name", "format"))
            reply_format = (form.get("format") or "json").strip().lower()
            if reply_format not in ("json", "csv"):
                raise ServiceError(422, "invalid_request", f"format must be json or csv, got {reply_format[:20]!r}")
            ref = self._find_voice(key, voice_name)
            data = await upload.read()
            info = await self._voice_handle(ref).describe.remote()
            if not info["f0"]:
                raise ServiceError(422, "no_pitch_guidance",
                                   f"voice {ref.name!r} has no pitch guidance: its conversions use no F0 curve")
            audio16k = await _timed(timings, "decode", decode_audio, data, max_duration_s=self.limits.max_duration_s)
            await self.access.admit(key, audio16k.shape[0] / SAMPLE_RATE)
            audio16k = await _timed(timings, "formant", shape_input, audio16k, options)
            prepared = await _timed(timings, "prepare", prepare, audio16k, info["chunking"])
            track, timings["pitch"] = await self.pitch.estimate.remote(prepared.padded, options, prepared.input_start_frame)
            f0 = track.input_f0(prepared.input_start_frame)
            headers = {"X-Auto-Key": str(track.auto_key), "X-Stage-Times": stage_times_header(timings)}
            if reply_format == "csv":
                return Response(f0_curve_csv(f0), media_type="text/csv", headers=headers)
            body = {"voice": ref.name, "frame_rate": 100, "f0_method": options.f0_method,
                    "f0_up_key": options.f0_up_key, "auto_key": track.auto_key,
                    "times_s": [round(i / 100, 2) for i in range(f0.shape[0])], "f0_hz": [float(v) for v in f0]}
            return JSONResponse(body, headers=headers)

    @app.websocket("/stream")
    async def stream(self, websocket: WebSocket) -> None:
        """A realtime conversion session: JSON settings first, then audio blocks in and out
        (protocol in serve_app/streaming.py and docs/streaming.md)."""
        await serve_stream(self, websocket)

    @app.get("/ui", response_class=Response, include_in_schema=False)
    async def ui_page(self) -> Response:
        """The browser page: pick a voice, convert a file, or stream the microphone."""
        return ui_response("index.html")

    @app.get("/ui/{name}", response_class=Response, include_in_schema=False)
    async def ui_file(self, name: str) -> Response:
        return ui_response(name)

    # ---------------------------------------------------------------- internals

    @asynccontextmanager
    async def _request(self, route: str, request: Request) -> AsyncIterator[tuple[dict[str, float], Any]]:
        """API key (401, before the body is read), bounded in-flight slot (503), error mapping, metrics
        and a log line per request naming the key's id (never the key). Yields (stage timings, key)."""
        request_id = getattr(request.state, "request_id", "-")
        try:
            key = self.access.authenticate(request)
        except ServiceError:
            self.metrics.record(route, 401, 0.0)
            logger.info("request_id=%s route=%s status=401 key=-", request_id, route)
            raise
        if self.in_flight >= self.limits.max_in_flight:
            self.metrics.record(route, 503, 0.0)
            raise ServiceError(503, "overloaded", f"{self.in_flight} conversions in progress; retry later")
        self.in_flight += 1
        started, status = time.perf_counter(), 200
        timings: dict[str, float] = {}
        try:
            yield timings, key
        except Exception as e:
            mapped = to_service_error(e)
            if mapped is None:
                status = 500
                logger.exception("request_id=%s route=%s unexpected error", request_id, route)
                # The exception's text may hold paths or internals: it goes to the log, not the client.
                raise ServiceError(500, "internal_error",
                                   f"an unexpected error occurred; the server log has it under request id {request_id}") from e
            status = mapped.status
            raise hide_server_paths(mapped, self._server_paths) from e
        finally:
            self.in_flight -= 1
            elapsed = time.perf_counter() - started
            self.metrics.record(route, status, elapsed)
            logger.info(
                "request_id=%s route=%s status=%d key=%s seconds=%.3f stages=%s",
                request_id, route, status, key.id if key is not None else "-", elapsed, stage_times_header(timings) or "-",
            )

    async def _run(self, data: bytes, ref: Any, options: Any, timings: dict[str, float], key: Any) -> Response:
        started = time.perf_counter()
        try:
            encoded, extra = await asyncio.wait_for(self._convert(data, ref, options, timings, key),
                                                    self.limits.request_timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError(504, "timeout", f"the conversion took longer than {self.limits.request_timeout_s} s") from None
        finally:
            # The conversion's buffers were freed in worker threads, whose glibc arenas keep the pages:
            # hand them back, or resident memory creeps up request after request (docs/reliability.md).
            await asyncio.to_thread(release_free_heap)
        headers = {"X-Processing-Time": f"{time.perf_counter() - started:.3f}", "X-Stage-Times": stage_times_header(timings),
                   **extra}
        return Response(encoded, media_type=OUTPUT_FORMATS[options.output_format].media_type, headers=headers)

    async def _convert(self, data: bytes, ref: Any, options: Any, timings: dict[str, float],
                       key: Any) -> tuple[bytes, dict[str, str]]:
        """The encoded audio and the extra response headers (X-Auto-Key when auto_key is on)."""
        synth = self._voice_handle(ref)
        describe = synth.describe.remote()  # loads the voice while the audio decodes
        refs: list[Any] = [describe]
        synthesized: list[Any] = []
        try:
            content, encoder_id = await self._encoder_handle(ref)  # loaded alongside the voice
            encoder_info = content.describe.remote()
            refs.append(encoder_info)
            audio16k = await _timed(timings, "decode", decode_audio, data, max_duration_s=self.limits.max_duration_s)
            await self.access.admit(key, audio16k.shape[0] / SAMPLE_RATE)  # 429 over the key's limits
            if options.formant_shift != 1:
                audio16k = await _timed(timings, "formant", shape_input, audio16k, options)
            info = await describe
            await self._accept_encoder(ref.name, info["version"], encoder_id, encoder_info)
            chunking = info["chunking"]  # the synthesis replica's rule (its device and precision)
            prepared = await _timed(timings, "prepare", prepare, audio16k, chunking)
            pitch = (self.pitch.estimate.remote(prepared.padded, options, prepared.input_start_frame)
                     if info["f0"] else None)
            refs += [pitch] if pitch is not None else []
            for chunk in prepared.chunks:
                chunk_audio = prepared.chunk_audio(chunk)
                features = content.extract.remote(chunk_audio, info["version"])
                synthesized.append(synth.synthesize.remote(
                    features, pitch, chunk, chunk_audio.shape[0], options, chunking,
                    chunk_seed(options.seed, chunk.index),
                ))
                refs += [features, synthesized[-1]]
            results = await asyncio.gather(*synthesized)
        except BaseException:
            for r in refs:
                r.cancel()
            raise
        for _, stage_times in results:
            for stage, seconds in stage_times.items():
                if stage == "pitch":
                    timings["pitch"] = seconds
                else:
                    timings[stage] = timings.get(stage, 0.0) + seconds
        outputs = [audio for audio, _ in results]
        audio, sample_rate = await _timed(timings, "finish", finish, outputs, prepared, info["sample_rate"], options)
        extra = {}
        if pitch is not None and options.auto_key != "off":
            track, _ = await pitch
            extra["X-Auto-Key"] = str(track.auto_key)
        return await _timed(timings, "encode", encode_audio, audio, sample_rate, options.output_format), extra

    async def _encoder(self) -> dict[str, Any]:
        """The content encoder's info (fixed for the deployment's life), fetched once."""
        if self._encoder_info is None:
            self._encoder_info = await asyncio.wait_for(self.content.info.remote(), 30)
        return self._encoder_info

    async def _audio_form(self, request: Request, own_fields: tuple[str, ...]) -> tuple[Any, UploadFile, str, Any]:
        """(form, the `audio` upload, voice_name, ConversionOptions) of a route that takes a recording:
        413 over the size limit, 422 for a repeated field or a missing `audio` or `voice_name`, the
        options parsed from every field but `own_fields` (422/400 as `parse_options` says)."""
        form = await read_form_limited(request, self.limits.max_upload_bytes)
        reject_repeated_fields(form)
        upload = form.get("audio")
        if not isinstance(upload, UploadFile):
            raise ServiceError(422, "invalid_request", "form file 'audio' is required")
        return form, upload, require_text(form, "voice_name"), parse_options(form, own_fields)

    def _find_voice(self, key: Any, voice_name: str) -> Any:
        """The voice's VoiceRef: 403 when the key may not use the name, checked before the name is
        looked up (so no voice list leaks), then 404 for an unknown or unsafe name."""
        self.access.authorize(key, voice_name)
        return self.catalog.find_voice(voice_name)

    def _voice_handle(self, ref: Any) -> DeploymentHandle:
        """VoiceSynthesizer for the voice's files as they are now (its model id names them: a voice
        replaced on disk is a new model)."""
        return self.synth.options(multiplexed_model_id=voice_model_id(ref.name, ref.fingerprint))

    async def _encoder_handle(self, ref: Any) -> tuple[DeploymentHandle, str]:
        """ContentFeatures for the voice's own encoder (its checkpoint's embedder_model; a cached read)
        and that encoder's model id; 409 naming the file to add when it is missing."""
        encoder_ref = await asyncio.to_thread(self._voice_encoder, ref)
        if not encoder_ref.present:
            raise CheckpointError(encoder_ref.problem)
        encoder_id = voice_model_id(encoder_ref.name, encoder_ref.fingerprint)
        return self.content.options(multiplexed_model_id=encoder_id), encoder_id

    async def _accept_encoder(self, voice_name: str, version: str, encoder_id: str, encoder_info: Any) -> None:
        """Keep what the encoder's replica described (for /voices), then 409 naming the fix if it cannot
        make this voice's features."""
        self._encoder_infos[encoder_id] = await encoder_info
        self._check_encoder_info(voice_name, version, self._encoder_infos[encoder_id])

    def _check_encoder_info(self, voice_name: str, version: str, encoder: dict[str, Any]) -> None:
        """409 naming the fix when the voice's content encoder cannot make this voice's features."""
        problem = encoder.get("unsupported_versions", {}).get(version)
        if problem is not None:
            raise CheckpointError(_encoder_fix(voice_name, version, problem, self.catalog.assets_hint(),
                                               encoder.get("name", "contentvec")))

    def _cached_describe(self, ref: Any) -> dict[str, Any]:
        """`_describe(ref)`, read once per state of the voice's files."""
        key = (ref.pth_path, ref.index_path, ref.fingerprint)
        if key not in self._describe_cache:
            self._describe_cache[key] = self._describe(ref)
        return self._describe_cache[key]

    def _voice_encoder(self, ref: Any) -> Any:
        """The content encoder the voice uses (an EncoderRef: files found or `problem`); nothing is loaded."""
        return self.catalog.encoder_for_voice(ref.name, self._cached_describe(ref).get("metadata"))

    def _mark_current(self, replicas: list[dict[str, Any]]) -> None:
        """Flag each loaded voice whose files have since changed on disk (`current`: False)."""
        fingerprints: dict[str, str | None] = {}
        for replica in replicas:
            for voice in replica.get("voices", []):
                name = voice["name"]
                if name not in fingerprints:
                    try:
                        fingerprints[name] = self.catalog.find_voice(name).fingerprint
                    except Exception:
                        fingerprints[name] = None
                voice["current"] = fingerprints[name] == voice["fingerprint"]

    def _describe_all(self, encoder: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for ref in self.catalog.list_voices():
            info = self._cached_describe(ref)
            encoder_ref = self.catalog.encoder_for_voice(ref.name, info.get("metadata"))
            if encoder_ref.name == encoder.get("name", "contentvec") and encoder_ref.present:
                known = encoder  # the default encoder, described at start
            else:
                known = self._encoder_infos.get(voice_model_id(encoder_ref.name, encoder_ref.fingerprint), {})
            row = {
                "name": ref.name,
                "version": info.get("version"),
                "sample_rate": info.get("sample_rate"),
                "f0": info.get("f0"),
                "speakers": info.get("n_speakers"),
                "vocoder": info.get("vocoder"),
                "has_index": ref.index_path is not None,
                "size_bytes": ref.size_bytes,
                "demo": ref.demo,
                "encoder": encoder_ref.name,  # the content encoder it is converted with
                "encoder_present": encoder_ref.present,  # its files are there (not loaded to find out)
            }
            if ref.demo:
                row["label"] = f"{DEMO_LABEL}: random weights, output is noise"
            problem = info.get("error")
            if "error" in info:
                row["error"] = info["error"]
            elif not encoder_ref.present:
                problem = encoder_ref.problem
            elif info.get("version") in known.get("unsupported_versions", {}):
                problem = _encoder_fix(ref.name, info["version"], known["unsupported_versions"][info["version"]],
                                       self.catalog.assets_hint(), encoder_ref.name)
            row["runnable"] = problem is None
            if problem is not None:
                row["problem"] = hide_paths(problem, self._server_paths)
            rows.append(row)
        return rows

    def _describe(self, ref: Any) -> dict[str, Any]:
        """A voice's checkpoint metadata, with "error" when the checkpoint or its index's width is wrong.

        Reads the checkpoint's tensors' shapes and the index's 8-byte header: no model is built."""
        info: dict[str, Any] = {}
        try:
            described = describe_checkpoint(ref.pth_path)
            info.update(described)
            info["vocoder"] = described.get("vocoder") or described.get("metadata", {}).get("vocoder", "HiFi-GAN")
            if ref.index_path is not None and info.get("version") in CONTENT_DIMS:
                check_index_header(ref.index_path, CONTENT_DIMS[info["version"]], voice_name=ref.name)
        except Exception as e:
            info["error"] = hide_paths(str(e), self._server_paths)
        return info


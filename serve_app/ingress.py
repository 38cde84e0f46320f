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

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from rvc_pipeline import ChunkingConfig, describe_checkpoint, encode_wav, finish, prepare
from rvc_pipeline.audio import decode_audio
from rvc_pipeline.demo import DEMO_LABEL
from rvc_pipeline.pipeline import chunk_seed

from .assets import Catalog
from .config import AppArgs
from .http_utils import (
    ServiceError,
    hide_server_paths,
    parse_options,
    read_form_limited,
    require_text,
    speak,
    to_service_error,
)
from .metrics import ServiceMetrics
from .registry import get_registry

logger = logging.getLogger("ray.serve")

_OPTION_FIELDS = {
    "f0_up_key": ("number", "pitch shift in semitones (-48..48), default 0"),
    "f0_method": ("string", "pm, harvest (default), dio, crepe, crepe-tiny, rmvpe, fcpe"),
    "index_rate": ("number", "retrieval blend 0..1, default 0.75"),
    "filter_radius": ("integer", "median filter of harvest F0 0..7, default 3"),
    "rms_mix_rate": ("number", "loudness envelope mix 0..1, default 0.25"),
    "protect": ("number", "consonant protection 0..0.5, default 0.33"),
    "resample_sr": ("integer", "output rate in Hz (0: the voice's)"),
    "speaker_id": ("integer", "speaker of a multi-speaker voice, default 0"),
    "seed": ("integer", "noise seed: same seed, same output"),
}


def _form_schema(first: dict[str, Any], required: list[str]) -> dict[str, Any]:
    props = {**first, **{k: {"type": t, "description": d} for k, (t, d) in _OPTION_FIELDS.items()}}
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
WAV_RESPONSE = {200: {"content": {"audio/wav": {}}, "description": "16-bit PCM WAV"}}

app = FastAPI(
    title="RVC voice conversion",
    description="Retrieval-based Voice Conversion on Ray Serve. Errors are JSON {error, detail}.",
    version="0.1.0",
)


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
    return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"error": "invalid_request", "detail": exc.errors()}, status_code=422)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": "http_error", "detail": exc.detail}, status_code=exc.status_code)


# Helpers sit above the deployment class: Serve pickles the class when it is decorated.
async def _timed(timings: dict[str, float], stage: str, fn, *args, **kwargs):
    started = time.perf_counter()
    result = await asyncio.to_thread(fn, *args, **kwargs)
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started
    return result


def _stage_header(timings: dict[str, float]) -> str:
    return ";".join(f"{k}={v:.3f}" for k, v in timings.items())


@serve.deployment
@serve.ingress(app)
class Ingress:
    """Validates and decodes requests, then runs pitch, features and synthesis in parallel."""

    def __init__(self, content: DeploymentHandle, pitch: DeploymentHandle, synth: DeploymentHandle,
                 args: AppArgs, device: str) -> None:
        import torch

        from rvc_pipeline.device import resolve_dtype

        torch.set_num_threads(args.torch_threads)
        self.content, self.pitch, self.synth = content, pitch, synth
        self.args, self.limits, self.device = args, args.limits, device
        self.catalog = Catalog(args)
        self.catalog.log_demo_warnings("Ingress")
        # Error details name files relative to these labels, never by their server path.
        self._server_paths = {str(self.catalog.folder.root.resolve()): "<models>", str(self.catalog.folder.root): "<models>"}
        # The same chunking rule convert() applies for the synthesizer's device and precision.
        self.chunking = ChunkingConfig.for_device(torch.device(device), resolve_dtype(args.precision, torch.device(device)))
        self.in_flight = 0
        self._describe_cache: dict[tuple[str, int, int], dict[str, Any]] = {}
        self.metrics = ServiceMetrics()
        self.app_name = serve.get_replica_context().replica_id.deployment_id.app_name

    # ---------------------------------------------------------------- routes

    @app.get("/health")
    async def health(self) -> dict[str, Any]:
        """Status, voices loaded on each synthesis replica, content encoder, pitch methods, device."""
        content, methods, replicas = await asyncio.gather(
            asyncio.wait_for(self.content.info.remote(), 10),
            asyncio.wait_for(self.pitch.methods.remote(), 10),
            asyncio.wait_for(get_registry(self.app_name).snapshot.remote(), 10),
            return_exceptions=True,
        )
        problems = [repr(r) for r in (content, methods, replicas) if isinstance(r, BaseException)]
        body = {
            "status": "degraded" if problems else "ok",
            "device": self.device,
            "precision": self.args.precision,
            "content_encoder": None if isinstance(content, BaseException) else content,
            "pitch_methods": None if isinstance(methods, BaseException) else methods,
            "synthesis_replicas": [] if isinstance(replicas, BaseException) else sorted(replicas.values(), key=lambda r: r["replica"]),
            "voices_per_replica": self.args.voices_per_replica,
            "in_flight": self.in_flight,
        }
        if self.catalog.encoder_is_demo or self.catalog.voices_are_demo:
            body["demo"] = self.catalog.hint().format(what="assets")
        if problems:
            body["problems"] = problems
        return body

    @app.get("/voices")
    async def voices(self) -> dict[str, Any]:
        """Every voice in the models folder: version, sample rate, pitch guidance, speakers, index, size."""
        return {"voices": await asyncio.to_thread(self._describe_all)}

    @app.post("/convert", openapi_extra=CONVERT_DOC, response_class=Response, responses=WAV_RESPONSE)
    async def convert(self, request: Request) -> Response:
        """Convert an uploaded recording into a voice; returns audio/wav."""
        async with self._request("convert", request) as timings:
            form = await read_form_limited(request, self.limits.max_upload_bytes)
            upload = form.get("audio")
            if not isinstance(upload, UploadFile):
                raise ServiceError(422, "invalid_request", "form file 'audio' is required")
            voice_name, options = require_text(form, "voice_name"), parse_options(form)
            ref = self.catalog.find_voice(voice_name)
            data = await upload.read()
            return await self._run(data, ref.name, options, timings)

    @app.post("/tts", openapi_extra=TTS_DOC, response_class=Response, responses=WAV_RESPONSE)
    async def tts(self, request: Request) -> Response:
        """Speak `text` with espeak-ng (offline), then convert it into the voice."""
        async with self._request("tts", request) as timings:
            form = await read_form_limited(request, self.limits.max_upload_bytes)
            text, voice_name = require_text(form, "text"), require_text(form, "voice_name")
            if len(text) > self.limits.max_tts_chars:
                raise ServiceError(413, "text_too_long", f"text has {len(text)} characters; the limit is {self.limits.max_tts_chars}")
            options = parse_options(form)
            ref = self.catalog.find_voice(voice_name)
            started = time.perf_counter()
            data = await speak(text, timeout_s=self.limits.request_timeout_s)
            timings["tts"] = time.perf_counter() - started
            return await self._run(data, ref.name, options, timings)

    # ---------------------------------------------------------------- internals

    @asynccontextmanager
    async def _request(self, route: str, request: Request) -> AsyncIterator[dict[str, float]]:
        """Bounded in-flight slot (503), error mapping, metrics and a log line per request."""
        request_id = getattr(request.state, "request_id", "-")
        if self.in_flight >= self.limits.max_in_flight:
            self.metrics.record(route, 503, 0.0)
            raise ServiceError(503, "overloaded", f"{self.in_flight} conversions in progress; retry later")
        self.in_flight += 1
        started, status = time.perf_counter(), 200
        timings: dict[str, float] = {}
        try:
            yield timings
        except Exception as e:
            mapped = to_service_error(e)
            if mapped is None:
                status = 500
                logger.exception("request_id=%s route=%s unexpected error", request_id, route)
                raise ServiceError(500, "internal_error", f"{type(e).__name__}: {e}") from e
            status = mapped.status
            raise hide_server_paths(mapped, self._server_paths) from e
        finally:
            self.in_flight -= 1
            elapsed = time.perf_counter() - started
            self.metrics.record(route, status, elapsed)
            logger.info(
                "request_id=%s route=%s status=%d seconds=%.3f stages=%s",
                request_id, route, status, elapsed, _stage_header(timings) or "-",
            )

    async def _run(self, data: bytes, voice_name: str, options: Any, timings: dict[str, float]) -> Response:
        started = time.perf_counter()
        try:
            wav = await asyncio.wait_for(self._convert(data, voice_name, options, timings), self.limits.request_timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError(504, "timeout", f"the conversion took longer than {self.limits.request_timeout_s} s") from None
        headers = {"X-Processing-Time": f"{time.perf_counter() - started:.3f}", "X-Stage-Times": _stage_header(timings)}
        return Response(wav, media_type="audio/wav", headers=headers)

    async def _convert(self, data: bytes, voice_name: str, options: Any, timings: dict[str, float]) -> bytes:
        synth = self.synth.options(multiplexed_model_id=voice_name)
        describe = synth.describe.remote()  # loads the voice while the audio decodes
        refs: list[Any] = [describe]
        synthesized: list[Any] = []
        try:
            audio16k = await _timed(timings, "decode", decode_audio, data, max_duration_s=self.limits.max_duration_s)
            prepared = await _timed(timings, "prepare", prepare, audio16k, self.chunking)
            info = await describe
            pitch = self.pitch.estimate.remote(prepared.padded, options) if info["f0"] else None
            refs += [pitch] if pitch is not None else []
            for chunk in prepared.chunks:
                chunk_audio = prepared.chunk_audio(chunk)
                features = self.content.extract.remote(chunk_audio, info["version"])
                synthesized.append(synth.synthesize.remote(
                    features, pitch, chunk, chunk_audio.shape[0], options, self.chunking,
                    chunk_seed(options.seed, chunk.index),
                ))
                refs += [features, synthesized[-1]]
            results = await asyncio.gather(*synthesized)
        except BaseException:
            for ref in refs:
                ref.cancel()
            raise
        for _, stage_times in results:
            for stage, seconds in stage_times.items():
                if stage == "pitch":
                    timings["pitch"] = seconds
                else:
                    timings[stage] = timings.get(stage, 0.0) + seconds
        outputs = [audio for audio, _ in results]
        audio, sample_rate = await _timed(timings, "finish", finish, outputs, prepared, info["sample_rate"], options)
        return await _timed(timings, "encode", encode_wav, audio, sample_rate)

    def _describe_all(self) -> list[dict[str, Any]]:
        rows = []
        for ref in self.catalog.list_voices():
            stat = ref.pth_path.stat()
            key = (str(ref.pth_path), stat.st_mtime_ns, stat.st_size)
            if key not in self._describe_cache:
                try:
                    self._describe_cache[key] = dict(describe_checkpoint(ref.pth_path))
                except Exception as e:
                    self._describe_cache[key] = {"error": str(e)}
            info = self._describe_cache[key]
            row = {
                "name": ref.name,
                "version": info.get("version"),
                "sample_rate": info.get("sample_rate"),
                "f0": info.get("f0"),
                "speakers": info.get("n_speakers"),
                "has_index": ref.index_path is not None,
                "size_bytes": ref.size_bytes,
                "demo": ref.demo,
            }
            if ref.demo:
                row["label"] = f"{DEMO_LABEL}: random weights, output is noise"
            if "error" in info:
                row["error"] = info["error"]
            rows.append(row)
        return rows

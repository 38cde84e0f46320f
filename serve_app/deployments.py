"""The model deployments: content features, pitch, and per-voice synthesis.

Each runs one `rvc_pipeline` stage function, unchanged, so the graph's output equals
`rvc_pipeline.convert()` sample for sample. Blocking work runs in worker threads; each
call returns its result with the seconds it computed, for the X-Stage-Times header.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Optional

import numpy as np
from ray import serve

from .assets import catalog_for
from .config import AppArgs
from .memory_trace import maybe_trace_python_memory
from .heap import limit_heap_arenas, release_free_heap, running_allocator

#: Separates a voice's name from its files' fingerprint in a multiplexed model id.
MODEL_ID_SEPARATOR = "@"


def voice_model_id(name: str, fingerprint: str) -> str:
    """The multiplexed model id of a voice as its files are now: "bob@3f2a9c0d1e7b".

    A voice overwritten on disk gets a new id, so the next request loads the new files.
    """
    return f"{name}{MODEL_ID_SEPARATOR}{fingerprint}"


def split_model_id(model_id: str) -> tuple[str, str]:
    """(name, fingerprint) of a model id (the fingerprint is hex, so the last separator splits)."""
    name, _, fingerprint = model_id.rpartition(MODEL_ID_SEPARATOR)
    return name, fingerprint

logger = logging.getLogger("ray.serve")

#: Bytes per MB in the memory figures of /health.
MB = 1e6


def device_memory(device: str) -> dict[str, float]:
    """What torch holds on a CUDA device (MB): allocated tensors and the caching allocator's reserve.
    Empty on the CPU (the replica's RSS is the figure there)."""
    if not device.startswith("cuda"):
        return {}
    import torch

    return {"gpu_allocated_mb": round(torch.cuda.memory_allocated(device) / MB, 1),
            "gpu_reserved_mb": round(torch.cuda.memory_reserved(device) / MB, 1)}

#: Voices per replica when the builder does not say (the builder always does).
DEFAULT_VOICES_PER_REPLICA = 2


def report_state(replica: Any, what: str) -> None:
    """Send a replica's `state()` to its registry actor ("voices": the voice registry, "content
    encoders": the encoder registry), looked up once; /health reads it from there. Never raises:
    health reporting must not break serving."""
    try:
        import ray

        from .registry import get_encoder_registry, get_registry

        if replica._registry is None:
            get = get_encoder_registry if what == "content encoders" else get_registry
            replica._registry = get(replica.app_name)
        replica._registry.report.remote(replica.replica_id, replica.state(), ray.get_runtime_context().current_actor)
    except Exception as e:
        logger.warning("could not report %s to the registry: %s", what, e)


def batching_enabled(setting: str, device: str) -> bool:
    """Whether a deployment batches across requests: "auto" on a GPU only (on the CPU a batch costs
    what its items cost one by one, and unbatched results are exact), or "on"/"off"."""
    return setting == "on" or (setting == "auto" and device.startswith("cuda"))


def _setup_torch(args: AppArgs):
    """Same thread counts as an in-process run with these settings (float sums depend on them);
    also caps the C heap's arenas, so resident memory levels off early (see serve_app/heap.py)."""
    import torch

    limit_heap_arenas()
    maybe_trace_python_memory(serve.get_replica_context().deployment)
    from rvc_pipeline.retrieval import set_search_threads

    torch.set_num_threads(args.torch_threads)
    set_search_threads(args.torch_threads)  # FAISS/BLAS distance sums depend on it too
    return torch


def _dtype(args: AppArgs, device: str):
    from rvc_pipeline.device import resolve_device, resolve_dtype

    return resolve_dtype(args.precision, resolve_device(device))


class LoadedEncoder:
    """A content encoder in ContentFeatures' multiplexer cache. Serve calls `__del__` when it evicts
    it (LRU); requests still using it keep the encoder alive until they finish."""

    def __init__(self, model_id: str, encoder: Any, info: dict[str, Any], on_evicted: Any) -> None:
        self.model_id, self.encoder, self.info = model_id, encoder, info
        self._on_evicted = on_evicted

    def __del__(self) -> None:  # Serve's eviction, then the garbage collector: report once
        callback, self._on_evicted = self._on_evicted, None
        if callback is not None:
            callback(self.model_id)


@serve.deployment
class ContentFeatures:
    """HuBERT-like content features of one chunk, with the encoder the request's voice needs.

    Encoders are multiplexed by `voice_model_id(encoder name, files' fingerprint)` ("spin@3f2a..."),
    as voices are in VoiceSynthesizer: loaded on first use, least recently used evicted past
    `encoders_per_replica`. A call without a model id uses the default encoder (contentvec), which
    is loaded and warmed up at start (so /health can describe it).

    On a GPU, chunks of equal length and the same encoder from concurrent requests are batched
    (`@serve.batch`); on the CPU every chunk runs on its own (batching pays nothing there and
    padding would change the results).
    """

    def __init__(self, args: AppArgs, device: str) -> None:
        from rvc_pipeline.encoders import DEFAULT_ENCODER

        _setup_torch(args)
        self.catalog = catalog_for(args)
        self.device, self.dtype = device, _dtype(args, device)
        self.batching = batching_enabled(args.batching, device)
        self.extract_batch.set_max_batch_size(args.feature_batch_size)
        self.extract_batch.set_batch_wait_timeout_s(args.feature_batch_wait_s)
        self._lock = threading.RLock()  # RLock: an evicted encoder may report from a GC pass in any thread
        self._held: dict[str, dict[str, Any]] = {}  # model id -> its info, while in the multiplexer's cache
        self.stats = {"loads": 0, "evictions": 0}
        context = serve.get_replica_context()
        self.replica_id = context.replica_id.unique_id
        self.app_name = context.replica_id.deployment_id.app_name
        self._registry = None
        # The per-replica limit comes from the config, so the multiplexed loader is built here.
        self.get_encoder = serve.multiplexed(max_num_models_per_replica=args.encoders_per_replica)(self._load_fn())
        default = self.catalog.find_encoder(DEFAULT_ENCODER)
        self.default_id = voice_model_id(default.name, default.fingerprint)
        self._preloaded: Optional[LoadedEncoder] = None
        # Without the default encoder the replica still starts, so /health and /voices can say what to add.
        self.missing = None if default.present else self._hide(
            f"no content encoder: put hubert_base.pt in {self.catalog.assets_hint()}, or set RVC_CONTENT_ENCODER")
        if self.missing is not None:
            logger.error(self.missing)
            self.default_info: dict[str, Any] = {
                "name": DEFAULT_ENCODER, "path": None, "demo": False, "missing": self.missing, "device": device,
                "unsupported_versions": {"v1": self.missing, "v2": self.missing}}
        else:
            self._preloaded = self._load(default, self.default_id)
            self.default_info = self._preloaded.info
        self._report()

    def _hide(self, text: str) -> str:
        from .http_utils import hide_paths

        return hide_paths(text, self.catalog.path_labels())

    def _load(self, ref: Any, model_id: str) -> LoadedEncoder:
        """Load and warm up one encoder (blocking)."""
        from rvc_pipeline import load_content_encoder
        from rvc_pipeline.warmup import warm_up_encoder

        started = time.perf_counter()
        encoder = load_content_encoder(ref.path, device=self.device, dtype=self.dtype)
        warm_up_encoder(encoder)
        info = {
            "name": ref.name,
            "path": self.catalog.label(ref.path),
            "demo": ref.demo,
            "label": "untrained demo content encoder (output is noise)" if ref.demo else "user-provided",
            "hidden_size": encoder.hidden_size,
            "num_layers": encoder.num_layers,
            "device": self.device,
            "unsupported_versions": {
                v: problem for v in ("v1", "v2") if (problem := encoder.problem_with(v)) is not None
            },
        }
        logger.info("content encoder %s (%s) loaded on %s%s, warmed up in %.2fs", ref.name, info["path"], self.device,
                    " (UNTRAINED DEMO)" if ref.demo else "", time.perf_counter() - started)
        return LoadedEncoder(model_id, encoder, info, self._on_evicted)

    def _load_fn(self):
        async def load(model_id: str):
            return await self._load_encoder(model_id)

        return load

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_encoder(self, model_id: str):  # replaced per instance in __init__
        return await self._load_encoder(model_id)

    async def _load_encoder(self, model_id: str) -> LoadedEncoder:
        from rvc_pipeline.errors import CheckpointError, VoiceChangedError

        # The encoder loaded at start serves its first request; a replica asked for another first
        # drops it, so no more than `encoders_per_replica` are ever held.
        preloaded, self._preloaded = self._preloaded, None
        if preloaded is not None and preloaded.model_id == model_id:
            loaded = preloaded
        else:
            del preloaded
            name, fingerprint = split_model_id(model_id)
            ref = self.catalog.find_encoder(name)
            if not ref.present:
                raise CheckpointError(ref.problem)
            if ref.fingerprint != fingerprint:
                raise VoiceChangedError(f"content encoder {name!r} changed on disk while the request was starting; retry")
            loaded = await asyncio.to_thread(self._load, ref, model_id)
        with self._lock:
            self._held[model_id] = loaded.info
            self.stats["loads"] += 1
        self._report()
        return loaded

    def _on_evicted(self, model_id: str) -> None:
        with self._lock:
            if self._held.pop(model_id, None) is None:
                return
            self.stats["evictions"] += 1
        logger.info("content encoder %r evicted on replica %s", model_id, self.replica_id)
        self._report()

    def state(self) -> dict[str, Any]:
        """Encoders held by this replica (names, files, shapes) and counters, for /health."""
        with self._lock:
            held = sorted(self._held.values(), key=lambda e: e["name"])
            if self._preloaded is not None:
                held.append({**self._preloaded.info, "preloaded": True})
            return {"replica": self.replica_id, "loaded_encoders": [e["name"] for e in held], "encoders": held,
                    "device": self.device, "allocator": running_allocator(), **device_memory(self.device), **self.stats}

    def _report(self) -> None:
        report_state(self, "content encoders")

    def info(self) -> dict[str, Any]:
        """What /health shows as `content_encoder`: the default (contentvec) encoder's label, shape
        and which voice versions it cannot serve (with why: a missing encoder serves none)."""
        return self.default_info

    async def _current(self) -> LoadedEncoder:
        return await self.get_encoder(serve.get_multiplexed_model_id() or self.default_id)

    async def describe(self) -> dict[str, Any]:
        """Load the request's encoder (multiplexed id) and return its info (`unsupported_versions`...)."""
        return (await self._current()).info

    async def extract(self, chunk_audio: np.ndarray, version: str) -> tuple[np.ndarray, float]:
        """(L,) float32 at 16 kHz -> ((T, 256|768) float32, seconds), with the request's encoder."""
        loaded = await self._current()
        if self.batching:
            return await self.extract_batch(loaded, chunk_audio, version)
        return await asyncio.to_thread(self._extract_one, loaded.encoder, chunk_audio, version)

    def _extract_one(self, encoder: Any, chunk_audio: np.ndarray, version: str) -> tuple[np.ndarray, float]:
        from rvc_pipeline import extract_features

        started = time.perf_counter()
        try:
            feats = extract_features(encoder, chunk_audio, version)
            return feats, time.perf_counter() - started
        finally:
            release_free_heap()  # keeps resident memory flat between requests (see serve_app/heap.py)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def extract_batch(self, loadeds: list[LoadedEncoder], chunks: list[np.ndarray],
                            versions: list[str]) -> list[tuple[np.ndarray, float]]:
        return await asyncio.to_thread(self._extract_grouped, loadeds, chunks, versions)

    def _extract_grouped(self, loadeds: list[LoadedEncoder], chunks: list[np.ndarray],
                         versions: list[str]) -> list[tuple[np.ndarray, float]]:
        """Run equal-length, same-encoder, same-version chunks as one batch (no padding: results match single runs)."""
        import torch

        started = time.perf_counter()
        groups: dict[tuple[int, int, str], list[int]] = {}
        for i, (loaded, chunk, version) in enumerate(zip(loadeds, chunks, versions)):
            groups.setdefault((id(loaded), chunk.shape[0], version), []).append(i)
        results: list[Optional[np.ndarray]] = [None] * len(chunks)
        for (_, _, version), members in groups.items():
            encoder = loadeds[members[0]].encoder
            param = next(encoder.parameters())
            wav = torch.from_numpy(np.stack([np.asarray(chunks[i], dtype=np.float32) for i in members]))
            with torch.inference_mode():
                feats = encoder.extract(wav.to(param.device, param.dtype), version).float().cpu().numpy()
            for row, i in enumerate(members):
                results[i] = feats[row]
        seconds = (time.perf_counter() - started) / max(len(chunks), 1)
        return [(r, seconds) for r in results]  # type: ignore[misc]

    def check_health(self) -> None:
        return None  # a missing encoder is reported by /health and /voices, not by restarting the replica

    def __del__(self) -> None:
        try:
            if self._registry is not None:
                self._registry.remove.remote(self.replica_id)
        except Exception:
            pass


@serve.deployment
class PitchExtractor:
    """F0 of a whole padded signal with any method; models cached per replica."""

    def __init__(self, args: AppArgs, device: str) -> None:
        from rvc_pipeline import PitchEstimator
        from rvc_pipeline.constants import CLASSIC_PITCH_METHODS
        from rvc_pipeline.warmup import warm_up_pitch

        _setup_torch(args)
        catalog = catalog_for(args)
        self.estimator = PitchEstimator(device=device, rmvpe_path=catalog.rmvpe_path)
        started = time.perf_counter()
        warm_up_pitch(self.estimator, CLASSIC_PITCH_METHODS)
        logger.info("pitch methods %s warmed up in %.2fs", ", ".join(CLASSIC_PITCH_METHODS), time.perf_counter() - started)

    def methods(self) -> list[str]:
        return list(self.estimator.available_methods())

    async def estimate(self, padded: np.ndarray, options: Any, input_start_frame: int) -> tuple[Any, float]:
        """Prepared.padded (16 kHz) and its frame of input time 0 -> (PitchTrack, seconds)."""
        return await asyncio.to_thread(self._estimate, padded, options, input_start_frame)

    def _estimate(self, padded: np.ndarray, options: Any, input_start_frame: int) -> tuple[Any, float]:
        from rvc_pipeline import estimate_pitch

        started = time.perf_counter()
        try:
            track = estimate_pitch(np.array(padded), self.estimator, options, input_start_frame=input_start_frame)
            return track, time.perf_counter() - started
        finally:
            release_free_heap()  # keeps resident memory flat between requests (see serve_app/heap.py)


def _chunk_job(features: tuple, pitch: Optional[tuple], chunk: Any, chunk_samples: int, options: Any,
               chunking: Any, seed: int) -> tuple[Any, dict[str, float]]:
    """The synthesis job of one chunk (its slice of the pitch track, copied out of Ray's
    read-only buffers) and the seconds its features and pitch took."""
    from rvc_pipeline.pipeline import ChunkJob, PitchTrack

    feats, feat_s = features
    times = {"features": feat_s}
    track = None
    if pitch is not None:
        full, times["pitch"] = pitch
        part = full.slice(chunk)
        track = PitchTrack(np.array(part.coarse), np.array(part.f0), part.auto_key)
    return ChunkJob(np.array(feats), track, chunk_samples, options, chunking, seed), times


@serve.deployment
class VoiceSynthesizer:
    """Synthesis of chunks with one voice, multiplexed: voices load lazily, LRU-evicted.

    The multiplexed model id is `voice_model_id(name, fingerprint)`: a voice whose files
    change on disk is a new id, loaded by the next request; the superseded copy is released
    as soon as no request uses it.
    """

    def __init__(self, args: AppArgs, device: str) -> None:
        self.torch = _setup_torch(args)
        self.args = args
        self.device = device
        self.dtype = _dtype(args, device)
        self.catalog = catalog_for(args)
        self._lock = threading.Lock()
        self._loaded: dict[str, Any] = {}  # model id -> SharedVoice in the multiplexer's cache
        self._files: dict[str, dict[str, Any]] = {}  # model id -> what /health shows of it
        self.stats = {"loads": 0, "evictions": 0, "closes": 0, "deferred_closes": 0, "superseded": 0,
                      "batches": 0, "batched_chunks": 0}
        self.batching = batching_enabled(args.batching, device)
        self.synthesize_batch.set_max_batch_size(args.synthesis_batch_size)
        self.synthesize_batch.set_batch_wait_timeout_s(args.synthesis_batch_wait_s)
        context = serve.get_replica_context()
        self.replica_id = context.replica_id.unique_id
        self.app_name = context.replica_id.deployment_id.app_name
        self._registry = None
        # The per-replica voice limit comes from the config, so the multiplexed loader is
        # built here (Serve detects multiplexing wired up at init time).
        self.get_voice = serve.multiplexed(max_num_models_per_replica=args.voices_per_replica)(self._load_voice_fn())
        self._report()  # listed in /health from the start, with no voices yet

    def _load_voice_fn(self):
        async def load(model_id: str):
            return await self._load_voice(model_id)

        return load

    @serve.multiplexed(max_num_models_per_replica=DEFAULT_VOICES_PER_REPLICA)
    async def get_voice(self, model_id: str):  # replaced per instance in __init__
        return await self._load_voice(model_id)

    async def _load_voice(self, model_id: str):
        from rvc_pipeline import load_voice
        from rvc_pipeline.errors import VoiceChangedError

        from .voice_cache import SharedVoice

        name, fingerprint = split_model_id(model_id)
        ref = self.catalog.find_voice(name)
        if ref.fingerprint != fingerprint:
            raise VoiceChangedError(f"voice {name!r} changed on disk while the request was starting; retry")
        started = time.perf_counter()
        voice = await asyncio.to_thread(
            load_voice, ref.pth_path, ref.index_path, name=ref.name, device=self.device, dtype=self.dtype
        )
        if ref.fingerprint != fingerprint:  # replaced while being read: what was read may be half of each
            voice.close()
            raise VoiceChangedError(f"voice {name!r} changed on disk while it was loading; retry")
        shared = SharedVoice(model_id, voice, on_evicted=self._on_evicted, on_closed=self._on_closed)
        with self._lock:
            superseded = [s for mid, s in self._loaded.items() if split_model_id(mid)[0] == name]
            self._loaded[model_id] = shared
            self._files[model_id] = {
                "name": ref.name, "fingerprint": fingerprint, "demo": ref.demo,
                "pth": self.catalog.label(ref.pth_path), "index": self.catalog.label(ref.index_path),
                "loaded_at": time.time(),
                # On the replica's device (GPU memory on CUDA); the index stays in host memory.
                "weights_mb": round(voice.weight_bytes() / MB, 1),
                "index_mb": round(voice.index_bytes() / MB, 1),
            }
            self.stats["loads"] += 1
            self.stats["superseded"] += len(superseded)
        for old in superseded:  # its slot stays in Serve's LRU (tiny), its weights go now
            old.evict()
        logger.info(
            "voice %r (files %s) loaded in %.2fs on replica %s%s",
            ref.name, fingerprint, time.perf_counter() - started, self.replica_id, " (UNTRAINED DEMO)" if ref.demo else "",
        )
        self._report()
        return shared

    def _on_evicted(self, shared: Any, users: int) -> None:
        """The multiplexer dropped `shared` (LRU), or a newer copy superseded it; freed now or after its last user."""
        with self._lock:
            if self._loaded.get(shared.name) is shared:
                del self._loaded[shared.name]
                self._files.pop(shared.name, None)
            self.stats["evictions"] += 1
            self.stats["deferred_closes"] += int(users > 0)
        self._report()

    def _on_closed(self, model_id: str) -> None:
        with self._lock:
            self.stats["closes"] += 1
        logger.info("voice %r evicted and released on replica %s", model_id, self.replica_id)
        self._report()

    def state(self) -> dict[str, Any]:
        """Voices held by this replica (what /health shows: names and the files they came from) and counters."""
        with self._lock:
            voices = sorted(self._files.values(), key=lambda v: v["name"])
            return {
                "replica": self.replica_id,
                "loaded_voices": [v["name"] for v in voices],
                "voices": voices,
                "device": self.device,
                "allocator": running_allocator(),
                **device_memory(self.device),
                **self.stats,
            }

    def _report(self) -> None:
        report_state(self, "voices")

    async def _acquire(self):
        """The request's voice (multiplexed id), registered as in use; release it when done."""
        from rvc_pipeline.errors import VoiceChangedError

        shared = await self.get_voice(serve.get_multiplexed_model_id())
        try:
            shared.acquire()  # no await since get_voice returned, so only a newer copy can have released it
        except RuntimeError:
            raise VoiceChangedError(f"voice {shared.name!r} was replaced on disk during the request; retry") from None
        return shared

    async def describe(self) -> dict[str, Any]:
        """Load the request's voice and return what the ingress needs, including the chunking
        rule for this replica's device and precision (decided here: only this replica knows its GPU)."""
        from rvc_pipeline import ChunkingConfig

        shared = await self._acquire()
        try:
            voice = shared.voice
            return {
                "name": voice.name,
                "version": voice.version,
                "f0": bool(voice.f0),
                "sample_rate": int(voice.sample_rate),
                "n_speakers": int(voice.n_speakers),
                "has_index": bool(voice.has_index),
                "chunking": ChunkingConfig.for_device(voice.device, voice.dtype),
            }
        finally:
            shared.release()

    async def synthesize(
        self, features: tuple, pitch: Optional[tuple], chunk: Any, chunk_samples: int,
        options: Any, chunking: Any, seed: int,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """One chunk: (features, s) from ContentFeatures, (PitchTrack, s) or None -> (audio, seconds by stage).

        With batching on, chunks that arrive together for the same voice (from any requests)
        run as one padded batch (`synthesize_chunks`); each result equals its unbatched
        output to float rounding.
        """
        job, times = _chunk_job(features, pitch, chunk, chunk_samples, options, chunking, seed)
        shared = await self._acquire()
        if not self.batching:
            return await asyncio.to_thread(self._synthesize, shared, job, times)
        try:
            audio, seconds = await self.synthesize_batch(shared, job)
        finally:
            shared.release()
        return audio, {**times, "synthesize": seconds}

    async def synthesize_window(self, features: tuple, pitch: Optional[tuple], window: Any) -> np.ndarray:
        """One realtime block (`rvc_pipeline.stream.StreamWindow`): (features, s) from ContentFeatures and
        (PitchTrack, s) or None -> (return_length * hop,) float32 at the voice's rate."""
        from rvc_pipeline.pipeline import PitchTrack

        feats = np.array(features[0])  # Ray's buffers are read-only
        track = None if pitch is None else PitchTrack(np.array(pitch[0].coarse), np.array(pitch[0].f0))
        shared = await self._acquire()
        return await asyncio.to_thread(self._synthesize_window, shared, feats, track, window)

    def _synthesize_window(self, shared: Any, feats: np.ndarray, track: Any, window: Any) -> np.ndarray:
        from rvc_pipeline.stream import synthesize_stream_window

        try:
            return synthesize_stream_window(shared.voice, feats, track, window)
        finally:
            shared.release()

    def _synthesize(self, shared: Any, job: Any, times: dict[str, float]) -> tuple[np.ndarray, dict[str, float]]:
        from rvc_pipeline import synthesize_chunk

        try:
            started = time.perf_counter()
            audio = synthesize_chunk(shared.voice, job.features, job.pitch, job.chunk_samples, job.options,
                                     job.chunking, job.seed)
            return audio, {**times, "synthesize": time.perf_counter() - started}
        finally:
            shared.release()
            release_free_heap()  # keeps resident memory flat between requests (see serve_app/heap.py)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def synthesize_batch(self, shareds: list[Any], jobs: list[Any]) -> list[tuple[np.ndarray, float]]:
        return await asyncio.to_thread(self._synthesize_grouped, shareds, jobs)

    def _synthesize_grouped(self, shareds: list[Any], jobs: list[Any]) -> list[tuple[np.ndarray, float]]:
        """Each voice's chunks as one batch; every item gets its batch's seconds shared equally."""
        from rvc_pipeline.pipeline import synthesize_chunks

        groups: dict[int, list[int]] = {}
        for i, shared in enumerate(shareds):
            groups.setdefault(id(shared), []).append(i)
        results: list[Any] = [None] * len(jobs)
        try:
            for members in groups.values():
                started = time.perf_counter()
                outputs = synthesize_chunks(shareds[members[0]].voice, [jobs[i] for i in members])
                seconds = (time.perf_counter() - started) / len(members)
                for i, audio in zip(members, outputs):
                    results[i] = (audio, seconds)
            with self._lock:
                self.stats["batches"] += len(groups)
                self.stats["batched_chunks"] += len(jobs)
            self._report()  # /health shows the batch counters (and GPU memory) as they are now
            return results
        finally:
            release_free_heap()

    def check_health(self) -> None:
        return None

    def __del__(self) -> None:
        try:
            if self._registry is not None:
                self._registry.remove.remote(self.replica_id)
        except Exception:
            pass

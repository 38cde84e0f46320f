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

from .assets import Catalog
from .config import AppArgs
from .voice_cache import release_free_heap

logger = logging.getLogger("ray.serve")

#: Voices per replica when the builder does not say (the builder always does).
DEFAULT_VOICES_PER_REPLICA = 2


def _setup_torch(args: AppArgs):
    """Same thread counts as an in-process run with these settings (float sums depend on them)."""
    import torch

    from rvc_pipeline.retrieval import set_search_threads

    torch.set_num_threads(args.torch_threads)
    set_search_threads(args.torch_threads)  # FAISS/BLAS distance sums depend on it too
    return torch


def _dtype(args: AppArgs, device: str):
    from rvc_pipeline.device import resolve_device, resolve_dtype

    return resolve_dtype(args.precision, resolve_device(device))


@serve.deployment
class ContentFeatures:
    """HuBERT/ContentVec features of one chunk, loaded once per replica.

    On a GPU, chunks of equal length from concurrent requests are batched (`@serve.batch`);
    on the CPU every chunk runs on its own (batching pays nothing there and padding would
    change the results).
    """

    def __init__(self, args: AppArgs, device: str) -> None:
        from rvc_pipeline import load_content_encoder

        _setup_torch(args)
        catalog = Catalog(args)
        catalog.log_demo_warnings("ContentFeatures")
        if catalog.encoder_path is None:
            raise RuntimeError(
                f"no content encoder: put hubert_base.pt in {catalog.folder.assets_dir} or set RVC_CONTENT_ENCODER"
            )
        self.path = str(catalog.encoder_path)
        self.demo = catalog.encoder_is_demo
        self.device = device
        self.encoder = load_content_encoder(catalog.encoder_path, device=device, dtype=_dtype(args, device))
        self.batching = device.startswith("cuda")
        self.extract_batch.set_max_batch_size(args.feature_batch_size)
        self.extract_batch.set_batch_wait_timeout_s(args.feature_batch_wait_s)
        logger.info("content encoder %s loaded on %s%s", self.path, device, " (UNTRAINED DEMO)" if self.demo else "")

    def info(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "demo": self.demo,
            "label": "untrained demo content encoder (output is noise)" if self.demo else "user-provided",
            "hidden_size": self.encoder.hidden_size,
            "num_layers": self.encoder.num_layers,
            "device": self.device,
        }

    async def extract(self, chunk_audio: np.ndarray, version: str) -> tuple[np.ndarray, float]:
        """(L,) float32 at 16 kHz -> ((T, 256|768) float32, seconds)."""
        if self.batching:
            return await self.extract_batch(chunk_audio, version)
        return await asyncio.to_thread(self._extract_one, chunk_audio, version)

    def _extract_one(self, chunk_audio: np.ndarray, version: str) -> tuple[np.ndarray, float]:
        from rvc_pipeline import extract_features

        started = time.perf_counter()
        feats = extract_features(self.encoder, chunk_audio, version)
        return feats, time.perf_counter() - started

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def extract_batch(self, chunks: list[np.ndarray], versions: list[str]) -> list[tuple[np.ndarray, float]]:
        return await asyncio.to_thread(self._extract_grouped, chunks, versions)

    def _extract_grouped(self, chunks: list[np.ndarray], versions: list[str]) -> list[tuple[np.ndarray, float]]:
        """Run equal-length, same-version chunks as one batch (no padding: results match single runs)."""
        import torch

        started = time.perf_counter()
        groups: dict[tuple[int, str], list[int]] = {}
        for i, (chunk, version) in enumerate(zip(chunks, versions)):
            groups.setdefault((chunk.shape[0], version), []).append(i)
        results: list[Optional[np.ndarray]] = [None] * len(chunks)
        param = next(self.encoder.parameters())
        for (_, version), members in groups.items():
            wav = torch.from_numpy(np.stack([np.asarray(chunks[i], dtype=np.float32) for i in members]))
            with torch.inference_mode():
                feats = self.encoder.extract(wav.to(param.device, param.dtype), version).float().cpu().numpy()
            for row, i in enumerate(members):
                results[i] = feats[row]
        seconds = (time.perf_counter() - started) / max(len(chunks), 1)
        return [(r, seconds) for r in results]  # type: ignore[misc]

    def check_health(self) -> None:
        if self.encoder is None:
            raise RuntimeError("content encoder not loaded")


@serve.deployment
class PitchExtractor:
    """F0 of a whole padded signal with any method; models cached per replica."""

    def __init__(self, args: AppArgs, device: str) -> None:
        from rvc_pipeline import PitchEstimator

        _setup_torch(args)
        catalog = Catalog(args)
        self.estimator = PitchEstimator(device=device, rmvpe_path=catalog.rmvpe_path)
        self.rmvpe_hint = str(catalog.folder.assets_dir / "rmvpe.pt")

    def methods(self) -> list[str]:
        return list(self.estimator.available_methods())

    async def estimate(self, padded: np.ndarray, options: Any) -> tuple[Any, float]:
        """Prepared.padded (16 kHz) -> (PitchTrack, seconds)."""
        return await asyncio.to_thread(self._estimate, padded, options)

    def _estimate(self, padded: np.ndarray, options: Any) -> tuple[Any, float]:
        from rvc_pipeline import estimate_pitch

        started = time.perf_counter()
        track = estimate_pitch(np.array(padded), self.estimator, options)
        return track, time.perf_counter() - started


@serve.deployment
class VoiceSynthesizer:
    """Synthesis of chunks with one voice, multiplexed: voices load lazily, LRU-evicted."""

    def __init__(self, args: AppArgs, device: str) -> None:
        self.torch = _setup_torch(args)
        self.args = args
        self.device = device
        self.dtype = _dtype(args, device)
        self.catalog = Catalog(args)
        self.catalog.log_demo_warnings("VoiceSynthesizer")
        self._lock = threading.Lock()
        self._loaded: dict[str, Any] = {}  # voice name -> SharedVoice in the multiplexer's cache
        self.stats = {"loads": 0, "evictions": 0, "closes": 0, "deferred_closes": 0}
        context = serve.get_replica_context()
        self.replica_id = context.replica_id.unique_id
        self.app_name = context.replica_id.deployment_id.app_name
        self._registry = None
        # The per-replica voice limit comes from the config, so the multiplexed loader is
        # built here (Serve detects multiplexing wired up at init time).
        self.get_voice = serve.multiplexed(max_num_models_per_replica=args.voices_per_replica)(self._load_voice_fn())
        self._report()  # listed in /health from the start, with no voices yet

    def _load_voice_fn(self):
        async def load(voice_name: str):
            return await self._load_voice(voice_name)

        return load

    @serve.multiplexed(max_num_models_per_replica=DEFAULT_VOICES_PER_REPLICA)
    async def get_voice(self, voice_name: str):  # replaced per instance in __init__
        return await self._load_voice(voice_name)

    async def _load_voice(self, voice_name: str):
        from rvc_pipeline import load_voice

        from .voice_cache import SharedVoice

        ref = self.catalog.find_voice(voice_name)
        started = time.perf_counter()
        voice = await asyncio.to_thread(
            load_voice, ref.pth_path, ref.index_path, name=ref.name, device=self.device, dtype=self.dtype
        )
        shared = SharedVoice(ref.name, voice, on_evicted=self._on_evicted, on_closed=self._on_closed)
        with self._lock:
            self._loaded[ref.name] = shared
            self.stats["loads"] += 1
        logger.info(
            "voice %r loaded in %.2fs on replica %s%s",
            ref.name, time.perf_counter() - started, self.replica_id, " (UNTRAINED DEMO)" if ref.demo else "",
        )
        self._report()
        return shared

    def _on_evicted(self, shared: Any, users: int) -> None:
        """The multiplexer dropped `shared` (LRU); it is freed now or after its last user."""
        with self._lock:
            if self._loaded.get(shared.name) is shared:
                del self._loaded[shared.name]
            self.stats["evictions"] += 1
            self.stats["deferred_closes"] += int(users > 0)
        self._report()

    def _on_closed(self, name: str) -> None:
        with self._lock:
            self.stats["closes"] += 1
        logger.info("voice %r evicted and released on replica %s", name, self.replica_id)
        self._report()

    def state(self) -> dict[str, Any]:
        """Voices held by this replica (what /health shows) and load/evict counters."""
        with self._lock:
            return {"replica": self.replica_id, "loaded_voices": sorted(self._loaded), **self.stats}

    def _report(self) -> None:
        try:
            import ray

            from .registry import get_registry

            if self._registry is None:
                self._registry = get_registry(self.app_name)
            self._registry.report.remote(self.replica_id, self.state(), ray.get_runtime_context().current_actor)
        except Exception as e:  # health reporting must never break synthesis
            logger.warning("could not report voices to the registry: %s", e)

    async def describe(self) -> dict[str, Any]:
        """Load the request's voice (multiplexed id) and return what the ingress needs."""
        shared = await self.get_voice(serve.get_multiplexed_model_id())
        with shared.use() as voice:
            return {
                "name": voice.name,
                "version": voice.version,
                "f0": bool(voice.f0),
                "sample_rate": int(voice.sample_rate),
                "n_speakers": int(voice.n_speakers),
                "has_index": bool(voice.has_index),
            }

    async def synthesize(
        self, features: tuple, pitch: Optional[tuple], chunk: Any, chunk_samples: int,
        options: Any, chunking: Any, seed: int,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """One chunk: (features, s) from ContentFeatures, (PitchTrack, s) or None -> (audio, seconds by stage)."""
        shared = await self.get_voice(serve.get_multiplexed_model_id())
        shared.acquire()  # no await since get_voice returned: it cannot have been freed
        return await asyncio.to_thread(self._synthesize, shared, features, pitch, chunk, chunk_samples, options, chunking, seed)

    def _synthesize(self, shared, features, pitch, chunk, chunk_samples, options, chunking, seed):
        from rvc_pipeline import synthesize_chunk

        try:
            feats, feat_s = features
            times = {"features": feat_s}
            track = None
            if pitch is not None:
                full, times["pitch"] = pitch
                track = full.slice(chunk)
                track = type(track)(np.array(track.coarse), np.array(track.f0))
            started = time.perf_counter()
            audio = synthesize_chunk(shared.voice, np.array(feats), track, chunk_samples, options, chunking, seed)
            times["synthesize"] = time.perf_counter() - started
            return audio, times
        finally:
            shared.release()
            release_free_heap()  # keeps resident memory flat between requests (see voice_cache)

    def check_health(self) -> None:
        return None

    def __del__(self) -> None:
        try:
            if self._registry is not None:
                self._registry.remove.remote(self.replica_id)
        except Exception:
            pass

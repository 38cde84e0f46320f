"""A tiny named actor where each VoiceSynthesizer replica reports the voices it holds.

Serve has no broadcast to every replica of a deployment, so /health reads this instead:
each replica pushes its own state on every load/eviction and removes itself on shutdown;
entries of replicas that died without saying so are pruned by a liveness ping.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

REGISTRY_PREFIX = "rvc_voice_registry"
REGISTRY_NAMESPACE = "rvc_serve"


@ray.remote(num_cpus=0, max_concurrency=64)
class VoiceRegistry:
    """replica id -> {"loaded_voices": [...], counters...}, plus the replica's actor handle."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._handles: dict[str, Any] = {}

    def report(self, replica_id: str, state: dict[str, Any], handle: Any = None) -> None:
        self._entries[replica_id] = state
        if handle is not None:
            self._handles[replica_id] = handle

    def remove(self, replica_id: str) -> None:
        self._entries.pop(replica_id, None)
        self._handles.pop(replica_id, None)

    async def snapshot(self, ping_timeout_s: float = 2.0) -> dict[str, dict[str, Any]]:
        """Entries of live replicas (replicas that do not answer a ping are dropped)."""
        for replica_id, handle in list(self._handles.items()):
            try:
                await asyncio.wait_for(handle.__ray_ready__.remote(), ping_timeout_s)
            except asyncio.TimeoutError:
                continue  # busy, not necessarily dead: keep it
            except Exception:
                self.remove(replica_id)
        return dict(self._entries)


def registry_name(app_name: str) -> str:
    return f"{REGISTRY_PREFIX}:{app_name or 'default'}"


def get_registry(app_name: str):
    """The registry of this application, created on first use (lives with the cluster)."""
    return VoiceRegistry.options(
        name=registry_name(app_name), namespace=REGISTRY_NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


def get_encoder_registry(app_name: str):
    """Where ContentFeatures replicas report the content encoders they hold (the same kind of
    actor as the voice registry, under its own name)."""
    return get_registry(f"{app_name or 'default'}/content-encoders")

"""The app builder: typed arguments in, the wired deployment graph out.

    serve run serve_config.yaml                 # import_path: serve_app.app:build_app
    serve run serve_app.app:build_app device=cpu voices_per_replica=3
"""

import logging
from typing import Any

from ray import serve
from ray.serve import Application

from .config import AppArgs
from .deployments import ContentFeatures, PitchExtractor, VoiceSynthesizer
from .ingress import Ingress

logger = logging.getLogger("ray.serve")


def gpu_available() -> bool:
    """Whether the cluster (or, before Ray starts, this machine) has a GPU."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def resolve_service_device(requested: str, has_gpu: bool) -> str:
    """auto -> cuda where a GPU exists, else cpu. Resolved once so every replica agrees."""
    if requested == "auto":
        return "cuda" if has_gpu else "cpu"
    return requested


def build_app(args: AppArgs) -> Application:
    """The graph Ingress -> (ContentFeatures, PitchExtractor, VoiceSynthesizer).

    `args` is validated by Serve from the YAML `args:`; a plain dict (or None) is accepted too.
    """
    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args or {})
    # device=cuda requests GPU fractions even before a GPU node has joined (an autoscaling
    # cluster adds one for the pending replicas); auto uses GPUs only where they already exist.
    has_gpu = args.device == "cuda" or (args.device == "auto" and gpu_available())
    device = resolve_service_device(args.device, has_gpu)
    logger.info("building the RVC app on %s (GPU fractions %s)", device, "on" if has_gpu else "off")
    content = ContentFeatures.options(**args.content.deployment_options(gpu_available=has_gpu)).bind(args, device)
    pitch = PitchExtractor.options(**args.pitch.deployment_options(gpu_available=has_gpu)).bind(args, device)
    synth = VoiceSynthesizer.options(**args.synthesizer.deployment_options(gpu_available=has_gpu)).bind(args, device)
    ingress_options = args.ingress.deployment_options(gpu_available=False)
    return Ingress.options(**ingress_options).bind(content, pitch, synth, args, device)


__all__ = ["AppArgs", "build_app", "serve"]

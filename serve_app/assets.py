"""The service's view of its models: `rvc_pipeline.VoiceCatalog` built from the app's arguments.

Each replica builds its own (writing the deterministic demo files if needed), so it also
works when replicas run on other nodes than the one that started the app.
"""

from __future__ import annotations

from rvc_pipeline.catalog import VoiceCatalog
from rvc_pipeline.demo import DEMO_LABEL, DEMO_VOICE_NAME

from .config import AppArgs


def catalog_for(args: AppArgs) -> VoiceCatalog:
    """The models folder, encoder and demo fallback named by `args`."""
    return VoiceCatalog(
        args.models_dir, content_encoder=args.content_encoder, rmvpe=args.rmvpe,
        demo_fallback=args.demo_fallback, demo_dir=args.demo_dir,
        # empty mappings leave $RVC_ENCODERS / $RVC_VOICE_ENCODERS in force, as content_encoder=None does
        encoders=args.encoder_paths or None, voice_encoders=args.voice_encoders or None,
    )


__all__ = ["catalog_for", "DEMO_LABEL", "DEMO_VOICE_NAME", "VoiceCatalog"]

"""Content encoder: HuBERT-base features for RVC (256-dim v1, 768-dim v2) from 16 kHz audio."""

from __future__ import annotations

from .hubert import ContentEncoder, HubertConfig
from .loading import load_content_encoder

__all__ = ["ContentEncoder", "HubertConfig", "load_content_encoder"]

"""Untrained demo assets: a v2 40 kHz voice and a small HuBERT, in the real on-disk formats.

They let a fresh install start and answer requests before the user has added real
models. THEIR OUTPUT IS NOISE: the weights are random. Everything that shows them says
so (their metadata, the service's /health and /voices, the logs).

    assets = write_demo_assets(Path("~/.cache/rvc-serve/demo").expanduser())
    assets.voice_path    # demo-untrained.pth, RVC WebUI format (rvc-formats.md §1.1)
    assets.encoder_path  # hubert-untrained/ with config.json + model.safetensors (§3.3-3.4)

Both are written by the same random-weight writers as the test models
(`rvc_pipeline.testing.voices` and `.hubert`). Writes are deterministic (fixed seed) and
atomic, so concurrent replicas may call this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .constants import CONTENT_DIMS
from .content import HubertConfig
from .content.hubert import BASE_CONV_LAYERS
from .testing.hubert import hf_config_json, write_hf_hubert_folder
from .testing.voices import write_webui_voice

#: Name of the demo voice wherever it is listed.
DEMO_VOICE_NAME = "demo-untrained"
#: Label carried by the demo files and shown by the service.
DEMO_LABEL = "untrained demo voice"
DEMO_ENCODER_LABEL = "untrained demo content encoder"
#: What the demo encoder's config.json says about it.
DEMO_ENCODER_NOTE = {"rvc_serve_note": f"{DEMO_ENCODER_LABEL}: random weights, output is noise"}
DEMO_SEED = 1234
#: Environment variable of the cache root (default ~/.cache/rvc-serve).
CACHE_ENV = "RVC_CACHE_DIR"
#: The demo encoder: HuBERT geometry (400-sample field, 320 hop, 768 wide) with fewer, thinner layers.
DEMO_HIDDEN, DEMO_LAYERS, DEMO_HEADS, DEMO_FFN, DEMO_CONV_DIM = 768, 2, 12, 1024, 64
DEMO_ENCODER_CONFIG = HubertConfig(
    hidden_size=DEMO_HIDDEN, num_layers=DEMO_LAYERS, num_heads=DEMO_HEADS, intermediate_size=DEMO_FFN,
    conv_layers=tuple((DEMO_CONV_DIM, kernel, stride) for _, kernel, stride in BASE_CONV_LAYERS),
    final_dim=CONTENT_DIMS["v1"],  # final_proj 768 -> 256, so v1 voices run on it too
)


@dataclass(frozen=True)
class DemoAssets:
    """Paths of the written demo voice (.pth) and content encoder (folder)."""

    voice_path: Path
    encoder_path: Path


def default_demo_dir() -> Path:
    """$RVC_CACHE_DIR/demo, else ~/.cache/rvc-serve/demo."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "rvc-serve") / "demo"


def write_demo_assets(directory: str | Path | None = None) -> DemoAssets:
    """Write (once) the untrained demo voice and encoder under `directory`; returns their paths."""
    directory = Path(directory) if directory is not None else default_demo_dir()
    directory.mkdir(parents=True, exist_ok=True)
    voice_path = directory / f"{DEMO_VOICE_NAME}.pth"
    encoder_path = directory / "hubert-untrained"
    if not voice_path.is_file():
        write_demo_voice(voice_path)
    if not (encoder_path / "model.safetensors").is_file():
        write_demo_encoder(encoder_path)
    return DemoAssets(voice_path=voice_path, encoder_path=encoder_path)


def write_demo_voice(path: str | Path, *, seed: int = DEMO_SEED) -> Path:
    """An untrained v2 40 kHz pitch-guided voice, saved as the RVC WebUI saves one (fp16, §1.1)."""
    extra = {"name": DEMO_VOICE_NAME, "author": "rvc-serve (random weights: output is noise)", "demo": True}
    return write_webui_voice(path, version="v2", sr=40000, f0=True, info=DEMO_LABEL, overrides=extra, seed=seed)


def demo_encoder_config() -> dict:
    """transformers `HubertConfig`-style config.json of the demo encoder."""
    return hf_config_json(DEMO_ENCODER_CONFIG, **DEMO_ENCODER_NOTE)


def write_demo_encoder(folder: str | Path, *, seed: int = DEMO_SEED) -> Path:
    """A small untrained HuBERT as a transformers-style folder (config.json + model.safetensors, fp32)."""
    return write_hf_hubert_folder(
        folder, config=DEMO_ENCODER_CONFIG, seed=seed, safetensors=True, dtype=torch.float32,
        config_overrides=DEMO_ENCODER_NOTE, metadata={"note": DEMO_ENCODER_LABEL},
    )


def is_demo_path(path: str | Path | None, demo: DemoAssets | None) -> bool:
    """Whether `path` is one of the demo assets."""
    if path is None or demo is None:
        return False
    resolved = Path(path).resolve()
    return resolved in (demo.voice_path.resolve(), demo.encoder_path.resolve())

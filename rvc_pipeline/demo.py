"""Untrained demo assets: a v2 40 kHz voice and a small HuBERT, in the real on-disk formats.

They let a fresh install start and answer requests before the user has added real
models. THEIR OUTPUT IS NOISE: the weights are random. Everything that shows them says
so (their metadata, the service's /health and /voices, the logs).

    assets = write_demo_assets(Path("~/.cache/rvc-serve/demo").expanduser())
    assets.voice_path    # demo-untrained.pth, RVC WebUI format (rvc-formats.md §1.1)
    assets.encoder_path  # hubert-untrained/ with config.json + model.safetensors (§3.3-3.4)

Writes are deterministic (fixed seed) and atomic, so concurrent replicas may call this.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

#: Name of the demo voice wherever it is listed.
DEMO_VOICE_NAME = "demo-untrained"
#: Label carried by the demo files and shown by the service.
DEMO_LABEL = "untrained demo voice"
DEMO_ENCODER_LABEL = "untrained demo content encoder"
DEMO_SEED = 1234
#: Environment variable of the cache root (default ~/.cache/rvc-serve).
CACHE_ENV = "RVC_CACHE_DIR"
#: The demo encoder: HuBERT geometry (400-sample field, 320 hop, 768 wide) with fewer, thinner layers.
DEMO_HIDDEN, DEMO_LAYERS, DEMO_HEADS, DEMO_FFN, DEMO_CONV_DIM = 768, 2, 12, 1024, 64
HUBERT_CONV_KERNELS, HUBERT_CONV_STRIDES = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)
POS_CONV_KERNEL, POS_CONV_GROUPS, FINAL_PROJ_DIM = 128, 16, 256
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
    from .synth import STANDARD_CONFIGS, Synthesizer, SynthesizerConfig, export_state_dict

    config = SynthesizerConfig(**{**STANDARD_CONFIGS[("v2", 40000)].__dict__, "spk_embed_dim": 1})
    with torch.random.fork_rng():  # deterministic, without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = Synthesizer(config, 768, True)
    # weight-normed layers as weight_g/weight_v (g = |w| over dims but 0, v = w), fp16 (§1.1, §1.4)
    weight = {k: v for k, v in export_state_dict(model, torch.float16).items() if "enc_q" not in k}
    saved_config = SynthesizerConfig(**{**config.__dict__, "spk_embed_dim": 109}).to_list()
    checkpoint = {
        "weight": weight,
        "config": saved_config,
        "info": DEMO_LABEL,
        "sr": "40k",
        "f0": 1,
        "version": "v2",
        "name": DEMO_VOICE_NAME,
        "author": "rvc-serve (random weights: output is noise)",
        "demo": True,
    }
    return _atomic_save(Path(path), lambda tmp: torch.save(checkpoint, tmp))


def demo_encoder_config() -> dict:
    """transformers `HubertConfig`-style config.json of the demo encoder."""
    return {
        "model_type": "hubert",
        "architectures": ["HubertModelWithFinalProj"],
        "hidden_size": DEMO_HIDDEN,
        "num_hidden_layers": DEMO_LAYERS,
        "num_attention_heads": DEMO_HEADS,
        "intermediate_size": DEMO_FFN,
        "hidden_act": "gelu",
        "conv_dim": [DEMO_CONV_DIM] * len(HUBERT_CONV_KERNELS),
        "conv_kernel": list(HUBERT_CONV_KERNELS),
        "conv_stride": list(HUBERT_CONV_STRIDES),
        "conv_bias": False,
        "feat_extract_norm": "group",
        "do_stable_layer_norm": False,
        "num_conv_pos_embeddings": POS_CONV_KERNEL,
        "num_conv_pos_embedding_groups": POS_CONV_GROUPS,
        "classifier_proj_size": FINAL_PROJ_DIM,
        "layer_norm_eps": 1e-5,
        "rvc_serve_note": f"{DEMO_ENCODER_LABEL}: random weights, output is noise",
    }


def _demo_encoder_state(seed: int) -> dict[str, torch.Tensor]:
    """Random weights under the transformers HuBERT key names (rvc-formats.md §3.4)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * 0.02

    h, c = DEMO_HIDDEN, DEMO_CONV_DIM
    state: dict[str, torch.Tensor] = {}
    for i, k in enumerate(HUBERT_CONV_KERNELS):
        state[f"feature_extractor.conv_layers.{i}.conv.weight"] = rand(c, 1 if i == 0 else c, k) * 10
    state["feature_extractor.conv_layers.0.layer_norm.weight"] = torch.ones(c)
    state["feature_extractor.conv_layers.0.layer_norm.bias"] = torch.zeros(c)
    state["feature_projection.layer_norm.weight"], state["feature_projection.layer_norm.bias"] = torch.ones(c), torch.zeros(c)
    state["feature_projection.projection.weight"], state["feature_projection.projection.bias"] = rand(h, c), torch.zeros(h)
    v = rand(h, h // POS_CONV_GROUPS, POS_CONV_KERNEL)
    # Positional conv: weight norm over dim 2 (g has shape [1, 1, K]).
    state["encoder.pos_conv_embed.conv.weight_g"] = v.norm(dim=(0, 1), keepdim=True)
    state["encoder.pos_conv_embed.conv.weight_v"] = v
    state["encoder.pos_conv_embed.conv.bias"] = torch.zeros(h)
    state["encoder.layer_norm.weight"], state["encoder.layer_norm.bias"] = torch.ones(h), torch.zeros(h)
    for layer in range(DEMO_LAYERS):
        pre = f"encoder.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            state[f"{pre}.attention.{proj}.weight"], state[f"{pre}.attention.{proj}.bias"] = rand(h, h), torch.zeros(h)
        for norm in ("layer_norm", "final_layer_norm"):
            state[f"{pre}.{norm}.weight"], state[f"{pre}.{norm}.bias"] = torch.ones(h), torch.zeros(h)
        state[f"{pre}.feed_forward.intermediate_dense.weight"] = rand(DEMO_FFN, h)
        state[f"{pre}.feed_forward.intermediate_dense.bias"] = torch.zeros(DEMO_FFN)
        state[f"{pre}.feed_forward.output_dense.weight"] = rand(h, DEMO_FFN)
        state[f"{pre}.feed_forward.output_dense.bias"] = torch.zeros(h)
    state["final_proj.weight"], state["final_proj.bias"] = rand(FINAL_PROJ_DIM, h), torch.zeros(FINAL_PROJ_DIM)
    return state


def write_demo_encoder(folder: str | Path, *, seed: int = DEMO_SEED) -> Path:
    """A small untrained HuBERT as a transformers-style folder (config.json + model.safetensors)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(demo_encoder_config(), indent=2))
    state = {k: v.contiguous() for k, v in _demo_encoder_state(seed).items()}
    _atomic_save(folder / "model.safetensors", lambda tmp: save_file(state, str(tmp), metadata={"note": DEMO_ENCODER_LABEL}))
    return folder


def is_demo_path(path: str | Path | None, demo: DemoAssets | None) -> bool:
    """Whether `path` is one of the demo assets."""
    if path is None or demo is None:
        return False
    resolved = Path(path).resolve()
    return resolved in (demo.voice_path.resolve(), demo.encoder_path.resolve())


def _atomic_save(path: Path, write) -> Path:
    """Write through a temporary file in the same folder, then rename (safe under concurrency)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path

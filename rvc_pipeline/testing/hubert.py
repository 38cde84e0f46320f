"""Random-weight HuBERT content encoders in the real on-disk formats.

Tests, benchmarks and the untrained demo encoder (`rvc_pipeline.demo`) are all written
here. Three configs:

- `SMALL_CONFIG` (the default, `small=True`): hidden 768 and 12 heads so that v2 voices
  (768-dim content) can run on it, but FFN 128, conv stack of 64 channels (hubert_base
  kernels and strides, so frame counts are real) and 9 layers (enough for v1, which reads
  layer 9). About 25 M parameters: 50 MB in fp16, the dtype RVC's hubert_base.pt uses.
- `TINY_CONFIG`: hidden 96, 10 layers; for fast unit tests of the encoder itself.
- `BASE_CONFIG` (`small=False`): real hubert_base sizes (95 M parameters); benchmarks only.

Every writer derives its tensors from `make_hubert_state(config, seed)`, so the fairseq
file and the transformers folders written with the same config and seed hold the same
weights and must give identical features. Files are written atomically (`files`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from ..constants import SAMPLE_RATE
from ..content import HubertConfig
from .files import atomic_write, save_torch

SMALL_CONFIG = HubertConfig(
    hidden_size=768, num_layers=9, num_heads=12, intermediate_size=128,
    conv_layers=((64, 10, 5),) + ((64, 3, 2),) * 4 + ((64, 2, 2),) * 2,
)
TINY_CONFIG = HubertConfig(
    hidden_size=96, num_layers=10, num_heads=12, intermediate_size=64,
    conv_layers=((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2,
    pos_conv_kernel=16, final_dim=24,
)
BASE_CONFIG = HubertConfig()


def _conv_spec(config: HubertConfig) -> str:
    """fairseq's `conv_feature_layers` string for a config."""
    return " + ".join(f"[({d},{k},{s})]" for d, k, s in config.conv_layers)


def make_hubert_state(config: HubertConfig = SMALL_CONFIG, seed: int = 0) -> dict[str, Tensor]:
    """Random fp32 weights under fairseq key names (pos conv weight-normed as g/v)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> Tensor:
        return torch.randn(*shape, generator=gen) * scale

    def linear(prefix: str, n_out: int, n_in: int) -> None:
        sd[prefix + ".weight"] = randn(n_out, n_in, scale=1 / math.sqrt(n_in))
        sd[prefix + ".bias"] = randn(n_out, scale=0.02)

    def norm(prefix: str, n: int) -> None:
        sd[prefix + ".weight"] = 1 + randn(n, scale=0.1)
        sd[prefix + ".bias"] = randn(n, scale=0.1)

    sd: dict[str, Tensor] = {}
    dim, in_ch = config.hidden_size, 1
    for i, (ch, k, _) in enumerate(config.conv_layers):
        sd[f"feature_extractor.conv_layers.{i}.0.weight"] = randn(ch, in_ch, k, scale=1 / math.sqrt(in_ch * k))
        if config.conv_bias:
            sd[f"feature_extractor.conv_layers.{i}.0.bias"] = randn(ch, scale=0.02)
        in_ch = ch
    norm("feature_extractor.conv_layers.0.2", config.conv_layers[0][0])
    norm("layer_norm", in_ch)
    linear("post_extract_proj", dim, in_ch)
    sd["mask_emb"] = randn(dim)
    k, groups = config.pos_conv_kernel, config.pos_conv_groups
    sd["encoder.pos_conv.0.weight_g"] = 0.5 + torch.rand(1, 1, k, generator=gen)
    sd["encoder.pos_conv.0.weight_v"] = randn(dim, dim // groups, k)
    sd["encoder.pos_conv.0.bias"] = randn(dim, scale=0.02)
    norm("encoder.layer_norm", dim)
    for layer in range(config.num_layers):
        p = f"encoder.layers.{layer}."
        for proj in "qkv":
            linear(p + f"self_attn.{proj}_proj", dim, dim)
        linear(p + "self_attn.out_proj", dim, dim)
        norm(p + "self_attn_layer_norm", dim)
        linear(p + "fc1", config.intermediate_size, dim)
        linear(p + "fc2", dim, config.intermediate_size)
        norm(p + "final_layer_norm", dim)
    if config.final_dim:
        linear("final_proj", config.final_dim, dim)
    sd["label_embs_concat"] = randn(504, config.final_dim or dim)
    return sd


def fairseq_model_cfg(config: HubertConfig) -> dict[str, Any]:
    """The model fields of a fairseq HubertConfig as saved in `cfg['model']`."""
    return {
        "_name": "hubert",
        "extractor_mode": "default",
        "encoder_layers": config.num_layers,
        "encoder_embed_dim": config.hidden_size,
        "encoder_ffn_embed_dim": config.intermediate_size,
        "encoder_attention_heads": config.num_heads,
        "activation_fn": "gelu",
        "layer_norm_first": False,
        "conv_feature_layers": _conv_spec(config),
        "conv_bias": config.conv_bias,
        "conv_pos": config.pos_conv_kernel,
        "conv_pos_groups": config.pos_conv_groups,
        "final_dim": config.final_dim,
        "untie_final_proj": False,
        "dropout": 0.1,
        "label_rate": 50.0,
    }


def write_fairseq_hubert(
    path: str | Path,
    small: bool = True,
    *,
    config: HubertConfig | None = None,
    seed: int = 0,
    cfg_style: str = "dict",
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a fairseq training checkpoint like `hubert_base.pt`.

    cfg_style: "dict" (modern: `cfg` as plain dicts), "namespace" (legacy `args` =
    argparse.Namespace, `cfg` None) or "omegaconf" (`cfg` as pickled omegaconf-style
    DictConfig objects, written with stand-in modules; omegaconf is not installed).
    """
    config = config or (SMALL_CONFIG if small else BASE_CONFIG)
    state = {k: v.to(dtype) for k, v in make_hubert_state(config, seed).items()}
    model_cfg = fairseq_model_cfg(config)
    task_cfg = {"_name": "hubert_pretraining", "sample_rate": SAMPLE_RATE, "normalize": False, "labels": ["km"]}
    ckpt: dict[str, Any] = {"model": state, "optimizer_history": [], "extra_state": {}}
    if cfg_style == "dict":
        ckpt["cfg"] = {"_name": None, "model": model_cfg, "task": task_cfg}
    elif cfg_style == "namespace":
        ckpt["args"] = argparse.Namespace(arch="hubert", task="hubert_pretraining", **model_cfg)
        ckpt["cfg"] = None
    elif cfg_style == "omegaconf":
        with _fake_omegaconf() as make:
            ckpt["cfg"] = make({"model": model_cfg, "task": task_cfg, "common": {"fp16": True}})
            return save_torch(path, ckpt)
    else:
        raise ValueError(cfg_style)
    return save_torch(path, ckpt)


# fairseq -> transformers names, written out independently of the library's mapping.
def fairseq_to_hf(state: dict[str, Tensor], config: HubertConfig, weight_norm: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for i in range(len(config.conv_layers)):
        for s in ("weight", "bias"):
            key = f"feature_extractor.conv_layers.{i}.0.{s}"
            if key in state:
                out[f"feature_extractor.conv_layers.{i}.conv.{s}"] = state[key]
    plain = {
        "feature_extractor.conv_layers.0.2": "feature_extractor.conv_layers.0.layer_norm",
        "layer_norm": "feature_projection.layer_norm",
        "post_extract_proj": "feature_projection.projection",
        "encoder.layer_norm": "encoder.layer_norm",
        "final_proj": "final_proj",
    }
    for layer in range(config.num_layers):
        f, h = f"encoder.layers.{layer}.", f"encoder.layers.{layer}."
        for proj in ("q", "k", "v", "out"):
            plain[f + f"self_attn.{proj}_proj"] = h + f"attention.{proj}_proj"
        plain[f + "self_attn_layer_norm"] = h + "layer_norm"
        plain[f + "fc1"] = h + "feed_forward.intermediate_dense"
        plain[f + "fc2"] = h + "feed_forward.output_dense"
        plain[f + "final_layer_norm"] = h + "final_layer_norm"
    for src, dst in plain.items():
        for s in ("weight", "bias"):
            if f"{src}.{s}" in state:
                out[f"{dst}.{s}"] = state[f"{src}.{s}"]
    out["masked_spec_embed"] = state["mask_emb"]
    pos = "encoder.pos_conv_embed.conv."
    g, v = state["encoder.pos_conv.0.weight_g"], state["encoder.pos_conv.0.weight_v"]
    if weight_norm == "legacy":
        out[pos + "weight_g"], out[pos + "weight_v"] = g, v
    else:
        out[pos + "parametrizations.weight.original0"], out[pos + "parametrizations.weight.original1"] = g, v
    out[pos + "bias"] = state["encoder.pos_conv.0.bias"]
    return out


def hf_config_json(config: HubertConfig, **overrides: Any) -> dict[str, Any]:
    """A transformers HubertConfig `config.json` for `config` (RVC subclass fields included)."""
    raw = {
        "architectures": ["HubertModelWithFinalProj"],
        "model_type": "hubert",
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "gelu",
        "conv_dim": [d for d, _, _ in config.conv_layers],
        "conv_kernel": [k for _, k, _ in config.conv_layers],
        "conv_stride": [s for _, _, s in config.conv_layers],
        "conv_bias": config.conv_bias,
        "num_conv_pos_embeddings": config.pos_conv_kernel,
        "num_conv_pos_embedding_groups": config.pos_conv_groups,
        "feat_extract_norm": "group",
        "feat_extract_activation": "gelu",
        "do_stable_layer_norm": False,
        "classifier_proj_size": config.final_dim or 256,
        "layer_norm_eps": 1e-5,
        "torch_dtype": "float32",
    }
    raw.update(overrides)
    return raw


def write_hf_hubert_folder(
    directory: str | Path,
    small: bool = True,
    *,
    config: HubertConfig | None = None,
    seed: int = 0,
    safetensors: bool = False,
    weight_norm: str = "legacy",
    prefix: str = "",
    final_proj: bool = True,
    dtype: torch.dtype = torch.float16,
    config_overrides: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a transformers-style folder (config.json + pytorch_model.bin or model.safetensors).

    weight_norm: "legacy" (weight_g/weight_v) or "parametrizations" (original0/original1);
    prefix: "" (RVC's HubertModel subclass) or "hubert." (a wrapping head model);
    config_overrides: extra or changed config.json fields; metadata: the safetensors
    header's metadata. The weights file is written last, so its presence means the
    folder is complete.
    """
    config = config or (SMALL_CONFIG if small else BASE_CONFIG)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = fairseq_to_hf(make_hubert_state(config, seed), config, weight_norm)
    if not final_proj:
        state = {k: v for k, v in state.items() if not k.startswith("final_proj.")}
    state = {prefix + k: v.to(dtype).contiguous() for k, v in state.items()}
    config_json = json.dumps(hf_config_json(config, **(config_overrides or {})), indent=2)
    atomic_write(directory / "config.json", lambda tmp: tmp.write_text(config_json))
    if safetensors:
        from safetensors.torch import save_file

        atomic_write(directory / "model.safetensors", lambda tmp: save_file(state, str(tmp), metadata=metadata))
    else:
        save_torch(directory / "pytorch_model.bin", state)
    return directory


# ---------------------------------------------------------------- omegaconf look-alike


@contextmanager
def _fake_omegaconf() -> Iterator[Any]:
    """Temporarily register modules named like omegaconf's so pickle writes its globals.

    The classes pickle the way omegaconf's do: NEWOBJ + BUILD with a state dict whose
    `_content` (containers) or `_val` (nodes) hold the data, and metadata that names
    typing.Any and builtins.dict.
    """
    names = ["omegaconf", "omegaconf.dictconfig", "omegaconf.nodes", "omegaconf.base"]
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}

    def cls(module: str, name: str) -> type:
        made = type(name, (), {"__module__": module, "__getstate__": lambda self: self.__dict__})
        setattr(mods[module], name, made)
        return made

    DictConfig = cls("omegaconf.dictconfig", "DictConfig")
    AnyNode = cls("omegaconf.nodes", "AnyNode")
    Metadata = cls("omegaconf.base", "ContainerMetadata")

    def make(value: Any, parent: Any = None) -> Any:
        if isinstance(value, dict):
            node = DictConfig()
            meta = Metadata()
            meta.__dict__.update(ref_type=typing.Any, object_type=dict, key=None, flags={})
            node.__dict__.update(_metadata=meta, _parent=parent, _content={})
            node._content = {k: make(v, node) for k, v in value.items()}
            return node
        node = AnyNode()
        node.__dict__.update(_val=value, _parent=parent, _metadata=None)
        return node

    sys.modules.update(mods)
    try:
        yield make
    finally:
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod

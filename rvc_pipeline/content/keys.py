"""State-dict key mapping: transformers -> fairseq -> this package's `ContentEncoder`.

fairseq names are the canonical intermediate (rvc-formats.md §3.4 lists the pairs);
`to_internal` then folds the positional conv's weight norm and fuses q/k/v.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from ..errors import CheckpointError
from .hubert import HubertConfig

#: Keys that only pretraining uses; inference drops them.
IGNORED_KEYS = frozenset({"label_embs_concat", "mask_emb"})

_POS = "encoder.pos_conv.0."

# (HF pattern, fairseq replacement); applied to keys after the optional "hubert." prefix.
_HF_TO_FAIRSEQ = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"feature_extractor.conv_layers.\1.0.\2"),
    (r"feature_extractor\.conv_layers\.0\.layer_norm\.(weight|bias)", r"feature_extractor.conv_layers.0.2.\1"),
    (r"feature_projection\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (r"feature_projection\.projection\.(weight|bias)", r"post_extract_proj.\1"),
    (r"masked_spec_embed", r"mask_emb"),
    (r"encoder\.pos_conv_embed\.conv\.(.+)", _POS + r"\1"),
    (r"encoder\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.self_attn.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)", r"encoder.layers.\1.fc1.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", r"encoder.layers.\1.fc2.\2"),
]
_HF_TO_FAIRSEQ_RE = [(re.compile(pattern + r"\Z"), repl) for pattern, repl in _HF_TO_FAIRSEQ]

# Newer torch spells weight norm as a parametrization: original0 = g, original1 = v.
_WEIGHT_NORM_SPELLINGS = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


def hf_to_fairseq(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a transformers Hubert state dict to fairseq names; unknown keys pass unchanged."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("hubert.")
        for pattern, repl in _HF_TO_FAIRSEQ_RE:
            if pattern.match(name):
                name = pattern.sub(repl, name)
                break
        out[name] = value
    return out


def _normalise_pos_conv(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        if key.startswith(_POS):
            suffix = key[len(_POS) :]
            key = _POS + _WEIGHT_NORM_SPELLINGS.get(suffix, suffix)
        out[key] = value
    return out


def expected_fairseq_keys(config: HubertConfig) -> set[str]:
    """fairseq key names a checkpoint of this architecture holds (pos conv as weight_g/weight_v)."""
    keys = set()
    for i in range(len(config.conv_layers)):
        keys.add(f"feature_extractor.conv_layers.{i}.0.weight")
        if config.conv_bias:
            keys.add(f"feature_extractor.conv_layers.{i}.0.bias")
    pairs = ["feature_extractor.conv_layers.0.2", "layer_norm", "post_extract_proj", "encoder.layer_norm"]
    for layer in range(config.num_layers):
        prefix = f"encoder.layers.{layer}."
        parts = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"]
        parts += ["self_attn_layer_norm", "fc1", "fc2", "final_layer_norm"]
        pairs += [prefix + part for part in parts]
    if config.final_dim > 0:
        pairs.append("final_proj")
    keys.update(f"{p}.{s}" for p in pairs for s in ("weight", "bias"))
    keys.update(_POS + s for s in ("weight_g", "weight_v", "bias"))
    return keys


def check_keys(state: dict[str, Tensor], config: HubertConfig, source: str) -> dict[str, Tensor]:
    """Drop pretraining-only keys and verify the rest match `config` exactly (fairseq names).

    Returns the filtered state; raises CheckpointError naming missing/unexpected keys.
    """
    state = {k: v for k, v in _normalise_pos_conv(state).items() if k not in IGNORED_KEYS}
    expected = expected_fairseq_keys(config)
    present = set(state)
    if _POS + "weight" in present:  # weight norm already removed by whoever saved it
        expected = (expected - {_POS + "weight_g", _POS + "weight_v"}) | {_POS + "weight"}
    missing = sorted(expected - present)
    unexpected = sorted(present - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:6])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:6])})")
        raise CheckpointError(
            f"{source} does not match a HuBERT of {config.num_layers} layers x {config.hidden_size}: "
            + "; ".join(parts)
            + " (fairseq key names)"
        )
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is not a tensor")
    return state


def fold_weight_norm(g: Tensor, v: Tensor, dim: int) -> Tensor:
    """w = g * v / ||v||, the norm taken over every axis except `dim` (fp32 arithmetic)."""
    g, v = g.float(), v.float()
    axes = [a for a in range(v.dim()) if a != dim]
    return v * (g / v.norm(dim=axes, keepdim=True))


def to_internal(state: dict[str, Tensor], config: HubertConfig) -> dict[str, Tensor]:
    """Map a checked fairseq-named state dict to `ContentEncoder` parameter names (fp32)."""
    s = {k: v.float() for k, v in state.items()}
    out: dict[str, Tensor] = {}
    for i in range(len(config.conv_layers)):
        out[f"feature_extractor.convs.{i}.weight"] = s[f"feature_extractor.conv_layers.{i}.0.weight"]
        if config.conv_bias:
            out[f"feature_extractor.convs.{i}.bias"] = s[f"feature_extractor.conv_layers.{i}.0.bias"]
    renames = {
        "feature_extractor.conv_layers.0.2": "feature_extractor.norm",
        "layer_norm": "feature_norm",
        "post_extract_proj": "feature_projection",
        "encoder.layer_norm": "encoder_norm",
    }
    if config.final_dim > 0:
        renames["final_proj"] = "final_proj"
    for layer in range(config.num_layers):
        src, dst = f"encoder.layers.{layer}.", f"layers.{layer}."
        renames.update(
            {
                src + "self_attn.out_proj": dst + "out_proj",
                src + "self_attn_layer_norm": dst + "attn_norm",
                src + "fc1": dst + "fc1",
                src + "fc2": dst + "fc2",
                src + "final_layer_norm": dst + "final_norm",
            }
        )
        for suffix in ("weight", "bias"):
            qkv = [s[f"{src}self_attn.{p}_proj.{suffix}"] for p in "qkv"]
            out[f"{dst}qkv.{suffix}"] = torch.cat(qkv, dim=0)
    for src, dst in renames.items():
        for suffix in ("weight", "bias"):
            out[f"{dst}.{suffix}"] = s[f"{src}.{suffix}"]
    if _POS + "weight" in s:
        out["pos_conv.conv.weight"] = s[_POS + "weight"]
    else:
        # fairseq: nn.utils.weight_norm(conv, name="weight", dim=2); g is [1, 1, kernel].
        out["pos_conv.conv.weight"] = fold_weight_norm(s[_POS + "weight_g"], s[_POS + "weight_v"], dim=2)
    out["pos_conv.conv.bias"] = s[_POS + "bias"]
    return out

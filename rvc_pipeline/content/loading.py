"""`load_content_encoder`: fairseq `hubert_base.pt` or a transformers-style folder.

Both layouts are read without executing pickled code (see `safe_load.py`), mapped to
fairseq names, checked strictly against the architecture their config describes, and
loaded into this package's `ContentEncoder`.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..device import resolve_device, resolve_dtype
from ..errors import AssetNotFoundError, CheckpointError, OptionError, UnsupportedCheckpointError
from .hubert import BASE_CONV_LAYERS, ContentEncoder, HubertConfig
from .keys import check_keys, hf_to_fairseq, to_internal
from .safe_load import load_torch_file, to_plain

log = logging.getLogger(__name__)

HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")

_MISSING_HINT = (
    "put hubert_base.pt (fairseq) or a transformers-style folder (config.json plus "
    "pytorch_model.bin or model.safetensors) under <models>/assets/"
)


def load_content_encoder(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> ContentEncoder:
    """Load a HuBERT-base content encoder, ready for `extract` (eval mode, no grads).

    `path` is a fairseq checkpoint file or a transformers folder. fp32 is exact; bf16
    (CPU/CUDA) and fp16 (CUDA) keep the first GroupNorm in fp32.
    """
    path = Path(path)
    if not path.exists():
        raise AssetNotFoundError(f"content encoder not found at {path}; {_MISSING_HINT}")
    target = resolve_device(device)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise OptionError(f"unsupported content encoder dtype {dtype}; use float32, float16 or bfloat16")
    if dtype == torch.float16 and target.type == "cpu":
        raise OptionError("fp16 is not supported on the CPU; use fp32 (exact) or bf16 (fast)")
    if dtype == torch.bfloat16:
        resolve_dtype("bf16", target)  # warns where bf16 would be emulated
    if path.is_dir():
        config, state = _read_hf_folder(path)
    else:
        config, state = _read_fairseq_file(path)
    model = build_content_encoder(config, state, source=path.name)
    model.to(device=target, dtype=dtype)
    model.feature_extractor.norm.float()  # fairseq Fp32GroupNorm: parameters stay fp32
    log.info(
        "content encoder %s: %d layers x %d, final_proj %d, on %s as %s",
        path.name, config.num_layers, config.hidden_size, config.final_dim, target, dtype,
    )
    return model


def build_content_encoder(config: HubertConfig, state: dict[str, Tensor], *, source: str) -> ContentEncoder:
    """Build a CPU fp32 `ContentEncoder` from a fairseq-named state dict, strictly."""
    state = check_keys(state, config, source)
    try:
        internal = to_internal(state, config)
        model = ContentEncoder(config)
        model.load_state_dict(internal, strict=True)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{source}: tensors do not fit the architecture in its config: {e}") from e
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------- fairseq


def _read_fairseq_file(path: Path) -> tuple[HubertConfig, dict[str, Tensor]]:
    ckpt = load_torch_file(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(
            f"{path.name} is not a fairseq HuBERT checkpoint (expected a dict with a 'model' state dict)"
        )
    cfg = to_plain(ckpt.get("cfg"))
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        model_cfg = cfg["model"]
    else:  # legacy files: flat argparse.Namespace in 'args'
        args = to_plain(ckpt.get("args"))
        model_cfg = args if isinstance(args, dict) else {}
    state = {str(k): v for k, v in ckpt["model"].items()}
    return fairseq_config(model_cfg, state), state


def fairseq_config(cfg: dict[str, Any], state: dict[str, Tensor]) -> HubertConfig:
    """HubertConfig from fairseq model fields (hubert_base defaults for absent ones)."""
    def get(name: str, default: Any) -> Any:
        value = cfg.get(name)
        return default if value is None else value

    unsupported = []
    if get("extractor_mode", "default") != "default":
        unsupported.append(f"extractor_mode={cfg['extractor_mode']!r} (only 'default' group norm)")
    if get("layer_norm_first", False):
        unsupported.append("layer_norm_first=True (pre-LN, HuBERT large); only hubert_base is supported")
    if get("activation_fn", "gelu") != "gelu":
        unsupported.append(f"activation_fn={cfg['activation_fn']!r}")
    if int(get("pos_conv_depth", 1)) != 1:
        unsupported.append(f"pos_conv_depth={cfg['pos_conv_depth']}")
    if unsupported:
        raise UnsupportedCheckpointError("unsupported fairseq HuBERT config: " + "; ".join(unsupported))
    try:
        return HubertConfig(
            hidden_size=int(get("encoder_embed_dim", 768)),
            num_layers=int(get("encoder_layers", 12)),
            num_heads=int(get("encoder_attention_heads", 12)),
            intermediate_size=int(get("encoder_ffn_embed_dim", 3072)),
            conv_layers=parse_conv_layers(get("conv_feature_layers", None)),
            conv_bias=bool(get("conv_bias", False)),
            pos_conv_kernel=int(get("conv_pos", 128)),
            pos_conv_groups=int(get("conv_pos_groups", 16)),
            final_dim=_final_dim(state, "final_proj.weight"),
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"fairseq HuBERT config has invalid values: {e}") from e


def parse_conv_layers(spec: str | None) -> tuple[tuple[int, int, int], ...]:
    """Parse fairseq's `conv_feature_layers` expression without eval.

    "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2" -> ((512,10,5), (512,3,2), ...).
    Only list/tuple literals of ints, `+` and `*` are accepted.
    """
    if spec is None:
        return BASE_CONV_LAYERS

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Mult) and (type(right) is not int or not 0 <= right <= 64):
                raise ValueError("bad repeat count")
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported syntax {type(node).__name__}")

    try:
        layers = ev(ast.parse(str(spec), mode="eval").body)
        result = tuple((int(d), int(k), int(s)) for d, k, s in layers)
    except (SyntaxError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot parse conv_feature_layers {spec!r}: {e}") from e
    if not result:
        raise CheckpointError(f"conv_feature_layers {spec!r} is empty")
    return result


def _final_dim(state: dict[str, Tensor], key: str) -> int:
    """final_proj size from its weight ([final_dim, hidden]); 0 when the file has none."""
    weight = state.get(key)
    return int(weight.shape[0]) if isinstance(weight, Tensor) and weight.dim() == 2 else 0


# ---------------------------------------------------------------- transformers


def _read_hf_folder(path: Path) -> tuple[HubertConfig, dict[str, Tensor]]:
    config_path = path / HF_CONFIG
    weights = next((path / name for name in HF_WEIGHTS if (path / name).is_file()), None)
    if not config_path.is_file() or weights is None:
        raise AssetNotFoundError(
            f"content encoder folder {path} needs {HF_CONFIG} and one of {', '.join(HF_WEIGHTS)}; "
            + _MISSING_HINT
        )
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {config_path}: {e}") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path} is not a JSON object")
    if weights.suffix == ".safetensors":
        state = _read_safetensors(weights)
    else:
        state = load_torch_file(weights)
        if not isinstance(state, dict):
            raise CheckpointError(f"{weights.name} is not a state dict")
    state = hf_to_fairseq({str(k): v for k, v in state.items()})
    return hf_config(raw, state), state


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path.name}: {e}") from e


def hf_config(raw: dict[str, Any], state: dict[str, Tensor]) -> HubertConfig:
    """HubertConfig from a transformers `config.json` (HubertConfig field names)."""
    unsupported = []
    if raw.get("feat_extract_norm", "group") != "group":
        unsupported.append(f"feat_extract_norm={raw['feat_extract_norm']!r} (only 'group')")
    if raw.get("do_stable_layer_norm", False):
        unsupported.append("do_stable_layer_norm=true (pre-LN, HuBERT large)")
    for field in ("hidden_act", "feat_extract_activation"):
        if raw.get(field, "gelu") != "gelu":
            unsupported.append(f"{field}={raw[field]!r}")
    if not raw.get("feat_proj_layer_norm", True):
        unsupported.append("feat_proj_layer_norm=false")
    if raw.get("conv_pos_batch_norm", False):
        unsupported.append("conv_pos_batch_norm=true")
    if unsupported:
        raise UnsupportedCheckpointError("unsupported HuBERT config.json: " + "; ".join(unsupported))
    try:
        dims = [int(v) for v in raw.get("conv_dim", [c for c, _, _ in BASE_CONV_LAYERS])]
        kernels = [int(v) for v in raw.get("conv_kernel", [k for _, k, _ in BASE_CONV_LAYERS])]
        strides = [int(v) for v in raw.get("conv_stride", [s for _, _, s in BASE_CONV_LAYERS])]
        if not len(dims) == len(kernels) == len(strides):
            raise ValueError("conv_dim, conv_kernel and conv_stride differ in length")
        return HubertConfig(
            hidden_size=int(raw.get("hidden_size", 768)),
            num_layers=int(raw.get("num_hidden_layers", 12)),
            num_heads=int(raw.get("num_attention_heads", 12)),
            intermediate_size=int(raw.get("intermediate_size", 3072)),
            conv_layers=tuple(zip(dims, kernels, strides)),
            conv_bias=bool(raw.get("conv_bias", False)),
            pos_conv_kernel=int(raw.get("num_conv_pos_embeddings", 128)),
            pos_conv_groups=int(raw.get("num_conv_pos_embedding_groups", 16)),
            final_dim=_final_dim(state, "final_proj.weight"),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-5)),
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"HuBERT config.json has invalid values: {e}") from e

"""Folding RVC's weight-normed layers into plain weights (rvc-formats.md §1.4).

RVC stores a weight-normed layer as `<m>.weight_g` (g) and `<m>.weight_v` (v); Applio's
in-memory spelling is `<m>.parametrizations.weight.original0/1`. The effective weight is
w = g * v / ||v||, the norm taken over every dim except dim 0 (for every synthesizer conv,
including ConvTranspose1d whose weight is [in, out, k] and g [in, 1, 1]). Our modules hold
plain weights, so the state dict is folded once, before `load_state_dict`.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

#: (g suffix, v suffix) pairs: legacy `torch.nn.utils.weight_norm` and `parametrizations`.
WEIGHT_NORM_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".weight_g", ".weight_v"),
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
)


def fold_weight(g: Tensor, v: Tensor) -> Tensor:
    """Effective weight g * v / ||v|| (norm over all dims but 0), computed in float32 or wider.

    `g` has shape [v.shape[0], 1, ...]; the result has v's shape and the wider of
    (float32, v.dtype) as dtype.
    """
    dtype = torch.promote_types(v.dtype, torch.float32)
    v32 = v.to(dtype)
    norm = v32.reshape(v32.shape[0], -1).norm(dim=1)
    norm = norm.reshape((-1,) + (1,) * (v32.dim() - 1))
    return g.to(dtype).reshape(norm.shape) * (v32 / norm)


def fold_weight_norm(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return a copy of `state_dict` with every (g, v) pair replaced by `<m>.weight`.

    Accepts both spellings. Raises ValueError when a g has no v (or the reverse), or when
    `<m>.weight` is present as well. Other entries are passed through unchanged.
    """
    out: dict[str, Tensor] = {}
    pending: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        for g_suffix, v_suffix in WEIGHT_NORM_SUFFIXES:
            if key.endswith(g_suffix):
                pending.setdefault(key[: -len(g_suffix)], {})["g"] = value
                break
            if key.endswith(v_suffix):
                pending.setdefault(key[: -len(v_suffix)], {})["v"] = value
                break
        else:
            out[key] = value
    for prefix, pair in pending.items():
        if set(pair) != {"g", "v"}:
            have = "g" if "g" in pair else "v"
            raise ValueError(f"weight-normed layer {prefix!r} has only its {have} tensor")
        target = prefix + ".weight"
        if target in out:
            raise ValueError(f"layer {prefix!r} has both a plain weight and weight-norm tensors")
        out[target] = fold_weight(pair["g"], pair["v"])
    return out

"""HuBERT-base content encoder (the network RVC calls "hubert_base" / ContentVec).

Own implementation of fairseq's `HubertModel` inference path (rvc-formats.md §3.1):
conv feature extractor -> LayerNorm + projection -> positional conv -> LayerNorm ->
post-LN transformer layers -> optional `final_proj`. Only the forward pass needed by
RVC exists here; loading lives in `loading.py`.

Internal parameter names (what `ContentEncoder.state_dict()` holds) are this module's
own; `loading.py` maps the fairseq and transformers layouts onto them, folds the
positional conv's weight norm and fuses q/k/v into one projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import AudioError, CheckpointError, OptionError

#: hubert_base conv stack as (channels, kernel, stride): fairseq's default
#: `conv_feature_layers = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"`.
BASE_CONV_LAYERS: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2

#: RVC v1 voices read the output of transformer layer 9 (1-based), through final_proj.
V1_OUTPUT_LAYER = 9

VERSIONS = ("v1", "v2")


@dataclass(frozen=True)
class HubertConfig:
    """Architecture sizes of a HuBERT-base-like encoder (defaults: hubert_base)."""

    hidden_size: int = 768  # transformer width (fairseq encoder_embed_dim)
    num_layers: int = 12  # transformer layers (encoder_layers)
    num_heads: int = 12  # attention heads (encoder_attention_heads)
    intermediate_size: int = 3072  # FFN width (encoder_ffn_embed_dim)
    conv_layers: tuple[tuple[int, int, int], ...] = BASE_CONV_LAYERS  # (channels, kernel, stride)
    conv_bias: bool = False  # conv feature extractor has biases (fairseq conv_bias)
    pos_conv_kernel: int = 128  # positional conv kernel (conv_pos)
    pos_conv_groups: int = 16  # positional conv groups (conv_pos_groups)
    final_dim: int = 256  # final_proj output size; 0 = the file has no final_proj
    layer_norm_eps: float = 1e-5  # every LayerNorm and the GroupNorm (fairseq/HF default)

    def __post_init__(self) -> None:
        if min(self.hidden_size, self.num_layers, self.num_heads, self.intermediate_size) <= 0:
            raise CheckpointError(f"content encoder config has non-positive sizes: {self}")
        if self.hidden_size % self.num_heads:
            raise CheckpointError(
                f"content encoder hidden size {self.hidden_size} is not divisible by {self.num_heads} heads"
            )
        if self.hidden_size % self.pos_conv_groups:
            raise CheckpointError(
                f"hidden size {self.hidden_size} is not divisible by {self.pos_conv_groups} positional-conv groups"
            )
        if not self.conv_layers or any(min(layer) <= 0 for layer in self.conv_layers):
            raise CheckpointError(f"invalid conv feature layers {self.conv_layers}")

    @property
    def receptive_field(self) -> int:
        """Input samples that make one output frame (400 for hubert_base)."""
        field = 1
        for _, kernel, stride in reversed(self.conv_layers):
            field = (field - 1) * stride + kernel
        return field

    @property
    def hop(self) -> int:
        """Input samples between frames (320 at 16 kHz = 20 ms for hubert_base)."""
        hop = 1
        for _, _, stride in self.conv_layers:
            hop *= stride
        return hop

    def num_frames(self, n_samples: int) -> int:
        """Frames produced from `n_samples` at 16 kHz: floor((N - 400) / 320) + 1 for the base stack."""
        length = n_samples
        for _, kernel, stride in self.conv_layers:
            length = (length - kernel) // stride + 1
        return max(length, 0)


class ConvFeatureExtractor(nn.Module):
    """Strided conv stack: [B, N] wave -> [B, T, C]; GroupNorm (fp32) after layer 0, GELU after each."""

    def __init__(self, config: HubertConfig) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        in_ch = 1
        for channels, kernel, stride in config.conv_layers:
            self.convs.append(nn.Conv1d(in_ch, channels, kernel, stride=stride, bias=config.conv_bias))
            in_ch = channels
        first = config.conv_layers[0][0]
        # fairseq Fp32GroupNorm(dim, dim): one group per channel, statistics in fp32.
        self.norm = nn.GroupNorm(first, first, eps=config.layer_norm_eps)

    def forward(self, wav: Tensor) -> Tensor:
        """wav: [B, N] float32 -> [B, T, C] (channels last) in the dtype of the conv weights."""
        return torch.stack([self._one(item) for item in wav])

    def _one(self, wav: Tensor) -> Tensor:
        """[N] float32 -> [T, C]; each batch item alone, so every GEMM is a plain 2-D one."""
        x = F.gelu(self._normalised_first_layer(wav)).to(self.convs[0].weight.dtype)
        for conv in self.convs[1:]:
            x = F.gelu(strided_conv_channels_last(x, conv.weight, conv.bias, conv.stride[0]))
        return x

    def _normalised_first_layer(self, wav: Tensor) -> Tensor:
        """GroupNorm(conv0(wav)) as one GEMM: [N] float32 -> [T0, C] float32.

        Layer 0 has one input channel, so its output channel c is the linear map
        w_c . f_t of the k-sample frames f_t. GroupNorm with one group per channel needs
        that channel's mean and biased variance over time, which are mu . w_c and
        w_c^T Sigma w_c for the frames' mean mu and k x k covariance Sigma (float64).
        Folding the normalisation and the affine into the weights gives the normalised
        output from a single pass over the frames, in fp32 whatever the model dtype.
        """
        conv, norm = self.convs[0], self.norm
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        frames = wav.unfold(0, kernel, stride)  # [T0, k] view
        acc = torch.float32 if wav.device.type == "mps" else torch.float64  # MPS has no float64
        f64 = frames.to(acc)
        mu = f64.mean(0)
        centred = f64 - mu
        sigma = centred.T @ centred / frames.shape[0]  # [k, k]
        w = conv.weight.to(acc).view(conv.out_channels, kernel)  # [C, k]
        var = ((w @ sigma) * w).sum(1)
        scale = norm.weight.to(acc) * torch.rsqrt(var + norm.eps)
        # (f.w + b - (mu.w + b)) * scale + beta: a conv bias cancels out.
        shift = norm.bias.to(acc) - (w @ mu) * scale
        folded = (w * scale[:, None]).T.float()  # [k, C]
        return torch.addmm(shift.float(), frames.float(), folded)


def strided_conv_channels_last(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
    """`F.conv1d(x.T[None], weight, bias, stride)[0].T` for channels-last x, as GEMMs without im2col.

    x: [T, C_in] contiguous; weight: [C_out, C_in, k] -> [T', C_out], T' = (T - k) // stride + 1.
    Taps are taken `stride` at a time: the inputs of taps j..j+stride-1 for every output
    frame form a matrix view of x with row stride `stride * C_in`, which BLAS reads in
    place, so each block is one GEMM. hubert_base's (3, 2) layers need two blocks, its
    (2, 2) layers one. Faster than mkldnn's conv1d on CPU.
    """
    length, c_in = x.shape
    c_out, _, kernel = weight.shape
    frames = (length - kernel) // stride + 1
    out: Tensor | None = None
    for first_tap in range(0, kernel, stride):
        taps = min(stride, kernel - first_tap)
        rows = x.as_strided((frames, taps * c_in), (stride * c_in, 1), x.storage_offset() + first_tap * c_in)
        w = weight[:, :, first_tap : first_tap + taps].permute(2, 1, 0).reshape(taps * c_in, c_out)
        if out is not None:
            out.addmm_(rows, w)
        elif bias is not None:
            out = torch.addmm(bias, rows, w)
        else:
            out = torch.mm(rows, w)
    assert out is not None
    return out


class PositionalConv(nn.Module):
    """Grouped conv position embedding (weight norm already folded); adds nothing by itself."""

    def __init__(self, config: HubertConfig) -> None:
        super().__init__()
        k = config.pos_conv_kernel
        self.conv = nn.Conv1d(
            config.hidden_size, config.hidden_size, k, padding=k // 2, groups=config.pos_conv_groups
        )
        self.trim = 1 if k % 2 == 0 else 0  # fairseq SamePad: an even kernel gives one frame too many

    def forward(self, x: Tensor) -> Tensor:
        """[B, T, C] -> positional term [B, T, C]."""
        pos = self.conv(x.transpose(1, 2))
        if self.trim:
            pos = pos[:, :, : -self.trim]
        return F.gelu(pos).transpose(1, 2)


class EncoderLayer(nn.Module):
    """Post-LN transformer layer: x = LN(x + MHA(x)); x = LN(x + fc2(GELU(fc1(x))))."""

    def __init__(self, config: HubertConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(dim, 3 * dim)  # fused [q; k; v] projections
        self.out_proj = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(dim, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, dim)
        self.final_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        batch, frames, dim = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).view(batch, frames, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        # Scale head_dim**-0.5 is SDPA's default, as in fairseq MultiheadAttention.
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, H, T, D]
        attn = attn.transpose(1, 2).reshape(batch, frames, dim)
        x = self.attn_norm(x + self.out_proj(attn))
        return self.final_norm(x + self.fc2(F.gelu(self.fc1(x))))


class ContentEncoder(nn.Module):
    """HuBERT-base encoder producing RVC content features from 16 kHz audio.

    Build it with `load_content_encoder`; a fresh instance has random weights.
    Forward passes never mutate the module, so one instance can serve threads in parallel.
    """

    def __init__(self, config: HubertConfig) -> None:
        super().__init__()
        self.config = config
        conv_dim = config.conv_layers[-1][0]
        self.feature_extractor = ConvFeatureExtractor(config)
        self.feature_norm = nn.LayerNorm(conv_dim, eps=config.layer_norm_eps)
        self.feature_projection = nn.Linear(conv_dim, config.hidden_size)
        self.pos_conv = PositionalConv(config)
        self.encoder_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.final_proj = nn.Linear(config.hidden_size, config.final_dim) if config.final_dim > 0 else None

    @property
    def hidden_size(self) -> int:
        """Transformer width: the v2 feature size (768 for hubert_base)."""
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        """Transformer layers in the file (12 for hubert_base)."""
        return self.config.num_layers

    @property
    def final_dim(self) -> int:
        """final_proj output size: the v1 feature size (256), 0 when the file has none."""
        return self.config.final_dim

    def feature_dim(self, version: str) -> int:
        """Size of the features `extract(..., version)` returns: 256 for v1, 768 for v2."""
        self._check_version(version)
        return self.config.final_dim if version == "v1" else self.config.hidden_size

    def problem_with(self, version: str) -> str | None:
        """Why voices of `version` ("v1"/"v2") cannot use this encoder, or None if they can."""
        try:
            self._check_version(version)
        except (OptionError, CheckpointError) as e:
            return str(e)
        return None

    def _check_version(self, version: str) -> None:
        if version not in VERSIONS:
            raise OptionError(f"unknown RVC version {version!r}; use 'v1' or 'v2'")
        if version == "v1":
            if self.final_proj is None:
                raise CheckpointError(
                    "this content encoder has no final_proj weights, which RVC v1 voices need; "
                    "use the full hubert_base.pt (or a transformers folder that includes final_proj)"
                )
            if self.config.num_layers < V1_OUTPUT_LAYER:
                raise CheckpointError(
                    f"this content encoder has {self.config.num_layers} layers; RVC v1 voices read "
                    f"layer {V1_OUTPUT_LAYER}, so it needs at least {V1_OUTPUT_LAYER}"
                )

    def hidden_states(self, wav16k: Tensor, num_layers: int) -> Tensor:
        """Run the conv stack and the first `num_layers` transformer layers.

        wav16k: [B, N] float at 16 kHz -> [B, T, hidden_size]; `num_layers=0` gives the
        input of layer 1 (HF `hidden_states[0]`).
        """
        x = self.feature_extractor(wav16k)  # [B, T, C]
        x = self.feature_projection(self.feature_norm(x))
        x = self.encoder_norm(x + self.pos_conv(x))  # layer_norm_first = False
        for layer in self.layers[:num_layers]:
            x = layer(x)
        return x

    @torch.inference_mode()
    def extract(self, wav16k: Tensor, version: str) -> Tensor:
        """Content features for RVC.

        wav16k: [B, N] float waveform at 16 kHz, not normalised (RVC feeds it raw), at
        least `receptive_field` (400) samples. Returns [B, T, 256] for "v1"
        (final_proj of layer 9) or [B, T, hidden_size] for "v2" (last layer), with
        T = (N - 400) // 320 + 1 (20 ms frames), in this encoder's dtype and device.
        Runs under `torch.inference_mode`: the result is an inference tensor, so use it
        out of place (or `.clone()` it) outside inference mode.
        """
        self._check_version(version)
        if wav16k.dim() != 2:
            raise ValueError(f"expected a [batch, samples] waveform, got shape {tuple(wav16k.shape)}")
        if wav16k.shape[1] < self.config.receptive_field:
            raise AudioError(
                f"audio too short for the content encoder: {wav16k.shape[1]} samples at 16 kHz, "
                f"need at least {self.config.receptive_field}"
            )
        wav = wav16k.to(device=self.feature_projection.weight.device, dtype=torch.float32).contiguous()
        if version == "v1":
            assert self.final_proj is not None  # checked by _check_version
            return self.final_proj(self.hidden_states(wav, V1_OUTPUT_LAYER))
        return self.hidden_states(wav, self.config.num_layers)

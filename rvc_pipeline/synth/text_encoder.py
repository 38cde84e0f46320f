"""The synthesizer's prior encoder `enc_p` (rvc-formats.md §2.3 steps 2-3).

A VITS text encoder: content features (+ coarse pitch embedding) -> 6 post-LN transformer
layers with windowed relative-position attention -> (m_p, logs_p). Parameter names match
RVC's `TextEncoder` / `attentions.Encoder`, so the reference state dict loads strictly.
Everything works on [B, C, T] tensors; the mask is [B, 1, T].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Relative-position window of RVC's attention layers (attentions.Encoder window_size=10).
WINDOW_SIZE = 10
#: LayerNorm epsilon of RVC's `attentions.LayerNorm`.
LAYER_NORM_EPS = 1e-5
#: Leaky-ReLU slope after the input embedding.
EMBED_LRELU_SLOPE = 0.1
#: Number of coarse pitch bins (`emb_pitch` rows; coarse values are 1..255).
PITCH_BINS = 256
#: Score given to masked-out positions before the softmax (RVC's masked_fill value).
MASKED_SCORE = -1e4


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dim of a [B, C, T] tensor (params `gamma`, `beta`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.transpose(1, 2), self.gamma.shape, self.gamma, self.beta, LAYER_NORM_EPS)
        return y.transpose(1, 2)


def _diagonal_band(m: Tensor, window: int, first: int, last: int) -> Tensor:
    """View of m [..., T, T] rows first..last-1: out[..., i, r] = m[..., first + i, first + i + r - w].

    Valid for window <= first and last <= T - window (every r in range).
    """
    length = m.shape[-1]
    assert m.stride()[-2:] == (length, 1), "the band views need row-major [..., T, T] storage"
    lead = m.stride()[:-2]
    offset = m.storage_offset() + first * (length + 1) - window
    return m.as_strided((*m.shape[:-2], last - first, 2 * window + 1), (*lead, length + 1, 1), offset)


def _band_rows(t: int, window: int) -> list[tuple[int, int, int]]:
    """Rows whose band is clipped by the matrix edge, as (row, first r, last r + 1)."""
    rows = list(range(min(window, t))) + list(range(max(t - window, window), t))
    return [(i, max(0, window - i), min(2 * window + 1, t - i + window)) for i in rows]


def add_band_(matrix: Tensor, band: Tensor, window: int) -> Tensor:
    """In place: matrix[..., i, j] += band[..., i, j - i + w] for |j - i| <= w. Returns matrix.

    matrix [..., T, T] contiguous, band [..., T, 2w+1].
    """
    t = matrix.shape[-1]
    if t > 2 * window:
        _diagonal_band(matrix, window, window, t - window).add_(band[..., window : t - window, :])
    for i, r0, r1 in _band_rows(t, window):
        matrix[..., i, i + r0 - window : i + r1 - window] += band[..., i, r0:r1]
    return matrix


def take_band(matrix: Tensor, window: int) -> Tensor:
    """out[..., i, r] = matrix[..., i, i + r - w] (0 outside the matrix): [..., T, T] -> [..., T, 2w+1]."""
    t = matrix.shape[-1]
    out = matrix.new_zeros(*matrix.shape[:-1], 2 * window + 1)
    if t > 2 * window:
        out[..., window : t - window, :] = _diagonal_band(matrix, window, window, t - window)
    for i, r0, r1 in _band_rows(t, window):
        out[..., i, r0:r1] = matrix[..., i, i + r0 - window : i + r1 - window]
    return out


class RelativeMultiHeadAttention(nn.Module):
    """Self-attention with relative-position keys/values shared by all heads (window 10)."""

    def __init__(self, channels: int, n_heads: int, window: int = WINDOW_SIZE) -> None:
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"{channels} channels do not split into {n_heads} heads")
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window = window
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        scale = self.head_dim**-0.5
        self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window + 1, self.head_dim) * scale)
        self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window + 1, self.head_dim) * scale)

    def _heads(self, x: Tensor) -> Tensor:
        """[B, C, T] -> [B, heads, T, head_dim]."""
        b, _, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        """x [B, C, T], attn_mask [B, 1, T, T] (1 = attend; None: attend everywhere) -> [B, C, T]."""
        b, c, t = x.shape
        q = self._heads(self.conv_q(x)) / math.sqrt(self.head_dim)
        k = self._heads(self.conv_k(x))
        v = self._heads(self.conv_v(x))
        scores = q @ k.transpose(-2, -1)
        # Relative keys: q_i . E_k[w + (j - i)] for |j - i| <= w.
        rel_logits = q @ self.emb_rel_k.transpose(-2, -1).unsqueeze(0)  # [B, H, T, 2w+1]
        add_band_(scores, rel_logits, self.window)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask == 0, MASKED_SCORE)
        p = torch.softmax(scores, dim=-1)
        # Relative values: sum_j p_ij E_v[w + (j - i)].
        out = p @ v + take_band(p, self.window) @ self.emb_rel_v.unsqueeze(0)
        out = out.transpose(2, 3).reshape(b, c, t)
        return self.conv_o(out)


class FeedForward(nn.Module):
    """conv_1 (k, same padding) -> ReLU -> conv_2, each input masked (RVC's FFN)."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = torch.relu(self.conv_1(F.pad(x * mask, self.pad)))
        return self.conv_2(F.pad(h * mask, self.pad)) * mask


class Encoder(nn.Module):
    """Post-LN transformer: x = LN1(x + MHA(x)); x = LN2(x + FFN(x)); masked."""

    def __init__(self, channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(RelativeMultiHeadAttention(channels, n_heads) for _ in range(n_layers))
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            FeedForward(channels, filter_channels, kernel_size) for _ in range(n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, C, T], mask [B, 1, T] -> [B, C, T]."""
        # [B, 1, T, T]; None when nothing is padded (masking would change nothing).
        attn_mask = None if bool(mask.all()) else mask.unsqueeze(2) * mask.unsqueeze(-1)
        x = x * mask
        for attn, norm1, ffn, norm2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm1(x + attn(x, attn_mask))
            x = norm2(x + ffn(x, mask))
        return x * mask


class TextEncoder(nn.Module):
    """`enc_p`: phone [B, T, C_in] (+ pitch [B, T] long) -> (m_p, logs_p, mask)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        use_f0: bool,
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.emb_phone = nn.Linear(in_channels, hidden_channels)
        self.emb_pitch = nn.Embedding(PITCH_BINS, hidden_channels) if use_f0 else None
        self.encoder = Encoder(hidden_channels, filter_channels, n_heads, n_layers, kernel_size)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(self, phone: Tensor, pitch: Tensor | None, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return m_p, logs_p [B, out, T] and mask [B, 1, T] (dtype of phone)."""
        x = self.emb_phone(phone)
        if self.emb_pitch is not None:
            if pitch is None:
                raise ValueError("this synthesizer is pitch-guided: pitch is required")
            x = x + self.emb_pitch(pitch)
        x = F.leaky_relu(x * math.sqrt(self.hidden_channels), EMBED_LRELU_SLOPE).transpose(1, 2)
        t = x.shape[2]
        mask = (torch.arange(t, device=x.device)[None, :] < lengths[:, None]).unsqueeze(1).to(x.dtype)
        x = self.encoder(x * mask, mask)
        stats = self.proj(x) * mask
        m_p, logs_p = stats.split(self.out_channels, dim=1)
        return m_p, logs_p, mask

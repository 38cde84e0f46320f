"""The HiFi-GAN decoder `dec` (rvc-formats.md §2.5): GeneratorNSF and the plain Generator.

z [B, 192, T] at 100 Hz -> waveform [B, 1, T * hop] in [-1, 1]. The NSF variant adds the
harmonic source, downsampled by `noise_convs`, after every upsampling stage. Weight norm is
folded at load, so every layer is a plain conv.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fastconv
from .nsf import SourceModuleHnNSF

#: Leaky-ReLU slope inside the decoder (RVC modules.LRELU_SLOPE).
LRELU_SLOPE = 0.1
#: Slope of the exit leaky ReLU: RVC calls F.leaky_relu(x) with PyTorch's default.
EXIT_LRELU_SLOPE = 0.01


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the length for an odd kernel (RVC commons.get_padding)."""
    return (kernel_size * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs with residuals: x += c2(lrelu(c1(lrelu(x))))."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size)) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, 1, N] channels-last -> same shape and layout."""
        for c1, c2 in zip(self.convs1, self.convs2):
            t = fastconv.conv1d(F.leaky_relu(x, LRELU_SLOPE), c1)
            t = fastconv.conv1d(F.leaky_relu_(t, LRELU_SLOPE), c2)
            x = t.add_(x)
        return x


class ResBlock2(nn.Module):
    """Two dilated convs with residuals: x += c(lrelu(x)) (resblock "2"; dilations[:2])."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d))
            for d in tuple(dilations)[:2]
        )

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, 1, N] channels-last -> same shape and layout."""
        for c in self.convs:
            x = fastconv.conv1d(F.leaky_relu(x, LRELU_SLOPE), c).add_(x)
        return x


class Generator(nn.Module):
    """`dec`: GeneratorNSF when `sample_rate` is given (pitch-guided), else Generator."""

    def __init__(
        self,
        initial_channel: int,
        resblock: str,
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        upsample_rates: Sequence[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: Sequence[int],
        gin_channels: int,
        sample_rate: int | None = None,
    ) -> None:
        super().__init__()
        if resblock not in ("1", "2"):
            raise ValueError(f"unknown resblock type {resblock!r}; expected '1' or '2'")
        block_cls = ResBlock1 if resblock == "1" else ResBlock2
        self.num_kernels = len(resblock_kernel_sizes)
        self.upp = math.prod(upsample_rates)
        self.conv_pre = nn.Conv1d(initial_channel, upsample_initial_channel, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        self.m_source = SourceModuleHnNSF(sample_rate) if sample_rate is not None else None
        self.noise_convs = nn.ModuleList() if sample_rate is not None else None
        ch = upsample_initial_channel
        for s, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            ch = upsample_initial_channel // 2 ** (s + 1)
            self.ups.append(nn.ConvTranspose1d(upsample_initial_channel // 2**s, ch, k, u, padding=(k - u) // 2))
            if self.noise_convs is not None:
                # Downsample the source to this stage's rate: stride = prod(rates[s+1:]).
                stride = math.prod(upsample_rates[s + 1 :])
                if s + 1 < len(upsample_rates):
                    self.noise_convs.append(nn.Conv1d(1, ch, 2 * stride, stride, padding=stride // 2))
                else:
                    self.noise_convs.append(nn.Conv1d(1, ch, 1))
            for k_r, d_r in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(block_cls(ch, k_r, d_r))
        self.conv_post = nn.Conv1d(ch, 1, 7, padding=3, bias=False)
        self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)

    def forward(self, z: Tensor, g: Tensor, har_source: Tensor | None = None) -> Tensor:
        """z [B, C, T], g [B, gin, 1], har_source [B, 1, T * upp] (NSF) -> [B, 1, T * upp]."""
        if (har_source is None) != (self.noise_convs is None):
            raise ValueError("har_source must be given exactly when the decoder is pitch-guided")
        # Work in channels-last [B, C, 1, N] (see fastconv); convert back at the end.
        x = fastconv.to_channels_last(self.conv_pre(z) + self.cond(g))
        source = har_source.unsqueeze(2) if har_source is not None else None
        for s, up in enumerate(self.ups):
            x = fastconv.conv_transpose1d(F.leaky_relu(x, LRELU_SLOPE), up)
            if self.noise_convs is not None:
                x = x.add_(fastconv.conv1d(source, self.noise_convs[s]))
            blocks = self.resblocks[s * self.num_kernels : (s + 1) * self.num_kernels]
            acc = blocks[0](x)
            for block in blocks[1:]:
                acc = acc.add_(block(x))
            x = acc.div_(self.num_kernels)
        x = fastconv.conv1d(F.leaky_relu_(x, EXIT_LRELU_SLOPE), self.conv_post)
        return torch.tanh(fastconv.from_channels_last(x))

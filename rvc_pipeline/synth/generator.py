"""The HiFi-GAN decoder `dec` (rvc-formats.md §2.5): GeneratorNSF and the plain Generator.

z [B, 192, T] at 100 Hz -> waveform [B, 1, T * hop] in [-1, 1]. The NSF variant adds the
harmonic source, downsampled by `noise_convs`, after every upsampling stage. Weight norm is
folded at load, so every layer is a plain conv.

On the CPU in fp32 the residual blocks run through `fastconv` (DFT / channels-last
convolutions) over time chunks with an exact receptive-field halo; elsewhere they call
the conv modules directly. Both compute the reference's function.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fastconv
from .nsf import SourceModuleHnNSF

#: Leaky-ReLU slope inside the decoder (RVC modules.LRELU_SLOPE).
LRELU_SLOPE = 0.1
#: Slope of the exit leaky ReLU: RVC calls F.leaky_relu(x) with PyTorch's default.
EXIT_LRELU_SLOPE = 0.01
#: On the CPU fast path, residual blocks run over time chunks of about this many values
#: (channels x samples) so their intermediates stay in cache; each chunk carries its
#: blocks' receptive-field halo on both sides, so the result is the same as unchunked.
CHUNK_VALUES = 1 << 22

#: How a residual block applies one of its convs: (conv, x) -> conv(x).
ConvFn = Callable[[nn.Conv1d, Tensor], Tensor]


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

    @property
    def halo(self) -> int:
        """Samples of context each side that one output sample depends on."""
        return sum(c1.padding[0] + c2.padding[0] for c1, c2 in zip(self.convs1, self.convs2))

    def forward(self, x: Tensor, conv: ConvFn = fastconv.plain_conv) -> Tensor:
        """x [B, C, N] -> [B, C, N] (a new tensor; x is not modified)."""
        for c1, c2 in zip(self.convs1, self.convs2):
            t = conv(c1, F.leaky_relu(x, LRELU_SLOPE))
            t = conv(c2, F.leaky_relu_(t, LRELU_SLOPE))
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

    @property
    def halo(self) -> int:
        """Samples of context each side that one output sample depends on."""
        return sum(c.padding[0] for c in self.convs)

    def forward(self, x: Tensor, conv: ConvFn = fastconv.plain_conv) -> Tensor:
        """x [B, C, N] -> [B, C, N] (a new tensor; x is not modified)."""
        for c in self.convs:
            x = conv(c, F.leaky_relu(x, LRELU_SLOPE)).add_(x)
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
        x = self.conv_pre(z) + self.cond(g)
        for s in range(len(self.ups)):
            x = self.stage(s, x, har_source)
        x = self.conv_post(F.leaky_relu_(x, EXIT_LRELU_SLOPE).contiguous())
        return torch.tanh(x)

    def stage(self, s: int, x: Tensor, har_source: Tensor | None) -> Tensor:
        """Upsampling stage s: lrelu -> ups[s] (+ noise_convs[s](source)) -> mean of its resblocks."""
        x = self.ups[s](F.leaky_relu(x, LRELU_SLOPE))
        if self.noise_convs is not None:
            x = x.add_(self.noise_convs[s](har_source))
        blocks = self.resblocks[s * self.num_kernels : (s + 1) * self.num_kernels]
        if not fastconv.fast_path(x):
            return self._resblocks(blocks, x, fastconv.plain_conv)
        time_major = x.shape[1] < fastconv.TIME_MAJOR_BELOW
        if time_major:
            x = fastconv.to_time_major(x)
        conv = fastconv.Convolver(time_major)
        halo = max(block.halo for block in blocks)
        length = x.shape[-1]
        chunk = max(CHUNK_VALUES // x.shape[1], 4 * halo)
        if length <= chunk + 2 * halo:
            return self._resblocks(blocks, x, conv)
        out = torch.empty_like(x)
        for a in range(0, length, chunk):
            b = min(a + chunk, length)
            lo, hi = max(a - halo, 0), min(b + halo, length)
            out[..., a:b] = self._resblocks(blocks, x[..., lo:hi], conv)[..., a - lo : b - lo]
        return out

    def _resblocks(self, blocks: nn.ModuleList, x: Tensor, conv: ConvFn) -> Tensor:
        """Mean of the stage's residual blocks applied to x."""
        acc = blocks[0](x, conv)
        for block in blocks[1:]:
            acc = acc.add_(block(x, conv))
        return acc.div_(self.num_kernels)

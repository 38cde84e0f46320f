"""Applio's "RefineGAN" decoder `dec` (Applio rvc/lib/algorithm/generators/refinegan.py).

z [B, 192, T] at 100 Hz -> waveform [B, 1, T * hop] in [-1, 1], for Applio's 24/32/40/48 kHz
configs (hop 240/320/400/480; the tensor shapes do not depend on the rate). A U-Net over
the harmonic source:

- source: F0 linearly interpolated to the output rate, one sine (harmonic_num 0) gated by
  voicing plus noise, merged by `m_source.merge.0` ([1, 1], no bias) and tanh;
- down path: `pre_conv` (1 -> 16, k7), then per stage: lrelu, keep a copy (the skip),
  windowed-sinc decimation by the reversed upsample rate (torchaudio's "kaiser_best"
  resampler, reimplemented here), `downsample_blocks.s` (c -> 2c, k7);
- `mel_conv(z) + cond(g)` (192 -> 256) concatenated before the down path's output;
- up path: per stage lrelu, linear upsampling by the rate, concat with the skip,
  `upsample_conv_blocks.s`: input_conv (k7) then the mean of three
  AdaIN -> ResBlock(k 3/7/11, dilations 1/3/5) -> AdaIN branches;
- lrelu, `conv_post` (no bias), tanh. Every leaky ReLU has slope 0.2.

AdaIN adds N(0, 1) * weight per channel before its leaky ReLU; that noise comes from the
caller's `noise` function (seeded per conversion), as does the source's.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nsf import NOISE_STD, SINE_AMP, VOICED_THRESHOLD, gaussian_noise

#: Leaky-ReLU slope everywhere in the decoder (RefineGANGenerator leaky_relu_slope default).
LRELU_SLOPE = 0.2
#: Channels of the U-Net's input path: synthesizers.py passes start_channels=16.
START_CHANNELS = 16
#: Channels at the top of the up path: RefineGANGenerator's default, which synthesizers.py
#: does not override (the config's upsample_initial_channel is 512 as well).
UPSAMPLE_INITIAL_CHANNEL = 512
#: Input width of `cond`: Applio hard-codes Conv1d(256, ...).
COND_CHANNELS = 256
#: Kernel sizes of a ParallelResBlock's branches and its ResBlocks' dilations.
PARALLEL_KERNEL_SIZES = (3, 7, 11)
RESBLOCK_DILATIONS = (1, 3, 5)
#: torchaudio.functional.resample arguments Applio uses to decimate the source path
#: ("kaiser_best": sinc_interp_kaiser, 64 zero crossings, rolloff, beta).
RESAMPLE_LOWPASS_FILTER_WIDTH = 64
RESAMPLE_ROLLOFF = 0.9475937167399596
RESAMPLE_BETA = 14.769656459379492
#: Frames of context each side that an output frame depends on, rounded up with margin:
#: the last decimation (to the frame rate) reaches 64 / rolloff = 67.6 frames; the down
#: path before it (decimation filters, k7 convs) < 8 frames; mel_conv 3 frames and the
#: up path's ResBlocks (k11, dilations 1/3/5: 60 samples at >= 10 samples/frame) ~ 7.
HALO_FRAMES = 96
#: Layers Applio wraps in weight norm (saved as `.weight_g` / `.weight_v`), relative to `dec.`.
WEIGHT_NORMED = re.compile(
    r"^(pre_conv|downsample_blocks\.\d+|mel_conv|conv_post"
    r"|upsample_conv_blocks\.\d+\.blocks\.\d+\.1\.convs[12]\.\d+)$"
)

#: Draws N(0, 1) noise shaped like its argument (AdaIN's noise; seeded by the caller).
NoiseFn = Callable[[Tensor], Tensor]


def unseeded_noise(like: Tensor) -> Tensor:
    """N(0, 1) noise like `like` from torch's global generator."""
    return gaussian_noise(tuple(like.shape), None, like.device, like.dtype)


@functools.lru_cache(maxsize=32)
def _sinc_kernel(orig: int, new: int) -> tuple[Tensor, int]:
    """torchaudio's sinc_interp_kaiser resampling kernel [new, 1, 2 * width + orig] (float64)."""
    base = min(orig, new) * RESAMPLE_ROLLOFF
    width = math.ceil(RESAMPLE_LOWPASS_FILTER_WIDTH * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64) / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None] / new + idx[None, :]) * base
    t = t.clamp(-RESAMPLE_LOWPASS_FILTER_WIDTH, RESAMPLE_LOWPASS_FILTER_WIDTH)
    beta = torch.tensor(RESAMPLE_BETA, dtype=torch.float32)  # torchaudio holds beta (and i0(beta)) in float32
    window = torch.i0(beta.double() * torch.sqrt(1 - (t / RESAMPLE_LOWPASS_FILTER_WIDTH) ** 2)) / torch.i0(beta).double()
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    return (sinc * window * (base / orig)).unsqueeze(1), width


def resample(x: Tensor, orig_freq: int, new_freq: int) -> Tensor:
    """torchaudio.functional.resample(x, orig_freq, new_freq, kaiser_best arguments) over the
    last axis of [B, C, N]: zero padding, strided conv with the kernel, ceil(N * new / orig) out."""
    if orig_freq == new_freq:
        return x
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    kernel, width = _sinc_kernel(orig, new)
    batch, channels, length = x.shape
    work = torch.promote_types(x.dtype, torch.float32)  # a 2 * 676-tap sum loses too much in fp16/bf16
    flat = F.pad(x.reshape(batch * channels, 1, length).to(work), (width, width + orig))
    out = F.conv1d(flat, kernel.to(x.device, work), stride=orig)
    out = out.transpose(1, 2).reshape(batch * channels, -1)[:, : math.ceil(new * length / orig)]
    return out.reshape(batch, channels, -1).to(x.dtype)


def interpolated_f0(f0: Tensor, upp: int) -> Tensor:
    """[B, T] F0 -> [B, T * upp] float64, linear interpolation (align_corners=False) as Applio's
    F.interpolate(f0.unsqueeze(1), size=T * upp, mode="linear")."""
    work = f0.to("cpu" if f0.device.type == "mps" else f0.device, torch.float64)  # no float64 on MPS
    return F.interpolate(work.unsqueeze(1), size=f0.shape[-1] * upp, mode="linear").squeeze(1)


def sine_excitation(f0: Tensor, upp: int, sample_rate: int, generator: torch.Generator | None = None) -> Tensor:
    """Applio's SineGenerator (harmonic_num 0): [B, T] F0 in Hz -> e [B, T * upp] float32.

    With f the interpolated F0: e = SINE_AMP * sin(2 pi cumsum(f / sr mod 1)) * uv + noise,
    uv = f > 0, noise ~ N(0, 1) * (NOISE_STD where voiced, SINE_AMP / 3 where not). The
    phase is accumulated in float64.
    """
    f = interpolated_f0(f0, upp)
    phase = torch.remainder(torch.cumsum(torch.remainder(f / sample_rate, 1.0), dim=1), 1.0)
    sine = (SINE_AMP * torch.sin(phase * (2 * math.pi))).to(f0.device, torch.float32)
    uv = (f > VOICED_THRESHOLD).to(f0.device, torch.float32)
    noise_amp = uv * NOISE_STD + (1 - uv) * (SINE_AMP / 3)
    return sine * uv + noise_amp * gaussian_noise(tuple(sine.shape), generator, sine.device, torch.float32)


class RefineSource(nn.Module):
    """`dec.m_source`: har_source = tanh(merge.0 * e) as [B, 1, T * upp]."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.merge = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Tanh())

    def forward(self, f0: Tensor, upp: int, generator: torch.Generator | None = None) -> Tensor:
        """f0 [B, T] Hz -> har_source [B, 1, T * upp] in the layer's dtype."""
        e = sine_excitation(f0, upp, self.sample_rate, generator)
        w = self.merge[0].weight
        return torch.tanh(e.to(w.dtype) * w[0, 0]).unsqueeze(1)


class AdaIN(nn.Module):
    """lrelu(x + N(0, 1) * weight[c]) (`blocks.j.0` / `blocks.j.2`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor, noise: NoiseFn) -> Tensor:
        """x [B, C, N] -> [B, C, N]."""
        return F.leaky_relu(x + noise(x) * self.weight[None, :, None], LRELU_SLOPE)


class ResBlock(nn.Module):
    """Three (dilated conv, conv) pairs with residuals: x += c2(lrelu(c1(lrelu(x)))) (`blocks.j.1`)."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int] = RESBLOCK_DILATIONS) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=(kernel_size * d - d) // 2)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, N] -> [B, C, N]."""
        for c1, c2 in zip(self.convs1, self.convs2):
            x = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE)) + x
        return x


class NoisyResBlock(nn.Sequential):
    """AdaIN -> ResBlock -> AdaIN, keyed 0/1/2 like Applio's nn.Sequential."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__(AdaIN(channels), ResBlock(channels, kernel_size), AdaIN(channels))

    def forward(self, x: Tensor, noise: NoiseFn) -> Tensor:  # type: ignore[override]
        """x [B, C, N] -> [B, C, N]."""
        return self[2](self[1](self[0](x, noise)), noise)


class ParallelResBlock(nn.Module):
    """input_conv (k7) then the mean of the three NoisyResBlock branches (k 3, 7, 11)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.input_conv = nn.Conv1d(in_channels, out_channels, 7, padding=3)
        self.blocks = nn.ModuleList(NoisyResBlock(out_channels, k) for k in PARALLEL_KERNEL_SIZES)

    def forward(self, x: Tensor, noise: NoiseFn) -> Tensor:
        """x [B, C_in, N] -> [B, C_out, N]."""
        x = self.input_conv(x)
        acc = self.blocks[0](x, noise)
        for block in self.blocks[1:]:
            acc = acc + block(x, noise)
        return acc / len(self.blocks)


class RefineGANGenerator(nn.Module):
    """`dec` of a "RefineGAN" voice (pitch-guided only)."""

    #: Weight-normed layers of this decoder (for `export_state_dict`), relative to `dec.`.
    weight_normed = WEIGHT_NORMED
    #: Frames of context the synthesizer keeps around a partially decoded window.
    halo_frames = HALO_FRAMES

    def __init__(
        self,
        initial_channel: int,
        upsample_rates: Sequence[int],
        sample_rate: int,
        upsample_initial_channel: int = UPSAMPLE_INITIAL_CHANNEL,
        gin_channels: int = COND_CHANNELS,
    ) -> None:
        super().__init__()
        n = len(upsample_rates)
        # The skips must be a quarter of the up path: start * 2**n == upsample_initial_channel / 2.
        start = upsample_initial_channel // 2 ** (n + 1)
        if start < 1 or start * 2 ** (n + 1) != upsample_initial_channel:
            raise ValueError(f"RefineGAN needs upsample_initial_channel divisible by 2**{n + 1}, "
                             f"got {upsample_initial_channel}")
        self.upsample_rates = tuple(upsample_rates)
        self.upp = math.prod(upsample_rates)
        self.m_source = RefineSource(sample_rate)
        self.pre_conv = nn.Conv1d(1, start, 7, padding=3)
        # Per down stage, the source path goes from `size` to `size / rate` samples per frame,
        # the rates taken in reverse (downsample_rates = upsample_rates[::-1]).
        self.down_sizes: list[tuple[int, int]] = []
        self.downsample_blocks = nn.ModuleList()
        size, channels = self.upp, start
        for rate in reversed(self.upsample_rates):
            self.down_sizes.append((size, size // rate))
            size //= rate
            self.downsample_blocks.append(nn.Conv1d(channels, 2 * channels, 7, padding=3))
            channels *= 2
        self.mel_conv = nn.Conv1d(initial_channel, upsample_initial_channel // 2, 7, padding=3)
        self.cond = nn.Conv1d(gin_channels, upsample_initial_channel // 2, 1)
        self.upsample_conv_blocks = nn.ModuleList()
        channels = upsample_initial_channel
        for _ in self.upsample_rates:
            self.upsample_conv_blocks.append(ParallelResBlock(channels + channels // 4, channels // 2))
            channels //= 2
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3, bias=False)

    def forward(self, z: Tensor, g: Tensor, har_source: Tensor, noise: NoiseFn | None = None) -> Tensor:
        """z [B, C, T], g [B, gin, 1], har_source [B, 1, T * upp] -> [B, 1, T * upp].

        `noise(x)` gives AdaIN's N(0, 1) noise shaped like x (default: torch's global RNG).
        """
        noise = noise or unseeded_noise
        frames = z.shape[-1]
        x = self.pre_conv(har_source)
        skips = []
        for block, (size, new_size) in zip(self.downsample_blocks, self.down_sizes):
            x = F.leaky_relu(x, LRELU_SLOPE)
            skips.append(x)
            x = block(resample(x.contiguous(), frames * size, frames * new_size))
        x = torch.cat([self.mel_conv(z) + self.cond(g), x], dim=1)
        for rate, block, skip in zip(self.upsample_rates, self.upsample_conv_blocks, reversed(skips)):
            x = F.interpolate(F.leaky_relu(x, LRELU_SLOPE), scale_factor=rate, mode="linear")
            x = block(torch.cat([x, skip], dim=1), noise)
        return torch.tanh(self.conv_post(F.leaky_relu(x, LRELU_SLOPE)))

"""Applio's "MRF HiFi-GAN" decoder `dec` (Applio rvc/lib/algorithm/generators/hifigan_mrf.py).

z [B, 192, T] at 100 Hz -> waveform [B, 1, T * hop] in [-1, 1], for Applio's 24/32/40/48 kHz
configs (hop 240/320/400/480). Layout: `dec.conv_pre`, `dec.upsamples.s` (transposed convs),
`dec.noise_convs.s`, `dec.mrfs.s.j.layers.d.{conv1,conv2}`, `dec.conv_post` (with a bias),
`dec.cond` and `dec.m_source.l_linear` [1, 9]. Weight norm is folded at load, so every layer
here is a plain conv.

Differences from RVC's GeneratorNSF (generator.py): the NSF source has 8 overtones (9
sines, each overtone with a random initial phase), each residual "MRF layer" is
x + conv2(lrelu(conv1(lrelu(x)))) with a dilated conv1 and an undilated conv2, and the
odd-rate padding rule of Applio's upsamplers is kept.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nsf import NOISE_STD, SINE_AMP, VOICED_THRESHOLD, gaussian_noise, sine_phase

#: Leaky-ReLU slope inside the decoder (hifigan_mrf.py LRELU_SLOPE).
LRELU_SLOPE = 0.1
#: Slope of the exit leaky ReLU: Applio calls F.leaky_relu(x) with PyTorch's default.
EXIT_LRELU_SLOPE = 0.01
#: Overtones of the NSF source: synthesizers.py builds HiFiGANMRFGenerator(harmonic_num=8).
HARMONIC_NUM = 8
#: Frames of context each side that an output frame depends on, rounded up with margin:
#: conv_pre k7 (3 frames), the first upsampler (~1) and its MRF blocks (k11, dilations
#: 1/3/5 plus undilated conv2: 60 samples at 10 samples/frame = 6); later stages < 1.
HALO_FRAMES = 24
#: Layers Applio wraps in weight norm (saved as `.weight_g` / `.weight_v`), relative to `dec.`.
WEIGHT_NORMED = re.compile(r"^(conv_pre|upsamples\.\d+|mrfs\.\d+\.\d+\.layers\.\d+\.conv[12]|conv_post)$")


def uniform_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """U[0, 1) noise drawn (in float32) from `generator`, which may live on another device."""
    gen_device = generator.device if generator is not None else device
    noise = torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


def harmonic_excitation(
    f0: Tensor, upp: int, sample_rate: int, harmonic_num: int, generator: torch.Generator | None = None
) -> Tensor:
    """SineGenerator output: [B, T] F0 in Hz -> [B, harmonic_num + 1, T * upp] float32.

    Harmonic k (k = 0 the fundamental) is sin(2 pi (phi_k + cumsum((k+1) f0 / sr mod 1)))
    * SINE_AMP over the nearest-upsampled F0, phi_0 = 0 and phi_k ~ U[0, 1) otherwise;
    gated by voicing (f0 > 0) plus Gaussian noise (std NOISE_STD voiced, SINE_AMP / 3
    unvoiced), drawn independently per harmonic. Draws: phases, then noise.
    """
    batch, dim = f0.shape[0], harmonic_num + 1
    initial = uniform_noise((batch, dim), generator, f0.device, torch.float32)
    initial[:, 0] = 0
    phases = torch.stack([sine_phase(f0 * (k + 1), upp, sample_rate) for k in range(dim)], dim=1)
    sines = SINE_AMP * torch.sin((phases + initial.unsqueeze(-1)) * (2 * math.pi))
    uv = (f0 > VOICED_THRESHOLD).to(torch.float32).repeat_interleave(upp, dim=1).unsqueeze(1)
    noise_amp = uv * NOISE_STD + (1 - uv) * (SINE_AMP / 3)
    noise = noise_amp * gaussian_noise(tuple(sines.shape), generator, sines.device, torch.float32)
    return sines * uv + noise


class HarmonicSourceNSF(nn.Module):
    """`dec.m_source`: har_source = tanh(l_linear(9 sines + noise)) as [B, 1, T * upp]."""

    def __init__(self, sample_rate: int, harmonic_num: int = HARMONIC_NUM) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.harmonic_num = harmonic_num
        self.l_linear = nn.Linear(harmonic_num + 1, 1)

    def forward(self, f0: Tensor, upp: int, generator: torch.Generator | None = None) -> Tensor:
        """f0 [B, T] Hz -> har_source [B, 1, T * upp] in the layer's dtype."""
        e = harmonic_excitation(f0, upp, self.sample_rate, self.harmonic_num, generator)
        w = self.l_linear.weight
        merged = torch.einsum("bkn,k->bn", e.to(w.dtype), w[0]) + self.l_linear.bias[0]
        return torch.tanh(merged).unsqueeze(1)


class MRFLayer(nn.Module):
    """x + conv2(lrelu(conv1(lrelu(x)))): conv1 dilated by d, conv2 undilated, both k."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                               padding=(kernel_size * dilation - dilation) // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, N] -> [B, C, N]."""
        y = self.conv1(F.leaky_relu(x, LRELU_SLOPE))
        return x + self.conv2(F.leaky_relu(y, LRELU_SLOPE))


class MRFBlock(nn.Module):
    """MRF layers of one kernel size applied in sequence (`mrfs.s.j.layers.d`)."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MRFLayer(channels, kernel_size, d) for d in dilations)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, N] -> [B, C, N]."""
        for layer in self.layers:
            x = layer(x)
        return x


class MRFGenerator(nn.Module):
    """`dec` of an "MRF HiFi-GAN" voice (pitch-guided only)."""

    #: Weight-normed layers of this decoder (for `export_state_dict`), relative to `dec.`.
    weight_normed = WEIGHT_NORMED
    #: Frames of context the synthesizer keeps around a partially decoded window.
    halo_frames = HALO_FRAMES

    def __init__(
        self,
        initial_channel: int,
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        upsample_rates: Sequence[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: Sequence[int],
        gin_channels: int,
        sample_rate: int,
        harmonic_num: int = HARMONIC_NUM,
    ) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.upp = math.prod(upsample_rates)
        self.m_source = HarmonicSourceNSF(sample_rate, harmonic_num)
        self.conv_pre = nn.Conv1d(initial_channel, upsample_initial_channel, 7, padding=3)
        self.upsamples = nn.ModuleList()
        self.noise_convs = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        ch = upsample_initial_channel
        for s, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            ch = upsample_initial_channel // 2 ** (s + 1)
            # Applio: even rates pad (k - u) / 2; odd ones pad u // 2 + 1 with output_padding 1.
            padding = (k - u) // 2 if u % 2 == 0 else u // 2 + u % 2
            self.upsamples.append(nn.ConvTranspose1d(upsample_initial_channel // 2**s, ch, k, u,
                                                     padding=padding, output_padding=u % 2))
            stride = math.prod(upsample_rates[s + 1:])
            kernel = 1 if stride == 1 else 2 * stride - stride % 2
            self.noise_convs.append(nn.Conv1d(1, ch, kernel, stride, padding=0 if stride == 1 else (kernel - stride) // 2))
            self.mrfs.append(nn.ModuleList(
                MRFBlock(ch, k_r, d_r) for k_r, d_r in zip(resblock_kernel_sizes, resblock_dilation_sizes)
            ))
        self.conv_post = nn.Conv1d(ch, 1, 7, padding=3)
        self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)

    def forward(self, z: Tensor, g: Tensor, har_source: Tensor) -> Tensor:
        """z [B, C, T], g [B, gin, 1], har_source [B, 1, T * upp] -> [B, 1, T * upp]."""
        x = self.conv_pre(z) + self.cond(g)
        for ups, noise_conv, blocks in zip(self.upsamples, self.noise_convs, self.mrfs):
            x = ups(F.leaky_relu(x, LRELU_SLOPE)) + noise_conv(har_source)
            acc = blocks[0](x)
            for block in blocks[1:]:
                acc = acc + block(x)
            x = acc / self.num_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x, EXIT_LRELU_SLOPE)))

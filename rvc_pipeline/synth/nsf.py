"""The NSF harmonic source `dec.m_source` (rvc-formats.md §2.4).

RVC's SineGen + SourceModuleHnNSF with harmonic_num 0: a sine at the frame F0 (held
constant within each 10 ms frame), gated by voicing, plus Gaussian noise, merged by a
1x1 linear layer and tanh. The phase is accumulated in float64 (per-frame cumulative
phase mod 1, then within-frame increments), so long inputs do not drift; the reference's
float32 cumsum with integer wrap corrections computes the same sin(2*pi*sum f0/sr).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: SineGen defaults used by RVC's SourceModuleHnNSF (harmonic_num 0 -> one sine).
SINE_AMP = 0.1
NOISE_STD = 0.003
VOICED_THRESHOLD = 0.0
HARMONIC_NUM = 0


def gaussian_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """N(0, 1) noise drawn (in float32) from `generator`, which may live on another device."""
    gen_device = generator.device if generator is not None else device
    noise = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


def sine_phase(f0: Tensor, upp: int, sample_rate: int) -> Tensor:
    """Phase in cycles, mod 1: [B, T] F0 in Hz -> [B, T * upp] float32.

    Sample k = i * upp + j (frame i, offset j) has phase
    upp * sum_{n<i} rad[n] + (j + 1) * rad[i], with rad = (f0 / sr) mod 1, i.e. the
    inclusive cumulative sum of the nearest-upsampled increments.
    """
    work_device = torch.device("cpu") if f0.device.type == "mps" else f0.device  # no float64 on MPS
    rad = torch.remainder(f0.to(work_device, torch.float64) / sample_rate, 1.0)  # [B, T]
    frame_total = rad * upp
    start = torch.remainder(torch.cumsum(frame_total, dim=1) - frame_total, 1.0)  # phase before frame i
    steps = torch.arange(1, upp + 1, device=work_device, dtype=torch.float64)
    phase = torch.remainder(start.unsqueeze(-1) + rad.unsqueeze(-1) * steps, 1.0)  # [B, T, upp]
    return phase.reshape(f0.shape[0], -1).to(f0.device, torch.float32)


def harmonic_excitation(
    f0: Tensor, upp: int, sample_rate: int, generator: torch.Generator | None = None
) -> Tensor:
    """SineGen output e = sine * uv + noise: [B, T] F0 in Hz -> [B, T * upp] float32."""
    phase = sine_phase(f0, upp, sample_rate)
    sine = SINE_AMP * torch.sin(phase * (2 * math.pi))
    uv = (f0 > VOICED_THRESHOLD).to(torch.float32).repeat_interleave(upp, dim=1)
    noise_amp = uv * NOISE_STD + (1 - uv) * (SINE_AMP / 3)
    noise = noise_amp * gaussian_noise(tuple(sine.shape), generator, sine.device, torch.float32)
    return sine * uv + noise


class SourceModuleHnNSF(nn.Module):
    """`dec.m_source`: har_source = tanh(l_linear(e)) as [B, 1, T * upp]."""

    def __init__(self, sample_rate: int, harmonic_num: int = HARMONIC_NUM) -> None:
        super().__init__()
        if harmonic_num != 0:
            raise ValueError("only harmonic_num 0 (RVC's NSF source) is implemented")
        self.sample_rate = sample_rate
        self.l_linear = nn.Linear(harmonic_num + 1, 1)

    def forward(self, f0: Tensor, upp: int, generator: torch.Generator | None = None) -> Tensor:
        """f0 [B, T] Hz -> har_source [B, 1, T * upp] in the layer's dtype."""
        e = harmonic_excitation(f0, upp, self.sample_rate, generator)
        w = self.l_linear.weight
        return torch.tanh(e.to(w.dtype).unsqueeze(1) * w[0, 0] + self.l_linear.bias[0])

"""Fast 1-D convolutions for the decoder's residual blocks on the CPU (fp32).

The residual blocks are ~97% of the synthesizer's arithmetic (about 90 GFLOP per second of
40 kHz audio). Two techniques, exact to fp32 rounding, make them cheaper than PyTorch's
default [B, C, N] direct convolution:

* `dft_conv1d` for wide kernels: block convolution in the frequency domain with every
  step a plain GEMM. Non-overlapping input segments of L samples are transformed by a
  real DFT matrix (circular length L + k - 1, so nothing wraps around), channels are
  mixed per frequency bin by one batched real GEMM (the complex product written as a
  real 2x2 block matrix), and an inverse DFT matrix plus overlap-add gives the output.
  Cost per output sample is ~(4 * C_in * bins / L + transforms) multiply-adds instead
  of C_in * k. Dilation d is handled by polyphase splitting (a dilated conv is an
  undilated one on each of the d interleaved sub-sequences). Agrees with direct
  convolution to ~1e-6 relative.
* channels-last direct convolution for narrow layers: oneDNN runs [B, C, 1, N]
  channels-last conv2d without reordering, 1.3-2x faster than [B, C, N] at <= 64 channels.

Single-thread timings on a 2-core AVX2 CPU, ms per conv (direct [B,C,N] / channels-last /
DFT): k=3, C=128, 40k samples: 55 / 42 / 61; k=7: C=128 103 / 92 / 73, C=64 (80k) 52 /
46 / 43; k=11: C=256 (8k) 133 / 136 / 60, C=128 208 / 144 / 80, C=64 101 / 73 / 47, C=32
(160k) 63 / 37 / 34. Mixing layouts costs more than it saves, so a decoder stage keeps
one layout: wide stages (>= 64 channels) channel-major (DFT for k >= 5, direct for k = 3)
and narrow stages time-major (channels-last direct). `Convolver` applies that per stage;
other devices and dtypes use the plain modules.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Decoder stages narrower than this run time-major (channels-last direct convolution).
TIME_MAJOR_BELOW = 64
#: The DFT path is used for kernels of at least this size on at least this many channels.
DFT_MIN_KERNEL = 5
DFT_MIN_CHANNELS = 64
#: Input samples per DFT segment (circular length L + k - 1).
DFT_SEGMENT = 22
#: Input samples (per channel) transformed per step, so the intermediates stay in cache.
DFT_CHUNK_SAMPLES = 16384
#: Shortest input (samples per phase) worth the DFT path's fixed costs.
DFT_MIN_LENGTH = 512


def fast_path(x: Tensor) -> bool:
    """Whether the CPU fp32 kernels apply to x (other devices/dtypes: plain conv1d)."""
    return x.device.type == "cpu" and x.dtype == torch.float32


def to_time_major(x: Tensor) -> Tensor:
    """[B, C, N] -> the same values stored time-major (channels-last strides)."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last).squeeze(2)


def plain_conv(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """The default convolution: the module itself."""
    return conv(x)


class Convolver:
    """Applies a decoder stage's convs with the fast CPU kernels, for one forward call.

    Time-major stages use channels-last direct convolution; channel-major stages use the
    DFT path for kernels >= DFT_MIN_KERNEL on >= DFT_MIN_CHANNELS channels (its per-bin
    kernel matrices are computed once per call and reused across time chunks), else
    direct convolution. Holds no state beyond one call, so concurrent calls are safe.
    """

    def __init__(self, time_major: bool) -> None:
        self.time_major = time_major
        self._mats: dict[int, Tensor] = {}

    def __call__(self, conv: nn.Conv1d, x: Tensor) -> Tensor:
        """conv(x) for x [B, C, N] in this stage's layout -> [B, O, N] in the same layout."""
        if self.time_major:
            y = F.conv2d(
                x.unsqueeze(2),
                conv.weight.unsqueeze(2),
                conv.bias,
                stride=(1, conv.stride[0]),
                padding=(0, conv.padding[0]),
                dilation=(1, conv.dilation[0]),
                groups=conv.groups,
            )
            return y.squeeze(2)
        if not _uses_dft(x, conv):
            return conv(x)
        mats = self._mats.get(id(conv))
        if mats is None:
            mats = self._mats[id(conv)] = _kernel_matrices(conv.weight, DFT_SEGMENT + conv.kernel_size[0] - 1)
        return dft_conv1d(x, conv.weight, conv.bias, conv.dilation[0], DFT_SEGMENT, mats=mats)


def _uses_dft(x: Tensor, conv: nn.Conv1d) -> bool:
    k, d = conv.kernel_size[0], conv.dilation[0]
    return (
        conv.stride[0] == 1
        and conv.groups == 1
        and k % 2 == 1
        and k >= DFT_MIN_KERNEL
        and conv.in_channels >= DFT_MIN_CHANNELS
        and conv.padding[0] == (k - 1) // 2 * d
        and x.shape[-1] >= DFT_MIN_LENGTH * d
    )


@functools.lru_cache(maxsize=32)
def _dft_bases(segment: int, k: int) -> tuple[Tensor, Tensor]:
    """Real DFT matrices for circular length n = segment + k - 1 (float32, CPU).

    forward [2F, segment]: rows (bin f, re/im) = (cos, -sin)(2 pi f t / n);
    inverse [n, 2F]: y[t] = sum_f c_f (Re cos - Im sin)(2 pi f t / n) / n, c_f = 1 for the
    DC (and Nyquist) bin, else 2. F = n // 2 + 1.
    """
    n = segment + k - 1
    bins = n // 2 + 1
    f = torch.arange(bins, dtype=torch.float64)
    fwd_angle = (2 * math.pi / n) * torch.outer(f, torch.arange(segment, dtype=torch.float64))
    forward = torch.stack([fwd_angle.cos(), -fwd_angle.sin()], dim=1).reshape(2 * bins, segment)
    weight = torch.full((bins,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    inv_angle = (2 * math.pi / n) * torch.outer(torch.arange(n, dtype=torch.float64), f)
    inverse = torch.stack([inv_angle.cos() * weight, -inv_angle.sin() * weight], dim=2).reshape(n, 2 * bins) / n
    return forward.float(), inverse.float()


def _kernel_matrices(weight: Tensor, n: int) -> Tensor:
    """Per-bin mixing matrices [F, 2*O, 2*C] (rows (re/im, o), cols (re/im, c)).

    G_f = DFT of the flipped kernel (the correlation kernel as a convolution); the complex
    product Y = G X is [[Gr, -Gi], [Gi, Gr]] @ [Xr; Xi].
    """
    out_ch, in_ch, k = weight.shape
    bins = n // 2 + 1
    f64 = torch.float64
    angle = (2 * math.pi / n) * torch.outer(torch.arange(bins, dtype=f64), torch.arange(k, dtype=f64))
    taps = weight.flip(-1).permute(2, 0, 1).reshape(k, out_ch * in_ch)
    g_re = (angle.cos().to(weight) @ taps).view(bins, out_ch, in_ch)
    g_im = (-angle.sin().to(weight) @ taps).view(bins, out_ch, in_ch)
    mats = weight.new_empty(bins, 2, out_ch, 2, in_ch)
    mats[:, 0, :, 0] = g_re
    mats[:, 0, :, 1] = -g_im
    mats[:, 1, :, 0] = g_im
    mats[:, 1, :, 1] = g_re
    return mats.view(bins, 2 * out_ch, 2 * in_ch)


def dft_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    dilation: int,
    segment: int,
    chunk: int | None = None,
    mats: Tensor | None = None,
) -> Tensor:
    """Same-padded dilated nn.Conv1d semantics via segment DFTs: x [B, C, N] -> [B, O, N].

    weight [O, C, k] with k odd; `segment` (L >= k - 1) input samples per DFT block;
    `chunk` segments are processed per step (default: DFT_CHUNK_SAMPLES // L) so the
    intermediates stay in cache; `mats` reuses `_kernel_matrices(weight, segment + k - 1)`.
    """
    batch, in_ch, length = x.shape
    out_ch, _, k = weight.shape
    d = dilation
    n = segment + k - 1
    bins = n // 2 + 1
    half = (k - 1) // 2  # the same-padding offset, per phase
    forward, inverse = _dft_bases(segment, k)
    if mats is None:
        mats = _kernel_matrices(weight, n)
    per_phase = -(-length // d)
    n_seg = -(-per_phase // segment)
    chunk = chunk or max(1, DFT_CHUNK_SAMPLES // segment)
    out = x.new_empty(batch, out_ch, per_phase, d) if d > 1 else None
    results = []
    for b in range(batch):
        for r in range(d):
            # full[:, s] holds output segment s of the (un-cropped) full convolution, bias added.
            full = x.new_empty(out_ch, n_seg + 1, segment)
            carry = None
            for s0 in range(0, n_seg, chunk):
                ns = min(chunk, n_seg - s0)
                xs = _gather(x[b], s0 * segment, ns * segment, d, r)  # [C, ns * L]
                spec = forward @ xs.view(in_ch * ns, segment).t()  # [2F, C * ns]
                mixed = torch.bmm(mats, spec.view(bins, 2 * in_ch, ns))  # [F, 2O, ns]
                blocks = (mixed.view(2 * bins, out_ch * ns).t() @ inverse.t()).view(out_ch, ns, n)
                dest = full[:, s0 : s0 + ns]
                if bias is None:
                    dest.copy_(blocks[:, :, :segment])
                else:
                    torch.add(blocks[:, :, :segment], bias[:, None, None], out=dest)
                dest[:, 1:, : k - 1] += blocks[:, :-1, segment:]  # overlap-add within the chunk
                if carry is not None:
                    dest[:, 0, : k - 1] += carry
                carry = blocks[:, -1, segment:]
            assert carry is not None
            full[:, n_seg, : k - 1] = carry if bias is None else carry + bias[:, None]
            phase_out = full.view(out_ch, -1)[:, half : half + per_phase]
            if out is None:
                results.append(phase_out)
            else:
                out[b, :, :, r] = phase_out
    if out is None:
        return torch.stack(results) if batch > 1 else results[0].unsqueeze(0)
    y = out.view(batch, out_ch, per_phase * d)
    return y if per_phase * d == length else y[..., :length]


def _gather(x: Tensor, start: int, count: int, step: int, phase: int) -> Tensor:
    """x[:, phase + step * (start + j)] for j < count as a contiguous [C, count], zero past the end."""
    first = phase + step * start
    available = max(0, min(count, -(-(x.shape[-1] - first) // step)))
    if available == count:
        return x[:, first : first + step * count : step].contiguous()
    out = x.new_zeros(x.shape[0], count)
    if available:
        out[:, :available] = x[:, first : first + step * available : step]
    return out

"""RVC's synthesizer (`SynthesizerTrnMs{256,768}NSFsid[_nono]`), inference path only.

Module and parameter names match the reference classes, so a voice's `weight` dict (with
`enc_q.*` removed and weight norm folded) loads strictly. `build_synthesizer` does that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from .config import SynthesizerConfig
from .flow import ResidualCouplingBlock
from .generator import Generator
from .hifigan_mrf import MRFGenerator
from .nsf import gaussian_noise
from .refinegan import NoiseFn, RefineGANGenerator
from .text_encoder import TextEncoder
from .weight_norm import fold_weight_norm

#: Scale of the prior noise: RVC's infer() draws z_p = m_p + exp(logs_p) * N(0,1) * 0.66666.
PRIOR_NOISE_SCALE = 0.66666
#: Frames of context kept each side when only part of the output is decoded (`infer`'s
#: head/length). The decoder's receptive field is under 10 frames (conv_pre k7: 3; the
#: first upsampling and its residual blocks: ~6; later stages < 1; measured on v2 40k:
#: exact to float rounding from 8 frames on); 24 leaves a 3x margin.
DECODER_HALO_FRAMES = 24
#: Flow hyperparameters fixed by RVC's synthesizer classes (rvc-formats.md §2.1).
FLOW_KERNEL_SIZE = 5
FLOW_DILATION_RATE = 1
FLOW_N_LAYERS = 3
FLOW_N_FLOWS = 4
#: Decoders by Applio's metadata `vocoder` name ("HiFi-GAN" is RVC's GeneratorNSF).
VOCODERS = ("HiFi-GAN", "MRF HiFi-GAN", "RefineGAN")

#: Layers that RVC wraps in weight norm (stored as `.weight_g` / `.weight_v`).
WEIGHT_NORMED_LAYER = re.compile(
    r"^(dec\.ups\.\d+|dec\.resblocks\.\d+\.convs[12]?\.\d+"
    r"|flow\.flows\.\d+\.enc\.(in_layers\.\d+|res_skip_layers\.\d+|cond_layer))$"
)


class Synthesizer(nn.Module):
    """enc_p -> prior sample -> reversed flow -> decoder: content frames -> waveform."""

    def __init__(self, config: SynthesizerConfig, content_dim: int, use_f0: bool, vocoder: str = "HiFi-GAN") -> None:
        super().__init__()
        if vocoder not in VOCODERS:
            raise ValueError(f"unknown vocoder {vocoder!r}; expected one of {', '.join(VOCODERS)}")
        if vocoder != "HiFi-GAN" and not use_f0:
            raise ValueError(f"the {vocoder} decoder exists only for pitch-guided voices")
        self.config = config
        self.content_dim = content_dim
        self.use_f0 = use_f0
        self.vocoder = vocoder
        c = config
        self.enc_p = TextEncoder(
            content_dim,
            c.inter_channels,
            c.hidden_channels,
            c.filter_channels,
            c.n_heads,
            c.n_layers,
            c.kernel_size,
            use_f0,
        )
        self.dec: Generator | MRFGenerator | RefineGANGenerator
        if vocoder == "MRF HiFi-GAN":
            self.dec = MRFGenerator(
                c.inter_channels,
                c.resblock_kernel_sizes,
                c.resblock_dilation_sizes,
                c.upsample_rates,
                c.upsample_initial_channel,
                c.upsample_kernel_sizes,
                c.gin_channels,
                c.sample_rate,
            )
        elif vocoder == "RefineGAN":
            self.dec = RefineGANGenerator(
                c.inter_channels, c.upsample_rates, c.sample_rate, c.upsample_initial_channel, c.gin_channels
            )
        else:
            self.dec = Generator(
                c.inter_channels,
                c.resblock,
                c.resblock_kernel_sizes,
                c.resblock_dilation_sizes,
                c.upsample_rates,
                c.upsample_initial_channel,
                c.upsample_kernel_sizes,
                c.gin_channels,
                sample_rate=c.sample_rate if use_f0 else None,
            )
        self.flow = ResidualCouplingBlock(
            c.inter_channels,
            c.hidden_channels,
            FLOW_KERNEL_SIZE,
            FLOW_DILATION_RATE,
            FLOW_N_LAYERS,
            FLOW_N_FLOWS,
            c.gin_channels,
        )
        self.emb_g = nn.Embedding(c.spk_embed_dim, c.gin_channels)

    @property
    def hop_length(self) -> int:
        """Output samples per 10 ms frame."""
        return self.config.hop_length

    @property
    def halo_frames(self) -> int:
        """Frames of decoder context kept each side of a partially decoded window."""
        return getattr(self.dec, "halo_frames", DECODER_HALO_FRAMES)

    def _decode(self, z: Tensor, g: Tensor, har_source: Tensor | None, noise: NoiseFn) -> Tensor:
        """self.dec on a window; RefineGAN also draws its AdaIN noise through `noise`."""
        if isinstance(self.dec, RefineGANGenerator):
            assert har_source is not None
            return self.dec(z, g, har_source, noise)
        return self.dec(z, g, har_source)

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz."""
        return self.config.sample_rate

    @torch.inference_mode()
    def infer(
        self,
        phone: Tensor,
        lengths: Tensor,
        pitch: Tensor | None,
        nsff0: Tensor | None,
        sid: Tensor,
        generator: torch.Generator | None = None,
        *,
        head: int = 0,
        length: int | None = None,
    ) -> Tensor:
        """Convert content frames to audio.

        phone [B, T, content_dim] float (100 Hz frames), lengths [B] long, pitch [B, T]
        long coarse F0 1..255 and nsff0 [B, T] float F0 in Hz (both None for no-F0
        models), sid [B] long speaker ids. Noise comes from `generator` (same seed, same
        output). Returns float32 [B, 1, T * hop] in [-1, 1] at `sample_rate`.

        `head`/`length` (frames) return only output frames [head, head + length) as
        [B, 1, length * hop]: the same samples as the full output there (to float
        rounding), since the text encoder, flow, noise and NSF phase still run over all T
        frames and the decoder gets `halo_frames` of context each side. It saves
        decoding padding that the caller would trim anyway. (RefineGAN's AdaIN layers draw
        noise inside the decoder, over the decoded window: with nonzero AdaIN weights a
        partial decode equals the full one only up to that noise.)
        """
        if phone.dim() != 3 or phone.shape[-1] != self.content_dim:
            raise ValueError(f"phone must be [B, T, {self.content_dim}], got {tuple(phone.shape)}")
        frames = tuple(phone.shape[:2])
        if self.use_f0:
            if pitch is None or nsff0 is None:
                raise ValueError("this synthesizer is pitch-guided: pass pitch and nsff0")
            if tuple(pitch.shape) != frames or tuple(nsff0.shape) != frames:
                raise ValueError(
                    f"pitch {tuple(pitch.shape)} and nsff0 {tuple(nsff0.shape)} must be [B, T] = {frames}"
                )
        dtype = self.emb_g.weight.dtype
        device = self.emb_g.weight.device
        g = self.emb_g(sid.to(device)).unsqueeze(-1)  # [B, gin, 1]
        coarse = pitch.to(device) if (self.use_f0 and pitch is not None) else None
        m_p, logs_p, mask = self.enc_p(phone.to(device, dtype), coarse, lengths.to(device))
        noise = gaussian_noise(tuple(m_p.shape), generator, device, dtype)
        z_p = (m_p + torch.exp(logs_p) * noise * PRIOR_NOISE_SCALE) * mask
        z = self.flow.reverse(z_p, mask, g)
        har_source = None
        if self.dec.m_source is not None:
            assert nsff0 is not None
            har_source = self.dec.m_source(nsff0.to(device), self.dec.upp, generator)
        z = z * mask

        def noise(like: Tensor) -> Tensor:
            return gaussian_noise(tuple(like.shape), generator, like.device, like.dtype)

        total = z.shape[-1]
        end = total if length is None else head + length
        if not 0 <= head < end <= total:
            raise ValueError(f"head={head}, length={length} do not select frames within 0..{total}")
        if head == 0 and end == total:
            return self._decode(z, g, har_source, noise).float()
        halo = self.halo_frames
        lo, hi = max(head - halo, 0), min(end + halo, total)
        upp = self.dec.upp
        if har_source is not None:
            har_source = har_source[..., lo * upp : hi * upp]
        out = self._decode(z[..., lo:hi], g, har_source, noise)
        return out[..., (head - lo) * upp : (end - lo) * upp].float()

    @torch.inference_mode()
    def infer_batch(self, items: Sequence[SynthesisItem]) -> list[Tensor]:
        """Several inputs of different lengths as one padded batch; item i's result equals
        `infer` of that item alone (same seed) to float rounding.

        Each item's noise (prior, NSF, RefineGAN's AdaIN) is drawn from its own generator in
        `infer`'s order, at its own length; the inputs are zero-padded to the longest and masked (attention,
        convolutions and the flow ignore frames past an item's length). Each item's decoded
        window (its kept frames plus `halo_frames` each side) is placed at the start of
        a zero-padded batch row, so the decoder sees what `infer` gives it up to the halo.
        Returns float32 [1, length_i * hop] per item.
        """
        if not items:
            return []
        device, dtype = self.emb_g.weight.device, self.emb_g.weight.dtype
        lengths = [item.phone.shape[0] for item in items]
        longest = max(lengths)
        upp = self.dec.upp
        phone = torch.zeros(len(items), longest, self.content_dim, device=device, dtype=dtype)
        coarse = torch.zeros(len(items), longest, device=device, dtype=torch.long) if self.use_f0 else None
        noise = torch.zeros(len(items), self.config.inter_channels, longest, device=device, dtype=dtype)
        har_sources: list[Tensor] = []
        for i, item in enumerate(items):
            t = lengths[i]
            if item.phone.dim() != 2 or item.phone.shape[1] != self.content_dim:
                raise ValueError(f"item {i}: phone must be [T, {self.content_dim}], got {tuple(item.phone.shape)}")
            phone[i, :t] = item.phone.to(device, dtype)
            noise[i, :, :t] = gaussian_noise((1, self.config.inter_channels, t), item.generator, device, dtype)[0]
            if self.use_f0:
                if item.pitch is None or item.nsff0 is None or item.pitch.shape[0] != t or item.nsff0.shape[0] != t:
                    raise ValueError(f"item {i}: this synthesizer is pitch-guided: pass pitch and nsff0 of [T] = {t}")
                coarse[i, :t] = item.pitch.to(device)
                assert self.dec.m_source is not None
                har_sources.append(self.dec.m_source(item.nsff0.to(device)[None], upp, item.generator)[0])
        sid = torch.tensor([item.sid for item in items], device=device, dtype=torch.long)
        g = self.emb_g(sid).unsqueeze(-1)
        m_p, logs_p, mask = self.enc_p(phone, coarse, torch.tensor(lengths, device=device))
        z_p = (m_p + torch.exp(logs_p) * noise * PRIOR_NOISE_SCALE) * mask
        z = self.flow.reverse(z_p, mask, g) * mask
        windows = []
        for item, t in zip(items, lengths):
            end = t if item.length is None else item.head + item.length
            if not 0 <= item.head < end <= t:
                raise ValueError(f"head={item.head}, length={item.length} do not select frames within 0..{t}")
            windows.append((max(item.head - self.halo_frames, 0), min(end + self.halo_frames, t), end))
        widest = max(hi - lo for lo, hi, _ in windows)
        z_win = z.new_zeros(len(items), z.shape[1], widest)
        har = z.new_zeros(len(items), 1, widest * upp) if self.use_f0 else None
        for i, (lo, hi, _) in enumerate(windows):
            z_win[i, :, : hi - lo] = z[i, :, lo:hi]
            if har is not None:
                har[i, :, : (hi - lo) * upp] = har_sources[i][:, lo * upp : hi * upp]
        noise = _BatchNoise([item.generator for item in items], [hi - lo for lo, hi, _ in windows], widest)
        out = self._decode(z_win, g, har, noise)
        return [out[i, :, (item.head - lo) * upp : (end - lo) * upp].float()
                for i, (item, (lo, _, end)) in enumerate(zip(items, windows))]


class _BatchNoise:
    """AdaIN noise for a padded batch of decoder windows: row i gets what `infer` would draw
    from generator i for its own window (frames_i wide), zeros past it."""

    def __init__(self, generators: Sequence[torch.Generator | None], frames: Sequence[int], widest: int) -> None:
        self.generators, self.frames, self.widest = list(generators), list(frames), widest

    def __call__(self, like: Tensor) -> Tensor:
        per_frame = like.shape[-1] // self.widest
        out = torch.zeros_like(like)
        for i, (generator, frames) in enumerate(zip(self.generators, self.frames)):
            width = frames * per_frame
            out[i, :, :width] = gaussian_noise((1, like.shape[1], width), generator, like.device, like.dtype)[0]
        return out


@dataclass
class SynthesisItem:
    """One input of `Synthesizer.infer_batch`: `infer`'s arguments for a single sequence.

    phone [T, content_dim] float (100 Hz frames); pitch [T] long coarse F0 and nsff0 [T]
    float Hz (None for voices without pitch guidance); sid the speaker id; generator the
    item's noise source; head/length the output frames to return (None: to the end).
    """

    phone: Tensor
    pitch: Tensor | None
    nsff0: Tensor | None
    sid: int
    generator: torch.Generator | None
    head: int = 0
    length: int | None = None


def build_synthesizer(
    config: SynthesizerConfig,
    content_dim: int,
    use_f0: bool,
    state_dict: Mapping[str, Tensor],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    vocoder: str = "HiFi-GAN",
) -> Synthesizer:
    """Build a ready Synthesizer from an RVC `weight` dict (without `enc_q.*`).

    `vocoder` picks the decoder (VOCODERS: Applio's metadata name; RVC voices are "HiFi-GAN").

    Accepts both weight-norm spellings, folds weight norm once, loads strictly, converts
    (fp16) weights to `dtype`, moves to `device`; the result is in eval mode with
    requires_grad off. Raises CheckpointError listing missing / unexpected / misshapen keys.
    """
    not_tensors = sorted(k for k, v in state_dict.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise CheckpointError(f"synthesizer weights hold non-tensor entries: {_summarise(not_tensors)}")
    try:
        folded = fold_weight_norm(state_dict)
        with torch.device("meta"):
            model = Synthesizer(config, content_dim, use_f0, vocoder)
    except ValueError as e:
        raise CheckpointError(f"malformed synthesizer weights or config: {e}") from e
    expected = model.state_dict()
    missing = sorted(set(expected) - set(folded))
    unexpected = sorted(set(folded) - set(expected))
    misshapen = sorted(
        f"{k}: file {tuple(folded[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(folded)
        if folded[k].shape != expected[k].shape
    )
    if missing or unexpected or misshapen:
        problems = (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
        parts = [f"{name}: {_summarise(keys)}" for name, keys in problems if keys]
        raise CheckpointError("synthesizer weights do not fit the architecture; " + "; ".join(parts))
    converted = {k: v.to(device=device, dtype=dtype, copy=True) for k, v in folded.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    model.requires_grad_(False)
    return model.eval()


def export_state_dict(model: Synthesizer, dtype: torch.dtype | None = torch.float16) -> dict[str, Tensor]:
    """The model's weights in RVC's on-disk layout: weight-normed layers as weight_g/weight_v.

    v = w and g = ||w|| (per output row), so folding gives back w. Tensors are cast to
    `dtype` (RVC saves fp16; None keeps the model's dtype). Inverse of `build_synthesizer`.
    """
    out: dict[str, Tensor] = {}
    dec_normed = getattr(model.dec, "weight_normed", None)  # MRF HiFi-GAN / RefineGAN layouts
    for key, value in model.state_dict().items():
        value = value.detach().clone()
        layer, _, name = key.rpartition(".")
        if dec_normed is not None and layer.startswith("dec."):
            normed = dec_normed.match(layer[len("dec."):]) is not None
        else:
            normed = WEIGHT_NORMED_LAYER.match(layer) is not None
        if name == "weight" and normed:
            norm = value.reshape(value.shape[0], -1).norm(dim=1)
            out[f"{layer}.weight_g"] = norm.reshape((-1,) + (1,) * (value.dim() - 1))
            out[f"{layer}.weight_v"] = value
        else:
            out[key] = value
    return {k: v.to(dtype) if dtype is not None else v for k, v in out.items()}


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


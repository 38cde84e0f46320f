"""Synthesizer hyperparameters: the one place that reads RVC's positional `config` list.

RVC saves the synthesizer's constructor arguments as an 18-item list (rvc-formats.md
§1.1); `SynthesizerConfig.from_list` names them. The standard values per sample rate are
in `STANDARD_CONFIGS` (RVC configs/v1,v2/*.json; Applio adds 24 kHz).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

#: Number of entries in RVC's positional config list.
CONFIG_LIST_LENGTH = 18


def _parse_sample_rate(value: Any) -> int:
    """Accept 40000, "40000", "40k" (RVC accepts "32k"/"40k"/"48k" too)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text.endswith("k"):
            return int(float(text[:-1]) * 1000)
        return int(text)
    return int(value)


@dataclass(frozen=True)
class SynthesizerConfig:
    """Constructor arguments of RVC's `SynthesizerTrnMs*NSFsid*` classes, by name."""

    spec_channels: int  # filter_length // 2 + 1; used only by the training-only enc_q
    segment_size: int  # training crop size; unused at inference
    inter_channels: int  # 192: latent z channels
    hidden_channels: int  # 192: text-encoder / flow width
    filter_channels: int  # 768: text-encoder FFN width
    n_heads: int  # 2
    n_layers: int  # 6 text-encoder layers
    kernel_size: int  # 3: text-encoder FFN kernel
    p_dropout: float  # 0 at inference
    resblock: str  # "1" (ResBlock1) or "2"
    resblock_kernel_sizes: tuple[int, ...]  # (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]  # ((1, 3, 5),) * 3
    upsample_rates: tuple[int, ...]  # per decoder stage; product = hop length
    upsample_initial_channel: int  # 512
    upsample_kernel_sizes: tuple[int, ...]
    spk_embed_dim: int  # speaker count (RVC overwrites it from emb_g at load)
    gin_channels: int  # 256: speaker embedding width
    sample_rate: int  # output rate in Hz (tgt_sr)

    @property
    def hop_length(self) -> int:
        """Output samples per synthesizer frame (10 ms): the product of the upsample rates."""
        return math.prod(self.upsample_rates)

    @classmethod
    def from_list(cls, values: Sequence[Any]) -> "SynthesizerConfig":
        """Build from RVC's 18-item positional list (raises ValueError if malformed)."""
        if len(values) != CONFIG_LIST_LENGTH:
            raise ValueError(f"expected an {CONFIG_LIST_LENGTH}-item config list, got {len(values)} items")
        v = list(values)
        return cls(
            spec_channels=int(v[0]),
            segment_size=int(v[1]),
            inter_channels=int(v[2]),
            hidden_channels=int(v[3]),
            filter_channels=int(v[4]),
            n_heads=int(v[5]),
            n_layers=int(v[6]),
            kernel_size=int(v[7]),
            p_dropout=float(v[8]),
            resblock=str(v[9]),
            resblock_kernel_sizes=tuple(int(k) for k in v[10]),
            resblock_dilation_sizes=tuple(tuple(int(d) for d in ds) for ds in v[11]),
            upsample_rates=tuple(int(u) for u in v[12]),
            upsample_initial_channel=int(v[13]),
            upsample_kernel_sizes=tuple(int(k) for k in v[14]),
            spk_embed_dim=int(v[15]),
            gin_channels=int(v[16]),
            sample_rate=_parse_sample_rate(v[17]),
        )

    def to_list(self) -> list[Any]:
        """The 18-item positional list, as RVC writes it."""
        d = asdict(self)
        d["resblock_kernel_sizes"] = list(self.resblock_kernel_sizes)
        d["resblock_dilation_sizes"] = [list(x) for x in self.resblock_dilation_sizes]
        d["upsample_rates"] = list(self.upsample_rates)
        d["upsample_kernel_sizes"] = list(self.upsample_kernel_sizes)
        return list(d.values())


def _standard(sample_rate: int, spec: int, rates: Sequence[int], kernels: Sequence[int]) -> SynthesizerConfig:
    return SynthesizerConfig(
        spec_channels=spec,
        segment_size=32,
        inter_channels=192,
        hidden_channels=192,
        filter_channels=768,
        n_heads=2,
        n_layers=6,
        kernel_size=3,
        p_dropout=0.0,
        resblock="1",
        resblock_kernel_sizes=(3, 7, 11),
        resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        upsample_rates=tuple(rates),
        upsample_initial_channel=512,
        upsample_kernel_sizes=tuple(kernels),
        spk_embed_dim=109,
        gin_channels=256,
        sample_rate=sample_rate,
    )


#: Standard configs keyed by (version, sample rate) (rvc-formats.md §2.1; Applio's 24k §1.3).
STANDARD_CONFIGS: dict[tuple[str, int], SynthesizerConfig] = {
    ("v1", 32000): _standard(32000, 513, (10, 4, 2, 2, 2), (16, 16, 4, 4, 4)),
    ("v1", 40000): _standard(40000, 1025, (10, 10, 2, 2), (16, 16, 4, 4)),
    ("v1", 48000): _standard(48000, 1025, (10, 6, 2, 2, 2), (16, 16, 4, 4, 4)),
    ("v2", 24000): _standard(24000, 513, (10, 6, 2, 2), (20, 12, 4, 4)),
    ("v2", 32000): _standard(32000, 513, (10, 8, 2, 2), (20, 16, 4, 4)),
    ("v2", 40000): _standard(40000, 1025, (10, 10, 2, 2), (16, 16, 4, 4)),
    ("v2", 48000): _standard(48000, 1025, (12, 10, 2, 2), (24, 20, 4, 4)),
}

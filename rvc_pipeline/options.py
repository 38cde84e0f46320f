"""Per-conversion options and the chunking constants (spec §5.1, §5.4).

`ConversionOptions` holds what a user may choose per request, with RVC WebUI defaults,
validated once when built. `ChunkingConfig` holds the per-device constants that cut
long inputs into chunks; it is chosen from the device, never by the user per request.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import OptionError

if TYPE_CHECKING:
    import torch

# Output rates `resample_sr` may name besides 0 (spec §5.2 step 10: RVC resamples only
# when tgt_sr != resample_sr >= 16000, so 1..15999 would silently do nothing; we refuse
# them instead). 192 kHz is the highest rate common audio tools write.
RESAMPLE_SR_MIN = 16000
RESAMPLE_SR_MAX = 192000


@dataclass(frozen=True)
class ConversionOptions:
    """What one conversion does. Defaults are the RVC WebUI's (spec §5.4)."""

    # Pitch shift in semitones (float; +12 = one octave up). f0 is multiplied by
    # 2**(f0_up_key/12). Range -48..48 (four octaves). RVC default 0.
    f0_up_key: float = 0.0
    # F0 extractor: a name in rvc_pipeline.pitch.PITCH_METHODS. "harvest" needs no
    # model file (RVC's own UI default is "rmvpe", which needs rmvpe.pt).
    f0_method: str = "harvest"
    # Share of retrieved training features mixed into each frame, 0..1 (0 = no
    # retrieval, 1 = retrieved features only). RVC default 0.75.
    index_rate: float = 0.75
    # Harvest's median filter gate: radius >= 3 applies medfilt(kernel 3) to F0.
    # Integer 0..7 (the WebUI slider). RVC default 3.
    filter_radius: int = 3
    # Loudness envelope: 0 = follow the input's RMS, 1 = keep the model output's RMS.
    # 0..1. RVC default 0.25.
    rms_mix_rate: float = 0.25
    # Protection of voiceless consonants and breaths: unvoiced frames keep this share
    # of retrieved/processed features (the rest from the raw features); 0.5 turns the
    # protection off. 0..0.5. RVC default 0.33.
    protect: float = 0.33
    # Output sample rate in Hz: 0 keeps the voice's rate; otherwise an integer from
    # 16000 to 192000 (RVC ignores values below 16000, so they are refused here).
    # RVC default 0.
    resample_sr: int = 0
    # Speaker row of a multi-speaker voice (emb_g), integer >= 0; the upper bound is
    # the voice's speaker count, checked when the voice is known. RVC default 0.
    speaker_id: int = 0
    # Seed of the synthesizer's noise (z_p and NSF noise), integer 0..2**64-1; the
    # same seed gives the same output. RVC draws unseeded noise; default 0.
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("f0_up_key", "index_rate", "rms_mix_rate", "protect"):
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        for name in ("filter_radius", "resample_sr", "speaker_id", "seed"):
            object.__setattr__(self, name, _integer(name, getattr(self, name)))
        _check_range("f0_up_key", self.f0_up_key, -48, 48, "semitones")
        _check_range("index_rate", self.index_rate, 0, 1)
        _check_range("filter_radius", self.filter_radius, 0, 7)
        _check_range("rms_mix_rate", self.rms_mix_rate, 0, 1)
        _check_range("protect", self.protect, 0, 0.5)
        _check_range("speaker_id", self.speaker_id, 0, None)
        _check_range("seed", self.seed, 0, 2**64 - 1)
        if self.resample_sr != 0 and not RESAMPLE_SR_MIN <= self.resample_sr <= RESAMPLE_SR_MAX:
            raise OptionError(
                f"resample_sr must be 0 (keep the voice's rate) or {RESAMPLE_SR_MIN}..{RESAMPLE_SR_MAX} Hz, "
                f"got {self.resample_sr}")
        _check_method(self.f0_method)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ConversionOptions:
        """Build from untyped values (HTTP form fields, query strings, config files).

        Keys are field names ('-' may stand for '_'); values may be strings, which are
        parsed by the field's type. Missing keys and None values take the defaults.
        Unknown keys raise `OptionError` naming the valid ones.
        """
        valid = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = str(key).strip().replace("-", "_")
            if name not in valid:
                raise OptionError(f"unknown option {key!r}; valid options are {', '.join(valid)}")
            if value is None:
                continue
            kwargs[name] = _parse(name, valid[name].type, value)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> ConversionOptions:
        """A copy with `changes` applied, validated again."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - valid)
        if unknown:
            raise OptionError(f"unknown option(s) {', '.join(unknown)}; valid options are {', '.join(sorted(valid))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (JSON-ready)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ChunkingConfig:
    """RVC's chunking constants, in seconds at 16 kHz (spec §5.1, RVC:configs/config.py)."""

    # Reflect padding added on each side of the input and of each chunk, seconds.
    x_pad: int
    # Half-width of the window in which a cut looks for the quietest point, seconds.
    x_query: int
    # Spacing of the nominal cut points, seconds.
    x_center: int
    # Inputs up to this long (plus one 160-sample window) are converted in one chunk.
    x_max: int

    CPU_FP32: ClassVar[ChunkingConfig]
    GPU_FP16: ClassVar[ChunkingConfig]
    LOW_MEMORY: ClassVar[ChunkingConfig]

    def __post_init__(self) -> None:
        for name in ("x_pad", "x_query", "x_center", "x_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise OptionError(f"ChunkingConfig.{name} must be a positive integer of seconds, got {value!r}")
        if not self.x_query < self.x_center <= self.x_max:
            raise OptionError(
                f"ChunkingConfig needs x_query < x_center <= x_max, got {self.x_query}, {self.x_center}, {self.x_max}")

    @property
    def t_pad(self) -> int:
        """Padding in samples at 16 kHz."""
        return 16000 * self.x_pad

    @property
    def t_query(self) -> int:
        """Cut search half-width in samples at 16 kHz."""
        return 16000 * self.x_query

    @property
    def t_center(self) -> int:
        """Cut spacing in samples at 16 kHz."""
        return 16000 * self.x_center

    @property
    def t_max(self) -> int:
        """Longest single-chunk input in samples at 16 kHz."""
        return 16000 * self.x_max

    def t_pad_tgt(self, sample_rate: int) -> int:
        """Padding in samples at the voice's output rate (trimmed from each chunk's output)."""
        return sample_rate * self.x_pad

    @staticmethod
    def for_device(device: torch.device | str, dtype: torch.dtype | None = None) -> ChunkingConfig:
        """RVC's choice: fp16 on a GPU -> GPU_FP16, otherwise CPU_FP32; any CUDA GPU
        with at most 4 GB -> LOW_MEMORY (RVC rounds memory as int(GiB + 0.4))."""
        import torch

        device = torch.device(device)
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            if int(props.total_memory / 1024**3 + 0.4) <= 4:
                return ChunkingConfig.LOW_MEMORY
        half = dtype in (torch.float16, torch.bfloat16)
        if half and device.type != "cpu":
            return ChunkingConfig.GPU_FP16
        return ChunkingConfig.CPU_FP32


# RVC fp32 (CPU, fp32 GPUs, DirectML) and Applio: x_pad 1, x_query 6, x_center 38, x_max 41.
ChunkingConfig.CPU_FP32 = ChunkingConfig(1, 6, 38, 41)
# RVC fp16 on a GPU: x_pad 3, x_query 10, x_center 60, x_max 65.
ChunkingConfig.GPU_FP16 = ChunkingConfig(3, 10, 60, 65)
# RVC on any GPU with <= 4 GB: x_pad 1, x_query 5, x_center 30, x_max 32.
ChunkingConfig.LOW_MEMORY = ChunkingConfig(1, 5, 30, 32)


# --- validation helpers -------------------------------------------------------------


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(f"{name} must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise OptionError(f"{name} must be a finite number, got {value!r}")
    return result


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _check_range(name: str, value: float, low: float, high: float | None, unit: str = "") -> None:
    if value < low or (high is not None and value > high):
        allowed = f">= {low:g}" if high is None else f"from {low:g} to {high:g}"
        raise OptionError(f"{name} must be {allowed}{' ' + unit if unit else ''}, got {value:g}")


def _check_method(method: Any) -> None:
    from .pitch import PITCH_METHODS  # imported here: pitch pulls in torch and the extractors

    if not isinstance(method, str) or method not in PITCH_METHODS:
        raise OptionError(f"f0_method must be one of {', '.join(PITCH_METHODS)}, got {method!r}")


def _parse(name: str, annotation: Any, value: Any) -> Any:
    """Convert a string from HTTP/CLI to the field's type; other values pass through."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if kind == "str":
        return text.lower()
    try:
        number = float(text)
    except ValueError:
        raise OptionError(f"{name} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}") from None
    if kind == "int":
        if not number.is_integer():
            raise OptionError(f"{name} must be an integer, got {value!r}")
        return int(text) if text.lstrip("+-").isdigit() else int(number)
    return number

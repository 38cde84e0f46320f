"""Per-conversion options and the chunking constants (spec §5.1, §5.4).

`ConversionOptions` holds what a user may choose per request, with RVC WebUI defaults,
validated once when built. Each field carries its `OptionSpec` (type, default, range,
unit, help): the one schema that the HTTP form, the OpenAPI docs, the CLI flags, the
README table and Python all read (`OPTION_SPECS`). `ChunkingConfig` holds the per-device
constants that cut long inputs into chunks; it is chosen from the device, never by the
user per request.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from .errors import OptionError, OptionParseError
from .output_format import DEFAULT_OUTPUT_FORMAT, OUTPUT_FORMATS
from .pitch.controls import CHROMATIC, F0Curve, auto_key_target_hz, scale_pitch_classes
from .pitch.estimator import DEFAULT_PITCH_METHOD, PITCH_METHODS, check_method

if TYPE_CHECKING:
    import torch

# Output rates `resample_sr` may name besides 0 (spec §5.2 step 10: RVC resamples only
# when tgt_sr != resample_sr >= 16000, so 1..15999 would silently do nothing; we refuse
# them instead). 192 kHz is the highest rate common audio tools write.
RESAMPLE_SR_MIN = 16000
RESAMPLE_SR_MAX = 192000

# What a text value must look like to be read as each type (ASCII only: Python's int()
# and float() would also take "1_000", "٣" or "0x1" in some forms).
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
#: Longest text read as a number: far beyond any valid value (a seed has at most 20 digits),
#: and well under Python's 4300-digit limit on int() of a string.
_MAX_NUMBER_TEXT = 100
_NUMBER_TEXT = re.compile(r"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|nan|inf|infinity)", re.ASCII | re.I)


@dataclass(frozen=True)
class OptionSpec:
    """One conversion option: its type, default, allowed values and help text.

    `minimum`/`maximum` bound numbers (None = unbounded); `off_value` is one more value
    allowed outside them (resample_sr's 0 = "keep the voice's rate"); `choices` lists
    the allowed strings. A free-text field has `validator` (raises OptionError for a bad
    value) and `allowed_text`, the allowed values in words.
    """

    name: str
    kind: type  # float, int or str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    off_value: Any = None
    choices: tuple[str, ...] | None = None
    unit: str = ""
    validator: Callable[[str], Any] | None = None
    allowed_text: str | None = None

    @property
    def flag(self) -> str:
        """The CLI flag, e.g. --f0-up-key."""
        return "--" + self.name.replace("_", "-")

    @property
    def type_name(self) -> str:
        """"number", "integer" or "string" (JSON Schema names)."""
        return {float: "number", int: "integer", str: "string"}[self.kind]

    def allowed(self) -> str:
        """The allowed values in words, e.g. "-48 to 48 semitones" or "pm, harvest, ..."."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.allowed_text is not None:
            return self.allowed_text
        unit = f" {self.unit}" if self.unit else ""
        if self.maximum is None:
            text = f">= {_number_text(self.minimum)}{unit}"
        else:
            text = f"{_number_text(self.minimum)} to {_number_text(self.maximum)}{unit}"
        if self.off_value is not None:
            text = f"{_number_text(self.off_value)}, or {text}"
        return text

    def describe(self) -> str:
        """Help, allowed values and default in one line (CLI help, OpenAPI description)."""
        return f"{self.help} ({self.allowed()}; default {_default_text(self.default)})"

    def json_schema(self) -> dict[str, Any]:
        """The field as JSON Schema (OpenAPI form field)."""
        schema: dict[str, Any] = {"type": self.type_name, "default": self.default, "description": self.describe()}
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.minimum is not None:
            schema["minimum"] = min(self.minimum, self.off_value) if self.off_value is not None else self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema

    def parse(self, value: Any) -> Any:
        """A value from text (HTTP form, CLI, config files); other values pass through.

        Integers are decimal digits with an optional sign ("48000", "-3"); numbers are
        decimal or scientific ("0.5", "1e3"); strings are trimmed and lower-cased.
        Raises `OptionParseError` for text that is not of the field's type.
        """
        if not isinstance(value, str):
            return value
        text = value.strip()
        if self.kind is str:
            return text.lower()
        if len(text) > _MAX_NUMBER_TEXT:
            raise OptionParseError(f"{self.name} must be {'an integer' if self.kind is int else 'a number'} of at most "
                                   f"{_MAX_NUMBER_TEXT} characters, got {len(text)} characters")
        if self.kind is int:
            if not _INTEGER_TEXT.fullmatch(text):
                raise OptionParseError(f"{self.name} must be an integer, got {_quote(value)}")
            return int(text)
        if not _NUMBER_TEXT.fullmatch(text):
            raise OptionParseError(f"{self.name} must be a number, got {_quote(value)}")
        return float(text)

    def check(self, value: Any) -> Any:
        """The validated value (bools refused, ints for int fields); `OptionError` otherwise."""
        if self.kind is str:
            if not isinstance(value, str):
                raise OptionError(f"{self.name} must be text, got {_quote(value)}")
            if self.choices is not None and value not in self.choices:
                raise OptionError(f"{self.name} must be one of {', '.join(self.choices)}, got {_quote(value)}")
            if self.validator is not None and value != self.default:
                self.validator(value)
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise OptionError(f"{self.name} must be an integer, got {_quote(value)}")
            value = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise OptionError(f"{self.name} must be a number, got {_quote(value)}")
            value = float(value)
            if not math.isfinite(value):
                raise OptionError(f"{self.name} must be a finite number, got {_quote(value)}")
        if value == self.off_value:
            return value
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise OptionError(f"{self.name} must be {self.allowed()}, got {_number_text(value)}")
        return value


def _number_text(value: Any) -> str:
    """Numbers as people write them: 48000, 0.75, 18446744073709551615 (strings unchanged)."""
    if isinstance(value, numbers.Integral):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _default_text(value: Any) -> str:
    """A default as the docs show it: numbers as `_number_text`, the empty string as "empty"."""
    return "empty" if value == "" else _number_text(value)


def _quote(value: Any) -> str:
    """repr() of a value, shortened: an error never echoes a huge field back."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _option(spec_kind: type, default: Any, help: str, **limits: Any) -> Any:
    """A dataclass field carrying its OptionSpec (the name is filled in below)."""
    return dataclasses.field(default=default, metadata={"spec": dict(kind=spec_kind, default=default, help=help, **limits)})


@dataclass(frozen=True)
class ConversionOptions:
    """What one conversion does. Defaults are the RVC WebUI's (spec §5.4), except the pitch method."""

    # f0 is multiplied by 2**(f0_up_key/12). Four octaves either way.
    f0_up_key: float = _option(float, 0.0, "pitch shift in semitones (+12 = one octave up)",
                               minimum=-48, maximum=48, unit="semitones")
    # "harvest" needs no model file (RVC's own UI default is "rmvpe", which needs rmvpe.pt).
    f0_method: str = _option(str, DEFAULT_PITCH_METHOD, "pitch (F0) extractor; rmvpe needs rmvpe.pt and is the quality choice",
                             choices=PITCH_METHODS)
    # 0 = no retrieval, 1 = retrieved features only. RVC default 0.75.
    index_rate: float = _option(float, 0.75, "share of retrieved (index) features", minimum=0, maximum=1)
    # Harvest's median filter gate: radius >= 3 applies medfilt(kernel 3) to F0 (the WebUI slider).
    filter_radius: int = _option(int, 3, "values >= 3 median-filter harvest's pitch", minimum=0, maximum=7)
    # 0 = follow the input's RMS, 1 = keep the model output's RMS. RVC default 0.25.
    rms_mix_rate: float = _option(float, 0.25, "loudness envelope: 0 = the input's, 1 = the voice's own",
                                  minimum=0, maximum=1)
    # Unvoiced frames keep this share of retrieved features (the rest raw); 0.5 = off.
    protect: float = _option(float, 0.33, "protects unvoiced consonants and breaths; 0.5 turns it off",
                             minimum=0, maximum=0.5)
    # RVC ignores values below 16000, so they are refused here.
    resample_sr: int = _option(int, 0, "output sample rate; 0 keeps the voice's rate",
                               minimum=RESAMPLE_SR_MIN, maximum=RESAMPLE_SR_MAX, off_value=0, unit="Hz")
    # The upper bound is the voice's speaker count, checked when the voice is known.
    speaker_id: int = _option(int, 0, "speaker of a multi-speaker voice", minimum=0)
    # Seeds z_p and the NSF noise. RVC draws unseeded noise.
    seed: int = _option(int, 0, "noise seed: the same seed gives the same output", minimum=0, maximum=2**64 - 1)

    # Controls beyond the reference (Applio's and the classic WebUI's). Every default is "off",
    # so a conversion with defaults stays the reference's, sample for sample.
    # Applio `proposed_pitch`: a key chosen from the median voiced F0, added to f0_up_key.
    auto_key: str = _option(str, "off", "choose a key that moves the median pitch to a target, added to f0_up_key",
                            validator=auto_key_target_hz,
                            allowed_text="off, male (155 Hz), female (255 Hz) or a target F0 in Hz (50 to 1100)")
    # Applio `f0_autotune_strength`: f + (note - f) * strength, here on the shifted F0.
    autotune: float = _option(float, 0.0, "pull the pitch to the nearest note: 0 = off, 1 = snap exactly",
                              minimum=0, maximum=1)
    autotune_scale: str = _option(str, CHROMATIC, "notes autotune may snap to", validator=scale_pitch_classes,
                                  allowed_text="chromatic, or a key and scale such as 'A minor', 'F# major', "
                                               "'D dorian', 'E minor pentatonic'")
    # The classic WebUI's F0 file: replaces the final F0 over the curve's time range.
    f0_curve: str = _option(str, "", "CSV rows 'time_s,f0_hz' that replace the pitch over their time range "
                            "(POST /pitch returns one; a file in the CLI and the HTTP form)",
                            validator=F0Curve.parse, allowed_text="CSV text, empty = off")
    # Applio `formant_timbre` (stftpitchshift's distortion) and `formant_qfrency` (its lifter).
    formant_shift: float = _option(float, 1.0, "scale the input's spectral envelope (formants) without changing "
                                   "its pitch: 1 = off, > 1 brighter/smaller, < 1 darker/larger",
                                   minimum=0.25, maximum=4, unit="x")
    formant_quefrency: float = _option(float, 1.0, "cepstral lifter that separates formants from pitch "
                                       "(used when formant_shift is not 1)", minimum=0.1, maximum=16, unit="ms")
    # Applio `clean_audio` / `clean_strength`: noisereduce's spectral gating on the output.
    denoise: float = _option(float, 0.0, "spectral-gating noise reduction of the output: 0 = off, 1 = strongest",
                             minimum=0, maximum=1)
    output_format: str = _option(str, DEFAULT_OUTPUT_FORMAT, "encoding of the converted audio",
                                 choices=tuple(OUTPUT_FORMATS))

    def __post_init__(self) -> None:
        if isinstance(self.f0_method, str):
            object.__setattr__(self, "f0_method", _normalise_method(self.f0_method))
        for spec in OPTION_SPECS:
            object.__setattr__(self, spec.name, spec.check(getattr(self, spec.name)))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ConversionOptions:
        """Build from untyped values (HTTP form fields, query strings, config files).

        Keys are field names ('-' may stand for '_'); values may be strings, which are
        parsed by the field's type (`OptionSpec.parse`). Missing keys, None and blank
        strings take the defaults. Unknown keys raise `OptionParseError` naming the valid
        ones; text of the wrong type raises `OptionParseError`; values out of range raise
        `OptionError`.
        """
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = str(key).strip().replace("-", "_")
            if name not in OPTIONS_BY_NAME:
                raise OptionParseError(f"unknown option {_quote(key)}; valid options are {', '.join(OPTIONS_BY_NAME)}")
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            kwargs[name] = OPTIONS_BY_NAME[name].parse(value)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> ConversionOptions:
        """A copy with `changes` applied, validated again."""
        unknown = sorted(set(changes) - set(OPTIONS_BY_NAME))
        if unknown:
            raise OptionError(f"unknown option(s) {', '.join(unknown)}; valid options are {', '.join(sorted(OPTIONS_BY_NAME))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (JSON-ready)."""
        return dataclasses.asdict(self)


def _normalise_method(method: str) -> str:
    """A known pitch-method name, trimmed and lower-cased; `OptionError` naming the valid ones."""
    try:
        return check_method(method)
    except OptionError:
        raise OptionError(f"f0_method must be one of {', '.join(PITCH_METHODS)}, got {_quote(method)}") from None


#: The schema: every option in declaration order.
OPTION_SPECS: tuple[OptionSpec, ...] = tuple(
    OptionSpec(name=f.name, **f.metadata["spec"]) for f in dataclasses.fields(ConversionOptions)
)
OPTIONS_BY_NAME: dict[str, OptionSpec] = {spec.name: spec for spec in OPTION_SPECS}


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


def options_markdown() -> str:
    """The conversion options as a Markdown table (README), written from `OPTION_SPECS`."""
    rows = ["| option (form field / `--flag`) | type | allowed | default | meaning |", "|---|---|---|---|---|"]
    for spec in OPTION_SPECS:
        default = "empty" if spec.default == "" else f"`{_number_text(spec.default)}`"
        rows.append(f"| `{spec.name}` / `{spec.flag}` | {spec.type_name} | {spec.allowed()} | {default} | {spec.help} |")
    return "\n".join(rows) + "\n"

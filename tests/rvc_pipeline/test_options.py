"""ConversionOptions validation and parsing; ChunkingConfig constants and device choice."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rvc_pipeline.errors import OptionError
from rvc_pipeline.options import ChunkingConfig, ConversionOptions
from rvc_pipeline.pitch import PITCH_METHODS


def test_defaults_are_the_rvc_ui_defaults() -> None:
    o = ConversionOptions()
    assert (o.f0_up_key, o.index_rate, o.protect, o.rms_mix_rate, o.filter_radius, o.resample_sr) == (
        0.0, 0.75, 0.33, 0.25, 3, 0)
    assert o.f0_method == "harvest" and o.speaker_id == 0 and o.seed == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.index_rate = 0.5  # type: ignore[misc]


def test_every_field_has_a_plain_default() -> None:
    for f in dataclasses.fields(ConversionOptions):
        assert f.default is not dataclasses.MISSING, f.name


@pytest.mark.parametrize("method", PITCH_METHODS)
def test_every_pitch_method_is_accepted(method: str) -> None:
    assert ConversionOptions(f0_method=method).f0_method == method


@pytest.mark.parametrize(
    "field,value",
    [
        ("f0_up_key", 48.5), ("f0_up_key", -49),
        ("index_rate", -0.01), ("index_rate", 1.01),
        ("filter_radius", -1), ("filter_radius", 8),
        ("rms_mix_rate", 1.5), ("protect", 0.51), ("protect", -0.1),
        ("resample_sr", 8000), ("resample_sr", 15999), ("resample_sr", 192001), ("resample_sr", -1),
        ("speaker_id", -1), ("seed", -1), ("seed", 2**64),
    ],
)
def test_out_of_range_values_name_the_field_and_value(field: str, value: float) -> None:
    with pytest.raises(OptionError, match=field) as info:
        ConversionOptions(**{field: value})
    assert (str(value) if isinstance(value, int) else f"{value:g}") in str(info.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["f0_up_key", "index_rate", "rms_mix_rate", "protect"])
def test_non_finite_numbers_are_refused(field: str, value: float) -> None:
    with pytest.raises(OptionError, match=f"{field} must be a finite number"):
        ConversionOptions(**{field: value})


@pytest.mark.parametrize("field", ["f0_up_key", "index_rate", "filter_radius", "resample_sr", "speaker_id", "seed"])
def test_bools_are_not_numbers(field: str) -> None:
    with pytest.raises(OptionError, match=field):
        ConversionOptions(**{field: True})


@pytest.mark.parametrize("field,value", [("filter_radius", 3.0), ("resample_sr", 44100.5), ("seed", "1"),
                                         ("index_rate", "0.5")])
def test_wrong_types_are_refused(field: str, value: object) -> None:
    with pytest.raises(OptionError, match=field):
        ConversionOptions(**{field: value})


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(OptionError, match="f0_method must be one of .*harvest"):
        ConversionOptions(f0_method="yin")


def test_boundaries_are_accepted() -> None:
    for sr in (0, 16000, 44100, 48000, 192000):
        assert ConversionOptions(resample_sr=sr).resample_sr == sr
    o = ConversionOptions(f0_up_key=-48, index_rate=0, protect=0.5, rms_mix_rate=1, filter_radius=7, seed=2**64 - 1)
    assert o.f0_up_key == -48.0 and isinstance(o.f0_up_key, float) and isinstance(o.index_rate, float)


def test_from_mapping_parses_strings() -> None:
    o = ConversionOptions.from_mapping({
        "f0_up_key": "-12", "f0-method": " PM ", "index_rate": "0.5", "filter_radius": "2",
        "rms_mix_rate": "1", "protect": "0.5", "resample_sr": "48000", "speaker_id": "1",
        "seed": "18446744073709551615",
    })
    assert o == ConversionOptions(f0_up_key=-12, f0_method="pm", index_rate=0.5, filter_radius=2, rms_mix_rate=1,
                                  protect=0.5, resample_sr=48000, speaker_id=1, seed=2**64 - 1)
    assert ConversionOptions.from_mapping({"index_rate": None, "protect": 0.2}) == ConversionOptions(protect=0.2)


@pytest.mark.parametrize("values,match", [
    ({"index_rate": "lots"}, "index_rate must be a number"),
    ({"filter_radius": "2.5"}, "filter_radius must be an integer"),
    ({"index_rate": "nan"}, "index_rate must be a finite number"),
    ({"seed": "inf"}, "seed must be an integer"),
    ({"pitch": "3"}, "unknown option 'pitch'; valid options are f0_up_key"),
    ({"f0_method": "nope"}, "f0_method must be one of"),
])
def test_from_mapping_errors(values: dict, match: str) -> None:
    with pytest.raises(OptionError, match=match):
        ConversionOptions.from_mapping(values)


def test_replace_validates_again() -> None:
    o = ConversionOptions().replace(index_rate=0.1, f0_method="pm")
    assert (o.index_rate, o.f0_method) == (0.1, "pm")
    with pytest.raises(OptionError, match="protect"):
        o.replace(protect=0.9)
    with pytest.raises(OptionError, match="unknown option"):
        o.replace(pitch=1)
    assert o.to_dict()["f0_method"] == "pm"


def test_option_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        ConversionOptions(index_rate=2)


def test_chunking_constants() -> None:
    assert ChunkingConfig.CPU_FP32 == ChunkingConfig(1, 6, 38, 41)
    assert ChunkingConfig.GPU_FP16 == ChunkingConfig(3, 10, 60, 65)
    assert ChunkingConfig.LOW_MEMORY == ChunkingConfig(1, 5, 30, 32)
    c = ChunkingConfig.CPU_FP32
    assert (c.t_pad, c.t_query, c.t_center, c.t_max) == (16000, 96000, 608000, 656000)
    assert ChunkingConfig.GPU_FP16.t_pad_tgt(40000) == 120000


@pytest.mark.parametrize("values", [(0, 6, 38, 41), (1, 38, 38, 41), (1, 6, 42, 41), (1.5, 6, 38, 41)])
def test_chunking_validation(values: tuple) -> None:
    with pytest.raises(OptionError, match="ChunkingConfig"):
        ChunkingConfig(*values)


def test_chunking_for_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ChunkingConfig.for_device("cpu", torch.float32) is ChunkingConfig.CPU_FP32
    assert ChunkingConfig.for_device(torch.device("cpu"), torch.bfloat16) is ChunkingConfig.CPU_FP32
    assert ChunkingConfig.for_device("mps", torch.float32) is ChunkingConfig.CPU_FP32

    class Props:
        total_memory = 24 * 1024**3

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props)
    assert ChunkingConfig.for_device("cuda", torch.float16) is ChunkingConfig.GPU_FP16
    assert ChunkingConfig.for_device("cuda", torch.float32) is ChunkingConfig.CPU_FP32
    Props.total_memory = 4 * 1024**3
    assert ChunkingConfig.for_device("cuda:0", torch.float16) is ChunkingConfig.LOW_MEMORY
    assert ChunkingConfig.for_device("cuda", torch.float32) is ChunkingConfig.LOW_MEMORY

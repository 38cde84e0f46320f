"""Reading voice checkpoints: every format, both weight-norm spellings, and hostile files."""

from __future__ import annotations

import json
import pickle
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rvc_pipeline.checkpoint import describe_checkpoint, read_checkpoint
from rvc_pipeline.errors import CheckpointError, UnsupportedCheckpointError, VoiceNotFoundError
from rvc_pipeline.synth.config import STANDARD_CONFIGS
from rvc_pipeline.testing.voices import (
    make_state_dict,
    standard_config,
    state_dict_shapes,
    write_applio_voice,
    write_generic_checkpoint,
    write_malicious_checkpoint,
    write_training_checkpoint,
    write_webui_voice,
)

ALL_STANDARD = sorted(STANDARD_CONFIGS)  # (version, sr) pairs, incl. Applio's v2 24k


def _expected_keys(version: str, sr: int, f0: bool, n_speakers: int = 1) -> set[str]:
    shapes, _ = state_dict_shapes(standard_config(version, sr, n_speakers), {"v1": 256, "v2": 768}[version], f0)
    return set(shapes) | {k.replace("weight_v", "weight_g") for k in shapes if k.endswith("weight_v")}


# --- the reference fixtures ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, version, f0, sr, hop, stages, n_tensors",
    [("webui-v2-40k.pth", "v2", True, 40000, 400, 4, 457), ("webui-v1-48k-nof0.pth", "v1", False, 48000, 480, 5, 503)],
)
def test_reference_fixture(name, version, f0, sr, hop, stages, n_tensors, shared_fixture):
    path = shared_fixture(f"voices/{name}")
    spec = read_checkpoint(path)
    assert (spec.version, spec.f0, spec.sample_rate, spec.hop_length) == (version, f0, sr, hop)
    assert spec.n_speakers == 109 and spec.source_format == "webui"
    assert len(spec.config.upsample_rates) == stages
    assert spec.config == standard_config(version, sr, 109)
    assert len(spec.weights) == n_tensors
    assert all(t.dtype == torch.float16 for t in spec.weights.values())
    # The factory writes exactly the reference key set and shapes.
    ours = make_state_dict(version, sr, f0, n_speakers=109)
    assert set(ours) == set(spec.weights)
    assert all(ours[k].shape == t.shape for k, t in spec.weights.items())
    assert spec.metadata["info"] == "random"


# --- round trips of every flavour -----------------------------------------------------------


@pytest.mark.parametrize("version, sr", ALL_STANDARD)
@pytest.mark.parametrize("f0", [True, False])
def test_webui_round_trip(tmp_path, version, sr, f0):
    path = write_webui_voice(tmp_path / "v.pth", version, sr, f0, info="25epoch")
    spec = read_checkpoint(path)
    assert (spec.version, spec.f0, spec.sample_rate, spec.source_format) == (version, f0, sr, "webui")
    assert spec.config == standard_config(version, sr, 1)
    assert spec.hop_length == sr // 100 and spec.content_dim == {"v1": 256, "v2": 768}[version]
    assert set(spec.weights) == _expected_keys(version, sr, f0)
    assert spec.metadata["epoch"] == 25 and spec.metadata["sr"] == f"{sr // 1000}k"


@pytest.mark.parametrize("version, sr, f0", [("v2", 40000, True), ("v2", 24000, True), ("v1", 32000, False)])
def test_applio_round_trip(tmp_path, version, sr, f0):
    spec = read_checkpoint(write_applio_voice(tmp_path / "a.pth", version, sr, f0))
    assert (spec.version, spec.f0, spec.sample_rate, spec.source_format) == (version, f0, sr, "applio")
    assert spec.config == standard_config(version, sr, 1)
    md = spec.metadata
    assert md["vocoder"] == "HiFi-GAN" and md["author"] == "tester" and md["embedder_model"] == "contentvec"
    assert md["epoch"] == 20 and "creation_date" in md
    json.dumps(md)


def test_applio_blended_model_with_string_rate(tmp_path):
    spec = read_checkpoint(write_applio_voice(tmp_path / "b.pth", "v2", 48000, True, blended=True))
    assert spec.source_format == "applio" and spec.sample_rate == 48000 and spec.metadata["sr"] == "48000"


@pytest.mark.parametrize("vocoder", ["BigVGAN", "RefineGAN2"])
def test_unsupported_applio_vocoder(tmp_path, vocoder):
    path = write_applio_voice(tmp_path / "x.pth", vocoder=vocoder)
    with pytest.raises(UnsupportedCheckpointError, match=f"{vocoder}.*HiFi-GAN"):
        read_checkpoint(path)


@pytest.mark.parametrize("vocoder", ["MRF HiFi-GAN", "RefineGAN"])
def test_vocoder_label_must_match_the_decoder_keys(tmp_path, vocoder):
    path = write_applio_voice(tmp_path / "x.pth", vocoder="HiFi-GAN", overrides={"vocoder": vocoder})
    with pytest.raises(CheckpointError, match=f"metadata says vocoder '{vocoder}' but the dec.* tensors are a HiFi-GAN"):
        read_checkpoint(path)


def test_mixed_decoder_layouts_are_refused(tmp_path):
    weight = {k.replace("dec.ups.", "dec.upsamples."): v for k, v in make_state_dict().items()}
    path = tmp_path / "mrf.pth"
    torch.save({"weight": weight, "config": standard_config("v2", 40000, 109).to_list(), "sr": 40000,
                "f0": True, "version": "v2"}, path)
    with pytest.raises(CheckpointError, match="mix the layouts of several vocoders.*HiFi-GAN.*MRF HiFi-GAN"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    "version, sr, f0", [("v2", 40000, True), ("v1", 32000, False), ("v1", 48000, True), ("v2", 48000, False)]
)
def test_training_checkpoint(tmp_path, version, sr, f0):
    path = write_training_checkpoint(tmp_path / "G_2333333.pth", version, sr, f0, iteration=7, with_scaler=True)
    spec = read_checkpoint(path)
    assert (spec.version, spec.f0, spec.sample_rate, spec.source_format) == (version, f0, sr, "training")
    assert spec.config == standard_config(version, sr, 109)
    assert not any(k.startswith("enc_q.") for k in spec.weights)
    assert set(spec.weights) == _expected_keys(version, sr, f0)
    assert all(t.dtype == torch.float32 for t in spec.weights.values())
    assert spec.metadata["epoch"] == 7 and spec.metadata["learning_rate"] == 1e-4
    assert "optimizer" not in spec.metadata and "scaler" not in spec.metadata


def test_discriminator_checkpoint_is_refused(tmp_path):
    path = tmp_path / "D_100.pth"
    torch.save({"model": {"discriminators.0.convs.0.weight": torch.zeros(2, 2)}, "iteration": 1}, path)
    with pytest.raises(CheckpointError, match="discriminator"):
        read_checkpoint(path)


@pytest.mark.parametrize("version, sr, f0", [("v2", 40000, True), ("v1", 48000, False), ("v2", 32000, False)])
def test_generic_checkpoint(tmp_path, version, sr, f0):
    spec = read_checkpoint(write_generic_checkpoint(tmp_path / "g.pth", version, sr, f0))
    assert (spec.version, spec.f0, spec.sample_rate, spec.source_format) == (version, f0, sr, "generic")
    assert spec.config.upsample_rates == standard_config(version, sr).upsample_rates
    assert spec.metadata["hop_length"] == sr // 100


def test_generic_checkpoint_wrong_hop_or_model_type(tmp_path):
    with pytest.raises(CheckpointError, match="hop_length=480"):
        read_checkpoint(write_generic_checkpoint(tmp_path / "h.pth", "v2", 40000, True, hop_length=480))
    with pytest.raises(CheckpointError, match="model_type"):
        read_checkpoint(write_generic_checkpoint(tmp_path / "m.pth", "v2", 40000, True, model_type="rvc_v1"))


def test_bare_state_dict(tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(make_state_dict("v2", 48000, True), path)
    spec = read_checkpoint(path)  # pitch model: the rate follows from the decoder alone
    assert (spec.version, spec.sample_rate, spec.source_format) == ("v2", 48000, "generic")


def test_any_consistent_config(tmp_path):
    """A small, non-standard architecture (16 kHz, hop 160) is read entirely from the tensors."""
    custom = replace(standard_config("v2", 40000), sample_rate=16000, upsample_rates=(8, 5, 2, 2),
                     upsample_kernel_sizes=(16, 10, 4, 4), upsample_initial_channel=64, hidden_channels=64,
                     inter_channels=32, filter_channels=128, n_layers=2, gin_channels=32, spec_channels=257)
    for f0 in (True, False):
        spec = read_checkpoint(write_webui_voice(tmp_path / f"c{f0}.pth", "v2", 16000, f0, config=custom))
        assert spec.config == replace(custom, spk_embed_dim=1) and spec.hop_length == 160
    spec = read_checkpoint(write_generic_checkpoint(tmp_path / "g.pth", "v2", 16000, True, config=custom))
    assert spec.config.upsample_rates == (8, 5, 2, 2) and spec.config.hidden_channels == 64


@pytest.mark.parametrize("spelling", ["legacy", "parametrizations"])
def test_both_weight_norm_spellings(tmp_path, spelling):
    spec = read_checkpoint(write_webui_voice(tmp_path / "w.pth", "v1", 48000, True, weight_norm_spelling=spelling))
    assert spec.config == standard_config("v1", 48000, 1)
    marker = "parametrizations.weight.original1" if spelling == "parametrizations" else "weight_v"
    assert "dec.ups.0." + marker in spec.weights  # left for the synthesizer loader to fold


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16])
def test_stored_dtype_is_kept(tmp_path, dtype):
    spec = read_checkpoint(write_webui_voice(tmp_path / "d.pth", dtype=dtype))
    assert {t.dtype for t in spec.weights.values()} == {dtype}


def test_multi_speaker(tmp_path):
    path = write_webui_voice(tmp_path / "ms.pth", "v2", 40000, True, n_speakers=4)
    spec = read_checkpoint(path)
    assert spec.n_speakers == 4 and spec.config.spk_embed_dim == 4
    assert describe_checkpoint(path)["n_speakers"] == 4


def test_missing_labels_are_taken_from_the_tensors(tmp_path):
    # RVC would assume f0=1, v1 here; the tensors say v2 without pitch.
    path = write_webui_voice(tmp_path / "n.pth", "v2", 32000, False, overrides={"f0": None, "version": None})
    spec = read_checkpoint(path)
    assert (spec.version, spec.f0, spec.sample_rate) == ("v2", False, 32000)


@pytest.mark.parametrize(
    "args, overrides, message",
    [
        (("v2", 40000, True), {"version": "v1"}, "version label 'v1'"),
        (("v1", 40000, False), {"f0": 1}, "f0 label 1"),
        (("v2", 40000, True), {"f0": "yes"}, "not 0/1"),
        (("v2", 40000, True), {"sr": "48k"}, "sr label '48k'"),
        (("v2", 40000, True), {"config": standard_config("v2", 48000, 109).to_list()}, "upsample_kernel_sizes"),
        (("v2", 32000, True), {"config": standard_config("v1", 32000, 109).to_list()}, "kernel"),
    ],
)
def test_contradictory_labels_are_refused(tmp_path, args, overrides, message):
    path = write_webui_voice(tmp_path / "bad.pth", *args, overrides=overrides)
    with pytest.raises(CheckpointError, match=message) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)


# --- hostile and broken files ---------------------------------------------------------------


@pytest.mark.parametrize("container", ["zip", "pickle"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, container):
    marker = tmp_path / "pwned"
    path = write_malicious_checkpoint(tmp_path / "evil.pth", marker, container=container)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        read_checkpoint(path)
    assert not marker.exists()
    # Control: the payload is real; an unsafe loader would have run it.
    control = tmp_path / "control"
    write_malicious_checkpoint(tmp_path / "evil2.pth", control, container=container)
    if container == "zip":
        torch.load(tmp_path / "evil2.pth", weights_only=False)
    else:
        pickle.loads((tmp_path / "evil2.pth").read_bytes())
    assert control.exists()


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "text", "plain-pickle", "zip-not-torch"])
def test_damaged_files(tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    if kind == "empty":
        _write_bytes(path, b"")
    elif kind == "truncated":
        good = write_webui_voice(tmp_path / "good.pth", "v1", 32000, False).read_bytes()
        _write_bytes(path, good[: len(good) // 3])
    elif kind == "random":
        _write_bytes(path, bytes(range(256)) * 16)
    elif kind == "text":
        _write_bytes(path, b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    elif kind == "plain-pickle":
        _write_bytes(path, pickle.dumps({"weight": {}}, protocol=2))
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("hello.txt", "hi")
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)
    assert "re-export" in str(err.value) or "re-download" in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(VoiceNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="directory"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "obj, message",
    [
        ([1, 2, 3], "holds a list"),
        ({"hello": 1}, "not an RVC voice checkpoint"),
        ({"weight": [torch.zeros(1)], "config": []}, "not a dict of tensors"),
        ({"weight": {"enc_p.emb_phone.weight": "abc"}, "config": []}, "not a tensor"),
        ({"weight": {"enc_p.emb_phone.weight": torch.zeros(2, 2, dtype=torch.int64)}}, "floating point"),
        ({"weight": {}, "config": []}, "empty"),
        ({"model": "abc"}, "not a dict of tensors"),
    ],
)
def test_wrong_types_inside(tmp_path, obj, message):
    path = tmp_path / "odd.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


@pytest.mark.parametrize("config, message", [("abc", "not RVC's 18-item list"), ([1, 2, 3], "18-item")])
def test_bad_config_list(tmp_path, config, message):
    path = write_webui_voice(tmp_path / "c.pth", overrides={"config": config})
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


def test_incomplete_or_non_finite_weights(tmp_path):
    weight = make_state_dict("v2", 40000, True)
    del weight["enc_p.proj.weight"]
    path = tmp_path / "partial.pth"
    torch.save({"weight": weight, "config": standard_config("v2", 40000, 109).to_list()}, path)
    with pytest.raises(CheckpointError, match="enc_p.proj.weight"):
        read_checkpoint(path)
    weight = make_state_dict("v2", 40000, True)
    weight["flow.flows.0.pre.bias"][3] = float("nan")
    torch.save({"weight": weight, "config": standard_config("v2", 40000, 109).to_list()}, path)
    with pytest.raises(CheckpointError, match="flow.flows.0.pre.bias.*NaN"):
        read_checkpoint(path)


def test_unknown_content_dim_is_unsupported(tmp_path):
    weight = make_state_dict("v2", 40000, True)
    weight["enc_p.emb_phone.weight"] = torch.zeros(192, 1024, dtype=torch.float16)
    path = tmp_path / "w.pth"
    torch.save({"weight": weight, "config": standard_config("v2", 40000, 109).to_list()}, path)
    with pytest.raises(CheckpointError, match="1024-dim"):
        read_checkpoint(path)


# --- describe and speed ---------------------------------------------------------------------


def test_describe_checkpoint(tmp_path):
    path = write_applio_voice(tmp_path / "d.pth", "v2", 40000, True, n_speakers=2)
    info = describe_checkpoint(path)
    json.dumps(info)
    assert info["format"] == "applio" and info["version"] == "v2" and info["f0"] is True
    assert info["sample_rate"] == 40000 and info["hop_length"] == 400 and info["n_speakers"] == 2
    assert info["tensors"] == 457 and info["parameters"] == 27_537_346 - 107 * 256  # spec §2.2 with 2 speakers
    assert info["dtype"] == "float16" and info["metadata"]["vocoder"] == "HiFi-GAN"


def test_reading_a_55mb_voice_is_fast(tmp_path):
    path = write_webui_voice(tmp_path / "big.pth", "v2", 40000, True, n_speakers=109)
    assert 50e6 < path.stat().st_size < 60e6
    read_checkpoint(path)  # warm the page cache, as a second load would be
    start = time.process_time()  # CPU time: robust to a busy machine, unlike wall time
    read_checkpoint(path)
    assert time.process_time() - start < 10.0  # ~0.1 s on an idle 2-core machine

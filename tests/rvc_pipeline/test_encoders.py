"""A content encoder per voice: the name a voice's checkpoint gives (`embedder_model`) resolved to
files in the models folder, the overrides, and convert()/the CLI converting with that encoder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rvc_pipeline import (ContentEncoders, ConversionOptions, PitchEstimator, convert, extract_features,
                          load_content_encoder, load_voice)
from rvc_pipeline.catalog import VoiceCatalog
from rvc_pipeline.cli import main
from rvc_pipeline.content import HubertConfig
from rvc_pipeline.encoders import KNOWN_ENCODERS, VOICE_ENCODERS_ENV, ENCODERS_ENV, embedder_of
from rvc_pipeline.errors import AssetNotFoundError
from rvc_pipeline.models_folder import ModelsFolder
from rvc_pipeline.testing.audio import tone
from rvc_pipeline.testing.hubert import write_fairseq_hubert, write_hf_hubert_folder
from rvc_pipeline.testing.voices import write_applio_voice, write_webui_voice

#: A tiny encoder that v1 voices can run on (final_proj to 256, 9 layers), so conversions are quick.
V1_TINY = HubertConfig(hidden_size=96, num_layers=9, num_heads=12, intermediate_size=64,
                       conv_layers=((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2,
                       pos_conv_kernel=16, final_dim=256)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for name in ("RVC_MODELS_DIR", "RVC_CONTENT_ENCODER", ENCODERS_ENV, VOICE_ENCODERS_ENV):
        monkeypatch.delenv(name, raising=False)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


# ------------------------------------------------------------------ names -> files


@pytest.mark.parametrize("name", KNOWN_ENCODERS)
def test_each_name_resolves_to_its_file_or_folder(tmp_path, name):
    folder = ModelsFolder(tmp_path)
    stem = "hubert_base" if name == "contentvec" else name
    assert not folder.find_encoder(name).present
    folder_form = touch(tmp_path / "assets" / name / "config.json").parent
    assert folder.find_encoder(name).path == folder_form
    file_form = touch(tmp_path / "assets" / f"{stem}.pt")
    assert folder.find_encoder(name).path == file_form  # <name>.pt is tried before <name>/
    assert folder.find_encoder(name).present and folder.find_encoder(name).problem is None


def test_applio_folder_spelling_is_accepted(tmp_path):
    folder = ModelsFolder(tmp_path)
    applio = touch(tmp_path / "assets" / "chinese_hubert_base" / "config.json").parent
    assert folder.find_encoder("chinese-hubert-base").path == applio
    touch(tmp_path / "assets" / "spin" / "pytorch_model.bin")
    assert not folder.find_encoder("spin").present  # a folder needs its config.json


def test_hubert_base_is_contentvec_and_the_default(tmp_path):
    folder = ModelsFolder(tmp_path)
    contentvec = touch(tmp_path / "assets" / "contentvec.pt")
    assert folder.find_encoder("contentvec").path == contentvec
    hubert = touch(tmp_path / "assets" / "hubert_base.pt")
    assert folder.find_encoder("contentvec").path == hubert == folder.content_encoder_path()
    for metadata in ({}, {"embedder_model": None}, {"embedder_model": ""}, None):
        assert embedder_of(metadata) == "contentvec"
        assert folder.encoder_for_voice("webui", metadata).path == hubert
    assert folder.encoder_for_voice("x", {"embedder_model": "spin"}).name == "spin"


def test_a_missing_encoder_names_the_file_to_add(tmp_path):
    folder = ModelsFolder(tmp_path)
    ref = folder.encoder_for_voice("ana", {"embedder_model": "spin-v2"})
    assert not ref.present and ref.path is None
    assert "voice 'ana'" in ref.problem and str(tmp_path / "assets" / "spin-v2.pt") in ref.problem
    with pytest.raises(AssetNotFoundError, match="spin-v2.pt"):
        ref.require()
    catalog = VoiceCatalog(tmp_path, demo_fallback=False)
    assert "<models>/assets/spin-v2.pt" in catalog.label(tmp_path / "assets" / "spin-v2.pt")


@pytest.mark.parametrize("name", ["../outside", "sub/spin", "/etc/spin", "..", ".hidden", "a\\b", "c:d", "x\0"])
def test_a_path_in_the_name_is_refused(tmp_path, name):
    root = tmp_path / "models"
    touch(root / "assets" / "sub" / "spin.pt")
    touch(tmp_path / "outside.pt")  # would be found if the name were joined to assets/..
    ref = ModelsFolder(root).encoder_for_voice("evil", {"embedder_model": name})
    assert not ref.present and ref.path is None
    assert "not a path" in ref.problem


def test_custom_needs_a_per_voice_override(tmp_path, monkeypatch):
    own = touch(tmp_path / "assets" / "dee-embedder" / "config.json").parent
    ref = ModelsFolder(tmp_path).encoder_for_voice("dee", {"embedder_model": "custom"})
    assert not ref.present and "custom" in ref.problem and "voice_encoders" in ref.problem
    folder = ModelsFolder(tmp_path, voice_encoders={"dee": "dee-embedder"})
    assert folder.encoder_for_voice("dee", {"embedder_model": "custom"}).path == own
    monkeypatch.setenv(VOICE_ENCODERS_ENV, "dee=dee-embedder")
    assert ModelsFolder(tmp_path).encoder_for_voice("dee", {"embedder_model": "custom"}).path == own


def test_encoder_files_elsewhere(tmp_path, monkeypatch):
    root = tmp_path / "models"
    elsewhere = touch(tmp_path / "opt" / "spin.pt")
    folder = ModelsFolder(root, encoders={"spin": elsewhere})
    assert folder.find_encoder("spin").path == elsewhere
    hubert = touch(tmp_path / "opt" / "hubert.pt")
    monkeypatch.setenv(ENCODERS_ENV, f"spin={elsewhere}{os.pathsep}contentvec={hubert}")
    assert ModelsFolder(root).find_encoder("spin").path == elsewhere
    assert ModelsFolder(root).content_encoder_path() == hubert
    assert VoiceCatalog(root, demo_fallback=False).label(elsewhere) == "<spin-encoder>"
    missing = ModelsFolder(root, encoders={"spin": tmp_path / "nope.pt"}).find_encoder("spin")
    assert not missing.present and "nope.pt does not exist" in missing.problem


# ------------------------------------------------------------------ conversion with the voice's encoder


@pytest.fixture(scope="module")
def two_encoder_models(tmp_path_factory) -> Path:
    """ana (Applio, trained with spin) and ben (RVC WebUI file: contentvec), each with a different
    random encoder in the models folder (spin as a fairseq file, contentvec as a folder)."""
    root = tmp_path_factory.mktemp("models")
    write_applio_voice(root / "ana.pth", "v1", 40000, f0=True, overrides={"embedder_model": "spin"}, seed=1)
    write_webui_voice(root / "ben.pth", "v1", 40000, f0=True, seed=2)
    write_fairseq_hubert(root / "assets" / "spin.pt", config=V1_TINY, seed=11)
    write_hf_hubert_folder(root / "assets" / "hubert_base", config=V1_TINY, seed=12)
    return root


def test_convert_picks_each_voices_encoder(two_encoder_models):
    root, audio = two_encoder_models, tone(220, 0.6)
    spin = load_content_encoder(root / "assets" / "spin.pt", device="cpu")
    contentvec = load_content_encoder(root / "assets" / "hubert_base", device="cpu")
    encoders, estimator = ContentEncoders(root, device="cpu"), PitchEstimator(device="cpu")
    options = ConversionOptions(f0_method="pm", seed=3)
    for name, own, other in (("ana", spin, contentvec), ("ben", contentvec, spin)):
        with load_voice(root / f"{name}.pth", device="cpu") as voice:
            got = convert(audio, voice, encoders, estimator, options).audio
            np.testing.assert_array_equal(got, convert(audio, voice, own, estimator, options).audio)
            # the two random encoders differ, so picking the other one would change the output
            picked = extract_features(encoders.for_voice(voice), audio, "v1")
            np.testing.assert_array_equal(picked, extract_features(own, audio, "v1"))
            assert not np.allclose(picked, extract_features(other, audio, "v1"))
    assert sorted(encoders.loaded) == ["contentvec", "spin"]


def test_contentencoders_says_which_file_is_missing(two_encoder_models, tmp_path):
    write_applio_voice(tmp_path / "cid.pth", "v1", 40000, overrides={"embedder_model": "korean-hubert-base"})
    with load_voice(tmp_path / "cid.pth", device="cpu") as voice:
        with pytest.raises(AssetNotFoundError, match="korean-hubert-base.pt"):
            convert(tone(220, 0.5), voice, ContentEncoders(two_encoder_models), PitchEstimator(device="cpu"))


def test_cli_converts_each_voice_with_its_encoder(two_encoder_models, tmp_path):
    root = two_encoder_models
    source = tmp_path / "in.wav"
    sf.write(source, tone(220, 0.6), 16000)
    outputs = {}
    for voice, encoders in (("ana", (None, "spin")), ("ben", (None, "contentvec"))):
        for encoder in encoders:
            target = tmp_path / f"{voice}-{encoder}.wav"
            extra = ["--encoder", encoder] if encoder else []
            code = main(["convert", str(source), str(target), "--voice", voice, "--f0-method", "pm", "--seed", "3",
                         "--models-dir", str(root), "--no-demo", *extra])
            assert code == 0
            outputs[voice, encoder] = sf.read(target, dtype="int16")[0]
    np.testing.assert_array_equal(outputs["ana", None], outputs["ana", "spin"])
    np.testing.assert_array_equal(outputs["ben", None], outputs["ben", "contentvec"])


def test_cli_names_the_missing_encoder(two_encoder_models, tmp_path, capsys):
    root = tmp_path / "models"
    write_applio_voice(root / "cid.pth", "v1", 40000, overrides={"embedder_model": "japanese-hubert-base"})
    source = tmp_path / "in.wav"
    sf.write(source, tone(220, 0.5), 16000)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), str(tmp_path / "o.wav"), "--voice", "cid", "--f0-method", "pm",
              "--models-dir", str(root), "--no-demo"])
    assert exit_info.value.code == 2
    assert "japanese-hubert-base.pt" in capsys.readouterr().err
    assert main(["voices", "--json", "--models-dir", str(root), "--no-demo"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["encoder"] == "japanese-hubert-base" and row["encoder_present"] is False

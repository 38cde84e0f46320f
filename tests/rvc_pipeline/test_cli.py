"""The `rvc` command as a user runs it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from rvc_pipeline.cli import main
from rvc_pipeline.testing.audio import tone


def _models_args(models_dir):
    return ["--models-dir", str(models_dir)]


def test_convert_one_file(models_dir, tmp_path):
    source = tmp_path / "in.flac"
    sf.write(source, tone(220, 1.0, sample_rate=44100), 44100)
    target = tmp_path / "out.wav"
    code = main(["convert", str(source), str(target), "--voice", "alice", "--f0-method", "pm", *_models_args(models_dir)])
    assert code == 0
    audio, rate = sf.read(target, dtype="int16")
    assert rate == 40000 and 0.9 * 40000 < audio.shape[0] <= 40000


def test_convert_folder_reports_failures_with_exit_code(models_dir, tmp_path, capsys):
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    sf.write(source / "a.wav", tone(200, 0.5), 16000)
    sf.write(source / "b.ogg", tone(300, 0.5, sample_rate=48000), 48000)
    (source / "broken.wav").write_bytes(b"RIFF not really a wave file")
    code = main(
        ["convert", str(source), str(target), "--voice", "alice", "--f0-method", "pm", "--resample-sr", "16000", *_models_args(models_dir)]
    )
    assert code == 1
    assert sorted(p.name for p in target.iterdir()) == ["a.wav", "b.wav"]
    assert sf.info(target / "a.wav").samplerate == 16000
    err = capsys.readouterr().err
    assert "broken.wav" in err and "1 of 3 files failed" in err


def test_inputs_are_checked_before_models_load(models_dir, tmp_path, capsys):
    broken_encoder = tmp_path / "hubert_base.pt"
    broken_encoder.write_bytes(b"garbage")  # loading it would fail with a checkpoint error
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["convert", str(tmp_path / "missing.wav"), str(tmp_path / "o.wav"), "--voice", "alice",
             "--content-encoder", str(broken_encoder), *_models_args(models_dir)]
        )
    assert exit_info.value.code == 2
    assert "missing.wav does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("voice", ["nobody", "../alice", "/etc/passwd"])
def test_unknown_or_path_like_voice_is_refused(models_dir, tmp_path, voice, capsys):
    source = tmp_path / "in.wav"
    sf.write(source, tone(220, 0.5), 16000)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), str(tmp_path / "o.wav"), "--voice", voice, *_models_args(models_dir)])
    assert exit_info.value.code == 2
    assert "voice" in capsys.readouterr().err.lower()


def test_bad_option_is_refused(models_dir, tmp_path, capsys):
    source = tmp_path / "in.wav"
    sf.write(source, tone(220, 0.5), 16000)
    with pytest.raises(SystemExit):
        main(["convert", str(source), str(tmp_path / "o.wav"), "--voice", "alice", "--index-rate", "1.5", *_models_args(models_dir)])
    assert "index_rate" in capsys.readouterr().err


def test_voices_lists_the_models_folder(models_dir, capsys):
    assert main(["voices", "--json", *_models_args(models_dir)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"alice", "bob", "carol"}
    assert rows["alice"]["version"] == "v2" and rows["alice"]["index"] is True and rows["alice"]["f0"] is True
    assert rows["bob"]["sample_rate"] == 48000 and rows["bob"]["f0"] is False and rows["bob"]["index"] is False
    assert rows["carol"]["speakers"] == 3


def test_info_prints_checkpoint_metadata(models_dir, capsys):
    assert main(["info", str(models_dir / "bob.pth")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == "v1" and info["sample_rate"] == 48000 and info["f0"] is False


def test_speech_conversion_keeps_duration(models_dir, tmp_path, espeak_speech):
    speech = espeak_speech("The quick brown fox jumps over the lazy dog.")
    source = tmp_path / "speech.wav"
    sf.write(source, speech, 16000)
    target = tmp_path / "speech_out.wav"
    assert main(["convert", str(source), str(target), "--voice", "bob", *_models_args(models_dir)]) == 0
    audio, rate = sf.read(target)
    assert rate == 48000
    assert abs(audio.shape[0] / rate - speech.shape[0] / 16000) < 0.03
    assert np.abs(audio).max() > 0


def test_output_format_and_f0_curve_flags(models_dir, tmp_path, capsys):
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    sf.write(source / "a.wav", tone(200, 0.6), 16000)
    curve = tmp_path / "f0.csv"
    curve.write_text("time_s,f0_hz\n0.0,180\n0.5,240\n")
    code = main(["convert", str(source), str(target), "--voice", "alice", "--f0-method", "pm", "--output-format", "mp3",
                 "--f0-curve", str(curve), "--auto-key", "male", *_models_args(models_dir)])
    assert code == 0
    assert [p.name for p in target.iterdir()] == ["a.mp3"]
    info = sf.info(target / "a.mp3")
    assert info.format == "MP3" and info.samplerate == 44100  # 40 kHz is not an MP3 rate
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source / "a.wav"), str(tmp_path / "x.wav"), "--voice", "alice", "--output-format", "flac",
              *_models_args(models_dir)])
    assert exit_info.value.code == 2 and "writes .flac files" in capsys.readouterr().err
    curve.write_text("0.5,100\n0.2,100\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source / "a.wav"), str(tmp_path / "x.wav"), "--voice", "alice", "--f0-curve", str(curve),
              *_models_args(models_dir)])
    assert exit_info.value.code == 2 and "times must increase" in capsys.readouterr().err

"""VoiceCatalog: the models folder plus the labelled demo fallback, shared by the CLI and the
service, and the file fingerprints that tell a replaced voice from the one loaded."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from rvc_pipeline.catalog import VoiceCatalog
from rvc_pipeline.cli import main
from rvc_pipeline.demo import DEMO_VOICE_NAME
from rvc_pipeline.models_folder import file_fingerprint
from rvc_pipeline.testing.audio import tone
from rvc_pipeline.testing.voices import write_webui_voice


@pytest.fixture
def demo_cache(tmp_path, monkeypatch) -> Path:
    """The demo files go to a scratch cache, not the user's home."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RVC_CACHE_DIR", str(cache))
    monkeypatch.delenv("RVC_MODELS_DIR", raising=False)
    monkeypatch.delenv("RVC_CONTENT_ENCODER", raising=False)
    return cache


def test_a_fresh_install_sees_the_labelled_demo_voice(demo_cache, tmp_path):
    catalog = VoiceCatalog(tmp_path / "models")
    (entry,) = catalog.list_voices()
    assert entry.name == DEMO_VOICE_NAME and entry.demo
    assert catalog.encoder_is_demo and catalog.voices_are_demo
    assert catalog.find_voice(DEMO_VOICE_NAME).pth_path == entry.pth_path
    notices = " ".join(catalog.notices())
    assert "does not exist" in notices and "UNTRAINED DEMO" in notices
    assert not (tmp_path / "models").exists()  # nothing created behind the user's back


def test_a_missing_models_folder_is_said_once_not_on_every_listing(demo_cache, tmp_path, caplog):
    catalog = VoiceCatalog(tmp_path / "missing", demo_fallback=False)
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            assert catalog.list_voices() == []
    assert not caplog.records
    assert sum("does not exist" in n for n in catalog.notices()) == 1


def test_user_voices_replace_the_demo_voice(demo_cache, tmp_path):
    root = tmp_path / "models"
    write_webui_voice(root / "alice.pth", "v2", 40000, f0=True, seed=1)
    catalog = VoiceCatalog(root)
    assert [e.name for e in catalog.list_voices()] == ["alice"]
    assert catalog.encoder_is_demo and not catalog.voices_are_demo  # no hubert_base.pt yet


def test_labels_hide_server_folders(demo_cache, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    catalog = VoiceCatalog(root)
    assert catalog.label(root / "bob.pth") == "<models>/bob.pth"
    assert catalog.label(catalog.encoder_path).startswith("<demo>/")
    assert catalog.label("/somewhere/else/x.pth") == "<x.pth>"
    labels = catalog.path_labels()
    assert list(labels) == sorted(labels, key=len, reverse=True)


def test_fingerprint_changes_when_a_file_is_overwritten_in_place(tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    write_webui_voice(a, "v2", 40000, f0=True, seed=1)
    write_webui_voice(b, "v2", 40000, f0=True, seed=2)
    assert a.stat().st_size == b.stat().st_size  # same architecture: size alone cannot tell
    before = file_fingerprint(a, None)
    assert file_fingerprint(a, None) == before
    inode = a.stat().st_ino
    a.write_bytes(b.read_bytes())
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 1))
    assert a.stat().st_ino == inode and file_fingerprint(a, None) != before
    index = tmp_path / "a.index"
    index.write_bytes(b"x")
    assert file_fingerprint(a, index) != file_fingerprint(a, None)


def test_cli_lists_and_converts_with_the_demo_like_the_service(demo_cache, tmp_path, capsys):
    models = tmp_path / "models"
    assert main(["voices", "--models-dir", str(models)]) == 0
    out = capsys.readouterr()
    assert DEMO_VOICE_NAME in out.out and "UNTRAINED DEMO" in out.out
    assert str(models) in out.err  # the CLI says where real voices go, by their real path

    source, target = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(source, tone(200, 0.5), 16000)
    code = main(["convert", str(source), str(target), "--voice", DEMO_VOICE_NAME, "--f0-method", "pm",
                 "--models-dir", str(models)])
    assert code == 0 and sf.info(target).samplerate == 40000
    assert "UNTRAINED DEMO" in capsys.readouterr().err


def test_cli_without_demo_prints_the_next_step(demo_cache, tmp_path, capsys):
    models = tmp_path / "models"
    assert main(["voices", "--models-dir", str(models), "--no-demo"]) == 0
    assert "put <name>.pth" in capsys.readouterr().out
    source = tmp_path / "in.wav"
    sf.write(source, tone(200, 0.5), 16000)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), str(tmp_path / "o.wav"), "--voice", DEMO_VOICE_NAME, "--no-demo",
              "--models-dir", str(models)])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value,message", [
    ("--seed", "1e3", "seed must be an integer"),
    ("--index-rate", "2", "index_rate must be 0 to 1"),
    ("--f0-method", "yin", "f0_method must be one of"),
])
def test_cli_options_follow_the_one_schema(demo_cache, tmp_path, capsys, flag, value, message):
    source = tmp_path / "in.wav"
    sf.write(source, tone(200, 0.5), 16000)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), str(tmp_path / "o.wav"), "--voice", DEMO_VOICE_NAME, flag, value,
              "--models-dir", str(tmp_path / "models")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cli_demo_copy_is_not_in_the_models_folder(demo_cache, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    VoiceCatalog(models)
    assert list(models.iterdir()) == []
    shutil.rmtree(demo_cache)

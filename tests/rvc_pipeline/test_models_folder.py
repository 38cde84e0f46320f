"""Models folder layout, voice-name safety and asset discovery."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rvc_pipeline.errors import AssetNotFoundError, VoiceNotFoundError
from rvc_pipeline.models_folder import (
    CONTENT_ENCODER_ENV,
    MODELS_DIR_ENV,
    RMVPE_ENV,
    ModelsFolder,
    check_voice_name,
)


def touch(path: Path, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A models folder with both layouts, assets, and some things that are not voices."""
    r = tmp_path / "models"
    touch(r / "alice.pth", 100)
    touch(r / "alice.index")
    touch(r / "bob.pth", 50)  # no index
    touch(r / "carol" / "carol_e100_s2000.pth", 70)  # WebUI-style folder
    touch(r / "carol" / "trained_IVF16_Flat_nprobe_1_carol_v2.index")
    touch(r / "carol" / "added_IVF16_Flat_nprobe_1_carol_v2.index")
    touch(r / "dave" / "G_2333333.pth", 80)  # training folder: generator + discriminator
    touch(r / "dave" / "D_2333333.pth", 90)
    touch(r / "twins" / "a.pth")  # ambiguous
    touch(r / "twins" / "b.pth")
    touch(r / "empty" / "readme.txt")
    touch(r / ".hidden.pth")
    touch(r / "notes.txt")
    touch(r / "assets" / "hubert_base.pt")
    touch(r / "assets" / "rmvpe.pt")
    return r


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (MODELS_DIR_ENV, CONTENT_ENCODER_ENV, RMVPE_ENV):
        monkeypatch.delenv(name, raising=False)


def test_list_voices_both_layouts(root: Path) -> None:
    entries = ModelsFolder(root).list_voices()
    assert [e.name for e in entries] == ["alice", "bob", "carol", "dave"]
    alice, bob, carol, dave = entries
    assert alice.pth_path == (root / "alice.pth").resolve() and alice.index_path == (root / "alice.index").resolve()
    assert alice.size_bytes == 100 and bob.index_path is None
    assert carol.pth_path.name == "carol_e100_s2000.pth"
    assert carol.index_path is not None and carol.index_path.name.startswith("added_")
    assert dave.pth_path.name == "G_2333333.pth" and dave.index_path is None


def test_invalid_voices_are_listed_on_request(root: Path) -> None:
    entries = {e.name: e for e in ModelsFolder(root).list_voices(include_invalid=True)}
    assert not entries["twins"].valid and "several .pth files" in entries["twins"].problem
    assert not entries["empty"].valid and "no .pth" in entries["empty"].problem
    assert entries["alice"].valid and "assets" not in entries and ".hidden" not in entries


def test_find_voice(root: Path) -> None:
    folder = ModelsFolder(root)
    assert folder.find_voice("carol").pth_path.parent.name == "carol"
    with pytest.raises(VoiceNotFoundError, match=r"no voice named 'zed'.*available: alice, bob, carol, dave"):
        folder.find_voice("zed")
    with pytest.raises(VoiceNotFoundError, match="several .pth files.*a.pth, b.pth"):
        folder.find_voice("twins")


def test_file_wins_over_folder_of_the_same_name(root: Path) -> None:
    touch(root / "bob" / "other.pth")
    entry = ModelsFolder(root).find_voice("bob")
    assert entry.pth_path == (root / "bob.pth").resolve()
    assert [e.name for e in ModelsFolder(root).list_voices()].count("bob") == 1


@pytest.mark.parametrize("name", [
    "", ".", "..", "../alice", "..\\alice", "a/b", "a\\b", "/etc/passwd", "C:alice", "a\0b", ".hidden",
    "a\nb", "a\x7fb", "a\u202eb", " alice", "alice ", "x" * 129,
    "%2e%2e", "%2e%2e%2falice", "%2E%2E%5Calice", "%252e%252e%252f", "a%2fb", "%00",
])
def test_names_are_never_paths(root: Path, name: str) -> None:
    with pytest.raises(VoiceNotFoundError, match="invalid voice name"):
        ModelsFolder(root).find_voice(name)


@pytest.mark.parametrize("name", ["alice", "Kanye West", "初音ミク", "a..b", "100%", "v2-40k_e100", "x" * 128])
def test_ordinary_names_are_allowed(name: str) -> None:
    assert check_voice_name(name) == name


def test_symlinks_leading_outside_are_refused(root: Path, tmp_path: Path) -> None:
    outside = touch(tmp_path / "elsewhere" / "evil.pth")
    touch(tmp_path / "elsewhere" / "evil.index")
    try:
        (root / "linked.pth").symlink_to(outside)
        (root / "linkdir").symlink_to(outside.parent, target_is_directory=True)
    except OSError:
        pytest.skip("symlinks not supported here")
    folder = ModelsFolder(root)
    for name in ("linked", "linkdir"):
        with pytest.raises(VoiceNotFoundError, match="outside the models folder"):
            folder.find_voice(name)
    names = {e.name for e in folder.list_voices()}
    assert "linked" not in names and "linkdir" not in names
    (root / "inner.pth").symlink_to(root / "alice.pth")  # a link inside the root is fine
    assert folder.find_voice("inner").pth_path == (root / "alice.pth").resolve()


def test_index_symlink_outside_is_refused(root: Path, tmp_path: Path) -> None:
    try:
        (root / "bob.index").symlink_to(touch(tmp_path / "outside.index"))
    except OSError:
        pytest.skip("symlinks not supported here")
    with pytest.raises(VoiceNotFoundError, match="outside"):
        ModelsFolder(root).find_voice("bob")


def test_missing_root(tmp_path: Path) -> None:
    folder = ModelsFolder(tmp_path / "nowhere")
    assert folder.list_voices() == []
    with pytest.raises(VoiceNotFoundError, match=f"does not exist; create it or set \\${MODELS_DIR_ENV}"):
        folder.find_voice("alice")


def test_root_from_env_and_default(root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(root))
    assert ModelsFolder().root == root
    assert ModelsFolder(tmp_path).root == tmp_path  # the argument beats the environment
    monkeypatch.delenv(MODELS_DIR_ENV)
    monkeypatch.chdir(tmp_path)
    assert ModelsFolder().root == tmp_path / "models"
    assert [e.name for e in ModelsFolder().list_voices()][:2] == ["alice", "bob"]


def test_resolve_voice_argument(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = ModelsFolder(root)
    assert folder.resolve_voice_argument("alice").pth_path == (root / "alice.pth").resolve()
    loose = touch(tmp_path / "loose" / "eve.pth", 33)
    touch(tmp_path / "loose" / "eve.index")
    entry = folder.resolve_voice_argument(str(loose))
    assert (entry.name, entry.pth_path, entry.index_path, entry.size_bytes) == (
        "eve", loose, loose.with_suffix(".index"), 33)
    monkeypatch.chdir(loose.parent)
    assert folder.resolve_voice_argument("eve.pth").pth_path == loose
    assert folder.resolve_voice_argument(Path("eve.pth")).name == "eve"
    run = touch(tmp_path / "logs" / "frank" / "G_100.pth")
    touch(tmp_path / "logs" / "frank" / "D_100.pth")
    touch(tmp_path / "logs" / "frank" / "added_IVF1_Flat_nprobe_1_frank_v2.index")
    by_file = folder.resolve_voice_argument(str(run))
    by_dir = folder.resolve_voice_argument(str(run.parent))
    assert by_file.index_path == by_dir.index_path == run.parent / "added_IVF1_Flat_nprobe_1_frank_v2.index"
    assert by_dir.name == "frank" and by_dir.pth_path == run
    with pytest.raises(VoiceNotFoundError, match="does not exist"):
        folder.resolve_voice_argument(str(tmp_path / "nope.pth"))
    with pytest.raises(VoiceNotFoundError, match="not a .pth"):
        folder.resolve_voice_argument(str(touch(tmp_path / "x" / "voice.txt")))
    with pytest.raises(VoiceNotFoundError, match="no voice named"):
        folder.resolve_voice_argument("zed")


def test_assets_in_the_folder(root: Path) -> None:
    folder = ModelsFolder(root)
    assert folder.assets_dir == root / "assets"
    assert folder.content_encoder_path() == root / "assets" / "hubert_base.pt"
    assert folder.rmvpe_path() == root / "assets" / "rmvpe.pt"
    os.remove(root / "assets" / "hubert_base.pt")
    os.remove(root / "assets" / "rmvpe.pt")
    assert folder.content_encoder_path() is None and folder.rmvpe_path() is None
    with pytest.raises(AssetNotFoundError, match="hubert_base.pt"):
        folder.require_content_encoder()
    with pytest.raises(AssetNotFoundError, match="rmvpe.pt"):
        folder.require_rmvpe()
    touch(root / "assets" / "contentvec" / "model.safetensors")
    assert folder.content_encoder_path() is None  # a folder needs its config.json
    touch(root / "assets" / "contentvec" / "config.json")
    assert folder.content_encoder_path() == root / "assets" / "contentvec"
    touch(root / "assets" / "hubert_base" / "config.json")
    assert folder.content_encoder_path() == root / "assets" / "hubert_base"


def test_asset_overrides(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_encoder = touch(tmp_path / "env" / "hubert.pt")
    env_rmvpe = touch(tmp_path / "env" / "rmvpe.pt")
    monkeypatch.setenv(CONTENT_ENCODER_ENV, str(env_encoder))
    monkeypatch.setenv(RMVPE_ENV, str(env_rmvpe))
    folder = ModelsFolder(root)
    assert folder.content_encoder_path() == env_encoder and folder.rmvpe_path() == env_rmvpe
    arg_encoder = touch(tmp_path / "arg" / "hubert.pt")
    arg_rmvpe = touch(tmp_path / "arg" / "rmvpe.pt")
    folder = ModelsFolder(root, content_encoder=arg_encoder, rmvpe=arg_rmvpe)
    assert folder.content_encoder_path() == arg_encoder and folder.rmvpe_path() == arg_rmvpe
    broken = ModelsFolder(root, content_encoder=tmp_path / "missing.pt", rmvpe=tmp_path / "missing_rmvpe.pt")
    with pytest.raises(AssetNotFoundError, match="missing.pt does not exist"):
        broken.content_encoder_path()
    with pytest.raises(AssetNotFoundError, match="missing_rmvpe.pt do not exist"):
        broken.rmvpe_path()

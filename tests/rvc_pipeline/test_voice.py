"""Loading voices: the reference fixtures, every file flavour, speakers, indexes, closing."""

from __future__ import annotations

import gc
import logging
import time
import weakref

import pytest
import torch

from rvc_pipeline.checkpoint import read_checkpoint
from rvc_pipeline.errors import (
    CheckpointError,
    OptionError,
    RetrievalIndexError,
    UnsupportedCheckpointError,
    VoiceNotFoundError,
)
from rvc_pipeline.synth import Synthesizer, fold_weight_norm
from rvc_pipeline.testing.voices import (
    write_applio_voice,
    write_generic_checkpoint,
    write_index,
    write_malicious_checkpoint,
    write_training_checkpoint,
    write_webui_voice,
)
from rvc_pipeline.voice import Voice, describe_checkpoint, load_voice


def _infer(voice: Voice, frames: int = 12) -> torch.Tensor:
    """Run the synthesizer on random content features; returns [1, 1, frames * hop]."""
    gen = torch.Generator().manual_seed(0)
    phone = torch.randn(1, frames, voice.content_dim, generator=gen)
    pitch = torch.full((1, frames), 60, dtype=torch.long) if voice.f0 else None
    nsff0 = torch.full((1, frames), 220.0) if voice.f0 else None
    lengths, sid = torch.tensor([frames]), torch.tensor([0])
    return voice.synthesizer.infer(phone, lengths, pitch, nsff0, sid, generator=gen)


@pytest.mark.parametrize(
    "stem, version, f0, sr, hop, index_dim",
    [("webui-v2-40k", "v2", True, 40000, 400, 768), ("webui-v1-48k-nof0", "v1", False, 48000, 480, 256)],
)
def test_reference_fixture_loads_strictly(stem, version, f0, sr, hop, index_dim, shared_fixture):
    pth = shared_fixture(f"voices/{stem}.pth")
    voice = load_voice(pth, shared_fixture(f"voices/{stem}.index"), device="cpu")
    assert isinstance(voice.synthesizer, Synthesizer)
    assert voice.name == stem and voice.device == torch.device("cpu") and voice.dtype == torch.float32
    assert (voice.version, voice.f0, voice.sample_rate, voice.hop_length) == (version, f0, sr, hop)
    assert voice.n_speakers == 109 and voice.content_dim == index_dim
    assert voice.synthesizer.use_f0 is f0 and voice.synthesizer.content_dim == index_dim
    assert (voice.synthesizer.dec.m_source is not None) is f0  # NSF decoder only with pitch
    assert voice.has_index and voice.index.dim == index_dim
    # Strict key match: the file's weights (weight norm folded) are exactly the model's.
    folded = fold_weight_norm(read_checkpoint(pth).weights)
    model = voice.synthesizer.state_dict()
    assert set(folded) == set(model)
    assert all(torch.allclose(folded[k].float(), model[k]) for k in ("enc_p.emb_phone.weight", "dec.ups.0.weight"))
    out = _infer(voice)
    assert out.shape == (1, 1, 12 * hop) and torch.isfinite(out).all() and out.abs().max() <= 1


@pytest.mark.parametrize(
    "writer, args, fmt",
    [
        (write_webui_voice, ("v2", 40000, True), "webui"),
        (write_webui_voice, ("v1", 32000, True), "webui"),
        (write_webui_voice, ("v2", 48000, False), "webui"),
        (write_applio_voice, ("v2", 24000, True), "applio"),
        (write_training_checkpoint, ("v1", 40000, False), "training"),
        (write_generic_checkpoint, ("v2", 32000, True), "generic"),
    ],
)
def test_every_flavour_loads_and_runs(tmp_path, writer, args, fmt):
    voice = load_voice(writer(tmp_path / "voice.pth", *args), device="cpu")
    version, sr, f0 = args
    assert (voice.version, voice.sample_rate, voice.f0, voice.spec.source_format) == (version, sr, f0, fmt)
    assert _infer(voice).shape == (1, 1, 12 * sr // 100)


def test_both_weight_norm_spellings_give_the_same_model(tmp_path):
    a = load_voice(write_webui_voice(tmp_path / "a.pth", "v2", 32000, True, seed=5), device="cpu")
    b = load_voice(write_webui_voice(tmp_path / "b.pth", "v2", 32000, True, seed=5,
                                     weight_norm_spelling="parametrizations"), device="cpu")
    sa, sb = a.synthesizer.state_dict(), b.synthesizer.state_dict()
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(_infer(a), _infer(b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp16_file_converted_to_requested_dtype(tmp_path, dtype):
    voice = load_voice(write_webui_voice(tmp_path / "v.pth", "v1", 48000, False), device="cpu", dtype=dtype)
    assert {p.dtype for p in voice.synthesizer.parameters()} == {dtype} and voice.dtype == dtype
    assert voice.spec.weights == {}  # the file's tensors are not kept alongside the model


def test_speaker_ids(tmp_path):
    voice = load_voice(write_webui_voice(tmp_path / "ms.pth", "v2", 40000, True, n_speakers=3), device="cpu")
    assert voice.n_speakers == 3 and voice.synthesizer.emb_g.num_embeddings == 3
    for sid in range(3):
        voice.check_speaker(sid)
    for bad in (3, -1, 1.0, True, "0"):
        with pytest.raises(OptionError):
            voice.check_speaker(bad)
    with pytest.raises(OptionError, match=r"3 speakers \(valid ids: 0\.\.2\)"):
        voice.check_speaker(7)


def test_index_loading_and_mismatch(tmp_path, caplog):
    pth = write_webui_voice(tmp_path / "alice.pth", "v1", 40000, True)
    write_index(tmp_path / "good.index", dim=256, n=200)
    write_index(tmp_path / "wide.index", dim=768, n=200)
    voice = load_voice(pth, tmp_path / "good.index", device="cpu")
    assert voice.has_index and voice.index.ntotal == 200 and voice.index_path == tmp_path / "good.index"
    with pytest.raises(RetrievalIndexError, match="768"):
        load_voice(pth, tmp_path / "wide.index", device="cpu")
    with caplog.at_level(logging.INFO, logger="rvc_pipeline.voice"):
        plain = load_voice(pth, name="Alice", device="cpu")
    assert plain.name == "Alice" and not plain.has_index and plain.index is None
    assert "voice Alice has no retrieval index; converting without retrieval" in caplog.text


def test_close_releases_and_is_idempotent(tmp_path):
    write_index(tmp_path / "v.index", dim=768, n=200)
    voice = load_voice(write_webui_voice(tmp_path / "v.pth"), tmp_path / "v.index", device="cpu")
    synth_ref, index_ref = weakref.ref(voice.synthesizer), weakref.ref(voice.index)
    voice.close()
    voice.close()
    gc.collect()
    assert voice.closed and voice.synthesizer is None and voice.index is None and not voice.has_index
    assert synth_ref() is None and index_ref() is None
    assert voice.sample_rate == 40000 and voice.metadata["info"] == "20epoch"  # description survives
    with pytest.raises(VoiceNotFoundError, match="closed"):
        voice.check_speaker(0)
    with load_voice(write_webui_voice(tmp_path / "w.pth"), device="cpu") as other:
        assert not other.closed
    assert other.closed


def test_load_errors(tmp_path):
    with pytest.raises(VoiceNotFoundError):
        load_voice(tmp_path / "missing.pth", device="cpu")
    marker = tmp_path / "marker"
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_voice(write_malicious_checkpoint(tmp_path / "evil.pth", marker), device="cpu")
    assert not marker.exists()
    with pytest.raises(UnsupportedCheckpointError, match="BigVGAN"):
        load_voice(write_applio_voice(tmp_path / "r.pth", vocoder="BigVGAN"), device="cpu")
    good = write_webui_voice(tmp_path / "g.pth", "v1", 32000, False)
    with pytest.raises(OptionError):
        load_voice(good, device="no-such-device")
    with pytest.raises(OptionError, match="fp16"):
        load_voice(good, device="cpu", dtype=torch.float16)
    with pytest.raises(OptionError):
        load_voice(good, device="cpu", dtype=torch.int8)


def test_describe_checkpoint_without_building(tmp_path):
    path = write_webui_voice(tmp_path / "d.pth", "v1", 48000, False, info="300epoch")
    info = describe_checkpoint(path)
    assert (info["version"], info["f0"], info["sample_rate"], info["n_speakers"]) == ("v1", False, 48000, 1)
    assert info["format"] == "webui" and info["tensors"] == 503 and info["metadata"]["epoch"] == 300


def test_loading_a_55mb_voice(tmp_path):
    path = write_webui_voice(tmp_path / "big.pth", "v2", 40000, True, n_speakers=109)
    load_voice(path, device="cpu")  # warm caches
    start = time.process_time()  # CPU time: robust to a busy machine, unlike wall time
    voice = load_voice(path, device="cpu")
    elapsed = time.process_time() - start
    assert voice.sample_rate == 40000
    assert elapsed < 10.0, f"loading took {elapsed:.1f} CPU s"  # ~0.2-0.5 s on an idle 2-core machine

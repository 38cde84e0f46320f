"""The synthesizer: strict loading of reference-format weights, parity of its parts with
straightforward formulations of the spec (rvc-formats.md §2), determinism and shapes."""

from __future__ import annotations

import dataclasses
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rvc_pipeline.errors import CheckpointError
from rvc_pipeline.synth import (
    STANDARD_CONFIGS,
    Synthesizer,
    SynthesizerConfig,
    build_synthesizer,
    export_state_dict,
    fastconv,
    fold_weight_norm,
    generator,
)
from rvc_pipeline.synth.nsf import harmonic_excitation, sine_phase
from rvc_pipeline.synth.text_encoder import RelativeMultiHeadAttention
from rvc_pipeline.synth.weight_norm import fold_weight

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "voices"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many small ops: one intra-op thread avoids barrier stalls on a busy 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _meta_model(version: str, sr: int, f0: bool) -> Synthesizer:
    with torch.device("meta"):
        return Synthesizer(STANDARD_CONFIGS[(version, sr)], 768 if version == "v2" else 256, f0)


def _reference_layout_counts(model: Synthesizer) -> tuple[int, int]:
    """(tensors, elements) of the model's weights saved as RVC saves them (weight_g/weight_v)."""
    sd = export_state_dict(model, dtype=None)
    return len(sd), sum(v.numel() for v in sd.values())


def _inputs(model: Synthesizer, frames: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    args = {
        "phone": torch.randn(1, frames, model.content_dim, generator=gen),
        "lengths": torch.tensor([frames]),
        "pitch": None,
        "nsff0": None,
        "sid": torch.tensor([0]),
    }
    if model.use_f0:
        f0 = 100 + 200 * torch.rand(1, frames, generator=gen)
        f0[:, frames // 3 : frames // 2] = 0  # an unvoiced stretch
        args["nsff0"] = f0
        args["pitch"] = torch.randint(1, 256, (1, frames), generator=gen)
    return args


# --- weight norm ------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [nn.Conv1d(6, 5, 3), nn.ConvTranspose1d(6, 4, 8, 4, padding=2)])
def test_folded_weight_equals_torch_weight_norm(layer: nn.Module) -> None:
    layer = torch.nn.utils.parametrizations.weight_norm(layer)
    with torch.no_grad():
        layer.parametrizations.weight.original0.mul_(torch.rand_like(layer.parametrizations.weight.original0) + 0.5)
    g = layer.parametrizations.weight.original0
    v = layer.parametrizations.weight.original1
    assert g.shape == (v.shape[0], 1, 1)  # ConvTranspose1d: g is [in, 1, 1]
    torch.testing.assert_close(fold_weight(g, v), layer.weight, rtol=1e-6, atol=1e-7)


def test_both_weight_norm_spellings_fold_alike() -> None:
    g, v = torch.rand(4, 1, 1) + 0.5, torch.randn(4, 3, 5)
    legacy = fold_weight_norm({"a.weight_g": g, "a.weight_v": v, "a.bias": torch.zeros(4)})
    modern = fold_weight_norm({"a.parametrizations.weight.original0": g, "a.parametrizations.weight.original1": v})
    assert set(legacy) == {"a.weight", "a.bias"}
    torch.testing.assert_close(legacy["a.weight"], modern["a.weight"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="only its g"):
        fold_weight_norm({"a.weight_g": g})


# --- relative attention -----------------------------------------------------------------


def _naive_attention(attn: RelativeMultiHeadAttention, x: torch.Tensor, length: int) -> torch.Tensor:
    """The spec's formula with explicit loops over heads, i and j (§2.3 step 3)."""
    c, t = x.shape[1], x.shape[2]
    d, w = attn.head_dim, attn.window
    q, k, v = attn.conv_q(x)[0], attn.conv_k(x)[0], attn.conv_v(x)[0]
    ek, ev = attn.emb_rel_k[0], attn.emb_rel_v[0]
    out = torch.zeros(c, t, dtype=torch.float64)
    for h in range(attn.n_heads):
        qs = q[h * d : (h + 1) * d].double() / math.sqrt(d)
        kh, vh = k[h * d : (h + 1) * d].double(), v[h * d : (h + 1) * d].double()
        for i in range(t):
            scores = torch.empty(t, dtype=torch.float64)
            for j in range(t):
                s = qs[:, i] @ kh[:, j]
                if abs(j - i) <= w:
                    s = s + qs[:, i] @ ek[w + j - i].double()
                scores[j] = s if (i < length and j < length) else -1e4
            p = torch.softmax(scores, 0)
            for j in range(t):
                out[h * d : (h + 1) * d, i] += p[j] * vh[:, j]
                if abs(j - i) <= w:
                    out[h * d : (h + 1) * d, i] += p[j] * ev[w + j - i].double()
    return attn.conv_o(out.float()[None])


@pytest.mark.parametrize("frames,length", [(30, 30), (30, 22), (6, 6)])
def test_relative_attention_matches_naive_loops(frames: int, length: int) -> None:
    torch.manual_seed(frames + length)
    attn = RelativeMultiHeadAttention(8, 2, window=10)
    x = torch.randn(1, 8, frames)
    mask = (torch.arange(frames) < length).float()[None, None]
    with torch.no_grad():
        fast = attn(x, mask.unsqueeze(2) * mask.unsqueeze(-1))
        naive = _naive_attention(attn, x, length)
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-5)


# --- fast CPU convolutions ---------------------------------------------------------------


@pytest.mark.parametrize("batch,c_in,c_out,length,k,d,segment,chunk,bias", [
    (1, 16, 8, 1000, 3, 1, 22, 3, True),
    (1, 16, 8, 1001, 11, 5, 22, 2, True),
    (2, 16, 12, 777, 7, 3, 22, 1, False),
    (1, 8, 8, 50, 11, 1, 10, 100, True),
    (2, 4, 4, 97, 5, 2, 4, 3, False),
])
def test_dft_conv1d_matches_conv1d(batch, c_in, c_out, length, k, d, segment, chunk, bias) -> None:
    torch.manual_seed(length)
    conv = nn.Conv1d(c_in, c_out, k, dilation=d, padding=(k - 1) // 2 * d, bias=bias)
    x = torch.randn(batch, c_in, length)
    with torch.no_grad():
        expected = _conv_float64(conv, x)
        got = fastconv.dft_conv1d(x, conv.weight, conv.bias, d, segment, chunk)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6 * expected.abs().max().item())


def _conv_float64(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """Reference: the module's convolution in float64."""
    w = conv.weight.double()
    b = conv.bias.double() if conv.bias is not None else None
    return torch.nn.functional.conv1d(x.double(), w, b, padding=conv.padding, dilation=conv.dilation).float()


def test_fast_decoder_path_matches_plain_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    """DFT convs (64 channels), channels-last convs (32) and time chunking vs the plain modules."""
    monkeypatch.setattr(generator, "CHUNK_VALUES", 64 * 900)  # several chunks per stage
    monkeypatch.setattr(fastconv, "DFT_MIN_LENGTH", 64)  # DFT for every dilation, even in chunks
    calls = []
    dft = fastconv.dft_conv1d
    monkeypatch.setattr(fastconv, "dft_conv1d", lambda *a, **kw: calls.append(a[3]) or dft(*a, **kw))
    torch.manual_seed(0)
    dec = generator.Generator(16, "1", (3, 7, 11), ((1, 3, 5),) * 3, (4, 2), 128, (8, 4), 8, sample_rate=8000)
    z, g = torch.randn(1, 16, 700), torch.randn(1, 8, 1)
    har = 0.1 * torch.randn(1, 1, 700 * dec.upp)
    with torch.inference_mode():
        fast = dec(z, g, har)
        plain = dec.double()(z.double(), g.double(), har.double()).float()  # float64: plain path
    assert fast.shape == (1, 1, 5600)
    assert set(calls) == {1, 3, 5}  # dilations that went through the DFT path
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)


# --- NSF source -------------------------------------------------------------------------


def test_sine_phase_equals_float64_cumsum_of_held_f0() -> None:
    sr, upp = 40000, 400
    f0 = np.random.default_rng(0).uniform(80, 900, size=(1, 3000))
    f0[0, 100:200] = 0
    f0 = f0.astype(np.float32).astype(np.float64)  # the F0 as the synthesizer receives it
    naive = np.cumsum(np.repeat(f0, upp, axis=1) / sr, axis=1)  # 1.2M samples, float64
    phase = sine_phase(torch.from_numpy(f0).float(), upp, sr).double().numpy()
    np.testing.assert_allclose(np.sin(2 * np.pi * phase), np.sin(2 * np.pi * naive), atol=2e-6)


def test_excitation_is_gated_sine_plus_seeded_noise() -> None:
    sr, upp = 40000, 400
    f0 = torch.full((1, 20), 220.0)
    f0[:, 10:] = 0
    a = harmonic_excitation(f0, upp, sr, torch.Generator().manual_seed(1))
    b = harmonic_excitation(f0, upp, sr, torch.Generator().manual_seed(1))
    c = harmonic_excitation(f0, upp, sr, torch.Generator().manual_seed(2))
    assert a.shape == (1, 20 * upp) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    voiced, unvoiced = a[0, : 10 * upp], a[0, 10 * upp :]
    sine = 0.1 * torch.sin(2 * math.pi * sine_phase(f0, upp, sr)[0, : 10 * upp])
    assert (voiced - sine).std().item() == pytest.approx(0.003, rel=0.1)  # noise_std
    assert unvoiced.std().item() == pytest.approx(0.1 / 3, rel=0.1)  # sine_amp / 3


# --- architecture and loading -------------------------------------------------------------


@pytest.mark.parametrize("version,sr,f0,tensors,elements", [
    ("v2", 40000, True, 457, 27_537_346),
    ("v2", 40000, False, 446, None),
    ("v2", 48000, True, 457, 28_716_994),
    ("v1", 48000, True, 516, None),
])
def test_reference_tensor_counts(version: str, sr: int, f0: bool, tensors: int, elements: int | None) -> None:
    n, total = _reference_layout_counts(_meta_model(version, sr, f0))
    assert n == tensors
    if elements is not None:
        assert total == elements


@pytest.mark.parametrize("key", sorted(STANDARD_CONFIGS))
@pytest.mark.parametrize("f0", [True, False])
def test_every_standard_config_builds(key: tuple[str, int], f0: bool) -> None:
    model = _meta_model(*key, f0)
    assert model.hop_length == key[1] // 100
    assert ("dec.m_source.l_linear.weight" in model.state_dict()) == f0


def test_random_weights_round_trip_strictly_in_both_spellings() -> None:
    config = dataclasses.replace(STANDARD_CONFIGS[("v2", 32000)], spk_embed_dim=3)
    torch.manual_seed(0)
    source = Synthesizer(config, 768, False)
    saved = export_state_dict(source)  # fp16, weight_g / weight_v, as RVC saves
    modern = {k.replace(".weight_g", ".parametrizations.weight.original0")
              .replace(".weight_v", ".parametrizations.weight.original1"): v for k, v in saved.items()}
    for weights in (saved, modern):
        model = build_synthesizer(config, 768, False, weights, device="cpu", dtype=torch.float32)
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        loaded = model.state_dict()
        assert set(loaded) == set(source.state_dict())
        for k, v in source.state_dict().items():
            assert loaded[k].dtype == torch.float32
            torch.testing.assert_close(loaded[k], v, rtol=2e-3, atol=1e-4)  # fp16 storage


def test_load_is_strict_and_names_the_keys() -> None:
    config = dataclasses.replace(STANDARD_CONFIGS[("v1", 40000)], spk_embed_dim=1)
    with torch.device("meta"):
        source = Synthesizer(config, 256, True)
    weights = {k: torch.zeros(v.shape, dtype=torch.float16) for k, v in export_state_dict(source).items()}
    del weights["enc_p.emb_pitch.weight"]
    weights["enc_q.pre.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing: enc_p\.emb_pitch\.weight.*unexpected: enc_q\.pre\.weight"):
        build_synthesizer(config, 256, True, weights)
    weights = {k: torch.zeros(v.shape, dtype=torch.float16) for k, v in export_state_dict(source).items()}
    with pytest.raises(CheckpointError, match="wrong shape: enc_p.emb_phone.weight"):
        build_synthesizer(config, 768, True, weights)


# --- the reference fixtures -----------------------------------------------------------------


def _load_fixture(name: str, dtype: torch.dtype = torch.float32) -> Synthesizer:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"reference fixture {path} not available")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    weights = ckpt["weight"]
    config = dataclasses.replace(
        SynthesizerConfig.from_list(ckpt["config"]), spk_embed_dim=weights["emb_g.weight"].shape[0]
    )
    content_dim = 768 if ckpt["version"] == "v2" else 256
    return build_synthesizer(config, content_dim, bool(ckpt["f0"]), weights, device="cpu", dtype=dtype)


@pytest.fixture(scope="module")
def v2_40k() -> Synthesizer:
    return _load_fixture("webui-v2-40k.pth")


@pytest.fixture(scope="module")
def v1_48k_nof0() -> Synthesizer:
    return _load_fixture("webui-v1-48k-nof0.pth")


@pytest.mark.parametrize("which,hop", [("v2_40k", 400), ("v1_48k_nof0", 480)])
def test_fixture_voices_synthesise_deterministically(which: str, hop: int, request: pytest.FixtureRequest) -> None:
    model: Synthesizer = request.getfixturevalue(which)
    frames = 24
    args = _inputs(model, frames)
    rng_before = torch.get_rng_state()
    out = model.infer(**args, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), rng_before)  # all noise from `generator`
    assert out.shape == (1, 1, frames * hop) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() <= 1 and out.abs().max() > 0
    again = model.infer(**args, generator=torch.Generator().manual_seed(7))
    other = model.infer(**args, generator=torch.Generator().manual_seed(8))
    assert torch.equal(out, again)
    assert not torch.equal(out, other)


def test_partial_decode_equals_the_full_output_there(v2_40k: Synthesizer) -> None:
    args = _inputs(v2_40k, 80)
    full = v2_40k.infer(**args, generator=torch.Generator().manual_seed(5))
    part = v2_40k.infer(**args, generator=torch.Generator().manual_seed(5), head=30, length=20)
    assert part.shape == (1, 1, 20 * 400)
    torch.testing.assert_close(part, full[..., 30 * 400 : 50 * 400], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="head"):
        v2_40k.infer(**args, head=70, length=20)


def test_concurrent_calls_match_sequential(v2_40k: Synthesizer) -> None:
    args = _inputs(v2_40k, 12)
    expected = v2_40k.infer(**args, generator=torch.Generator().manual_seed(3))
    results: list[torch.Tensor] = []

    def run() -> None:
        results.append(v2_40k.infer(**args, generator=torch.Generator().manual_seed(3)))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and all(torch.allclose(r, expected, atol=1e-6) for r in results)


def test_bf16_weights_give_close_output() -> None:
    """bf16 (CPU fast mode on bf16-capable CPUs; slow elsewhere, so a small model here)."""
    config = SynthesizerConfig.from_list(
        [65, 32, 32, 32, 64, 2, 2, 3, 0, "1", [3, 7], [[1, 3], [1, 3]], [4, 4], 32, [8, 8], 2, 16, 1600]
    )
    torch.manual_seed(0)
    weights = export_state_dict(Synthesizer(config, 24, True), dtype=torch.float16)
    fp32 = build_synthesizer(config, 24, True, weights, dtype=torch.float32)
    bf16 = build_synthesizer(config, 24, True, weights, dtype=torch.bfloat16)
    assert next(bf16.parameters()).dtype == torch.bfloat16
    args = _inputs(fp32, 40)
    ref = fp32.infer(**args, generator=torch.Generator().manual_seed(0))
    out = bf16.infer(**args, generator=torch.Generator().manual_seed(0))
    assert out.shape == ref.shape == (1, 1, 40 * 16) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    corr = np.corrcoef(ref.flatten().numpy(), out.flatten().numpy())[0, 1]
    assert corr > 0.95

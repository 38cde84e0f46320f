"""Applio's "MRF HiFi-GAN" and "RefineGAN" decoders: layout, strict loading, architecture.

The architecture tests evaluate Applio's layer formulas (rvc/lib/algorithm/generators/
hifigan_mrf.py and refinegan.py) here, in float64, with torch.nn.functional on the raw
state-dict tensors (weight norm folded by hand), and compare the engine's decoders with
them; noise is zeroed or replaced by a constant on both sides.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rvc_pipeline import ConversionOptions, convert, load_voice
from rvc_pipeline.checkpoint import describe_checkpoint, read_checkpoint
from rvc_pipeline.errors import CheckpointError
from rvc_pipeline.synth import build_synthesizer, export_state_dict
from rvc_pipeline.synth import hifigan_mrf, refinegan
from rvc_pipeline.synth.synthesizer import SynthesisItem
from rvc_pipeline.testing.audio import tone
from rvc_pipeline.testing.voices import make_state_dict, standard_config, state_dict_shapes, write_applio_voice

VOCODERS = ("MRF HiFi-GAN", "RefineGAN")
RATES = (24000, 32000, 40000, 48000)
#: Applio's checkpoint layouts (outside the repository, beside the checkout).
LAYOUT_DOC = Path(__file__).resolve().parents[2].parent / "shared" / "docs" / "applio-layouts.md"


def small_config(sr: int):
    """Applio's config for `sr` (its rates and kernels) with few channels everywhere (fast tests)."""
    return dataclasses.replace(standard_config("v2", sr, 1), upsample_initial_channel=64, inter_channels=16,
                               hidden_channels=32, filter_channels=64, n_layers=2, gin_channels=32)


def synth_inputs(frames: int, seed: int = 0, batch: int = 1):
    gen = torch.Generator().manual_seed(seed)
    phone = torch.randn(batch, frames, 768, generator=gen)
    f0 = 100 + 200 * torch.rand(batch, frames, generator=gen)
    f0[:, ::5] = 0  # unvoiced frames
    pitch = torch.randint(1, 256, (batch, frames), generator=gen)
    return phone, pitch, f0


# --- layout ---------------------------------------------------------------------------------


def _doc_table(doc: str, title: str) -> dict[str, tuple[int, ...]]:
    start = doc.index(title)
    body = doc[doc.index("```", start) + 3 : doc.index("```", doc.index("```", start) + 3)]
    return {key: tuple(int(n) for n in re.findall(r"\d+", shape))
            for key, shape in (line.split(" ", 1) for line in body.strip().splitlines())}


@pytest.mark.parametrize("vocoder, sr, title, total", [
    ("RefineGAN", 40000, "RefineGAN, 40 kHz", 485),
    ("MRF HiFi-GAN", 48000, "MRF HiFi-GAN, 48 kHz", 460),
])
def test_layout_equals_applio_layouts_doc(vocoder, sr, title, total):
    if not LAYOUT_DOC.exists():
        pytest.skip(f"{LAYOUT_DOC} not present")
    table = _doc_table(LAYOUT_DOC.read_text(), title)
    weights = make_state_dict("v2", sr, True, vocoder=vocoder)
    dec = {k: tuple(v.shape) for k, v in weights.items() if k.startswith("dec.")}
    assert dec == table
    assert list(dec) == list(table)  # Applio's order as well
    assert len(weights) == total
    assert all(v.dtype == torch.float16 for v in weights.values())


@pytest.mark.parametrize("sr", RATES)
def test_layout_by_sample_rate(sr):
    config = standard_config("v2", sr, 1)
    mrf, _ = state_dict_shapes(config, 768, True, vocoder="MRF HiFi-GAN")
    rates, kernels = config.upsample_rates, config.upsample_kernel_sizes
    for s, k in enumerate(kernels):  # Applio's {24000,32000,40000,48000}.json
        assert mrf[f"dec.upsamples.{s}.weight_v"] == (512 >> s, 256 >> s, k)
        stride = math.prod(rates[s + 1:])
        assert mrf[f"dec.noise_convs.{s}.weight"] == (256 >> s, 1, 2 * stride if stride > 1 else 1)
    refine, _ = state_dict_shapes(config, 768, True, vocoder="RefineGAN")
    refine40, _ = state_dict_shapes(standard_config("v2", 40000, 1), 768, True, vocoder="RefineGAN")
    assert refine == refine40  # no RefineGAN tensor depends on the rate


# --- loading --------------------------------------------------------------------------------


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("vocoder", VOCODERS)
def test_loads_strictly_and_converts(tmp_path, vocoder, sr):
    path = write_applio_voice(tmp_path / "v.pth", "v2", sr, True, vocoder=vocoder, seed=sr)
    spec = read_checkpoint(path)
    assert (spec.vocoder, spec.sample_rate, spec.source_format) == (vocoder, sr, "applio")
    assert spec.config == standard_config("v2", sr, 1)
    synth = build_synthesizer(spec.config, spec.content_dim, spec.f0, spec.weights, vocoder=spec.vocoder)
    # weight norm folded: w = g * v / |v|
    v, g = spec.weights["dec.conv_post.weight_v"].float(), spec.weights["dec.conv_post.weight_g"].float()
    torch.testing.assert_close(synth.dec.conv_post.weight, g * v / v.flatten(1).norm(dim=1)[:, None, None])
    frames = 12
    phone, pitch, f0 = synth_inputs(frames)
    out = synth.infer(phone, torch.tensor([frames]), pitch, f0, torch.tensor([0]), torch.Generator().manual_seed(1))
    assert out.shape == (1, 1, frames * sr // 100)
    assert torch.isfinite(out).all() and out.abs().max() <= 1


@pytest.mark.parametrize("vocoder", VOCODERS)
def test_parametrizations_spelling_and_export_round_trip(tmp_path, vocoder):
    config = small_config(32000)
    path = write_applio_voice(tmp_path / "p.pth", "v2", 32000, True, vocoder=vocoder, config=config,
                              weight_norm_spelling="parametrizations")
    spec = read_checkpoint(path)
    synth = build_synthesizer(spec.config, spec.content_dim, True, spec.weights, vocoder=vocoder)
    legacy = make_state_dict("v2", 32000, True, vocoder=vocoder, config=config)
    exported = export_state_dict(synth)
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in legacy.items()}


def _voice_with(tmp_path, vocoder: str, edit) -> Path:
    config = small_config(40000)
    weight = make_state_dict("v2", 40000, True, vocoder=vocoder, config=config)
    edit(weight)
    return write_applio_voice(tmp_path / "e.pth", "v2", 40000, True, vocoder=vocoder, config=config,
                              overrides={"weight": weight})


MISSING = {
    "MRF HiFi-GAN": ["dec.mrfs.1.2.layers.0.conv2.weight_g", "dec.m_source.l_linear.bias", "dec.cond.weight"],
    "RefineGAN": ["dec.upsample_conv_blocks.2.blocks.1.0.weight", "dec.m_source.merge.0.weight",
                  "dec.downsample_blocks.3.bias", "dec.mel_conv.weight_v"],
}


@pytest.mark.parametrize("vocoder, key", [(v, k) for v, keys in MISSING.items() for k in keys])
def test_missing_key_is_refused(tmp_path, vocoder, key):
    path = _voice_with(tmp_path, vocoder, lambda w: w.pop(key))
    layer = key.rsplit(".", 1)[0]
    with pytest.raises(CheckpointError, match=re.escape(layer)):
        load_voice(path, device="cpu")


@pytest.mark.parametrize("vocoder, key, shape", [
    ("MRF HiFi-GAN", "dec.mrfs.0.0.layers.3.conv1.bias", (256,)),
    ("MRF HiFi-GAN", "dec.conv_pre.extra", (1,)),
    ("RefineGAN", "dec.upsample_conv_blocks.0.blocks.0.3.weight", (32,)),
    ("RefineGAN", "dec.m_source.merge.0.bias", (1,)),
])
def test_extra_key_is_refused(tmp_path, vocoder, key, shape):
    path = _voice_with(tmp_path, vocoder, lambda w: w.__setitem__(key, torch.zeros(shape, dtype=torch.float16)))
    with pytest.raises(CheckpointError, match=re.escape(key)):
        load_voice(path, device="cpu")


def test_misshapen_tensor_is_refused(tmp_path):
    path = _voice_with(tmp_path, "RefineGAN", lambda w: w.__setitem__(
        "dec.upsample_conv_blocks.1.input_conv.weight", torch.zeros(16, 41, 7, dtype=torch.float16)))
    with pytest.raises(CheckpointError, match=r"wrong shape: dec\.upsample_conv_blocks\.1\.input_conv\.weight"):
        load_voice(path, device="cpu")


@pytest.mark.parametrize("layout, label", [("RefineGAN", "MRF HiFi-GAN"), ("MRF HiFi-GAN", "RefineGAN"),
                                           ("RefineGAN", "HiFi-GAN"), ("MRF HiFi-GAN", "HiFi-GAN")])
def test_metadata_vocoder_is_checked_against_the_keys(tmp_path, layout, label):
    path = write_applio_voice(tmp_path / "m.pth", "v2", 40000, True, vocoder=layout, config=small_config(40000),
                              overrides={"vocoder": label})
    with pytest.raises(CheckpointError, match=f"metadata says vocoder '{label}' but the dec.* tensors are a {layout}"):
        read_checkpoint(path)


@pytest.mark.parametrize("vocoder", VOCODERS)
def test_vocoder_comes_from_the_keys_without_metadata(tmp_path, vocoder):
    path = write_applio_voice(tmp_path / "n.pth", "v2", 32000, True, vocoder=vocoder, config=small_config(32000),
                              overrides={"vocoder": None})
    spec = read_checkpoint(path)
    assert spec.vocoder == vocoder and spec.sample_rate == 32000
    assert describe_checkpoint(path)["vocoder"] == vocoder


# --- architecture against an independent float64 evaluation --------------------------------


def _weight(sd, name):
    if f"{name}.weight_v" in sd:
        v, g = sd[f"{name}.weight_v"].double(), sd[f"{name}.weight_g"].double()
        return g * v / v.flatten(1).norm(dim=1).reshape(-1, *[1] * (v.dim() - 1))
    return sd[f"{name}.weight"].double()


def _conv(sd, name, x, **kwargs):
    bias = sd.get(f"{name}.bias")
    return F.conv1d(x, _weight(sd, name), None if bias is None else bias.double(), **kwargs)


def reference_mrf(sd, config, z, g, har):
    """hifigan_mrf.py HiFiGANMRFGenerator.forward after m_source, written out."""
    rates, kernels = config.upsample_rates, config.upsample_kernel_sizes
    x = _conv(sd, "dec.conv_pre", z, padding=3) + _conv(sd, "dec.cond", g)
    for s, (u, k) in enumerate(zip(rates, kernels)):
        x = F.leaky_relu(x, 0.1)
        x = F.conv_transpose1d(x, _weight(sd, f"dec.upsamples.{s}"), sd[f"dec.upsamples.{s}.bias"].double(),
                               stride=u, padding=(k - u) // 2)
        stride = math.prod(rates[s + 1:])
        x = x + _conv(sd, f"dec.noise_convs.{s}", har, stride=stride, padding=stride // 2 if stride > 1 else 0)
        branches = []
        for j, kr in enumerate(config.resblock_kernel_sizes):
            y = x
            for m, d in enumerate(config.resblock_dilation_sizes[j]):
                name = f"dec.mrfs.{s}.{j}.layers.{m}"
                t = _conv(sd, f"{name}.conv1", F.leaky_relu(y, 0.1), dilation=d, padding=(kr * d - d) // 2)
                y = y + _conv(sd, f"{name}.conv2", F.leaky_relu(t, 0.1), padding=kr // 2)
            branches.append(y)
        x = sum(branches) / len(branches)
    return torch.tanh(_conv(sd, "dec.conv_post", F.leaky_relu(x), padding=3))


def reference_refinegan(sd, rates, z, g, har, adain_noise):
    """refinegan.py RefineGANGenerator.forward after m_source, written out; AdaIN's
    randn_like replaced by the constant `adain_noise`."""
    torchaudio = pytest.importorskip("torchaudio")
    frames, n = z.shape[-1], len(rates)
    x = _conv(sd, "dec.pre_conv", har, padding=3)
    downs, size = [], math.prod(rates)
    for i in range(n):
        new = size // rates[-i - 1]
        x = F.leaky_relu(x, 0.2)
        downs.append(x)
        x = torchaudio.functional.resample(x.contiguous(), frames * size, frames * new, lowpass_filter_width=64,
                                           rolloff=0.9475937167399596, resampling_method="sinc_interp_kaiser",
                                           beta=14.769656459379492)
        x = _conv(sd, f"dec.downsample_blocks.{i}", x, padding=3)
        size = new
    x = torch.cat([_conv(sd, "dec.mel_conv", z, padding=3) + _conv(sd, "dec.cond", g), x], dim=1)
    for s, rate in enumerate(rates):
        x = torch.nn.Upsample(scale_factor=rate, mode="linear")(F.leaky_relu(x, 0.2))
        x = _conv(sd, f"dec.upsample_conv_blocks.{s}.input_conv", torch.cat([x, downs[n - 1 - s]], dim=1), padding=3)
        branches = []
        for j, k in enumerate((3, 7, 11)):
            pre = f"dec.upsample_conv_blocks.{s}.blocks.{j}"
            y = F.leaky_relu(x + adain_noise * sd[f"{pre}.0.weight"].double()[None, :, None], 0.2)
            for m, d in enumerate((1, 3, 5)):
                t = _conv(sd, f"{pre}.1.convs1.{m}", F.leaky_relu(y, 0.2), dilation=d, padding=(k * d - d) // 2)
                y = _conv(sd, f"{pre}.1.convs2.{m}", F.leaky_relu(t, 0.2), padding=(k - 1) // 2) + y
            branches.append(F.leaky_relu(y + adain_noise * sd[f"{pre}.2.weight"].double()[None, :, None], 0.2))
        x = torch.stack(branches).mean(dim=0)
    return torch.tanh(_conv(sd, "dec.conv_post", F.leaky_relu(x, 0.2), padding=3))


def _zero_noise(shape, generator, device, dtype):
    return torch.zeros(shape, device=device, dtype=dtype)


def _decoder_case(vocoder: str, sr: int, frames: int = 16):
    config = small_config(sr)
    sd = make_state_dict("v2", sr, True, vocoder=vocoder, config=config, dtype=torch.float64, seed=7)
    synth = build_synthesizer(config, 768, True, sd, dtype=torch.float64, vocoder=vocoder)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(1, config.inter_channels, frames, generator=gen, dtype=torch.float64)
    g = torch.randn(1, config.gin_channels, 1, generator=gen, dtype=torch.float64)
    har = torch.tanh(torch.randn(1, 1, frames * config.hop_length, generator=gen, dtype=torch.float64))
    return config, sd, synth.dec, z, g, har


@pytest.mark.parametrize("sr", [24000, 48000])
def test_mrf_decoder_equals_float64_reference(sr):
    config, sd, dec, z, g, har = _decoder_case("MRF HiFi-GAN", sr)
    with torch.inference_mode():
        ours = dec(z, g, har)
    ref = reference_mrf(sd, config, z, g, har)
    assert ours.shape == ref.shape == (1, 1, z.shape[-1] * sr // 100)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("sr", [24000, 40000])
@pytest.mark.parametrize("adain_noise", [0.0, 0.3])
def test_refinegan_decoder_equals_float64_reference(sr, adain_noise):
    config, sd, dec, z, g, har = _decoder_case("RefineGAN", sr)
    with torch.inference_mode():
        ours = dec(z, g, har, lambda like: torch.full_like(like, adain_noise))
    ref = reference_refinegan(sd, config.upsample_rates, z, g, har, adain_noise)
    assert ours.shape == ref.shape == (1, 1, z.shape[-1] * sr // 100)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("rate", [2, 6, 8, 10, 12])
def test_resample_equals_torchaudio(rate):
    torchaudio = pytest.importorskip("torchaudio")
    x = torch.randn(2, 3, 50 * rate, generator=torch.Generator().manual_seed(rate), dtype=torch.float64)
    expected = torchaudio.functional.resample(x, 50 * rate, 50, lowpass_filter_width=64, rolloff=0.9475937167399596,
                                              resampling_method="sinc_interp_kaiser", beta=14.769656459379492)
    torch.testing.assert_close(refinegan.resample(x, 50 * rate, 50), expected, rtol=1e-10, atol=1e-12)


def _source_inputs(frames=40):
    f0 = torch.linspace(80, 400, frames)[None].repeat(2, 1)
    f0[0, 10:14] = 0
    f0[1, :3] = 0
    return f0


def test_mrf_source_equals_reference(monkeypatch):
    """SineGenerator (harmonic_num 8, nearest-upsampled F0) + l_linear + tanh, noise and initial phases zeroed."""
    monkeypatch.setattr(hifigan_mrf, "gaussian_noise", _zero_noise)
    monkeypatch.setattr(hifigan_mrf, "uniform_noise", _zero_noise)
    sr, upp = 40000, 400
    source = hifigan_mrf.HarmonicSourceNSF(sr).double()
    torch.nn.init.normal_(source.l_linear.weight)
    f0 = _source_inputs()
    ours = source(f0, upp)
    f = f0.double().repeat_interleave(upp, dim=1)
    sines = torch.stack([0.1 * torch.sin(2 * math.pi * torch.cumsum(((k + 1) * f / sr) % 1, dim=1))
                         for k in range(9)], dim=-1) * (f > 0)[..., None]
    ref = torch.tanh(sines @ source.l_linear.weight[0].double() + source.l_linear.bias.double())
    torch.testing.assert_close(ours[:, 0], ref, rtol=0, atol=2e-5)


def test_refinegan_source_equals_reference(monkeypatch):
    """SineGenerator (harmonic_num 0) over the linearly interpolated F0, merge.0 + tanh, noise zeroed."""
    monkeypatch.setattr(refinegan, "gaussian_noise", _zero_noise)
    sr, upp = 24000, 240
    source = refinegan.RefineSource(sr).double()
    source.merge[0].weight.data.fill_(1.7)
    f0 = _source_inputs()
    ours = source(f0, upp)
    f = F.interpolate(f0.double()[:, None], size=f0.shape[1] * upp, mode="linear")[:, 0]
    e = 0.1 * torch.sin(2 * math.pi * torch.cumsum((f / sr) % 1, dim=1)) * (f > 0)
    torch.testing.assert_close(ours[:, 0], torch.tanh(1.7 * e), rtol=0, atol=2e-5)


def test_sources_draw_their_noise_from_the_generator():
    f0 = _source_inputs()
    for source in (hifigan_mrf.HarmonicSourceNSF(40000), refinegan.RefineSource(40000)):
        a = source(f0, 400, torch.Generator().manual_seed(5))
        b = source(f0, 400, torch.Generator().manual_seed(5))
        c = source(f0, 400, torch.Generator().manual_seed(6))
        assert torch.equal(a, b) and not torch.equal(a, c)


# --- the synthesizer around the decoders ----------------------------------------------------


@pytest.fixture(scope="module", params=VOCODERS)
def small_synth(request):
    config = small_config(24000)
    sd = make_state_dict("v2", 24000, True, vocoder=request.param, config=config, seed=11)
    return build_synthesizer(config, 768, True, sd, vocoder=request.param)


def test_partial_decode_equals_the_full_output(small_synth):
    small_synth = copy.deepcopy(small_synth)
    if small_synth.vocoder == "RefineGAN":  # AdaIN's in-decoder noise is drawn per window: switch it off
        for block in small_synth.dec.upsample_conv_blocks:
            for branch in block.blocks:
                branch[0].weight.data.zero_()
                branch[2].weight.data.zero_()
    frames = 360  # long enough that RefineGAN's 96-frame halo is cut on both sides of (130, 60)
    phone, pitch, f0 = synth_inputs(frames, seed=2)
    args = (phone, torch.tensor([frames]), pitch, f0, torch.tensor([0]))
    full = small_synth.infer(*args, torch.Generator().manual_seed(4))
    hop = small_synth.hop_length
    for head, length in [(130, 60), (0, 30), (300, 60)]:
        part = small_synth.infer(*args, torch.Generator().manual_seed(4), head=head, length=length)
        torch.testing.assert_close(part, full[..., head * hop : (head + length) * hop], rtol=0, atol=2e-6)


def test_batched_decode_equals_each_item_alone(small_synth):
    """As the pipeline's chunks: each keeps at least the decoder's halo of padding after its kept
    frames (a batch row's zero padding is not the conv padding the unbatched decode sees)."""
    items = []
    for i, (frames, head, length) in enumerate([(260, 100, 50), (220, 0, 20), (300, 96, 100)]):
        phone, pitch, f0 = synth_inputs(frames, seed=10 + i)
        items.append(SynthesisItem(phone[0], pitch[0], f0[0], 0, torch.Generator().manual_seed(i), head, length))
    batched = small_synth.infer_batch(items)
    for i, item in enumerate(items):
        frames = item.phone.shape[0]
        alone = small_synth.infer(item.phone[None], torch.tensor([frames]), item.pitch[None], item.nsff0[None],
                                  torch.tensor([0]), torch.Generator().manual_seed(i), head=item.head, length=item.length)
        assert batched[i].shape == alone[0].shape
        torch.testing.assert_close(batched[i], alone[0], rtol=0, atol=2e-5)


@pytest.mark.parametrize("vocoder", VOCODERS)
def test_converts_through_the_pipeline(tmp_path, encoder, pitch_estimator, vocoder):
    path = write_applio_voice(tmp_path / "voice.pth", "v2", 40000, True, vocoder=vocoder, config=small_config(40000))
    voice = load_voice(path, device="cpu")
    audio = tone(220, 0.5)
    result = convert(audio, voice, encoder, pitch_estimator, ConversionOptions(f0_method="pm"))
    samples = audio.shape[0] + 2 * 16000  # 1 s of reflected padding each side, trimmed after
    frames = min(samples // 160, 2 * ((samples - 400) // 320 + 1)) - 200
    assert result.sample_rate == 40000 and result.audio.shape == (frames * 400,)
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() > 0

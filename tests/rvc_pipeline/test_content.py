"""Content encoder: loading both layouts safely, frame counts, v1/v2 outputs, parity."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rvc_pipeline.content import ContentEncoder, HubertConfig, load_content_encoder
from rvc_pipeline.content.loading import parse_conv_layers
from rvc_pipeline.errors import (
    AssetNotFoundError,
    AudioError,
    CheckpointError,
    OptionError,
    UnsupportedCheckpointError,
)
from rvc_pipeline.testing.hubert import (
    SMALL_CONFIG,
    TINY_CONFIG,
    make_hubert_state,
    write_fairseq_hubert,
    write_hf_hubert_folder,
)

N_SAMPLES = 16000  # 1 s at 16 kHz -> 49 frames


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fairseq_hubert(tmp_path_factory.mktemp("hubert") / "hubert_base.pt", config=TINY_CONFIG)


@pytest.fixture(scope="module")
def tiny(tiny_pt: Path) -> ContentEncoder:
    return load_content_encoder(tiny_pt, device="cpu")


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return 0.3 * torch.randn(2, N_SAMPLES, generator=gen)


def reference_features(wav: torch.Tensor, config: HubertConfig, version: str) -> torch.Tensor:
    """Independent float64 forward pass from fairseq-named weights, built on torch.nn parts.

    Uses nn.Conv1d with torch's own weight-norm parametrization and nn.MultiheadAttention.
    The weights go through the same fp16 storage as the files the tests write.
    """
    sd = {k: v.half().double() for k, v in make_hubert_state(config).items()}
    x = wav.double()[:, None]
    for i, (ch, _, stride) in enumerate(config.conv_layers):
        x = F.conv1d(x, sd[f"feature_extractor.conv_layers.{i}.0.weight"],
                     sd.get(f"feature_extractor.conv_layers.{i}.0.bias"), stride=stride)
        if i == 0:
            x = F.group_norm(x, ch, sd["feature_extractor.conv_layers.0.2.weight"],
                             sd["feature_extractor.conv_layers.0.2.bias"])
        x = F.gelu(x)
    x = x.transpose(1, 2)
    x = F.layer_norm(x, x.shape[-1:], sd["layer_norm.weight"], sd["layer_norm.bias"])
    x = F.linear(x, sd["post_extract_proj.weight"], sd["post_extract_proj.bias"])
    dim, k = config.hidden_size, config.pos_conv_kernel
    conv = nn.Conv1d(dim, dim, k, padding=k // 2, groups=config.pos_conv_groups).double()
    conv = nn.utils.parametrizations.weight_norm(conv, dim=2)
    with torch.no_grad():
        conv.parametrizations.weight.original0.copy_(sd["encoder.pos_conv.0.weight_g"])
        conv.parametrizations.weight.original1.copy_(sd["encoder.pos_conv.0.weight_v"])
        conv.bias.copy_(sd["encoder.pos_conv.0.bias"])
        pos = F.gelu(conv(x.transpose(1, 2))[:, :, :-1]).transpose(1, 2)
    x = F.layer_norm(x + pos, (dim,), sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])
    n_layers = 9 if version == "v1" else config.num_layers
    for layer in range(n_layers):
        p = f"encoder.layers.{layer}."
        mha = nn.MultiheadAttention(dim, config.num_heads, batch_first=True).double().eval()
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.cat([sd[p + f"self_attn.{c}_proj.weight"] for c in "qkv"]))
            mha.in_proj_bias.copy_(torch.cat([sd[p + f"self_attn.{c}_proj.bias"] for c in "qkv"]))
            mha.out_proj.weight.copy_(sd[p + "self_attn.out_proj.weight"])
            mha.out_proj.bias.copy_(sd[p + "self_attn.out_proj.bias"])
            attn, _ = mha(x, x, x, need_weights=False)
        ln1, ln2 = p + "self_attn_layer_norm", p + "final_layer_norm"
        x = F.layer_norm(x + attn, (dim,), sd[ln1 + ".weight"], sd[ln1 + ".bias"])
        h = F.linear(F.gelu(F.linear(x, sd[p + "fc1.weight"], sd[p + "fc1.bias"])),
                     sd[p + "fc2.weight"], sd[p + "fc2.bias"])
        x = F.layer_norm(x + h, (dim,), sd[ln2 + ".weight"], sd[ln2 + ".bias"])
    if version == "v1":
        x = F.linear(x, sd["final_proj.weight"], sd["final_proj.bias"])
    return x.float()


# ------------------------------------------------------------------ outputs


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_matches_independent_reference(tiny: ContentEncoder, wav: torch.Tensor, version: str) -> None:
    ours = tiny.extract(wav, version)
    ref = reference_features(wav, TINY_CONFIG, version)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def test_conv_bias_variant_matches_reference(tmp_path: Path, wav: torch.Tensor) -> None:
    config = dataclasses.replace(TINY_CONFIG, conv_bias=True)
    encoder = load_content_encoder(write_fairseq_hubert(tmp_path / "h.pt", config=config), device="cpu")
    assert encoder.config.conv_bias
    ref = reference_features(wav, config, "v2")
    torch.testing.assert_close(encoder.extract(wav, "v2"), ref, atol=2e-4, rtol=1e-4)


def test_silence_and_dc_offset(tiny: ContentEncoder) -> None:
    """GroupNorm of a constant channel: zero variance must not produce NaN (eps), as in fairseq."""
    wav = torch.cat([torch.zeros(1, 8000), torch.full((1, 8000), 0.5)])
    ref = reference_features(wav, TINY_CONFIG, "v2")
    out = tiny.extract(wav, "v2")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("n", [400, 719, 720, 1039, 16000, 16000 * 2 + 123])
def test_frame_count(tiny: ContentEncoder, n: int) -> None:
    wav = torch.randn(2, n)
    expected = (n - 400) // 320 + 1  # 400-sample receptive field, 320-sample hop
    assert tiny.extract(wav, "v1").shape == (2, expected, TINY_CONFIG.final_dim)
    assert tiny.extract(wav, "v2").shape == (2, expected, TINY_CONFIG.hidden_size)
    assert TINY_CONFIG.num_frames(n) == expected


def test_too_short_audio_is_refused(tiny: ContentEncoder) -> None:
    with pytest.raises(AudioError, match="400"):
        tiny.extract(torch.zeros(1, 399), "v2")


def test_v1_is_final_proj_of_layer_9_and_v2_the_last_layer(tiny: ContentEncoder, wav: torch.Tensor) -> None:
    v1, v2 = tiny.extract(wav, "v1"), tiny.extract(wav, "v2")
    with torch.inference_mode():
        layer9 = tiny.hidden_states(wav, 9)
        last = tiny.hidden_states(wav, TINY_CONFIG.num_layers)
        torch.testing.assert_close(v1, tiny.final_proj(layer9))
    torch.testing.assert_close(v2, last)
    assert not torch.allclose(last, layer9, atol=1e-2)  # TINY has 10 layers: v2 reads past layer 9
    assert v1.shape[-1] == tiny.feature_dim("v1") == TINY_CONFIG.final_dim
    assert v2.shape[-1] == tiny.feature_dim("v2") == tiny.hidden_size


def test_unknown_version(tiny: ContentEncoder, wav: torch.Tensor) -> None:
    with pytest.raises(OptionError, match="v1"):
        tiny.extract(wav, "v3")


def test_batch_items_are_independent(tiny: ContentEncoder, wav: torch.Tensor) -> None:
    both = tiny.extract(wav, "v2")
    torch.testing.assert_close(both[1:], tiny.extract(wav[1:], "v2"), atol=1e-5, rtol=1e-5)


def test_concurrent_extract_matches_serial(tiny: ContentEncoder, wav: torch.Tensor) -> None:
    expected = [tiny.extract(wav[i : i + 1], v) for i in range(2) for v in ("v1", "v2")]
    results: dict[int, torch.Tensor] = {}

    def work(j: int) -> None:
        results[j] = tiny.extract(wav[j // 2 : j // 2 + 1], ("v1", "v2")[j % 2])

    threads = [threading.Thread(target=work, args=(j,)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for j in range(4):
        torch.testing.assert_close(results[j], expected[j])


def test_bf16_stays_close_and_keeps_groupnorm_fp32(tiny_pt: Path, tiny: ContentEncoder, wav: torch.Tensor) -> None:
    fast = load_content_encoder(tiny_pt, device="cpu", dtype=torch.bfloat16)
    assert fast.feature_extractor.norm.weight.dtype == torch.float32
    assert fast.layers[0].fc1.weight.dtype == torch.bfloat16
    out = fast.extract(wav, "v2")
    assert out.dtype == torch.bfloat16
    exact = tiny.extract(wav, "v2")
    cos = F.cosine_similarity(out.float().flatten(0, 1), exact.flatten(0, 1), dim=-1)
    assert cos.mean() > 0.98


def test_fp16_on_cpu_is_refused(tiny_pt: Path) -> None:
    with pytest.raises(OptionError, match="fp16"):
        load_content_encoder(tiny_pt, device="cpu", dtype=torch.float16)


# ------------------------------------------------------------------ layouts


def _hf(tmp_path: Path, name: str, **kwargs) -> Path:
    return write_hf_hubert_folder(tmp_path / name, config=TINY_CONFIG, **kwargs)


LAYOUTS = {
    "fairseq-namespace": lambda d: write_fairseq_hubert(d / "legacy.pt", config=TINY_CONFIG, cfg_style="namespace"),
    "fairseq-omegaconf": lambda d: write_fairseq_hubert(d / "omega.pt", config=TINY_CONFIG, cfg_style="omegaconf"),
    "hf-bin-legacy": lambda d: _hf(d, "a"),
    "hf-bin-parametrizations-prefixed": lambda d: _hf(d, "b", weight_norm="parametrizations", prefix="hubert."),
    "hf-safetensors-legacy": lambda d: _hf(d, "c", safetensors=True),
    "hf-safetensors-parametrizations": lambda d: _hf(d, "d", safetensors=True, weight_norm="parametrizations"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts_give_identical_features(
    tmp_path: Path, layout: str, tiny: ContentEncoder, wav: torch.Tensor
) -> None:
    encoder = load_content_encoder(LAYOUTS[layout](tmp_path), device="cpu")
    assert encoder.config == tiny.config
    for version in ("v1", "v2"):
        assert torch.equal(encoder.extract(wav, version), tiny.extract(wav, version))


def test_small_768_factory_model(tmp_path: Path) -> None:
    """The default factory model is sized for v2 voices: 768-dim v2, 256-dim v1 features."""
    encoder = load_content_encoder(write_fairseq_hubert(tmp_path / "hubert_base.pt"), device="cpu")
    assert encoder.config == SMALL_CONFIG
    wav = torch.randn(1, 4000)
    assert encoder.extract(wav, "v2").shape == (1, 12, 768)
    assert encoder.extract(wav, "v1").shape == (1, 12, 256)


def test_hf_folder_without_final_proj_serves_v2_only(tmp_path: Path, tiny: ContentEncoder, wav: torch.Tensor) -> None:
    encoder = load_content_encoder(_hf(tmp_path, "nofp", final_proj=False), device="cpu")
    assert torch.equal(encoder.extract(wav, "v2"), tiny.extract(wav, "v2"))
    with pytest.raises(CheckpointError, match="final_proj"):
        encoder.extract(wav, "v1")


def test_v1_needs_nine_layers(tmp_path: Path, wav: torch.Tensor) -> None:
    config = dataclasses.replace(TINY_CONFIG, num_layers=4)
    encoder = load_content_encoder(write_fairseq_hubert(tmp_path / "h.pt", config=config), device="cpu")
    assert encoder.extract(wav, "v2").shape[-1] == config.hidden_size
    with pytest.raises(CheckpointError, match="layer 9"):
        encoder.extract(wav, "v1")


# ------------------------------------------------------------------ failures


def test_missing_path_names_the_assets_folder(tmp_path: Path) -> None:
    with pytest.raises(AssetNotFoundError, match="assets"):
        load_content_encoder(tmp_path / "hubert_base.pt")


def test_folder_without_weights(tmp_path: Path) -> None:
    folder = _hf(tmp_path, "x")
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(AssetNotFoundError, match="pytorch_model.bin"):
        load_content_encoder(folder)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"do_stable_layer_norm": True}, "do_stable_layer_norm"),
        ({"feat_extract_norm": "layer"}, "feat_extract_norm"),
        ({"hidden_act": "relu"}, "hidden_act"),
    ],
)
def test_unsupported_hf_config(tmp_path: Path, overrides: dict, match: str) -> None:
    folder = _hf(tmp_path, "u", config_overrides=overrides)
    with pytest.raises(UnsupportedCheckpointError, match=match):
        load_content_encoder(folder)


def test_unsupported_fairseq_config(tmp_path: Path) -> None:
    path = write_fairseq_hubert(tmp_path / "large.pt", config=TINY_CONFIG)
    ckpt = torch.load(path, weights_only=True)
    ckpt["cfg"]["model"]["layer_norm_first"] = True
    torch.save(ckpt, path)
    with pytest.raises(UnsupportedCheckpointError, match="layer_norm_first"):
        load_content_encoder(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    path = write_fairseq_hubert(tmp_path / "h.pt", config=TINY_CONFIG)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model"]["encoder.layers.3.fc1.weight"]
    ckpt["model"]["encoder.layers.99.fc1.weight"] = torch.zeros(1)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.3\.fc1\.weight.*encoder\.layers\.99\.fc1\.weight"):
        load_content_encoder(path)


def test_wrong_shapes_are_a_checkpoint_error(tmp_path: Path) -> None:
    path = write_fairseq_hubert(tmp_path / "h.pt", config=TINY_CONFIG)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["encoder.layers.0.fc1.weight"] = torch.zeros(7, 96)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="fc1"):
        load_content_encoder(path)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "hubert_base.pt"
    path.write_bytes(b"definitely not a zip or a pickle")
    with pytest.raises(CheckpointError):
        load_content_encoder(path)


def test_conv_spec_is_parsed_without_eval() -> None:
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == HubertConfig().conv_layers
    with pytest.raises(CheckpointError):
        parse_conv_layers("__import__('os').system('echo pwned')")


class _Payload:
    """Unpickling this creates `marker`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("where", ["fairseq", "hf-bin"])
def test_malicious_pickle_is_refused(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "pwned"
    if where == "fairseq":
        path = write_fairseq_hubert(tmp_path / "hubert_base.pt", config=TINY_CONFIG, cfg_style="namespace")
        ckpt = torch.load(path, weights_only=False)  # our own file, written above
        ckpt["extra_state"] = {"payload": _Payload(marker)}
        torch.save(ckpt, path)
    else:
        path = _hf(tmp_path, "evil")
        state = torch.load(path / "pytorch_model.bin", weights_only=True)
        torch.save({**state, "payload": _Payload(marker)}, path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refusing"):
        load_content_encoder(path)
    assert not marker.exists()


def test_config_namespace_stand_ins_never_run_code(tmp_path: Path) -> None:
    """A global under an allowed config namespace (fairseq.*) is replaced, never called."""
    marker = tmp_path / "ran"
    module = types.ModuleType("fairseq.fake_meters")

    def build(path: str) -> None:
        Path(path).mkdir()

    build.__module__, build.__qualname__ = module.__name__, "build"
    module.build = build

    class Meter:
        def __reduce__(self):
            return (build, (str(marker),))

    path = write_fairseq_hubert(tmp_path / "hubert_base.pt", config=TINY_CONFIG)
    ckpt = torch.load(path, weights_only=True)
    ckpt["extra_state"] = {"metrics": Meter(), "args": argparse.Namespace(x=1)}
    fakes = {"fairseq": types.ModuleType("fairseq"), module.__name__: module}
    assert "fairseq" not in sys.modules  # never a dependency
    sys.modules.update(fakes)
    try:
        torch.save(ckpt, path)
    finally:
        for name in fakes:
            del sys.modules[name]
    encoder = load_content_encoder(path, device="cpu")
    assert encoder.num_layers == TINY_CONFIG.num_layers
    assert not marker.exists()

"""Random-weight RVC voice files in the real on-disk formats (tests, benchmarks, the demo voice).

Every writer builds the state dict from the shape table of rvc-formats.md §2.2 (not from
this project's model code, so the two check each other) and saves it the way RVC or
Applio does (§1). Typical use:

    from rvc_pipeline.testing.voices import write_webui_voice, write_index
    pth = write_webui_voice(tmp_path / "alice.pth", "v2", 40000, f0=True)
    idx = write_index(tmp_path / "alice.index", dim=768)

Weights are small random values (normal * 0.02; weight-norm g = |v|, so the effective
weight equals v): the audio they make is noise, but shapes, keys, dtypes and metadata
are exactly those of a real voice. A full v2 40k voice is 27.5M elements (55 MB fp16);
writing one takes well under a second on an idle machine. Same `seed`, same weights.

Writers (each returns the path it wrote; `overrides` edits top-level keys, None deletes):
- `write_webui_voice`: RVC inference file (weight, config, info, sr "40k", f0 0/1, version).
- `write_applio_voice`: Applio export (int sr, bool f0, metadata, `vocoder`), or `blended=True`.
- `write_training_checkpoint`: G_*.pth with fp32 weights incl. enc_q, optimizer, lr (+scaler).
- `write_generic_checkpoint`: {"model": ..., "config": {sample_rate, hop_length, model_type}}.
- `write_malicious_checkpoint`: a pickle that creates `marker_path` if it is ever executed.
- `write_index`: FAISS IVF,Flat index of random vectors (returns them).
Lower level: `make_state_dict`, `state_dict_shapes`, `standard_config`. Files are
written atomically (`files.save_torch`).
"""

from __future__ import annotations

import functools
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..constants import CONTENT_DIMS
from ..synth.config import STANDARD_CONFIGS, SynthesizerConfig
from .files import save_torch

#: Relative-attention window of RVC's text encoder (emb_rel_k is [1, 2*10+1, k_channels]).
ATTENTION_WINDOW = 10
#: Flow: 4 coupling layers (keys 0,2,4,6; odd ones are parameter-free Flips), WN 3 layers k5.
FLOW_INDICES, FLOW_WN_LAYERS, FLOW_KERNEL = (0, 2, 4, 6), 3, 5
#: Training-only posterior encoder: WN of 16 layers, kernel 5.
ENC_Q_LAYERS, ENC_Q_KERNEL = 16, 5
#: emb_pitch rows: coarse pitch 1..255 plus 0 (§2.2).
PITCH_BINS = 256
#: Applio's other decoders (applio-layouts.md): MRF HiFi-GAN's source has 8 overtones (9
#: sines); RefineGAN's U-Net starts at 16 channels (upsample_initial_channel / 32 with 4
#: stages), its parallel branches use kernels 3/7/11 with 3 dilated convs each.
APPLIO_DECODERS = ("MRF HiFi-GAN", "RefineGAN")
MRF_HARMONICS = 9
REFINEGAN_KERNELS, REFINEGAN_DILATIONS = (3, 7, 11), 3


def _applio_decoder_layers(c: SynthesizerConfig, vocoder: str) -> dict[str, tuple[tuple[int, ...], bool, bool]]:
    """dec.* layers of an Applio "MRF HiFi-GAN" or "RefineGAN" decoder:
    layer -> (weight shape, has bias, weight-normed), in Applio's module order."""
    n_stages, init, inter, gin = len(c.upsample_rates), c.upsample_initial_channel, c.inter_channels, c.gin_channels
    layers: dict[str, tuple[tuple[int, ...], bool, bool]] = {}
    if vocoder == "MRF HiFi-GAN":
        channels = [init // 2**s for s in range(n_stages + 1)]
        layers["dec.m_source.l_linear"] = ((1, MRF_HARMONICS), True, False)
        layers["dec.conv_pre"] = ((init, inter, 7), True, True)
        for s in range(n_stages):
            layers[f"dec.upsamples.{s}"] = ((channels[s], channels[s + 1], c.upsample_kernel_sizes[s]), True, True)
        for s in range(n_stages):
            stride = math.prod(c.upsample_rates[s + 1:])
            kernel = 1 if stride == 1 else 2 * stride - stride % 2
            layers[f"dec.noise_convs.{s}"] = ((channels[s + 1], 1, kernel), True, False)
        for s in range(n_stages):
            for j, k in enumerate(c.resblock_kernel_sizes):
                for d in range(len(c.resblock_dilation_sizes[j])):
                    for conv in ("conv1", "conv2"):
                        layers[f"dec.mrfs.{s}.{j}.layers.{d}.{conv}"] = ((channels[s + 1], channels[s + 1], k), True, True)
        layers["dec.conv_post"] = ((1, channels[-1], 7), True, True)
        layers["dec.cond"] = ((init, gin, 1), True, False)
        return layers
    start = init // 2 ** (n_stages + 1)
    layers["dec.m_source.merge.0"] = ((1, 1), False, False)
    layers["dec.pre_conv"] = ((start, 1, 7), True, True)
    for s in range(n_stages):
        layers[f"dec.downsample_blocks.{s}"] = ((start * 2 ** (s + 1), start * 2**s, 7), True, True)
    layers["dec.mel_conv"] = ((init // 2, inter, 7), True, True)
    layers["dec.cond"] = ((init // 2, gin, 1), True, False)
    channels = init
    for s in range(n_stages):
        out = channels // 2
        layers[f"dec.upsample_conv_blocks.{s}.input_conv"] = ((out, channels + channels // 4, 7), True, False)
        for j, k in enumerate(REFINEGAN_KERNELS):
            pre = f"dec.upsample_conv_blocks.{s}.blocks.{j}"
            layers[f"{pre}.0"] = ((out,), False, False)  # AdaIN
            for convs in ("convs1", "convs2"):
                for m in range(REFINEGAN_DILATIONS):
                    layers[f"{pre}.1.{convs}.{m}"] = ((out, out, k), True, True)
            layers[f"{pre}.2"] = ((out,), False, False)  # AdaIN
        channels = out
    layers["dec.conv_post"] = ((1, channels, 7), False, True)
    return layers


def standard_config(version: str, sr: int, n_speakers: int = 109) -> SynthesizerConfig:
    """The RVC/Applio config for (version, sr), with `spk_embed_dim` = n_speakers."""
    config = STANDARD_CONFIGS.get((version, sr)) or next(
        (c for (_, rate), c in STANDARD_CONFIGS.items() if rate == sr), None
    )
    if config is None:
        raise ValueError(f"no standard config for {version} at {sr} Hz")
    return SynthesizerConfig(**{**config.__dict__, "spk_embed_dim": n_speakers})


def state_dict_shapes(
    config: SynthesizerConfig, content_dim: int, f0: bool, *, with_enc_q: bool = False, vocoder: str = "HiFi-GAN"
) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """(key -> shape for every plain tensor, list of weight-normed layer names) per §2.2.

    `vocoder` "MRF HiFi-GAN" or "RefineGAN" gives Applio's layout of that decoder
    (applio-layouts.md, pitch-guided only); any other name RVC's HiFi-GAN.
    """
    c = config
    shapes: dict[str, tuple[int, ...]] = {}
    wn: dict[str, tuple[int, ...]] = {}  # layer -> v shape; bias separately in `shapes`
    h, inter, gin = c.hidden_channels, c.inter_channels, c.gin_channels

    def conv(name: str, shape: tuple[int, ...], bias: bool = True, norm: bool = False) -> None:
        (wn if norm else shapes)[name if norm else f"{name}.weight"] = shape
        if bias:
            shapes[f"{name}.bias"] = (shape[0] if not name.startswith("dec.ups.") else shape[1],)

    conv("enc_p.emb_phone", (h, content_dim))
    if f0:
        shapes["enc_p.emb_pitch.weight"] = (PITCH_BINS, h)
    for i in range(c.n_layers):
        pre = f"enc_p.encoder.attn_layers.{i}"
        for name in ("emb_rel_k", "emb_rel_v"):
            shapes[f"{pre}.{name}"] = (1, 2 * ATTENTION_WINDOW + 1, h // c.n_heads)
        for name in ("q", "k", "v", "o"):
            conv(f"{pre}.conv_{name}", (h, h, 1))
        for norm in ("norm_layers_1", "norm_layers_2"):
            shapes[f"enc_p.encoder.{norm}.{i}.gamma"] = shapes[f"enc_p.encoder.{norm}.{i}.beta"] = (h,)
        conv(f"enc_p.encoder.ffn_layers.{i}.conv_1", (c.filter_channels, h, c.kernel_size))
        conv(f"enc_p.encoder.ffn_layers.{i}.conv_2", (h, c.filter_channels, c.kernel_size))
    conv("enc_p.proj", (2 * inter, h, 1))

    n_stages, n_kernels = len(c.upsample_rates), len(c.resblock_kernel_sizes)
    channels = [c.upsample_initial_channel // 2**s for s in range(n_stages + 1)]
    if vocoder in APPLIO_DECODERS:
        if not f0:
            raise ValueError(f"{vocoder} voices are pitch-guided only")
        for name, (shape, bias, norm) in _applio_decoder_layers(c, vocoder).items():
            (wn if norm else shapes)[name if norm else f"{name}.weight"] = shape
            if bias:
                shapes[f"{name}.bias"] = (shape[1] if name.startswith("dec.upsamples.") else shape[0],)
    elif f0:
        conv("dec.m_source.l_linear", (1, 1))  # harmonic_num 0 -> one sine (§2.4)
        for s in range(n_stages):
            stride = math.prod(c.upsample_rates[s + 1:])
            conv(f"dec.noise_convs.{s}", (channels[s + 1], 1, 2 * stride if s + 1 < n_stages else 1))
    if vocoder not in APPLIO_DECODERS:
        conv("dec.conv_pre", (channels[0], inter, 7))
        for s in range(n_stages):
            conv(f"dec.ups.{s}", (channels[s], channels[s + 1], c.upsample_kernel_sizes[s]), norm=True)
            for j, k in enumerate(c.resblock_kernel_sizes):
                r, ch = s * n_kernels + j, channels[s + 1]
                names = ("convs1", "convs2") if c.resblock == "1" else ("convs",)
                for name in names:
                    for m in range(len(c.resblock_dilation_sizes[j])):
                        conv(f"dec.resblocks.{r}.{name}.{m}", (ch, ch, k), norm=True)
        conv("dec.conv_post", (1, channels[-1], 7), bias=False)
        conv("dec.cond", (channels[0], gin, 1))

    def wavenet(pre: str, n_layers: int, kernel: int) -> None:
        for layer in range(n_layers):
            conv(f"{pre}.in_layers.{layer}", (2 * h, h, kernel), norm=True)
            out = 2 * h if layer < n_layers - 1 else h
            conv(f"{pre}.res_skip_layers.{layer}", (out, h, 1), norm=True)
        conv(f"{pre}.cond_layer", (2 * h * n_layers, gin, 1), norm=True)

    for f in FLOW_INDICES:
        conv(f"flow.flows.{f}.pre", (h, inter // 2, 1))
        wavenet(f"flow.flows.{f}.enc", FLOW_WN_LAYERS, FLOW_KERNEL)
        conv(f"flow.flows.{f}.post", (inter // 2, h, 1))
    shapes["emb_g.weight"] = (c.spk_embed_dim, gin)
    if with_enc_q:
        conv("enc_q.pre", (h, c.spec_channels, 1))
        wavenet("enc_q.enc", ENC_Q_LAYERS, ENC_Q_KERNEL)
        conv("enc_q.proj", (2 * inter, h, 1))
    for name, shape in wn.items():
        shapes[f"{name}.weight_v"] = shape
    return shapes, list(wn)


def make_state_dict(
    version: str = "v2",
    sr: int = 40000,
    f0: bool = True,
    n_speakers: int = 1,
    with_enc_q: bool = False,
    weight_norm_spelling: str = "legacy",
    dtype: torch.dtype = torch.float16,
    *,
    config: SynthesizerConfig | None = None,
    seed: int = 0,
    vocoder: str = "HiFi-GAN",
) -> dict[str, torch.Tensor]:
    """A random synthesizer state dict as RVC saves it.

    `vocoder` "MRF HiFi-GAN" / "RefineGAN" gives that Applio decoder's layout (f0 only).

    `weight_norm_spelling`: "legacy" (`.weight_g`/`.weight_v`, what RVC and Applio write)
    or "parametrizations" (`.parametrizations.weight.original0`/`original1`).
    `config` overrides the standard one for (version, sr) (its spk_embed_dim is replaced
    by `n_speakers`).
    """
    base = config or standard_config(version, sr)
    config = SynthesizerConfig(**{**base.__dict__, "spk_embed_dim": n_speakers})
    shapes, wn_layers = state_dict_shapes(config, CONTENT_DIMS[version], f0, with_enc_q=with_enc_q, vocoder=vocoder)
    pool = _noise_pool()
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in shapes.items():  # each tensor is a random slice of a fixed N(0, 0.02) pool: fast
        n = math.prod(shape)
        if n > pool.numel():
            out[key] = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).mul_(0.02)
            continue
        start = int(rng.integers(0, pool.numel() - n + 1))
        out[key] = pool[start:start + n].reshape(shape).clone()
    for name in wn_layers:
        v = out.pop(f"{name}.weight_v")
        g = v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))  # w = g*v/|v| = v
        if weight_norm_spelling == "legacy":
            out[f"{name}.weight_g"], out[f"{name}.weight_v"] = g, v
        elif weight_norm_spelling == "parametrizations":
            out[f"{name}.parametrizations.weight.original0"] = g
            out[f"{name}.parametrizations.weight.original1"] = v
        else:
            raise ValueError(f"unknown weight_norm_spelling {weight_norm_spelling!r}")
    for name in [k for k in out if k.startswith("enc_p.encoder.norm_layers_") and k.endswith(".gamma")]:
        out[name] = torch.ones_like(out[name])  # LayerNorm gains start at 1
    if vocoder in APPLIO_DECODERS:  # dec.* in Applio's order: module order; bias, g, v when weight-normed
        g_key, v_key = (("weight_g", "weight_v") if weight_norm_spelling == "legacy"
                        else ("parametrizations.weight.original0", "parametrizations.weight.original1"))
        dec = []
        for name, (_, bias, norm) in _applio_decoder_layers(config, vocoder).items():
            tensors = ["bias"] * bias + [g_key, v_key] if norm else ["weight"] + ["bias"] * bias
            dec += [f"{name}.{t}" for t in tensors]
        enc_p = [k for k in out if k.startswith("enc_p.")]
        out = {k: out[k] for k in enc_p + dec + [k for k in out if not k.startswith(("enc_p.", "dec."))]}
    return {k: v.to(dtype) for k, v in out.items()}


@functools.lru_cache(maxsize=1)
def _noise_pool() -> torch.Tensor:
    """4M samples of N(0, 0.02^2), drawn once (larger than any single synthesizer tensor)."""
    return torch.randn(1 << 22, generator=torch.Generator().manual_seed(1234)).mul_(0.02)


def _config_list(version: str, sr: int, config: SynthesizerConfig | None) -> list[Any]:
    # RVC saves spk_embed_dim as 109 and overwrites it from emb_g at load (§1.1).
    return SynthesizerConfig(**{**(config or standard_config(version, sr)).__dict__, "spk_embed_dim": 109}).to_list()


def _apply(obj: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Merge top-level overrides; a value of None deletes the key."""
    for key, value in (overrides or {}).items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


def write_webui_voice(
    path: str | Path, version: str = "v2", sr: int = 40000, f0: bool = True, *, n_speakers: int = 1,
    info: str = "20epoch", weight_norm_spelling: str = "legacy", dtype: torch.dtype = torch.float16,
    config: SynthesizerConfig | None = None, overrides: dict[str, Any] | None = None, seed: int = 0,
) -> Path:
    """An RVC WebUI inference .pth: weight, config, info, sr "40k", f0 0/1, version (§1.1)."""
    weight = make_state_dict(version, sr, f0, n_speakers, weight_norm_spelling=weight_norm_spelling,
                             dtype=dtype, config=config, seed=seed)
    obj = {"weight": weight, "config": _config_list(version, sr, config), "info": info,
           "sr": f"{sr // 1000}k", "f0": int(f0), "version": version}
    return save_torch(path, _apply(obj, overrides))


def write_applio_voice(
    path: str | Path, version: str = "v2", sr: int = 40000, f0: bool = True, *, n_speakers: int = 1,
    vocoder: str = "HiFi-GAN", blended: bool = False, weight_norm_spelling: str = "legacy",
    dtype: torch.dtype = torch.float16, overrides: dict[str, Any] | None = None, seed: int = 0,
    config: SynthesizerConfig | None = None,
) -> Path:
    """An Applio export (int sr, bool f0, metadata, no info; §1.3), or a blend (sr "40000").

    The weights have the layout of `vocoder` ("MRF HiFi-GAN" and "RefineGAN": Applio's, see
    applio-layouts.md; any other name: HiFi-GAN's, labelled with that name). `config`
    overrides the standard one (e.g. smaller channel counts for fast tests).
    """
    weight = make_state_dict(version, sr, f0, n_speakers, weight_norm_spelling=weight_norm_spelling,
                             dtype=dtype, config=config, seed=seed, vocoder=vocoder)
    config_list = _config_list(version, sr, config)
    if blended:
        obj = {"weight": weight, "config": config_list, "sr": str(sr), "f0": int(f0), "version": version,
               "info": "Model blended from a and b with ratio 0.5", "vocoder": vocoder}
    else:
        obj = {"weight": weight, "config": config_list, "epoch": 20, "step": 2000, "sr": sr, "f0": f0,
               "version": version, "creation_date": "2025-01-02T03:04:05.000000",
               "model_hash": "0" * 64, "overtrain_info": "None", "dataset_length": 120,
               "model_name": Path(path).stem, "author": "tester", "embedder_model": "contentvec",
               "speakers_id": n_speakers, "vocoder": vocoder}
    return save_torch(path, _apply(obj, overrides))


def write_training_checkpoint(
    path: str | Path, version: str = "v2", sr: int = 40000, f0: bool = True, *, n_speakers: int = 109,
    iteration: int = 20, with_scaler: bool = False, weight_norm_spelling: str = "legacy", seed: int = 0,
) -> Path:
    """A G_*.pth: {"model": fp32 state dict incl. enc_q, "iteration", "optimizer",
    "learning_rate"} (§1.2); Applio adds "scaler"."""
    model = make_state_dict(version, sr, f0, n_speakers, with_enc_q=True,
                            weight_norm_spelling=weight_norm_spelling, dtype=torch.float32, seed=seed)
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.8, 0.99), "eps": 1e-9,
                                                "weight_decay": 0.0, "params": list(range(len(model)))}]}
    obj: dict[str, Any] = {"model": model, "iteration": iteration, "optimizer": optimizer, "learning_rate": 1e-4}
    if with_scaler:
        obj["scaler"] = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                         "growth_interval": 2000, "_growth_tracker": 0}
    return save_torch(path, obj)


def write_generic_checkpoint(
    path: str | Path, version: str = "v2", sr: int = 40000, f0: bool = True, *, n_speakers: int = 1,
    hop_length: int | None = None, model_type: str | None = None, config: SynthesizerConfig | None = None,
    dtype: torch.dtype = torch.float32, seed: int = 0,
) -> Path:
    """{"model": state dict, "config": {"sample_rate", "hop_length", "model_type"}}."""
    model = make_state_dict(version, sr, f0, n_speakers, dtype=dtype, config=config, seed=seed)
    hop = hop_length if hop_length is not None else (config or standard_config(version, sr)).hop_length
    meta = {"sample_rate": sr, "hop_length": hop, "model_type": model_type or f"rvc-{version}-{'f0' if f0 else 'nof0'}"}
    return save_torch(path, {"model": model, "config": meta})


class _Payload:
    """Unpickling this runs code: it creates `marker` (what a malicious .pth would do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"import pathlib; pathlib.Path({self.marker!r}).touch()",))


def write_malicious_checkpoint(path: str | Path, marker_path: str | Path, *, container: str = "zip") -> Path:
    """A .pth whose unpickling creates `marker_path`. container: "zip" (torch.save) or "pickle"."""
    obj = {"weight": _Payload(str(marker_path)), "config": [], "version": "v2"}
    if container == "zip":
        return save_torch(path, obj)
    Path(path).write_bytes(pickle.dumps(obj, protocol=2))
    return Path(path)


def write_index(path: str | Path, dim: int, n: int = 400, *, seed: int = 0) -> np.ndarray:
    """A FAISS IVF,Flat index as RVC builds it (§6.1); returns the [n, dim] float32 vectors
    (ids 0..n-1 in insertion order)."""
    import faiss

    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    n_ivf = max(1, min(int(16 * math.sqrt(n)), n // 39))
    index = faiss.index_factory(dim, f"IVF{n_ivf},Flat")
    index.train(vectors)
    index.add(vectors)
    faiss.extract_index_ivf(index).nprobe = 1
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(path))
    return vectors

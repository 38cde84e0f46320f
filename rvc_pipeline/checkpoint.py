"""Reading RVC voice checkpoints (.pth) safely, in the formats RVC and Applio write.

Formats (rvc-formats.md §1):
- "webui": RVC's inference ("small") model: `weight` (fp16 state dict without enc_q),
  an 18-item `config` list, `info`, `sr` ("40k"), `f0` (0/1), `version` ("v1"/"v2").
- "applio": the same `weight`/`config` plus metadata; `sr` is an int (or "40000" in
  blended models), `f0` a bool, and a `vocoder` name (§1.3).
- "training": `G_*.pth`: {"model": full fp32 state dict incl. enc_q, "iteration",
  "optimizer", "learning_rate"(, "scaler")} (§1.2). No sample rate is stored.
- "generic": {"model": state dict, "config": {"sample_rate", "hop_length", "model_type"}},
  or a bare state dict.

The architecture is always read from the tensors themselves; labels and config lists are
checked against it, so a file whose labels contradict its weights is refused. Files are
read with `torch.load(weights_only=True)`: a pickle that would run code is refused.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .constants import CONTENT_DIMS  # content feature width per model version (§2.1)
from .constants import FRAMES_PER_SECOND as FRAME_RATE_HZ  # hop = tgt_sr / 100: 10 ms frames (§2.1)
from .errors import CheckpointError, UnsupportedCheckpointError, VoiceNotFoundError
from .synth.config import STANDARD_CONFIGS, SynthesizerConfig

#: Applio vocoders this library implements (§2.7; "HiFi-GAN" is RVC's GeneratorNSF).
SUPPORTED_VOCODERS = ("HiFi-GAN", "MRF HiFi-GAN", "RefineGAN")
#: dec.* key prefixes that identify each decoder layout (§2.7; applio-layouts.md).
_DECODER_KEYS = {
    "dec.ups.": "HiFi-GAN",
    "dec.resblocks.": "HiFi-GAN",
    "dec.upsamples.": "MRF HiFi-GAN",
    "dec.mrfs.": "MRF HiFi-GAN",
    "dec.pre_conv.": "RefineGAN",
    "dec.mel_conv.": "RefineGAN",
    "dec.downsample_blocks.": "RefineGAN",
    "dec.upsample_conv_blocks.": "RefineGAN",
    "dec.m_source.merge.": "RefineGAN",
}
#: Top-level keys that hold weights or optimizer state, never copied into metadata.
_BULK_KEYS = frozenset({"weight", "config", "model", "optimizer", "scaler"})
#: Top-level keys only Applio writes (§1.3).
_APPLIO_KEYS = frozenset({"vocoder", "embedder_model", "model_hash", "creation_date", "speakers_id", "dataset_length"})
#: The three spellings of a (possibly weight-normed) weight whose shape is the layer's (§1.4).
_WEIGHT_SUFFIXES = (".weight", ".weight_v", ".parametrizations.weight.original1")
_FIX = "re-export the voice from RVC/Applio or re-download it"


@dataclass(frozen=True, eq=False)
class VoiceSpec:
    """Everything read from a voice checkpoint: architecture, weights and metadata."""

    version: str  # "v1" (256-dim content) or "v2" (768-dim content)
    f0: bool  # pitch-guided (NSF decoder) or not
    sample_rate: int  # output rate in Hz (tgt_sr)
    config: SynthesizerConfig  # spk_embed_dim = emb_g rows
    weights: dict[str, torch.Tensor] = field(repr=False)  # stored dtype (usually fp16), no enc_q.*
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-friendly extras from the file
    source_format: str = "webui"  # "webui" | "applio" | "training" | "generic"
    vocoder: str = "HiFi-GAN"  # decoder layout: "HiFi-GAN" | "MRF HiFi-GAN" | "RefineGAN"

    @property
    def content_dim(self) -> int:
        """Width of the content features the voice expects (256 for v1, 768 for v2)."""
        return CONTENT_DIMS[self.version]

    @property
    def n_speakers(self) -> int:
        """Number of speaker embeddings (rows of emb_g)."""
        return self.config.spk_embed_dim

    @property
    def hop_length(self) -> int:
        """Output samples per 10 ms synthesizer frame."""
        return self.config.hop_length

    @property
    def n_elements(self) -> int:
        """Stored tensor elements (weight-norm g and v counted apart, enc_q excluded)."""
        return sum(t.numel() for t in self.weights.values())


def read_checkpoint(path: str | Path) -> VoiceSpec:
    """Read and validate a voice checkpoint without building the model.

    Raises VoiceNotFoundError (no such file), CheckpointError (unsafe, corrupt,
    inconsistent) or UnsupportedCheckpointError (a vocoder this library lacks).
    """
    path = Path(path)
    obj = _torch_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a voice checkpoint; {_FIX}")
    if "weight" in obj:
        return _read_exported(path, obj)
    if "model" in obj:
        if isinstance(obj.get("config"), Mapping):
            return _read_generic(path, obj)
        return _read_training(path, obj)
    if "emb_g.weight" in obj or "enc_p.emb_phone.weight" in obj:
        return _read_generic(path, {"model": obj})
    keys = ", ".join(sorted(map(str, obj))[:8])
    raise CheckpointError(
        f"{path} is not an RVC voice checkpoint (top-level keys: {keys}); expected 'weight' "
        "(an exported voice) or 'model' (a training checkpoint G_*.pth)"
    )


def describe_checkpoint(path: str | Path) -> dict[str, Any]:
    """JSON-friendly summary of a voice file for `rvc info` (no model is built)."""
    spec = read_checkpoint(path)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in spec.weights.values()})
    return {
        "path": str(path),
        "format": spec.source_format,
        "version": spec.version,
        "f0": spec.f0,
        "sample_rate": spec.sample_rate,
        "hop_length": spec.hop_length,
        "n_speakers": spec.n_speakers,
        "content_dim": spec.content_dim,
        "upsample_rates": list(spec.config.upsample_rates),
        "vocoder": spec.vocoder,
        "tensors": len(spec.weights),
        "parameters": spec.n_elements,
        "dtype": ",".join(dtypes),
        "metadata": spec.metadata,
    }


# --- reading the file -------------------------------------------------------------------


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True (mmap for zip files), every failure as CheckpointError."""
    if not path.exists():
        raise VoiceNotFoundError(f"voice checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give the path of a .pth voice file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); {_FIX}")
    is_zip = head == b"PK\x03\x04"  # torch.save's default container since PyTorch 1.6
    if not is_zip and not head.startswith(b"\x80"):  # legacy torch.save starts with a pickle PROTO
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (unrecognised header {head!r}); {_FIX}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols; we report errors
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"it calls {found.group(1)}" if found else "it holds pickle code a weights file never uses"
        raise CheckpointError(
            f"{path}: refusing to unpickle this file: {what}. A voice checkpoint holds only tensors, "
            "numbers, strings and lists; this file may be malicious. Do not open it with other tools "
            "unless you trust its source."
        ) from e
    except Exception as e:  # torch raises many types for damaged files (RuntimeError, EOFError, KeyError, ...)
        raise CheckpointError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); {_FIX}") from e


def _state_dict(path: Path, raw: Any, what: str) -> tuple[dict[str, torch.Tensor], int | None]:
    """Validate a state dict; return it without enc_q.* plus enc_q's spec_channels (if any)."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: {what} is a {type(raw).__name__}, not a dict of tensors; {_FIX}")
    if not raw:
        raise CheckpointError(f"{path}: {what} is empty; {_FIX}")
    weights: dict[str, torch.Tensor] = {}
    spec_channels = None
    strip = "module." if all(str(k).startswith("module.") for k in raw) else ""  # DataParallel saves
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: {what} entry {key!r} is a {type(value).__name__}, not a tensor; {_FIX}")
        if not value.is_floating_point():
            raise CheckpointError(f"{path}: tensor {key} has dtype {value.dtype}; weights must be floating point")
        key = key[len(strip):]
        if key.startswith("enc_q."):  # the training-only posterior encoder (§2.1)
            if key == "enc_q.pre.weight":
                spec_channels = int(value.shape[1])
            continue
        weights[key] = value
    if "enc_p.emb_phone.weight" not in weights:
        hint = " (this looks like a discriminator D_*.pth; use G_*.pth)" if any("discriminators" in k for k in weights) else ""
        raise CheckpointError(f"{path}: {what} has no enc_p.emb_phone.weight, so it is not an RVC synthesizer{hint}")
    for key, value in weights.items():
        # A float32 sum is NaN/inf iff some element is (fp16 cannot overflow it); it is much
        # faster than isfinite() on CPU fp16, which then only confirms the rare suspects.
        if not math.isfinite(value.sum(dtype=torch.float32)) and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: tensor {key} contains NaN or infinite values; {_FIX}")
    return weights, spec_channels


def _read_exported(path: Path, obj: Mapping[str, Any]) -> VoiceSpec:
    """RVC WebUI or Applio inference file: weight + 18-item config + labels."""
    applio = (
        any(k in obj for k in _APPLIO_KEYS)
        or isinstance(obj.get("f0"), bool)
        or (isinstance(obj.get("sr"), int) and not isinstance(obj.get("sr"), bool))
        or (isinstance(obj.get("sr"), str) and obj["sr"].strip().isdigit())  # Applio blends: "40000"
    )
    metadata = _metadata(obj)
    if "epoch" not in metadata and isinstance(obj.get("info"), str):
        found = re.fullmatch(r"\s*(\d+)\s*epoch\s*", obj["info"])  # RVC's savee writes "{epoch}epoch"
        if found:
            metadata["epoch"] = int(found.group(1))
    _check_vocoder(path, metadata.get("vocoder"))
    weights, spec_channels = _state_dict(path, obj["weight"], "'weight'")
    raw_config = obj.get("config")
    if not isinstance(raw_config, (list, tuple)):
        raise CheckpointError(f"{path}: 'config' is a {type(raw_config).__name__}, not RVC's 18-item list; {_FIX}")
    try:
        hint = SynthesizerConfig.from_list(raw_config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: malformed 'config' list ({e}); {_FIX}") from e
    spec = _build_spec(path, weights, hint=hint, sample_rate=hint.sample_rate, spec_channels=spec_channels,
                       metadata=metadata, source_format="applio" if applio else "webui")
    _check_labels(path, spec, obj)
    return spec


def _read_training(path: Path, obj: Mapping[str, Any]) -> VoiceSpec:
    """RVC/Applio training checkpoint G_*.pth: the sample rate comes from the tensors."""
    weights, spec_channels = _state_dict(path, obj["model"], "'model'")
    metadata = _metadata(obj)
    if "iteration" in metadata:
        metadata.setdefault("epoch", metadata["iteration"])  # RVC saves the epoch as "iteration"
    return _build_spec(path, weights, hint=None, sample_rate=None, spec_channels=spec_channels,
                       metadata=metadata, source_format="training")


def _read_generic(path: Path, obj: Mapping[str, Any]) -> VoiceSpec:
    """{"model": state dict, "config": {sample_rate, hop_length, model_type}} or a bare state dict."""
    weights, spec_channels = _state_dict(path, obj["model"], "'model'")
    config = obj.get("config") or {}
    metadata = {**_metadata(obj), **_metadata(config)}
    sample_rate = hop = None
    try:
        if config.get("sample_rate") is not None:
            sample_rate = int(config["sample_rate"])
        if config.get("hop_length") is not None:
            hop = int(config["hop_length"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: config sample_rate/hop_length must be integers ({e})") from e
    spec = _build_spec(path, weights, hint=None, sample_rate=sample_rate, spec_channels=spec_channels,
                       metadata=metadata, source_format="generic")
    if hop is not None and hop != spec.hop_length:
        raise CheckpointError(
            f"{path}: config says hop_length={hop} but the decoder upsamples by {spec.hop_length} "
            f"(rates {list(spec.config.upsample_rates)})"
        )
    model_type = config.get("model_type")
    found = re.search(r"v([12])(?!\d)", model_type) if isinstance(model_type, str) else None
    if found and f"v{found.group(1)}" != spec.version:
        raise CheckpointError(f"{path}: config model_type {model_type!r} says v{found.group(1)} "
                              f"but the tensors are a {spec.version} model")
    return spec


# --- labels and metadata -------------------------------------------------------------------


def _check_vocoder(path: Path, vocoder: Any) -> None:
    if vocoder is None:
        return
    if not isinstance(vocoder, str):
        raise CheckpointError(f"{path}: 'vocoder' is a {type(vocoder).__name__}, expected a name")
    if vocoder not in SUPPORTED_VOCODERS:
        raise UnsupportedCheckpointError(
            f"{path}: vocoder {vocoder!r} (Applio) is not supported; only {', '.join(SUPPORTED_VOCODERS)} "
            "voices can be converted. Re-train or export the voice with one of those vocoders."
        )


def _decoder_vocoder(path: Path, weights: Mapping[str, torch.Tensor], declared: Any) -> str:
    """The decoder layout the dec.* keys show, checked against the metadata `vocoder`."""
    found = sorted({vocoder for prefix, vocoder in _DECODER_KEYS.items() if any(k.startswith(prefix) for k in weights)})
    if len(found) > 1:
        examples = "; ".join(
            f"{v}: {next(k for k in sorted(weights) if any(k.startswith(p) for p, w in _DECODER_KEYS.items() if w == v))}"
            for v in found
        )
        raise CheckpointError(f"{path}: the dec.* tensors mix the layouts of several vocoders ({examples}); {_FIX}")
    vocoder = found[0] if found else "HiFi-GAN"
    if isinstance(declared, str) and declared != vocoder:
        raise CheckpointError(
            f"{path}: metadata says vocoder {declared!r} but the dec.* tensors are a {vocoder} decoder "
            f"(keys such as {next((k for k in sorted(weights) if k.startswith('dec.')), 'none')}); {_FIX}"
        )
    return vocoder


def _check_labels(path: Path, spec: VoiceSpec, obj: Mapping[str, Any]) -> None:
    """Labels may be absent (RVC then assumes f0=1, v1); present ones must match the tensors."""
    problems = []
    version = obj.get("version")
    if version is not None and version != spec.version:
        problems.append(f"version label {version!r} but the content layer takes {spec.content_dim}-dim "
                        f"features ({spec.version})")
    f0 = obj.get("f0")
    if f0 is not None:
        if not isinstance(f0, (bool, int)) or int(f0) not in (0, 1):
            problems.append(f"f0 label {f0!r} is not 0/1")
        elif bool(f0) != spec.f0:
            problems.append(f"f0 label {f0!r} but the weights are a {'pitch' if spec.f0 else 'no-pitch'} model")
    sr = obj.get("sr")
    if sr is not None:
        rate = _parse_rate(sr)
        if rate is None:
            problems.append(f"sr label {sr!r} is not a sample rate")
        elif rate != spec.sample_rate:
            problems.append(f"sr label {sr!r} but config says {spec.sample_rate} Hz")
    if problems:
        raise CheckpointError(f"{path}: labels contradict the weights: {'; '.join(problems)}; {_FIX}")


def _parse_rate(value: Any) -> int | None:
    """40000, "40000" or "40k" -> 40000; anything else -> None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(k?)\s*", value.lower())
        if found:
            return round(float(found.group(1)) * (1000 if found.group(2) else 1))
    return None


def _metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The non-weight top-level entries, made JSON-friendly (tensors -> numbers, objects -> str)."""
    out = {}
    for key, value in obj.items():
        if str(key) not in _BULK_KEYS:
            clean = _jsonable(value)
            if clean is not _SKIP:
                out[str(key)] = clean
    return out


_SKIP = object()


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else _SKIP
    if isinstance(value, (list, tuple)):
        return [v for v in map(_jsonable, value) if v is not _SKIP]
    if isinstance(value, Mapping):
        items = ((str(k), _jsonable(v)) for k, v in value.items())
        return {k: v for k, v in items if v is not _SKIP}
    if isinstance(value, bytes):
        return _SKIP
    return str(value)


# --- architecture from the tensors -------------------------------------------------------


def _shape(weights: Mapping[str, torch.Tensor], prefix: str) -> torch.Size | None:
    """Shape of layer `prefix`'s weight in any spelling (plain, weight_v, parametrizations)."""
    for suffix in _WEIGHT_SUFFIXES:
        tensor = weights.get(prefix + suffix)
        if tensor is not None:
            return tensor.shape
    return None


def _count(weights: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of consecutive numbered children `prefix0.`, `prefix1.`, ..."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in weights):
        n += 1
    return n


def _build_spec(path: Path, weights: dict[str, torch.Tensor], *, hint: SynthesizerConfig | None,
                sample_rate: int | None, spec_channels: int | None, metadata: dict[str, Any],
                source_format: str) -> VoiceSpec:
    """Derive the architecture from the tensors, cross-check it against `hint`, wrap it up."""
    vocoder = _decoder_vocoder(path, weights, metadata.get("vocoder"))
    try:
        config, version, f0 = _derive_config(weights, hint, sample_rate, spec_channels, vocoder)
    except KeyError as e:
        raise CheckpointError(f"{path}: the state dict has no {e.args[0]}, so it is not a complete RVC "
                              f"synthesizer; {_FIX}") from e
    except (ValueError, IndexError) as e:
        raise CheckpointError(f"{path}: {e}") from e
    if config.resblock != "1" and source_format == "applio":
        raise UnsupportedCheckpointError(f"{path}: Applio voices use resblock '1' only; found {config.resblock!r}")
    return VoiceSpec(version=version, f0=f0, sample_rate=config.sample_rate, config=config, weights=weights,
                     metadata=metadata, source_format=source_format, vocoder=vocoder)


def _need(weights: Mapping[str, torch.Tensor], prefix: str, ndim: int) -> torch.Size:
    shape = _shape(weights, prefix)
    if shape is None:
        raise KeyError(f"{prefix}.weight")
    if len(shape) != ndim:
        raise ValueError(f"tensor {prefix} has shape {list(shape)}, expected {ndim} dimensions")
    return shape


def _check_hint(hint: SynthesizerConfig | None, derived: Mapping[str, Any]) -> None:
    """ValueError naming every entry where the checkpoint's config list contradicts the tensors."""
    if hint is None:
        return
    wrong = [f"{name}={getattr(hint, name)!r} but the tensors say {value!r}"
             for name, value in derived.items() if getattr(hint, name) != value]
    if wrong:
        raise ValueError("config list contradicts the weights: " + "; ".join(wrong) + f"; {_FIX}")


def _derive_config(weights: Mapping[str, torch.Tensor], hint: SynthesizerConfig | None,
                   sample_rate: int | None, spec_channels: int | None,
                   vocoder: str = "HiFi-GAN") -> tuple[SynthesizerConfig, str, bool]:
    """Read every shape-determined hyperparameter from the tensors (rvc-formats.md §2.2)."""
    hidden, content_dim = _need(weights, "enc_p.emb_phone", 2)
    version = {dim: v for v, dim in CONTENT_DIMS.items()}.get(content_dim)
    if version is None:
        raise ValueError(f"content layer takes {content_dim}-dim features; only 256 (v1) and 768 (v2) exist")
    f0 = "enc_p.emb_pitch.weight" in weights
    ffn = _need(weights, "enc_p.encoder.ffn_layers.0.conv_1", 3)
    n_spk, gin = _need(weights, "emb_g", 2)
    k_channels = weights["enc_p.encoder.attn_layers.0.emb_rel_k"].shape[-1]  # hidden / n_heads
    # What every decoder shares: the text encoder's and the speaker embedding's sizes.
    encoder: dict[str, Any] = dict(
        inter_channels=int(_need(weights, "enc_p.proj", 3)[0]) // 2,  # proj emits mean and log-scale
        hidden_channels=int(hidden),
        filter_channels=int(ffn[0]),
        n_heads=int(hidden) // int(k_channels),
        n_layers=_count(weights, "enc_p.encoder.attn_layers."),
        kernel_size=int(ffn[2]),
        gin_channels=int(gin),
    )
    if vocoder != "HiFi-GAN":
        config = _derive_applio_decoder(weights, vocoder, encoder, int(n_spk), hint, sample_rate, spec_channels)
        if not f0:
            raise ValueError(f"the {vocoder} decoder exists only for pitch-guided voices, but the weights have no "
                             f"enc_p.emb_pitch; {_FIX}")
        return config, version, f0
    n_stages = _count(weights, "dec.ups.")
    up_kernels = tuple(int(_need(weights, f"dec.ups.{s}", 3)[2]) for s in range(n_stages))
    n_res = _count(weights, "dec.resblocks.")
    if n_stages == 0 or n_res == 0 or n_res % n_stages:
        raise ValueError(f"decoder has {n_stages} upsampling stages and {n_res} residual blocks; {_FIX}")
    resblock = "1" if _shape(weights, "dec.resblocks.0.convs1.0") is not None else "2"
    conv = "convs1" if resblock == "1" else "convs"
    n_kernels, n_dilations = n_res // n_stages, _count(weights, f"dec.resblocks.0.{conv}.")
    derived: dict[str, Any] = dict(
        encoder,
        resblock=resblock,
        resblock_kernel_sizes=tuple(int(_need(weights, f"dec.resblocks.{j}.{conv}.0", 3)[2]) for j in range(n_kernels)),
        upsample_initial_channel=int(_need(weights, "dec.conv_pre", 3)[0]),
        upsample_kernel_sizes=up_kernels,
    )
    tail = _rates_from_noise_convs(weights, n_stages)
    if f0 != (tail is not None):
        raise ValueError("the weights mix pitch and no-pitch layers (enc_p.emb_pitch vs dec.noise_convs); " + _FIX)
    if sample_rate is None:
        sample_rate = _standard_rate(up_kernels, tail, spec_channels)
    if sample_rate <= 0 or sample_rate % FRAME_RATE_HZ:
        raise ValueError(f"sample rate {sample_rate} Hz is not a whole number of samples per 10 ms frame")
    hop = sample_rate // FRAME_RATE_HZ
    if tail is not None:
        if hop % math.prod(tail):
            raise ValueError(f"the NSF noise convolutions (strides {tail}) do not fit a hop of {hop} at {sample_rate} Hz")
        rates = (hop // math.prod(tail), *tail)
    elif hint is not None:
        rates = hint.upsample_rates
    else:
        rates = _standard_rates(up_kernels, sample_rate)
    if len(rates) != n_stages or math.prod(rates) != hop or any(k < u for k, u in zip(up_kernels, rates)):
        raise ValueError(f"upsample rates {list(rates)} with kernels {list(up_kernels)} do not give a hop of "
                         f"{hop} samples (10 ms at {sample_rate} Hz)")
    derived.update(upsample_rates=tuple(rates), sample_rate=sample_rate)
    _check_hint(hint, derived)
    dilations = hint.resblock_dilation_sizes if hint is not None else None
    if dilations is None or len(dilations) != n_kernels or any(len(d) != n_dilations for d in dilations):
        default = {3: (1, 3, 5), 2: (1, 3)}.get(n_dilations)  # ResBlock1 / ResBlock2 defaults (§2.5)
        if default is None:
            raise ValueError(f"residual blocks have {n_dilations} convolutions each and no config gives their dilations")
        dilations = (default,) * n_kernels
    standard = next((c for (_, sr), c in STANDARD_CONFIGS.items() if sr == sample_rate), None)
    config = SynthesizerConfig(
        spec_channels=spec_channels or (hint.spec_channels if hint else 0)
        or (standard.spec_channels if standard else (513 if sample_rate <= 32000 else 1025)),
        segment_size=hint.segment_size if hint else 32,
        p_dropout=hint.p_dropout if hint else 0.0,
        resblock_dilation_sizes=tuple(tuple(d) for d in dilations),
        spk_embed_dim=int(n_spk),
        **derived,
    )
    return config, version, f0


def _derive_applio_decoder(weights: Mapping[str, torch.Tensor], vocoder: str, encoder: dict[str, Any], n_spk: int,
                           hint: SynthesizerConfig | None, sample_rate: int | None,
                           spec_channels: int | None) -> SynthesizerConfig:
    """The config of an "MRF HiFi-GAN" or "RefineGAN" voice (applio-layouts.md): the decoder's
    shape-determined hyperparameters from its tensors, the rest from the config list (or, for
    files without one, the standard config of the sample rate)."""
    derived: dict[str, Any] = dict(encoder)
    if vocoder == "MRF HiFi-GAN":
        n_stages = _count(weights, "dec.upsamples.")
        n_kernels, n_dilations = _count(weights, "dec.mrfs.0."), _count(weights, "dec.mrfs.0.0.layers.")
        if n_stages == 0 or n_kernels == 0 or n_dilations == 0:
            raise ValueError(f"MRF decoder has {n_stages} upsamplers and {n_kernels} MRF blocks of {n_dilations} "
                             f"layers; {_FIX}")
        up_kernels = tuple(int(_need(weights, f"dec.upsamples.{s}", 3)[2]) for s in range(n_stages))
        derived.update(
            resblock="1",
            resblock_kernel_sizes=tuple(int(_need(weights, f"dec.mrfs.0.{j}.layers.0.conv1", 3)[2])
                                        for j in range(n_kernels)),
            upsample_initial_channel=int(_need(weights, "dec.conv_pre", 3)[0]),
            upsample_kernel_sizes=up_kernels,
        )
        tail = _rates_from_noise_convs(weights, n_stages)
        if tail is None:
            raise KeyError("dec.noise_convs.0.weight")
        if sample_rate is None:
            sample_rate = _standard_rate(up_kernels, tail, spec_channels)
    else:  # RefineGAN: no tensor depends on the rates; they come from the config (Applio's per-rate json)
        n_stages = _count(weights, "dec.downsample_blocks.")
        if n_stages == 0 or n_stages != _count(weights, "dec.upsample_conv_blocks."):
            raise ValueError(f"RefineGAN decoder has {n_stages} downsampling and "
                             f"{_count(weights, 'dec.upsample_conv_blocks.')} upsampling blocks; {_FIX}")
        n_kernels = _count(weights, "dec.upsample_conv_blocks.0.blocks.")
        derived.update(
            resblock="1",
            resblock_kernel_sizes=tuple(int(_need(weights, f"dec.upsample_conv_blocks.0.blocks.{j}.1.convs1.0", 3)[2])
                                        for j in range(n_kernels)),
            upsample_initial_channel=2 * int(_need(weights, "dec.mel_conv", 3)[0]),
        )
        n_dilations, tail, up_kernels = 3, None, None
        if sample_rate is None:
            raise ValueError("cannot tell the sample rate: a RefineGAN decoder's tensors do not depend on it and the "
                             "file stores none; export the voice from Applio first")
    if sample_rate <= 0 or sample_rate % FRAME_RATE_HZ:
        raise ValueError(f"sample rate {sample_rate} Hz is not a whole number of samples per 10 ms frame")
    hop = sample_rate // FRAME_RATE_HZ
    standard = STANDARD_CONFIGS.get(("v2", sample_rate))
    if tail is not None:
        if hop % math.prod(tail):
            raise ValueError(f"the NSF noise convolutions (strides {tail}) do not fit a hop of {hop} at {sample_rate} Hz")
        rates = (hop // math.prod(tail), *tail)
    elif hint is not None:
        rates, up_kernels = hint.upsample_rates, hint.upsample_kernel_sizes
    elif standard is not None:
        rates, up_kernels = standard.upsample_rates, standard.upsample_kernel_sizes
    else:
        raise ValueError(f"cannot tell the upsample rates of this RefineGAN decoder at {sample_rate} Hz: the file has "
                         "no config list and Applio has no standard config for that rate")
    if len(rates) != n_stages or math.prod(rates) != hop:
        raise ValueError(f"upsample rates {list(rates)} do not give a hop of {hop} samples (10 ms at {sample_rate} Hz) "
                         f"in {n_stages} stages")
    derived.update(upsample_rates=tuple(rates), upsample_kernel_sizes=tuple(up_kernels), sample_rate=sample_rate)
    _check_hint(hint, derived)
    dilations = hint.resblock_dilation_sizes if hint is not None else None
    if dilations is None or len(dilations) != n_kernels or any(len(d) != n_dilations for d in dilations):
        dilations = ((1, 3, 5),) * n_kernels  # Applio's configs (RefineGAN hard-codes them)
    return SynthesizerConfig(
        spec_channels=spec_channels or (hint.spec_channels if hint else 0)
        or (standard.spec_channels if standard else (513 if sample_rate <= 32000 else 1025)),
        segment_size=hint.segment_size if hint else 32,
        p_dropout=hint.p_dropout if hint else 0.0,
        resblock_dilation_sizes=tuple(tuple(d) for d in dilations),
        spk_embed_dim=n_spk,
        **derived,
    )


def _rates_from_noise_convs(weights: Mapping[str, torch.Tensor], n_stages: int) -> tuple[int, ...] | None:
    """upsample_rates[1:] from the NSF noise convs: stage s has kernel 2*prod(rates[s+1:]), the last 1 (§2.2)."""
    if _shape(weights, "dec.noise_convs.0") is None:
        return None
    kernels = [int(_need(weights, f"dec.noise_convs.{s}", 3)[2]) for s in range(n_stages)]
    strides = [k // 2 for k in kernels[:-1]] + [1]
    if kernels[-1] != 1 or any(k % 2 or k < 2 for k in kernels[:-1]) or any(a % b for a, b in zip(strides, strides[1:])):
        raise ValueError(f"NSF noise convolution kernels {kernels} do not follow RVC's 2*stride rule")
    return tuple(a // b for a, b in zip(strides, strides[1:]))


def _standard_rate(up_kernels: tuple[int, ...], tail: tuple[int, ...] | None, spec_channels: int | None) -> int:
    """Sample rate of the standard config(s) matching the decoder (files that store none)."""
    rates = {c.sample_rate for c in STANDARD_CONFIGS.values()
             if c.upsample_kernel_sizes == up_kernels
             and (tail is None or c.upsample_rates[1:] == tail)
             and (spec_channels is None or c.spec_channels == spec_channels)}
    if len(rates) != 1:
        raise ValueError(f"cannot tell the sample rate: the file stores none and the decoder (kernels "
                         f"{list(up_kernels)}) matches {'no' if not rates else 'more than one'} standard RVC "
                         "configuration; export the voice from RVC/Applio first")
    return rates.pop()


def _standard_rates(up_kernels: tuple[int, ...], sample_rate: int) -> tuple[int, ...]:
    """upsample_rates of a no-pitch model with no config list, from the standard configs."""
    for config in STANDARD_CONFIGS.values():
        if config.upsample_kernel_sizes == up_kernels and config.sample_rate == sample_rate:
            return config.upsample_rates
    raise ValueError(f"cannot tell the upsample rates of this no-pitch decoder (kernels {list(up_kernels)}, "
                     f"{sample_rate} Hz): it matches no standard RVC configuration and the file has no config list")

"""Which content encoder a voice needs, where its files go, and a per-process set of them.

Applio writes the encoder a voice was trained with as `embedder_model` in its checkpoint
(applio-layouts.md §1.3). Features from another encoder make a voice mumble, so every
voice is converted with its own encoder, found by name in the models folder:

    <models>/assets/<name>.pt     a fairseq checkpoint, or
    <models>/assets/<name>/       a transformers folder (config.json + pytorch_model.bin or
                                  model.safetensors), as Applio keeps rvc/models/embedders/<name>/

Applio's own folder spelling (`chinese_hubert_base/` for "chinese-hubert-base") is accepted
too. "contentvec" is RVC's hubert_base: `hubert_base.pt` and `hubert_base/` are its older names
and are looked for first. A voice without `embedder_model` (RVC WebUI files, or None) uses
contentvec. "custom" names no file: such a voice needs an override that names its encoder.

    encoders = ContentEncoders("models", device="cpu")   # loads each encoder on first use
    convert(audio, voice, encoders, estimator)            # the voice's own encoder
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import AssetNotFoundError, OptionError

#: Applio's `embedder_model` values that name a file (applio-layouts.md §1.3).
KNOWN_ENCODERS = ("contentvec", "spin", "spin-v2", "chinese-hubert-base", "japanese-hubert-base",
                  "korean-hubert-base")
#: The encoder of voices that do not name one: ContentVec, which RVC calls hubert_base.
DEFAULT_ENCODER = "contentvec"
#: Applio's value for an encoder of the user's own choosing: it needs a per-voice override.
CUSTOM_ENCODER = "custom"
#: Older file names of an encoder, looked for before its own name.
ENCODER_ALIASES: dict[str, tuple[str, ...]] = {DEFAULT_ENCODER: ("hubert_base",)}
#: name=path entries (encoder files elsewhere) and voice=encoder entries (per-voice choices),
#: separated by os.pathsep like PATH: "spin=/opt/spin.pt:custom-x=/opt/x".
ENCODERS_ENV = "RVC_ENCODERS"
VOICE_ENCODERS_ENV = "RVC_VOICE_ENCODERS"
#: What a transformers encoder folder holds (content/loading.py reads these).
HF_FILES = "config.json plus pytorch_model.bin or model.safetensors"

_FORBIDDEN = set('/\\:\0')


def encoder_name_problem(name: object) -> str | None:
    """Why `name` cannot name an encoder file (None when it can): a plain name, never a path."""
    if not isinstance(name, str) or not name:
        return "it is not a non-empty string"
    if name in (".", "..") or name.startswith(".") or name != name.strip() or len(name) > 128:
        return "it is not a plain name"
    if _FORBIDDEN.intersection(name) or not name.isprintable():
        return "it contains '/', '\\\\', ':' or control characters"
    return None


def embedder_of(metadata: Mapping[str, Any] | None) -> str:
    """The encoder a voice's checkpoint names (`embedder_model`), contentvec when it names none."""
    value = (metadata or {}).get("embedder_model")
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_ENCODER
    return str(value).strip()


def spellings(name: str) -> list[str]:
    """File stems to look for, in order: aliases, the name, Applio's folder spelling."""
    names = [*ENCODER_ALIASES.get(name, ()), name, name.replace("-", "_")]
    return list(dict.fromkeys(names))


def candidates(assets_dir: Path, name: str) -> list[Path]:
    """Where the encoder `name` may be, in the order they are tried (<stem>.pt before <stem>/)."""
    found = []
    for stem in spellings(name):
        found += [assets_dir / f"{stem}.pt", assets_dir / stem]
    return found


def usable(path: Path) -> bool:
    """A file, or a folder with its config.json (weights are checked when loading)."""
    return path.is_file() or (path / "config.json").is_file()


def where_to_put(assets_dir: Path, name: str) -> str:
    """The files to add for the encoder `name`, e.g. '.../assets/spin.pt (fairseq) or the folder
    .../assets/spin/ (config.json plus ...)'."""
    stem = spellings(name)[0]
    return f"{assets_dir / stem}.pt (fairseq) or the folder {assets_dir / stem}/ ({HF_FILES})"


def parse_pairs(text: str | None, what: str) -> dict[str, str]:
    """"a=x:b=y" (os.pathsep between entries) -> {"a": "x", "b": "y"}; OptionError on a malformed entry."""
    pairs: dict[str, str] = {}
    for entry in (text or "").split(os.pathsep):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise OptionError(f"{what}: {entry!r} is not NAME=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


@dataclass(frozen=True)
class EncoderRef:
    """A content encoder by name, with its files (None when missing) and, if unusable, why."""

    name: str  # "contentvec", "spin", ... or an operator's name for a custom encoder
    path: Path | None  # the fairseq file or transformers folder; None when not found
    problem: str | None = None  # what to add or set; None when `path` can be loaded
    demo: bool = False  # the untrained demo encoder standing in for a missing contentvec

    @property
    def present(self) -> bool:
        return self.problem is None and self.path is not None

    @property
    def fingerprint(self) -> str:
        """Changes when the encoder's files are replaced (see models_folder.file_fingerprint)."""
        from .models_folder import file_fingerprint

        if self.path is None:
            return "missing"
        if self.path.is_dir():
            return file_fingerprint(*(self.path / n for n in ("config.json", "model.safetensors", "pytorch_model.bin")))
        return file_fingerprint(self.path)

    def require(self) -> Path:
        """`path`, or AssetNotFoundError with `problem` (which names the file to add)."""
        if not self.present:
            raise AssetNotFoundError(self.problem or f"content encoder {self.name!r} is missing")
        assert self.path is not None
        return self.path


class ContentEncoders:
    """Each voice's own content encoder from a models folder, loaded on first use.

    models: a `VoiceCatalog`, a `ModelsFolder`, or a folder path (None: $RVC_MODELS_DIR, then
    ./models). Keeps at most `max_loaded` encoders (least recently used dropped). Not thread-safe.
    """

    def __init__(self, models: Any = None, *, device: Any = None, dtype: Any = None, max_loaded: int = 2) -> None:
        import torch

        from .models_folder import ModelsFolder

        if max_loaded < 1:
            raise OptionError(f"max_loaded must be at least 1, got {max_loaded}")
        self.models = models if hasattr(models, "encoder_for_voice") else ModelsFolder(models)
        self.device, self.dtype, self.max_loaded = device, dtype or torch.float32, max_loaded
        self._loaded: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def ref_for_voice(self, voice: Any) -> EncoderRef:
        """The encoder `voice` (a loaded `Voice`) needs, found but not loaded."""
        return self.models.encoder_for_voice(voice.name, voice.metadata)

    def for_voice(self, voice: Any) -> Any:
        """The loaded `ContentEncoder` of `voice`; AssetNotFoundError naming the file when it is missing."""
        return self.load(self.ref_for_voice(voice))

    def get(self, name: str) -> Any:
        """The loaded encoder called `name` (as an override would name it)."""
        return self.load(self.models.find_encoder(name))

    def load(self, ref: EncoderRef) -> Any:
        from .content import load_content_encoder

        key = (ref.name, ref.fingerprint)
        path = ref.require()
        if key not in self._loaded:
            self._loaded[key] = load_content_encoder(path, device=self.device, dtype=self.dtype)
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        return self._loaded[key]

    @property
    def loaded(self) -> list[str]:
        """Names of the encoders held now, least recently used first."""
        return [name for name, _ in self._loaded]

    def close(self) -> None:
        """Drop every loaded encoder."""
        self._loaded.clear()

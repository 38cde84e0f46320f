"""The models folder: voices by name, plus the shared model assets.

Layout (root from the constructor, else $RVC_MODELS_DIR, else ./models):

    <root>/<name>.pth                  a voice ...
    <root>/<name>.index                ... and its retrieval index (optional)
    <root>/<name>/<anything>.pth       or a voice folder (as RVC's logs/<exp>/): one .pth,
    <root>/<name>/added_*.index        optionally its 'added_*' index ('trained_*' skipped)
    <root>/assets/hubert_base.pt       content encoder (or assets/hubert_base/ or
                                       assets/contentvec/: transformers folders with config.json)
    <root>/assets/<encoder>.pt         the other encoders voices name (`embedder_model`: spin,
    <root>/assets/<encoder>/           spin-v2, chinese-hubert-base, ...; see encoders.py)
    <root>/assets/rmvpe.pt             RMVPE pitch model (optional)

$RVC_CONTENT_ENCODER (contentvec) and $RVC_RMVPE point at the assets elsewhere, $RVC_ENCODERS
("spin=/opt/spin.pt:...") at other encoders, and $RVC_VOICE_ENCODERS ("bob=my-encoder:...")
picks a voice's encoder by name (needed by voices whose `embedder_model` is "custom"); constructor
arguments override the environment. A voice name is a plain name, never a path:
everything `find_voice` opens resolves inside the root, symlinks included.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote

from . import encoders as enc
from .encoders import EncoderRef
from .errors import AssetNotFoundError, VoiceNotFoundError

log = logging.getLogger(__name__)

MODELS_DIR_ENV = "RVC_MODELS_DIR"
CONTENT_ENCODER_ENV = "RVC_CONTENT_ENCODER"
RMVPE_ENV = "RVC_RMVPE"
DEFAULT_MODELS_DIR = "models"

#: Sub-folder of the root holding the shared assets; never a voice.
ASSETS_DIRNAME = "assets"
#: Longest accepted voice name, in characters.
MAX_NAME_LENGTH = 128

# RVC training writes discriminator checkpoints D_<step>.pth beside the generator's G_<step>.pth.
_DISCRIMINATOR = re.compile(r"^D_.*\.pth$")
_FORBIDDEN_CHARS = set('/\\:\0')


@dataclass(frozen=True)
class VoiceEntry:
    """One voice of a models folder (or given by path)."""

    name: str  # the name to ask for: file stem or folder name
    pth_path: Path  # the checkpoint (resolved); for an invalid entry, the voice folder
    index_path: Path | None  # the retrieval index, if one was found
    size_bytes: int  # size of the .pth file
    problem: str | None = None  # why the voice cannot be used (only in list_voices(include_invalid=True))
    demo: bool = False  # the untrained demo voice (rvc_pipeline.demo), not a user's file

    @property
    def valid(self) -> bool:
        return self.problem is None

    @property
    def fingerprint(self) -> str:
        """Identity of the voice's files as they are now (see `file_fingerprint`)."""
        return file_fingerprint(self.pth_path, self.index_path)


def file_fingerprint(*paths: Path | None) -> str:
    """12 hex digits that change whenever one of `paths` is replaced, edited or removed.

    Built from each file's inode, size, mtime and ctime (nanoseconds): copying another voice
    over `bob.pth`, or swapping its index, gives a new fingerprint without reading the files.
    """
    parts = []
    for path in paths:
        if path is None:
            parts.append("-")
            continue
        try:
            st = os.stat(path)
        except OSError:
            parts.append("missing")
            continue
        parts.append(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def check_voice_name(name: str) -> str:
    """Return `name` if it is a plain voice name, else raise `VoiceNotFoundError`.

    Refused: '', '.', '..', leading '.', '/', '\\', ':', NUL and other control or
    format characters, leading/trailing spaces, more than 128 characters, and any of
    these hidden behind percent-encoding (e.g. '%2e%2e%2f').
    """
    problem = _name_problem(name)
    if problem is None:
        decoded = name
        for _ in range(3):  # undo up to three layers of percent-encoding
            decoded, before = unquote(decoded), decoded
            if decoded == before:
                break
            problem = _name_problem(decoded)
            if problem is not None:
                problem = f"{problem} once percent-decoded"
                break
    if problem is not None:
        raise VoiceNotFoundError(f"invalid voice name {name!r}: {problem}; a voice name is a plain name, not a path")
    return name


class ModelsFolder:
    """Finds voices and assets under one root folder. Stateless: every call looks at the disk."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        content_encoder: str | Path | None = None,
        rmvpe: str | Path | None = None,
        encoders: Mapping[str, str | Path] | None = None,
        voice_encoders: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root if root is not None else os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR).absolute()
        if encoders is None:
            encoders = enc.parse_pairs(os.environ.get(enc.ENCODERS_ENV), f"${enc.ENCODERS_ENV}")
        if voice_encoders is None:
            voice_encoders = enc.parse_pairs(os.environ.get(enc.VOICE_ENCODERS_ENV), f"${enc.VOICE_ENCODERS_ENV}")
        #: encoder name -> its file elsewhere; voice name -> the encoder it uses (overrides its checkpoint)
        self.encoder_paths = {str(k): Path(v).absolute() for k, v in encoders.items()}
        self.voice_encoders = {str(k): str(v) for k, v in voice_encoders.items()}
        encoder = content_encoder if content_encoder is not None else os.environ.get(CONTENT_ENCODER_ENV) or None
        if encoder is None:
            encoder = self.encoder_paths.get(enc.DEFAULT_ENCODER)
        rmvpe_file = rmvpe if rmvpe is not None else os.environ.get(RMVPE_ENV) or None
        self._content_encoder = Path(encoder).absolute() if encoder is not None else None
        self._rmvpe = Path(rmvpe_file).absolute() if rmvpe_file is not None else None

    @property
    def assets_dir(self) -> Path:
        """Where hubert_base.pt / rmvpe.pt go."""
        return self.root / ASSETS_DIRNAME

    # --- voices ------------------------------------------------------------------------

    def list_voices(self, *, include_invalid: bool = False) -> list[VoiceEntry]:
        """Voices sorted by name. Invalid ones (a folder with several .pth files, a link
        leading outside the root, a name that is not allowed) are left out unless
        `include_invalid`, in which case their `problem` says what is wrong."""
        if not self.root.is_dir():  # said once by whoever owns the folder (VoiceCatalog.notices)
            return []
        entries: dict[str, VoiceEntry] = {}
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or child.name == ASSETS_DIRNAME:
                continue
            if child.suffix == ".pth" and child.is_file():
                name = child.stem
            elif child.is_dir():
                name = child.name
            else:
                continue
            if name in entries:  # <name>.pth and <name>/ both present: the file wins
                continue
            try:
                entry = self._lookup(name)
            except VoiceNotFoundError as e:
                entry = VoiceEntry(name, child, None, 0, problem=str(e))
            if entry is not None and (include_invalid or entry.valid):
                entries[name] = entry
        return [entries[n] for n in sorted(entries, key=str.casefold)]

    def find_voice(self, name: str) -> VoiceEntry:
        """The voice called `name` (a name, never a path); `VoiceNotFoundError` if none."""
        entry = self._lookup(name)
        if entry is None:
            known = [e.name for e in self.list_voices()]
            shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
            raise VoiceNotFoundError(f"no voice named {name!r} in {self.root}; available: {shown or 'none'}")
        return entry

    def resolve_voice_argument(self, name_or_path: str | Path) -> VoiceEntry:
        """For the CLI: a voice name in this folder, or a path to a .pth file or voice folder.

        Arguments containing a path separator or ending in .pth are paths (any location);
        anything else is looked up by name with `find_voice`.
        """
        text = str(name_or_path)
        looks_like_path = (isinstance(name_or_path, Path) or "/" in text or os.sep in text
                           or text.lower().endswith(".pth"))
        if not looks_like_path:
            return self.find_voice(text)
        path = Path(text).expanduser().absolute()
        if path.is_file():
            if path.suffix.lower() != ".pth":
                raise VoiceNotFoundError(f"{text!r} is not a .pth voice checkpoint")
            sibling = path.with_suffix(".index")
            index_path = sibling if sibling.is_file() else None
            if index_path is None and len(_pth_candidates(path.parent)) == 1:
                index_path = _pick_index(path.parent, path.stem, path.parent.name)
            return VoiceEntry(path.stem, path, index_path, path.stat().st_size)
        if path.is_dir():
            pth, index_path = _voice_folder_files(path, path.name)
            return VoiceEntry(path.name, pth, index_path, pth.stat().st_size)
        raise VoiceNotFoundError(f"voice file {text!r} does not exist")

    # --- assets ------------------------------------------------------------------------

    def content_encoder_path(self) -> Path | None:
        """The HuBERT/ContentVec weights: the explicit path ($RVC_CONTENT_ENCODER or the
        constructor), else assets/hubert_base.pt, assets/hubert_base/, assets/contentvec/
        (folders need a config.json); None when there is none."""
        if self._content_encoder is not None:
            if not self._content_encoder.exists():
                raise AssetNotFoundError(f"content encoder {self._content_encoder} does not exist "
                                         f"(from --content-encoder or ${CONTENT_ENCODER_ENV})")
            return self._content_encoder
        return next((p for p in enc.candidates(self.assets_dir, enc.DEFAULT_ENCODER) if enc.usable(p)), None)

    def find_encoder(self, name: str) -> EncoderRef:
        """The content encoder called `name`: its override ($RVC_ENCODERS, the constructor; for
        contentvec also $RVC_CONTENT_ENCODER), else the first of assets/<name>.pt, assets/<name>/
        (see `encoders.candidates`). Never raises: a missing one has a `problem` naming what to add."""
        problem = enc.encoder_name_problem(name)
        if problem is not None:
            return EncoderRef(str(name), None, f"invalid content encoder name {name!r}: {problem}; "
                                               "an encoder name is a plain name, not a path")
        if name == enc.CUSTOM_ENCODER:
            return EncoderRef(name, None, "'custom' names no encoder file; say which encoder the voice "
                              f"uses (voice_encoders in the service config, --encoder, or ${enc.VOICE_ENCODERS_ENV})")
        if name == enc.DEFAULT_ENCODER:
            try:
                path = self.content_encoder_path()
            except AssetNotFoundError as e:
                return EncoderRef(name, None, str(e))
        elif name in self.encoder_paths:
            path = self.encoder_paths[name]
            if not enc.usable(path):
                return EncoderRef(name, None, f"content encoder {name!r}: {path} does not exist "
                                              f"(or is a folder without config.json); from ${enc.ENCODERS_ENV} or the config")
        else:
            path = next((p for p in enc.candidates(self.assets_dir, name) if enc.usable(p)), None)
        if path is None:
            return EncoderRef(name, None, f"content encoder {name!r} is missing: add "
                                          f"{enc.where_to_put(self.assets_dir, name)}")
        return EncoderRef(name, path)

    def encoder_name_for(self, voice_name: str, metadata: Mapping[str, Any] | None) -> str:
        """The encoder a voice uses: its override, else its checkpoint's `embedder_model`, else contentvec."""
        return self.voice_encoders.get(voice_name) or enc.embedder_of(metadata)

    def encoder_for_voice(self, voice_name: str, metadata: Mapping[str, Any] | None) -> EncoderRef:
        """`find_encoder` for the encoder the voice uses; a `problem` names the voice and the fix."""
        name = self.encoder_name_for(voice_name, metadata)
        ref = self.find_encoder(name)
        if ref.problem is None:
            return ref
        if name == enc.CUSTOM_ENCODER:
            problem = (f"voice {voice_name!r} was trained with a custom content encoder, which its file does not "
                       f"name: put that encoder in {self.assets_dir} as <name>.pt or <name>/ and map the voice to "
                       f"it (voice_encoders: {{{voice_name}: <name>}} in the service config, --encoder <name> in "
                       f"the CLI, or ${enc.VOICE_ENCODERS_ENV}={voice_name}=<name>)")
        else:
            problem = f"voice {voice_name!r} cannot run: {ref.problem}"
        return EncoderRef(name, None, problem)

    def rmvpe_path(self) -> Path | None:
        """The RMVPE weights: the explicit path ($RVC_RMVPE or the constructor), else
        assets/rmvpe.pt; None when there is none."""
        if self._rmvpe is not None:
            if not self._rmvpe.is_file():
                raise AssetNotFoundError(f"RMVPE weights {self._rmvpe} do not exist (from --rmvpe or ${RMVPE_ENV})")
            return self._rmvpe
        candidate = self.assets_dir / "rmvpe.pt"
        return candidate if candidate.is_file() else None

    def require_content_encoder(self) -> Path:
        """`content_encoder_path()`, or `AssetNotFoundError` saying where the file goes."""
        path = self.content_encoder_path()
        if path is None:
            raise AssetNotFoundError(
                f"no content encoder found: put hubert_base.pt (or a transformers folder hubert_base/ or "
                f"contentvec/ with config.json) in {self.assets_dir}, or set ${CONTENT_ENCODER_ENV}")
        return path

    def require_rmvpe(self) -> Path:
        """`rmvpe_path()`, or `AssetNotFoundError` saying where rmvpe.pt goes."""
        path = self.rmvpe_path()
        if path is None:
            raise AssetNotFoundError(f"f0 method 'rmvpe' needs rmvpe.pt in {self.assets_dir} (or set ${RMVPE_ENV})")
        return path

    # --- internals ---------------------------------------------------------------------

    def _lookup(self, name: str) -> VoiceEntry | None:
        """The voice `name`, None if absent; `VoiceNotFoundError` if the name is not
        allowed, the root is missing, or the voice exists but cannot be used."""
        check_voice_name(name)
        if not self.root.is_dir():
            raise VoiceNotFoundError(f"models folder {self.root} does not exist; create it or set ${MODELS_DIR_ENV}")
        root = self.root.resolve()
        file = self.root / f"{name}.pth"
        if file.is_file():
            pth = _inside(file, root, name)
            index = self.root / f"{name}.index"
            index_path = _inside(index, root, name) if index.is_file() else None
            return VoiceEntry(name, pth, index_path, pth.stat().st_size)
        folder = self.root / name
        if name == ASSETS_DIRNAME or not folder.is_dir():
            return None
        _inside(folder, root, name)
        try:
            pth, index_path = _voice_folder_files(folder, name)
        except OSError as e:
            raise VoiceNotFoundError(f"voice folder {name!r} cannot be read ({e.strerror or e})") from e
        pth = _inside(pth, root, name)
        index_path = _inside(index_path, root, name) if index_path else None
        return VoiceEntry(name, pth, index_path, pth.stat().st_size)


def _inside(path: Path, root: Path, name: str) -> Path:
    """`path` resolved (symlinks followed); `VoiceNotFoundError` if that leaves `root`."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise VoiceNotFoundError(
            f"voice {name!r}: {path.name} is a link that leads outside the models folder; "
            "copy the file into the models folder instead of linking it")
    return resolved


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return "it is not a string"
    if name in ("", ".", ".."):
        return "it is empty or a relative folder"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is longer than {MAX_NAME_LENGTH} characters"
    if name.startswith("."):
        return "it starts with '.'"
    if name != name.strip():
        return "it starts or ends with a space"
    if _FORBIDDEN_CHARS.intersection(name):
        return "it contains '/', '\\\\', ':' or NUL"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in name):
        return "it contains control characters"
    return None


def _pth_candidates(folder: Path) -> list[Path]:
    """The voice checkpoints of a folder: non-hidden *.pth, discriminators dropped when
    that leaves exactly one."""
    found = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() == ".pth" and not p.name.startswith(".") and p.is_file())
    if len(found) > 1:
        generators = [p for p in found if not _DISCRIMINATOR.match(p.name)]
        if len(generators) == 1:
            return generators
    return found


def _voice_folder_files(folder: Path, name: str) -> tuple[Path, Path | None]:
    candidates = _pth_candidates(folder)
    if not candidates:
        raise VoiceNotFoundError(f"voice folder {name!r} holds no .pth file")
    if len(candidates) > 1:
        listed = ", ".join(p.name for p in candidates[:10])
        raise VoiceNotFoundError(f"voice folder {name!r} holds several .pth files ({listed}); keep only one")
    return candidates[0], _pick_index(folder, name, candidates[0].stem)


def _pick_index(folder: Path, *names: str) -> Path | None:
    """The folder's retrieval index: 'trained' files skipped (they hold no vectors),
    'added_*' preferred, then one naming the voice, then the first by name."""
    found = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() == ".index" and "trained" not in p.name.lower()
                   and not p.name.startswith(".") and p.is_file())
    if not found:
        return None
    added = [p for p in found if p.name.lower().startswith("added_")] or found
    named = [p for p in added if any(n and n.lower() in p.name.lower() for n in names)] or added
    if len(named) > 1:
        log.warning("several indexes in %s; using %s", folder, named[0].name)
    return named[0]

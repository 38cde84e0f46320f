"""What the CLI and the service both see: the models folder, plus the untrained demo fallback.

    catalog = VoiceCatalog()                     # ./models (or $RVC_MODELS_DIR), demo fallback on
    catalog.list_voices()                        # the folder's voices, or the labelled demo voice
    catalog.encoder_path                         # the user's contentvec encoder, or the demo encoder
    catalog.encoder_for_voice("bob", metadata)   # the encoder bob names (EncoderRef: path or problem)
    catalog.notices()                            # what to tell the user once (missing folder, demo in use)
    catalog.label(path)                          # "<models>/alice.pth": a path as answers may show it

With no voices or no content encoder in the folder, the deterministic demo files
(`rvc_pipeline.demo`) are written to the cache folder and used instead, always labelled:
their output is noise. Each process resolves this itself, so it also works where service
replicas run on other nodes than the one that started the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .demo import DEMO_VOICE_NAME, DemoAssets, write_demo_assets
from .encoders import DEFAULT_ENCODER, EncoderRef
from .models_folder import ASSETS_DIRNAME, MODELS_DIR_ENV, ModelsFolder, VoiceEntry

#: Shown wherever the demo is in use.
DEMO_NOTICE = (
    "UNTRAINED DEMO {what} in use: its weights are random and its output is noise. "
    "Put your hubert_base.pt (and rmvpe.pt) in {assets} and your voices (<name>.pth + <name>.index) in {root}."
)

#: Labels that stand for server folders in anything shown to a client.
MODELS_LABEL, DEMO_DIR_LABEL, ENCODER_LABEL, RMVPE_LABEL = "<models>", "<demo>", "<content-encoder>", "<rmvpe>"


class VoiceCatalog:
    """A models folder with the demo voice/encoder added where the folder has none.

    models_dir, content_encoder, rmvpe, encoders, voice_encoders: as `ModelsFolder` (None =
    environment, then ./models).
    demo_fallback: provide the untrained demo where the folder lacks voices or an encoder.
    demo_dir: where the demo files are written (default $RVC_CACHE_DIR/demo).
    Raises AssetNotFoundError when an explicitly named encoder or RMVPE file is missing.
    """

    def __init__(
        self,
        models_dir: str | Path | None = None,
        *,
        content_encoder: str | Path | None = None,
        rmvpe: str | Path | None = None,
        demo_fallback: bool = True,
        demo_dir: str | Path | None = None,
        encoders: Mapping[str, str | Path] | None = None,
        voice_encoders: Mapping[str, str] | None = None,
    ) -> None:
        self.folder = ModelsFolder(models_dir, content_encoder=content_encoder, rmvpe=rmvpe,
                                   encoders=encoders, voice_encoders=voice_encoders)
        encoder = self.folder.content_encoder_path()
        has_voices = bool(self.folder.list_voices())
        self.demo: DemoAssets | None = None
        if demo_fallback and (encoder is None or not has_voices):
            self.demo = write_demo_assets(demo_dir)  # None: $RVC_CACHE_DIR/demo
        self.encoder_is_demo = encoder is None and self.demo is not None
        self.encoder_path: Path | None = self.demo.encoder_path if self.demo is not None and encoder is None else encoder
        self.voices_are_demo = self.demo is not None and not has_voices
        self.rmvpe_path: Path | None = self.folder.rmvpe_path()

    @property
    def root(self) -> Path:
        """The models folder (it may not exist)."""
        return self.folder.root

    def list_voices(self) -> list[VoiceEntry]:
        """The folder's usable voices by name, plus the demo voice when it stands in for them."""
        entries = self.folder.list_voices()
        if self.voices_are_demo:
            entries.append(self._demo_entry())
        return entries

    def find_voice(self, name: str) -> VoiceEntry:
        """The voice called `name` (a plain name, never a path). Raises VoiceNotFoundError."""
        if self.voices_are_demo and name == DEMO_VOICE_NAME:
            return self._demo_entry()
        return self.folder.find_voice(name)

    def find_encoder(self, name: str) -> EncoderRef:
        """The content encoder called `name`; contentvec is the demo encoder where the folder has none."""
        if name == DEFAULT_ENCODER and self.encoder_is_demo:
            return EncoderRef(name, self.encoder_path, demo=True)
        return self.folder.find_encoder(name)

    def encoder_for_voice(self, voice_name: str, metadata: Mapping[str, Any] | None) -> EncoderRef:
        """The encoder the voice uses (the demo voice: contentvec), found but not loaded; see
        `ModelsFolder.encoder_for_voice`."""
        if self.voices_are_demo and voice_name == DEMO_VOICE_NAME:
            return self.find_encoder(DEFAULT_ENCODER)
        if self.encoder_is_demo and self.folder.encoder_name_for(voice_name, metadata) == DEFAULT_ENCODER:
            return self.find_encoder(DEFAULT_ENCODER)
        return self.folder.encoder_for_voice(voice_name, metadata)

    def notices(self, *, labelled: bool = True) -> list[str]:
        """What the user should be told once: a missing models folder, the demo in use.

        labelled: name folders by label ("<models>", for logs a client may read) or by path (the CLI)."""
        show = self.label if labelled else str
        said = []
        if not self.root.is_dir():
            said.append(
                f"models folder {show(self.root)} does not exist: create it and put voices there "
                f"(<name>.pth, optionally <name>.index), or set ${MODELS_DIR_ENV}"
            )
        hint = DEMO_NOTICE.format(what="{what}", assets=show(self.folder.assets_dir), root=show(self.root))
        if self.encoder_is_demo:
            said.append(hint.format(what="CONTENT ENCODER"))
        if self.voices_are_demo:
            said.append(hint.format(what=f"VOICE {DEMO_VOICE_NAME!r}"))
        return said

    def path_labels(self) -> dict[str, str]:
        """Server folder -> label, most specific first, for hiding paths in answers."""
        labels: dict[str, str] = {}
        places = [(self.root, MODELS_LABEL)]
        if self.demo is not None:
            places.append((self.demo.voice_path.parent, DEMO_DIR_LABEL))
        if self.encoder_path is not None and not self.encoder_is_demo:
            places.append((self.encoder_path, ENCODER_LABEL))
        if self.rmvpe_path is not None:
            places.append((self.rmvpe_path, RMVPE_LABEL))
        places += [(path, f"<{name}-encoder>") for name, path in self.folder.encoder_paths.items()]
        for path, label in places:
            if label != MODELS_LABEL and _is_inside(path, self.root):
                continue  # "<models>/assets/hubert_base" says more than "<content-encoder>"
            for spelling in {str(path), str(path.resolve())}:
                labels.setdefault(spelling.rstrip("/"), label)
        return dict(sorted(labels.items(), key=lambda item: -len(item[0])))

    def label(self, path: str | Path | None) -> str | None:
        """`path` as a client may see it: "<models>/alice.pth", "<demo>/hubert-untrained"."""
        if path is None:
            return None
        text = str(path)
        for place, label in self.path_labels().items():
            if text == place or text.startswith(place + "/"):
                return label + text[len(place):]
        return f"<{Path(text).name}>"

    def assets_hint(self) -> str:
        """Where the user's encoder and RMVPE files go, as a label."""
        return f"{self.label(self.root)}/{ASSETS_DIRNAME}"

    def _demo_entry(self) -> VoiceEntry:
        assert self.demo is not None
        path = self.demo.voice_path
        return VoiceEntry(DEMO_VOICE_NAME, path, None, path.stat().st_size, demo=True)


def _is_inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())

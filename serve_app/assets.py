"""Where the service's models come from: the models folder, plus the untrained demo fallback.

Each replica resolves this itself (writing the deterministic demo files if needed), so it
also works when replicas run on other nodes than the one that started the app.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rvc_pipeline import ModelsFolder, VoiceNotFoundError
from rvc_pipeline.demo import DEMO_LABEL, DEMO_VOICE_NAME, DemoAssets, write_demo_assets

from .config import AppArgs

logger = logging.getLogger("ray.serve")

DEMO_WARNING = (
    "UNTRAINED DEMO {what} in use: its weights are random and its output is noise. "
    "Put your hubert_base.pt (and rmvpe.pt) in {assets} and your voices (<name>.pth + <name>.index) in {root}."
)


@dataclass(frozen=True)
class VoiceRef:
    """A voice the service can load: its name, files, size and whether it is the demo."""

    name: str
    pth_path: Path
    index_path: Optional[Path]
    size_bytes: int
    demo: bool = False


class Catalog:
    """The models folder, with the demo voice/encoder added where the folder has none."""

    def __init__(self, args: AppArgs) -> None:
        self.folder = ModelsFolder(args.models_dir, content_encoder=args.content_encoder, rmvpe=args.rmvpe)
        self.demo: DemoAssets | None = None
        encoder = self.folder.content_encoder_path()
        if args.demo_fallback and (encoder is None or not self.folder.list_voices()):
            self.demo = write_demo_assets(args.demo_dir)
        self.encoder_is_demo = encoder is None and self.demo is not None
        self.encoder_path = self.demo.encoder_path if self.encoder_is_demo else encoder
        self.voices_are_demo = self.demo is not None and not self.folder.list_voices()

    @property
    def rmvpe_path(self) -> Path | None:
        return self.folder.rmvpe_path()

    def hint(self) -> str:
        """Where the user's real files go."""
        return DEMO_WARNING.format(what="{what}", assets=self.folder.assets_dir, root=self.folder.root)

    def log_demo_warnings(self, who: str) -> None:
        if self.encoder_is_demo:
            logger.warning("%s: %s", who, self.hint().format(what="CONTENT ENCODER"))
        if self.voices_are_demo:
            logger.warning("%s: %s", who, self.hint().format(what=f"VOICE {DEMO_VOICE_NAME!r}"))

    def list_voices(self) -> list[VoiceRef]:
        refs = [VoiceRef(e.name, Path(e.pth_path), e.index_path, e.size_bytes) for e in self.folder.list_voices()]
        if self.voices_are_demo and self.demo is not None:
            refs.append(self._demo_ref())
        return refs

    def find_voice(self, name: str) -> VoiceRef:
        """The voice called `name` (a name, never a path). Raises VoiceNotFoundError."""
        if self.voices_are_demo and self.demo is not None and name == DEMO_VOICE_NAME:
            return self._demo_ref()
        entry = self.folder.find_voice(name)
        return VoiceRef(entry.name, Path(entry.pth_path), entry.index_path, entry.size_bytes)

    def _demo_ref(self) -> VoiceRef:
        assert self.demo is not None
        path = self.demo.voice_path
        return VoiceRef(DEMO_VOICE_NAME, path, None, path.stat().st_size, demo=True)


__all__ = ["Catalog", "VoiceRef", "DEMO_LABEL", "DEMO_VOICE_NAME", "VoiceNotFoundError"]

"""A loaded voice: its synthesizer, its optional retrieval index and what its file says.

    voice = load_voice("models/alice.pth", "models/alice.index", device="cpu")
    voice.sample_rate, voice.hop_length, voice.f0   # 40000, 400, True
    voice.close()                                   # drop the model and index

`load_voice` reads the checkpoint safely (`checkpoint.read_checkpoint`), builds the
synthesizer once with weight norm folded (`synth.build_synthesizer`) and loads the FAISS
index once (`retrieval.RetrievalIndex.load`). A Voice is read-only afterwards, so one
instance can serve concurrent conversions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .checkpoint import VoiceSpec, describe_checkpoint, read_checkpoint
from .device import resolve_device
from .errors import CheckpointError, OptionError, VoiceNotFoundError
from .retrieval import RetrievalIndex
from .synth import Synthesizer, SynthesizerConfig, build_synthesizer

__all__ = ["Voice", "VoiceSpec", "describe_checkpoint", "load_voice", "read_checkpoint"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Voice:
    """A ready-to-use voice. `synthesizer` and `index` are None once `close()` has run."""

    name: str  # display name (the file stem unless given)
    synthesizer: Synthesizer | None  # eval mode, weight norm folded, on `device` in `dtype`
    index: RetrievalIndex | None  # FAISS index of the training features, or None (no retrieval)
    spec: VoiceSpec  # architecture and metadata from the checkpoint (weights dropped after building)
    device: torch.device  # where the synthesizer runs
    dtype: torch.dtype  # synthesizer precision
    path: Path | None = None  # the .pth it came from
    index_path: Path | None = None  # the .index it came from

    @property
    def version(self) -> str:
        """"v1" (256-dim content features) or "v2" (768-dim)."""
        return self.spec.version

    @property
    def f0(self) -> bool:
        """True for pitch-guided (NSF) voices, which need an F0 track."""
        return self.spec.f0

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz (32000, 40000, 48000, ...)."""
        return self.spec.sample_rate

    @property
    def hop_length(self) -> int:
        """Output samples per 10 ms synthesizer frame (sample_rate / 100)."""
        return self.spec.hop_length

    @property
    def n_speakers(self) -> int:
        """Number of speaker embeddings; valid speaker ids are 0..n_speakers-1."""
        return self.spec.n_speakers

    @property
    def content_dim(self) -> int:
        """Width of the content features the voice takes: 256 (v1) or 768 (v2)."""
        return self.spec.content_dim

    @property
    def config(self) -> SynthesizerConfig:
        """The synthesizer hyperparameters read from the checkpoint."""
        return self.spec.config

    @property
    def metadata(self) -> dict[str, Any]:
        """JSON-friendly extras from the file (info, epoch, author, vocoder, ...)."""
        return self.spec.metadata

    @property
    def has_index(self) -> bool:
        """Whether conversions can use retrieval (an index is loaded)."""
        return self.index is not None

    @property
    def closed(self) -> bool:
        """True after `close()`."""
        return self.synthesizer is None

    def weight_bytes(self) -> int:
        """Bytes of the synthesizer's weights and buffers on `device` (0 once closed)."""
        if self.synthesizer is None:
            return 0
        tensors = [*self.synthesizer.parameters(), *self.synthesizer.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def index_bytes(self) -> int:
        """Bytes of the retrieval vectors held in host memory (0 without an index)."""
        return self.index.vectors_nbytes if self.index is not None else 0

    def check_speaker(self, speaker_id: int) -> None:
        """Raise OptionError unless 0 <= speaker_id < n_speakers (VoiceNotFoundError if closed)."""
        if self.closed:
            raise VoiceNotFoundError(f"voice {self.name!r} has been closed; load it again to use it")
        if isinstance(speaker_id, bool) or not isinstance(speaker_id, int):
            raise OptionError(f"speaker id must be an integer, got {speaker_id!r}")
        if not 0 <= speaker_id < self.n_speakers:
            valid = "0" if self.n_speakers == 1 else f"0..{self.n_speakers - 1}"
            raise OptionError(
                f"speaker id {speaker_id} is out of range: voice {self.name!r} has {self.n_speakers} "
                f"speaker{'s' if self.n_speakers != 1 else ''} (valid ids: {valid})"
            )

    def close(self) -> None:
        """Drop the synthesizer and index so their memory can be freed. Safe to call twice."""
        self.synthesizer = None
        self.index = None

    def __enter__(self) -> Voice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_voice(
    path: str | Path,
    index_path: str | Path | None = None,
    *,
    name: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Voice:
    """Load a voice checkpoint (any format `read_checkpoint` knows) and its optional index.

    device: None/"auto" picks CUDA, then MPS, then CPU (`device.resolve_device`).
    dtype: synthesizer precision (the file's fp16 weights are converted to it).
    Raises VoiceNotFoundError, CheckpointError, UnsupportedCheckpointError,
    RetrievalIndexError (index unreadable or of the wrong width) or OptionError.
    """
    path = Path(path)
    device = resolve_device(device)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise OptionError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if dtype == torch.float16 and device.type == "cpu":
        raise OptionError("fp16 is not supported on the CPU; use torch.float32 (exact) or torch.bfloat16")
    name = name or path.stem
    spec = read_checkpoint(path)
    index = None
    if index_path is not None:
        index = RetrievalIndex.load(index_path, spec.content_dim, voice_name=name)
    else:
        logger.info("voice %s has no retrieval index; converting without retrieval", name)
    try:
        synthesizer = build_synthesizer(spec.config, spec.content_dim, spec.f0, spec.weights, device=device,
                                        dtype=dtype, vocoder=spec.vocoder)
    except CheckpointError as e:
        raise type(e)(f"{path}: {e}") from e
    logger.debug("loaded voice %s from %s (%s, %s, %d Hz, f0=%s)", name, path, spec.source_format,
                 spec.version, spec.sample_rate, spec.f0)
    return Voice(
        name=name,
        synthesizer=synthesizer,
        index=index,
        spec=replace(spec, weights={}),  # the synthesizer holds its own copy; release the file's tensors
        device=device,
        dtype=dtype,
        path=path,
        index_path=Path(index_path) if index_path is not None else None,
    )

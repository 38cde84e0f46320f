"""The exception family of `rvc_pipeline`.

Every failure a user can cause is one of these types. The CLI maps them to exit
codes and the service to HTTP statuses, each in one place.
"""

from __future__ import annotations


class RVCError(Exception):
    """Base class of every error this library raises on purpose."""


class AudioError(RVCError):
    """Audio that cannot be used: empty, undecodable, non-finite, unsupported."""


class AudioTooLongError(AudioError):
    """Audio longer than the configured duration limit."""


class CheckpointError(RVCError):
    """A voice, content-encoder or pitch-model file that cannot be loaded safely."""


class UnsupportedCheckpointError(CheckpointError):
    """A well-formed checkpoint of a kind this library does not implement."""


class VoiceNotFoundError(RVCError):
    """No voice of that name (or path) exists."""


class RetrievalIndexError(RVCError):
    """A FAISS `.index` that is unreadable or does not fit its voice."""


class OptionError(RVCError, ValueError):
    """A conversion option outside its documented range."""


class AssetNotFoundError(RVCError):
    """A model asset (content encoder, RMVPE weights) is missing."""


class OptionParseError(OptionError):
    """An option given as text that is not of its type ("abc" for a number), or an unknown option."""


class VoiceChangedError(RVCError):
    """A voice's files were replaced while a request was using them; retrying uses the new files."""

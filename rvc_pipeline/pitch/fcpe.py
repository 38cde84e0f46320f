"""FCPE F0 extraction with torchfcpe's bundled model (`assets/fcpe_c_v001.pt`).

rvc-formats.md §5.3: `infer(x, sr=16000, decoder_mode="local_argmax", threshold=0.006)`.
The checkpoint ({config_dict, model}) is read here with `weights_only=True` and the
model built from its config the way `torchfcpe.spawn_bundled_infer_model` does (dropout
off), without torchfcpe's progress prints on stdout.

Frame alignment: the bundled model's mel uses hop 160 at 16 kHz, i.e. the same 100 fps
grid as RVC, and returns n_samples // 160 + 1 frames starting at sample 0 (its
uncentred STFT pads (1024 - 160) // 2 samples on the left, so each frame is centred
80 samples, 5 ms, later than RVC's; half a frame, not corrected). No resampling of the
track is needed: the first p_len frames are kept (zero-padded if ever short), like RVC's
other extractors. (Applio instead nearest-resizes the n // 160 + 1 frames to p_len,
which shifts the tail by up to one frame.)

torchfcpe prints a warning for samples outside [-1, 1]; the input is clipped to that range
first (the pipeline normalises to 0.95 peak, so this only touches pathological input).
Unvoiced frames come back as 0 Hz (the decoder masks them with -inf cents).
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

from ..errors import AssetNotFoundError, CheckpointError
from .base import HOP_LENGTH, SAMPLE_RATE, F0Extractor, fit_right

#: Decoder and voicing threshold used by RVC-2026 and Applio.
DECODER_MODE = "local_argmax"
THRESHOLD = 0.006
BUNDLED_MODEL = "fcpe_c_v001.pt"


class FCPEPitch(F0Extractor):
    """torchfcpe's bundled FCPE model on one device."""

    name = "fcpe"

    def __init__(self, device: torch.device) -> None:
        import torchfcpe
        from torchfcpe.models_infer import InferCFNaiveMelPE
        from torchfcpe.tools import DotDict

        path = os.path.join(os.path.dirname(torchfcpe.__file__), "assets", BUNDLED_MODEL)
        if not os.path.isfile(path):
            raise AssetNotFoundError(f"torchfcpe's bundled model is missing ({path}); reinstall torchfcpe")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        config = copy.deepcopy(ckpt["config_dict"])
        # As spawn_bundled_infer_model: no dropout; explicit defaults silence its warnings.
        config["model"].update(conv_dropout=0.0, atten_dropout=0.0)
        config["model"].setdefault("use_harmonic_emb", False)
        config["model"].setdefault("conv_only", False)
        model = InferCFNaiveMelPE(DotDict(config), ckpt["model"])
        if model.get_hop_size() != HOP_LENGTH or model.get_model_sr() != SAMPLE_RATE:
            raise CheckpointError(f"unexpected FCPE mel configuration in {path}")
        self._model = model.to(device).eval()
        self._device = device
        # Warm-up: torchfcpe fills its window / mel-basis caches on the first call; doing
        # it here, under the estimator's load lock, keeps later concurrent calls read-only.
        self._infer(np.zeros(4 * 1024, dtype=np.float32))

    def _infer(self, audio16k: np.ndarray) -> np.ndarray:
        x = np.clip(np.ascontiguousarray(audio16k, dtype=np.float32), -1.0, 1.0)
        wav = torch.from_numpy(x)[None, :, None].to(self._device)  # (B, n_samples, 1)
        with torch.inference_mode():
            f0 = self._model.infer(wav, sr=SAMPLE_RATE, decoder_mode=DECODER_MODE, threshold=THRESHOLD)
        return torch.nan_to_num(f0[0, :, 0].float(), nan=0.0).cpu().numpy()  # n // 160 + 1 frames

    def extract(self, audio16k: np.ndarray, p_len: int, filter_radius: int) -> np.ndarray:
        return fit_right(self._infer(audio16k), p_len)

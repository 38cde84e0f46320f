"""RMVPE pitch model: mel front end, U-Net + BiGRU network, salience decoding.

Own implementation of rvc-formats.md §4 (RVC `infer/lib/rmvpe.py`), state-dict
compatible with the public `rmvpe.pt` (a bare state dict: 741 entries, 90,472,917
elements), which is loaded strictly with `torch.load(..., weights_only=True)`.

- Mel (§4.1): 16 kHz, n_fft = win = 1024 (periodic Hann), hop 160, centred reflect-padded
  STFT magnitude, librosa's 128-band HTK mel filterbank 30-8000 Hz (slaney norm),
  log(clamp(., 1e-5)); N // 160 + 1 frames.
- Network (§4.2): `E2E(n_blocks=4, n_gru=1, kernel_size=(2, 2))`; frames are zero-padded
  on the right to a multiple of 32 (RVC; Applio reflect-pads) and cropped back.
- Decoding (§4.4): local weighted average of cents over the 9 bins around the argmax;
  frames whose peak salience is <= 0.03 are unvoiced (0 Hz).

The whole signal goes through the network at once, as RVC does (no chunking).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..constants import CENTS_OFFSET, CENTS_PER_BIN
from ..constants import PITCH_CLASSES as N_CLASSES
from ..errors import AssetNotFoundError, CheckpointError
from .base import HOP_LENGTH, SAMPLE_RATE, F0Extractor, fit_right

# Mel front end (§4.1).
N_FFT = 1024
N_MELS = 128
MEL_FMIN = 30.0
MEL_FMAX = 8000.0
LOG_CLAMP = 1e-5
# Network (§4.2).
N_BLOCKS = 4  # ConvBlockRes per encoder/intermediate/decoder layer
EN_DE_LAYERS = 5
INTER_LAYERS = 4
EN_OUT_CHANNELS = 16
FRAME_MULTIPLE = 32  # 2**EN_DE_LAYERS: the U-Net halves the time axis five times
GRU_HIDDEN = 256
# Decoding (§4.4); the 360-bin cents grid (N_CLASSES, CENTS_*) is constants.py's.
LOCAL_RADIUS = 4  # 9-bin local average
THRESHOLD = 0.03  # RVC `thred=0.03` in every pipeline
#: Expected checkpoint size, for messages.
STATE_DICT_ENTRIES = 741

#: Where the user should put the weights (worded for error messages).
RMVPE_HINT = (
    "put the RMVPE weights at <models>/assets/rmvpe.pt (the models folder, RVC_MODELS_DIR, "
    "default ./models) or point RVC_RMVPE at the file"
)


class MelFrontEnd(nn.Module):
    """Log-mel spectrogram for RMVPE: (B, n_samples) at 16 kHz -> (B, 128, n_samples // 160 + 1)."""

    def __init__(self) -> None:
        super().__init__()
        import librosa

        basis = librosa.filters.mel(
            sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=MEL_FMIN, fmax=MEL_FMAX, htk=True
        )
        self.register_buffer("mel_basis", torch.from_numpy(basis).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            audio.float(), N_FFT, hop_length=HOP_LENGTH, win_length=N_FFT, window=self.window,
            center=True, pad_mode="reflect", return_complex=True,
        )
        mel = torch.matmul(self.mel_basis, spec.abs())
        return torch.log(torch.clamp(mel, min=LOG_CLAMP))


class ConvBlockRes(nn.Module):
    """Two 3x3 conv + BN + ReLU layers with a residual (1x1 conv when channels change)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(),
        )
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + (x if self.shortcut is None else self.shortcut(x))


class ResStack(nn.Module):
    """`N_BLOCKS` ConvBlockRes in a row (encoder/intermediate layer); keys `conv.{i}`."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.ModuleList(
            [ConvBlockRes(in_ch if i == 0 else out_ch, out_ch) for i in range(N_BLOCKS)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.conv:
            x = block(x)
        return x


class Encoder(nn.Module):
    """Input BN, then 5 ResStacks each followed by 2x2 average pooling (skips kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        chans = [1] + [EN_OUT_CHANNELS * 2**i for i in range(EN_DE_LAYERS)]  # 1,16,...,256
        self.layers = nn.ModuleList([ResStack(chans[i], chans[i + 1]) for i in range(EN_DE_LAYERS)])
        self.pool = nn.AvgPool2d(2)
        self.out_channels = chans[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.bn(x)
        skips = []
        for layer in self.layers:
            x = layer(x)
            skips.append(x)
            x = self.pool(x)
        return x, skips


class Intermediate(nn.Module):
    """4 ResStacks without pooling: 256 -> 512, then 512 -> 512."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        out = in_ch * 2
        self.layers = nn.ModuleList([ResStack(in_ch if i == 0 else out, out) for i in range(INTER_LAYERS)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class DecoderLayer(nn.Module):
    """2x transposed-conv upsampling, concat with the skip, then a ResStack (c -> c/2)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        out = in_ch // 2
        self.conv1 = nn.Sequential(
            nn.ConvTranspose2d(in_ch, out, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(),
        )
        self.conv2 = nn.ModuleList([ConvBlockRes(in_ch if i == 0 else out, out) for i in range(N_BLOCKS)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.conv1(x), skip), dim=1)
        for block in self.conv2:
            x = block(x)
        return x


class Decoder(nn.Module):
    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(in_ch // 2**i) for i in range(EN_DE_LAYERS)])

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for layer, skip in zip(self.layers, reversed(skips)):
            x = layer(x, skip)
        return x


class DeepUnet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.intermediate = Intermediate(self.encoder.out_channels)
        self.decoder = Decoder(self.encoder.out_channels * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.encoder(x)
        return self.decoder(self.intermediate(x), skips)


class BiGRU(nn.Module):
    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(in_features, hidden, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


class RMVPENet(nn.Module):
    """RMVPE's E2E network: log-mel (B, 128, T) -> pitch salience (B, T, 360) in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.unet = DeepUnet()
        self.cnn = nn.Conv2d(EN_OUT_CHANNELS, 3, 3, padding=1)
        self.fc = nn.Sequential(
            BiGRU(3 * N_MELS, GRU_HIDDEN),
            nn.Linear(2 * GRU_HIDDEN, N_CLASSES),
            nn.Dropout(0.25),
            nn.Sigmoid(),
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        n_frames = mel.shape[-1]
        pad = -n_frames % FRAME_MULTIPLE
        mel = nn.functional.pad(mel, (0, pad))  # zeros, as RVC
        x = mel.transpose(-1, -2).unsqueeze(1)  # [B, 1, T, 128]
        x = self.cnn(self.unet(x)).transpose(1, 2).flatten(-2)  # [B, T, 384]
        return self.fc(x)[:, :n_frames]


def decode_salience(salience: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Salience (T, 360) -> F0 (T,) Hz: 9-bin local average of cents, 0 where peak <= threshold."""
    salience = np.asarray(salience, dtype=np.float32)
    n_frames = salience.shape[0]
    if n_frames == 0:
        return np.zeros(0, dtype=np.float32)
    cents_map = np.pad(CENTS_PER_BIN * np.arange(N_CLASSES) + CENTS_OFFSET, LOCAL_RADIUS)
    padded = np.pad(salience, ((0, 0), (LOCAL_RADIUS, LOCAL_RADIUS)))
    center = np.argmax(salience, axis=1)  # in padded coordinates the window starts here
    idx = center[:, None] + np.arange(2 * LOCAL_RADIUS + 1)[None, :]
    weights = np.take_along_axis(padded, idx, axis=1)
    total = weights.sum(axis=1)
    peak = salience.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cents = (weights * cents_map[idx]).sum(axis=1) / total
    cents = np.where(peak > threshold, cents, 0.0)
    f0 = 10.0 * 2.0 ** (cents / 1200.0)
    f0[(cents == 0) | ~np.isfinite(f0)] = 0.0  # RVC: f0 == 10 Hz (0 cents) means unvoiced
    return f0.astype(np.float32)


def read_rmvpe_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read `rmvpe.pt` safely (`weights_only=True`); CheckpointError if it is not a state dict."""
    path = Path(path)
    if not path.is_file():
        raise AssetNotFoundError(f"RMVPE weights not found at {path}; {RMVPE_HINT}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, refused globals, truncated files
        raise CheckpointError(f"cannot read RMVPE weights {path}: {e}") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not an RMVPE state dict (expected {STATE_DICT_ENTRIES} tensors)")
    return dict(state)


def load_rmvpe_net(path: str | Path, device: torch.device | str = "cpu") -> RMVPENet:
    """Build `RMVPENet` from `rmvpe.pt` (strict load), in eval mode on `device`."""
    state = read_rmvpe_state_dict(path)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    with torch.device("meta"):  # no random init of 90 M parameters that are overwritten next
        net = RMVPENet()
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path} does not fit the RMVPE network ({len(state)} entries, expected "
            f"{STATE_DICT_ENTRIES}): {str(e).splitlines()[0]}"
        ) from e
    return net.to(device).eval()


class RMVPEPitch(F0Extractor):
    """RMVPE F0 extractor holding the mel front end and the loaded network on one device."""

    name = "rmvpe"

    def __init__(self, path: str | Path, device: torch.device) -> None:
        self._device = device
        self._mel = MelFrontEnd().to(device)
        self._net = load_rmvpe_net(path, device)

    def salience(self, audio16k: np.ndarray) -> np.ndarray:
        """(n_samples,) float32 at 16 kHz -> salience (n_samples // 160 + 1, 360)."""
        audio = torch.from_numpy(np.ascontiguousarray(audio16k, dtype=np.float32))[None]
        with torch.inference_mode():
            mel = self._mel(audio.to(self._device))
            return self._net(mel)[0].float().cpu().numpy()

    def extract(self, audio16k: np.ndarray, p_len: int, filter_radius: int) -> np.ndarray:
        return fit_right(decode_salience(self.salience(audio16k), THRESHOLD), p_len)

"""The RVC conversion algorithm as five stages, and `convert()` that runs them in-process.

Follows the reference pipeline (rvc-formats.md §5; RVC `infer/vc/pipeline.py`) step by
step and constant by constant:

    shape_input(audio, options)    the input's formant shift (off by default)
    prepare(audio)                 16 kHz input -> normalised, high-passed, padded signal
                                   and the silence-aware chunk boundaries
    estimate_pitch(prepared, ...)  F0 over the whole padded signal, shifted and quantised
                                   (with the automatic key, autotune and F0 curve controls)
    extract_features(encoder, ...) content features of one chunk (50 frames/s)
    synthesize_chunk(voice, ...)   retrieval, protect, synthesis, trimming of one chunk
    finish(chunks, prepared, ...)  join, loudness mix, resample, denoise, peak limit

The serving layer runs the same functions in different processes; given the same
input, options and seed, both paths produce the same samples. `synthesize_chunks` runs
several chunks (of any requests) as one padded batch, each equal to `synthesize_chunk`
to float rounding: the GPU service batches with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from scipy import signal

from .constants import FRAMES_PER_SECOND, SAMPLE_RATE, WINDOW
from .content import ContentEncoder
from .encoders import ContentEncoders
from .errors import AudioError, OptionError
from .effects import reduce_noise, shift_formants
from .options import ChunkingConfig, ConversionOptions
from .pitch import PitchEstimator, coarse_f0, shift_f0
from .pitch.controls import F0Curve, auto_key_target_hz, autotune, choose_auto_key
from .synth.synthesizer import SynthesisItem
from .voice import Voice

# SAMPLE_RATE (16 kHz input), WINDOW (160 samples, `self.window` in the reference) and
# FRAMES_PER_SECOND (100) come from constants.py; this module's names stay importable.
#: Peak above which the input is scaled down to this level (RVC `vc_single`).
INPUT_PEAK_LIMIT = 0.95
#: Output peak ceiling of the int16 conversion (RVC: `max|y| / 0.99`).
OUTPUT_PEAK_LIMIT = 0.99
#: 5th-order Butterworth high-pass at 48 Hz, applied with zero-phase filtfilt.
HIGHPASS_B, HIGHPASS_A = signal.butter(N=5, Wn=48, btype="high", fs=SAMPLE_RATE)
#: HuBERT's receptive field and stride in samples: T = (L - 400) // 320 + 1.
HUBERT_RECEPTIVE_FIELD, HUBERT_STRIDE = 400, 320
#: The shortest input that yields output: one content frame after padding and trimming.
MIN_INPUT_SAMPLES = HUBERT_RECEPTIVE_FIELD


@dataclass(frozen=True)
class Chunk:
    """One slice of the padded signal that is synthesised on its own.

    `start`/`stop` index the padded 16 kHz signal (`stop` None = to the end);
    `frame_start`/`frame_stop` index the pitch track (10 ms frames).
    """

    index: int
    start: int
    stop: int | None
    frame_start: int
    frame_stop: int | None


@dataclass(frozen=True)
class Prepared:
    """The output of `prepare`: what every later stage reads.

    filtered: (N,) float64 at 16 kHz, normalised and high-passed (also the RMS reference).
    padded:   (N + 2 * t_pad,) float64, `filtered` reflect-padded by t_pad on both sides.
    """

    filtered: np.ndarray
    padded: np.ndarray
    chunks: tuple[Chunk, ...]
    chunking: ChunkingConfig

    @property
    def n_frames(self) -> int:
        """Pitch frames of the padded signal (`p_len` in the reference)."""
        return self.padded.shape[0] // WINDOW

    @property
    def input_start_frame(self) -> int:
        """The pitch frame of input time 0: the padding, x_pad seconds at 100 frames/s."""
        return self.chunking.x_pad * FRAMES_PER_SECOND

    def chunk_audio(self, chunk: Chunk) -> np.ndarray:
        """(L,) float32 at 16 kHz: the content-encoder input of one chunk."""
        return self.padded[chunk.start : chunk.stop].astype(np.float32)


@dataclass(frozen=True)
class PitchTrack:
    """Pitch of the padded signal, 100 frames/s: `coarse` int64 in 1..255, `f0` Hz (0 = unvoiced).

    `auto_key`: the semitones `options.auto_key` chose (added to f0_up_key); 0 when off.
    """

    coarse: np.ndarray
    f0: np.ndarray
    auto_key: int = 0

    def slice(self, chunk: Chunk) -> "PitchTrack":
        """The frames that belong to one chunk."""
        window = slice(chunk.frame_start, chunk.frame_stop)
        return PitchTrack(self.coarse[window], self.f0[window], self.auto_key)

    def input_f0(self, input_start_frame: int) -> np.ndarray:
        """F0 (Hz) of the input's own frames: the track without the padding on each side."""
        stop = self.f0.shape[0] - input_start_frame
        return self.f0[input_start_frame:max(stop, input_start_frame)]


@dataclass
class ConversionResult:
    """Converted audio: (M,) float32 in [-1, 1] at `sample_rate` Hz, with per-stage seconds
    and the key `options.auto_key` chose (0 when off or for voices without pitch)."""

    audio: np.ndarray
    sample_rate: int
    timings: dict[str, float] = field(default_factory=dict)
    auto_key: int = 0


def _silence_aware_cuts(filtered: np.ndarray, chunking: ChunkingConfig) -> list[int]:
    """Cut points (in samples of the unpadded signal) at the quietest place near each x_center.

    Reference: the RVC WebUI rule (rvc-formats.md §5.2 step 4, its 2024 release and 2026
    main): S[n] = sum of |x| over the 160-sample window around n (the quietest 10 ms), and
    the cut is the first argmin of S within [t - x_query, t + x_query) of each centre t.
    (The signed sum is Applio's and the first 2023 code's; after the 48 Hz high-pass its
    minimum lands almost anywhere, not in a pause.)
    """
    t_query, t_center = chunking.t_query, chunking.t_center
    edge = np.pad(filtered, (WINDOW // 2, WINDOW // 2), mode="reflect")
    if edge.shape[0] <= chunking.t_max:
        return []
    cuts = []
    for t in range(t_center, filtered.shape[0], t_center):
        # S[n] = sum_i |edge[n + i]| for i < 160, accumulated in the reference's order so that
        # ties (digital silence) resolve to the same first minimum.
        lo, hi = t - t_query, min(t + t_query, filtered.shape[0])
        window_sum = np.zeros(hi - lo)
        for i in range(WINDOW):
            window_sum += np.abs(edge[lo + i : hi + i])
        cuts.append(lo + int(np.argmin(window_sum)))
    return cuts


def prepare(audio16k: np.ndarray, chunking: ChunkingConfig = ChunkingConfig.CPU_FP32) -> Prepared:
    """Normalise, high-pass, pad and split a mono 16 kHz signal.

    audio16k: (N,) float at 16 kHz, N >= MIN_INPUT_SAMPLES. Raises AudioError otherwise.
    """
    audio = np.asarray(audio16k, dtype=np.float64)
    if audio.ndim != 1:
        raise AudioError(f"expected mono audio of shape (N,), got shape {audio.shape}")
    if audio.shape[0] < MIN_INPUT_SAMPLES:
        raise AudioError(
            f"audio is too short: {audio.shape[0]} samples at 16 kHz; "
            f"at least {MIN_INPUT_SAMPLES} samples ({MIN_INPUT_SAMPLES / SAMPLE_RATE * 1000:.0f} ms) are needed"
        )
    if not np.isfinite(audio).all():
        raise AudioError("audio contains NaN or infinite samples")
    peak = np.abs(audio).max() / INPUT_PEAK_LIMIT
    if peak > 1:
        audio = audio / peak
    filtered = signal.filtfilt(HIGHPASS_B, HIGHPASS_A, audio)
    cuts = _silence_aware_cuts(filtered, chunking)
    padded = np.pad(filtered, (chunking.t_pad, chunking.t_pad), mode="reflect")

    chunks: list[Chunk] = []
    start = 0
    for cut in cuts:
        t = cut // WINDOW * WINDOW
        chunks.append(
            Chunk(len(chunks), start, t + 2 * chunking.t_pad + WINDOW, start // WINDOW, (t + 2 * chunking.t_pad) // WINDOW)
        )
        start = t
    chunks.append(Chunk(len(chunks), start, None, start // WINDOW, None))
    return Prepared(filtered=filtered, padded=padded, chunks=tuple(chunks), chunking=chunking)


def shape_input(audio16k: np.ndarray, options: ConversionOptions) -> np.ndarray:
    """The input as the conversion hears it: formant-shifted when `formant_shift` is not 1
    (Applio shifts the 16 kHz input before anything else), otherwise unchanged."""
    if options.formant_shift == 1:
        return audio16k
    return shift_formants(audio16k, options.formant_shift, options.formant_quefrency, SAMPLE_RATE)


def estimate_pitch(
    padded: np.ndarray, estimator: PitchEstimator, options: ConversionOptions, *, input_start_frame: int = 0
) -> PitchTrack:
    """F0 of the whole padded signal (Prepared.padded, 16 kHz), shifted by `f0_up_key`.

    Returns `padded.shape[0] // 160` frames. Unvoiced frames stay 0 (classic RVC).
    `input_start_frame` is the frame of input time 0 (the padding: x_pad * 100), where
    the automatic key measures and the F0 curve's times start. Order: estimate; choose
    the automatic key on the input's frames; shift by f0_up_key + that key; autotune;
    replace with the F0 curve. With every control off this is the reference's F0.
    """
    n_frames = padded.shape[0] // WINDOW
    f0 = np.asarray(estimator.estimate(padded, n_frames, options.f0_method, filter_radius=options.filter_radius))
    f0 = f0[:n_frames]
    auto_key = 0
    target_hz = auto_key_target_hz(options.auto_key)
    if target_hz is not None:
        auto_key = choose_auto_key(f0[input_start_frame:n_frames - input_start_frame], target_hz)
    f0 = shift_f0(f0, options.f0_up_key + auto_key)
    if options.autotune > 0:
        f0 = autotune(f0, options.autotune, options.autotune_scale)
    if options.f0_curve:
        f0 = F0Curve.parse(options.f0_curve).apply(f0, input_start_frame)
    return PitchTrack(coarse=coarse_f0(f0).astype(np.int64), f0=f0.astype(np.float32), auto_key=auto_key)


def extract_features(encoder: ContentEncoder, chunk_audio: np.ndarray, version: str) -> np.ndarray:
    """Content features of one chunk: (L,) float32 at 16 kHz -> (T, 256|768) float32, 50 frames/s."""
    param = next(encoder.parameters())
    wav = torch.from_numpy(np.ascontiguousarray(chunk_audio, dtype=np.float32))
    with torch.inference_mode():
        feats = encoder.extract(wav.to(param.device, param.dtype).unsqueeze(0), version)
    return feats[0].float().cpu().numpy()


def chunk_seed(seed: int, chunk_index: int) -> int:
    """The noise seed of one chunk, so each chunk is reproducible wherever it runs."""
    return (seed + chunk_index) % (2**63)


def synthesize_chunk(
    voice: Voice,
    features: np.ndarray,
    pitch: PitchTrack | None,
    chunk_samples: int,
    options: ConversionOptions,
    chunking: ChunkingConfig,
    seed: int,
) -> np.ndarray:
    """Retrieval, 2x upsampling, protect and synthesis of one chunk, trimmed of its padding.

    features: (T, C) float32 (50 frames/s) from `extract_features`.
    pitch: the chunk's frames (None for voices without pitch guidance).
    chunk_samples: length of the chunk's 16 kHz audio.
    Returns (n * hop - 2 * t_pad_tgt,) float32 at the voice's sample rate.
    """
    item = synthesis_item(voice, ChunkJob(features, pitch, chunk_samples, options, chunking, seed))
    if item is None:
        return np.zeros(0, dtype=np.float32)
    with torch.inference_mode():
        out = voice.synthesizer.infer(
            item.phone.unsqueeze(0),
            torch.tensor([item.phone.shape[0]], device=item.phone.device, dtype=torch.long),
            None if item.pitch is None else item.pitch.unsqueeze(0),
            None if item.nsff0 is None else item.nsff0.unsqueeze(0),
            torch.tensor([item.sid], device=item.phone.device, dtype=torch.long),
            generator=item.generator, head=item.head, length=item.length,
        )
    return out[0, 0].float().cpu().numpy()


@dataclass(frozen=True)
class ChunkJob:
    """`synthesize_chunk`'s arguments for one chunk (what `synthesize_chunks` batches)."""

    features: np.ndarray
    pitch: PitchTrack | None
    chunk_samples: int
    options: ConversionOptions
    chunking: ChunkingConfig
    seed: int
    #: (head, length) in 10 ms frames: decode only these frames instead of trimming the
    #: chunking's x_pad from each side (the realtime window, `synthesize_window`).
    frames: tuple[int, int] | None = None


def synthesize_window(
    voice: Voice,
    features: np.ndarray,
    pitch: PitchTrack | None,
    window_samples: int,
    head: int,
    length: int,
    options: ConversionOptions,
    seed: int,
) -> np.ndarray:
    """Retrieval, protect and synthesis of a realtime window, decoding only frames
    [head, head + length) (RVC `infer(..., skip_head, return_length)`).

    features: (T, C) float32 (50 frames/s) of the window's (window_samples,) 16 kHz audio;
    pitch: the window's frames (None without pitch guidance).
    Returns (length * hop,) float32 at the voice's rate (shorter if the window ends first).
    """
    job = ChunkJob(features, pitch, window_samples, options, ChunkingConfig.CPU_FP32, seed, frames=(head, length))
    item = synthesis_item(voice, job)
    if item is None:
        return np.zeros(0, dtype=np.float32)
    return voice.synthesizer.infer_batch([item])[0][0].float().cpu().numpy()


def synthesize_chunks(voice: Voice, jobs: Sequence[ChunkJob]) -> list[np.ndarray]:
    """Several chunks (of one or several requests) through the synthesizer as one padded batch.

    Item i equals `synthesize_chunk(voice, *jobs[i])` to float rounding: retrieval and
    protect run per chunk, then `Synthesizer.infer_batch` pads, masks and draws each chunk's
    noise from its own seed. Worth it where a batch costs less than its items one by one
    (a GPU); on the CPU the serving graph calls `synthesize_chunk`, which is exact.
    """
    items = [synthesis_item(voice, job) for job in jobs]
    ready = [item for item in items if item is not None]
    outputs = iter(voice.synthesizer.infer_batch(ready))
    return [np.zeros(0, dtype=np.float32) if item is None else next(outputs)[0].cpu().numpy() for item in items]


def synthesis_item(voice: Voice, job: ChunkJob) -> SynthesisItem | None:
    """The synthesizer input of one chunk: retrieval, 2x upsampling, protect; None when the
    chunk keeps no frames after its padding is trimmed."""
    features, pitch, options = job.features, job.pitch, job.options
    if features.ndim != 2 or features.shape[1] != voice.content_dim:
        raise OptionError(
            f"features of shape {features.shape} do not fit voice {voice.name!r} "
            f"({voice.version}, {voice.content_dim}-dim content)"
        )
    voice.check_speaker(options.speaker_id)
    use_pitch = voice.f0 and pitch is not None
    protect_active = use_pitch and options.protect < 0.5
    original = features
    if voice.index is not None and options.index_rate != 0:
        features = voice.index.blend(features, options.index_rate)

    # Nearest-neighbour 2x: 20 ms content frames -> 10 ms synthesis frames.
    features = np.repeat(features, 2, axis=0)
    n_frames = min(job.chunk_samples // WINDOW, features.shape[0])
    coarse = f0 = None
    if use_pitch:
        coarse, f0 = pitch.coarse[:n_frames], pitch.f0[:n_frames]
        n_frames = min(n_frames, coarse.shape[0])
    features = features[:n_frames]
    if protect_active:
        # Reference: mask = 1 where f0 > 0, `protect` where f0 < 1; blend towards the
        # un-retrieved features on unvoiced frames to keep consonants and breaths.
        mask = np.where(f0[:n_frames] < 1, options.protect, 1.0).astype(np.float32)[:, None]
        features = features * mask + np.repeat(original, 2, axis=0)[:n_frames] * (1 - mask)

    # The padding trimmed from each side, in 10 ms frames (x_pad seconds at 100 frames/s):
    # only the frames between are decoded.
    pad_frames = job.chunking.x_pad * FRAMES_PER_SECOND
    kept_frames = n_frames - 2 * pad_frames
    if job.frames is not None:
        pad_frames, kept_frames = job.frames[0], min(job.frames[1], n_frames - job.frames[0])
    if kept_frames <= 0:
        return None
    param = next(voice.synthesizer.parameters())
    device, dtype = param.device, param.dtype
    phone = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device, dtype)
    pitch_t = f0_t = None
    if use_pitch:
        pitch_t = torch.from_numpy(np.ascontiguousarray(coarse)).to(device)
        f0_t = torch.from_numpy(np.ascontiguousarray(f0, dtype=np.float32)).to(device)
    return SynthesisItem(phone, pitch_t, f0_t, options.speaker_id, torch.Generator(device=device).manual_seed(job.seed),
                         head=pad_frames, length=kept_frames)


def _mix_rms(reference16k: np.ndarray, output: np.ndarray, sample_rate: int, rate: float) -> np.ndarray:
    """Blend the output's loudness envelope towards the input's (RVC `change_rms`).

    rate 1 keeps the output's own envelope; 0 imposes the input's. Envelopes are RMS over
    1 s frames every 0.5 s, linearly resized to the output length.
    """
    rms_in = librosa.feature.rms(y=reference16k, frame_length=SAMPLE_RATE // 2 * 2, hop_length=SAMPLE_RATE // 2)
    rms_out = librosa.feature.rms(y=output, frame_length=sample_rate // 2 * 2, hop_length=sample_rate // 2)
    size = output.shape[0]
    rms_in = F.interpolate(torch.from_numpy(rms_in).unsqueeze(0), size=size, mode="linear").squeeze()
    rms_out = F.interpolate(torch.from_numpy(rms_out).unsqueeze(0), size=size, mode="linear").squeeze()
    rms_out = torch.clamp(rms_out, min=1e-6)
    gain = torch.pow(rms_in, torch.tensor(1 - rate)) * torch.pow(rms_out, torch.tensor(rate - 1))
    mixed = output.copy()
    mixed *= gain.numpy()
    return mixed


def output_sample_rate(voice_sample_rate: int, options: ConversionOptions) -> int:
    """The rate `finish` returns: `resample_sr` when set (>= 16 kHz), else the voice's."""
    if options.resample_sr >= SAMPLE_RATE and options.resample_sr != voice_sample_rate:
        return options.resample_sr
    return voice_sample_rate


def finish(
    chunk_outputs: Sequence[np.ndarray], prepared: Prepared, voice_sample_rate: int, options: ConversionOptions
) -> tuple[np.ndarray, int]:
    """Join chunk outputs, mix loudness, resample, reduce noise (`denoise`) and limit the peak.

    Returns ((M,) float32 in [-1, 1], sample rate in Hz).
    """
    audio = np.concatenate([np.asarray(c, dtype=np.float32) for c in chunk_outputs])
    if audio.size == 0:
        raise AudioError("the audio is too short to convert: the output would be empty")
    if options.rms_mix_rate != 1:
        audio = _mix_rms(prepared.filtered, audio, voice_sample_rate, options.rms_mix_rate)
    sample_rate = output_sample_rate(voice_sample_rate, options)
    if sample_rate != voice_sample_rate:
        audio = librosa.resample(audio, orig_sr=voice_sample_rate, target_sr=sample_rate)
    if options.denoise > 0:
        audio = reduce_noise(audio, sample_rate, options.denoise)
    peak = np.abs(audio).max() / OUTPUT_PEAK_LIMIT
    if peak > 1:
        audio = audio / peak
    return audio.astype(np.float32, copy=False), sample_rate


def convert(
    audio16k: np.ndarray,
    voice: Voice,
    encoder: ContentEncoder | ContentEncoders,
    pitch_estimator: PitchEstimator | None = None,
    options: ConversionOptions | None = None,
    *,
    chunking: ChunkingConfig | None = None,
) -> ConversionResult:
    """Convert speech or singing into `voice`, exactly as the reference RVC pipeline does.

    audio16k: (N,) float32 mono at 16 kHz (see `rvc_pipeline.audio.decode_audio`).
    encoder: a loaded encoder, or a `ContentEncoders` set, which picks the voice's own (the
    `embedder_model` its checkpoint names) from the models folder.
    pitch_estimator: required for pitch-guided voices.
    chunking: x_pad/x_query/x_center/x_max; by default chosen from the voice's device
    and precision as the reference does.
    Returns the converted audio at the voice's rate (or `options.resample_sr`).
    """
    options = options or ConversionOptions()
    voice.check_speaker(options.speaker_id)
    if isinstance(encoder, ContentEncoders):
        encoder = encoder.for_voice(voice)
    if voice.f0 and pitch_estimator is None:
        raise OptionError(f"voice {voice.name!r} is pitch-guided: a PitchEstimator is required")
    chunking = chunking or ChunkingConfig.for_device(voice.device, voice.dtype)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    prepared = prepare(shape_input(audio16k, options), chunking)
    timings["prepare"] = time.perf_counter() - started

    pitch = None
    if voice.f0:
        started = time.perf_counter()
        pitch = estimate_pitch(prepared.padded, pitch_estimator, options, input_start_frame=prepared.input_start_frame)
        timings["pitch"] = time.perf_counter() - started

    outputs = []
    timings["features"] = timings["synthesize"] = 0.0
    for chunk in prepared.chunks:
        chunk_audio = prepared.chunk_audio(chunk)
        started = time.perf_counter()
        features = extract_features(encoder, chunk_audio, voice.version)
        timings["features"] += time.perf_counter() - started
        started = time.perf_counter()
        outputs.append(
            synthesize_chunk(
                voice,
                features,
                pitch.slice(chunk) if pitch is not None else None,
                chunk_audio.shape[0],
                options,
                chunking,
                chunk_seed(options.seed, chunk.index),
            )
        )
        timings["synthesize"] += time.perf_counter() - started

    started = time.perf_counter()
    audio, sample_rate = finish(outputs, prepared, voice.sample_rate, options)
    timings["finish"] = time.perf_counter() - started
    return ConversionResult(audio=audio, sample_rate=sample_rate, timings=timings,
                            auto_key=pitch.auto_key if pitch is not None else 0)

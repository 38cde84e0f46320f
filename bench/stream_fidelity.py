"""Streamed versus offline conversion of the same speech, with the noise zeroed.

    python -m bench.stream_fidelity [--method fcpe] [--seconds 12] [--extras 1000,2000,4000] [--write [FILE]]
    python -m bench.stream_fidelity --quick     # a thin voice and encoder, 2-3 blocks: checks the script

A full-size v2 40 kHz voice and a full-size HuBERT base encoder (random weights) convert
espeak-ng speech offline (`rvc_pipeline.convert`) and block by block (`StreamConverter` +
`LocalStreamEngine`), with index_rate 0 and rms_mix_rate 1 (no loudness mixing in either
path). The synthesizer draws noise twice (the prior z_p = m_p + exp(logs_p) * N(0, 1) *
0.66666 and the NSF source's Gaussian noise); there is no option to turn it off, so this
script replaces `gaussian_noise` with zeros in `rvc_pipeline.synth.nsf` and `.synthesizer`
while it runs (as `bench/synth_worker.py` does): both paths are then deterministic.

(a) One block covering a whole clip (block_ms at its 2000 ms maximum, no left context,
    no crossfade) against `convert()` of the same clip: SNR and correlation after
    alignment; then the stream path fed the offline path's prepared input (the input
    high-passed at 48 Hz by filtfilt), and the stream engine run on the offline path's
    exact padded window (reflect-padded by x_pad, decoding the same frames).
(b) 1 s blocks with 1000, 2000 and 4000 ms of left context (extra_ms): the correlation
    and SNR of the streamed output with `convert()`'s after alignment (the lag found by
    cross-correlation).

Both outputs are compared at 16 kHz (the stream runs at a 16 kHz client rate, so its input
is not resampled; `convert()`'s 40 kHz output is resampled by the same `resample`), except
the engine-on-the-offline-window row, compared at the voice's 40 kHz.

`--write [FILE]` puts the Markdown between the stream_fidelity markers of FILE
(default docs/realtime.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from scipy import signal

from rvc_pipeline import ConversionOptions, PitchEstimator, convert, load_voice
from rvc_pipeline import pipeline as stages
from rvc_pipeline.audio import resample
from rvc_pipeline.constants import SAMPLE_RATE, WINDOW
from rvc_pipeline.content import HubertConfig
from rvc_pipeline.demo import DEMO_ENCODER_CONFIG
from rvc_pipeline.options import ChunkingConfig
from rvc_pipeline.stream import BLOCK_MS_RANGE, LocalStreamEngine, StreamConverter, StreamSettings, StreamWindow
from rvc_pipeline.testing.audio import espeak_speech, snr_db

from .bench_pipeline import TEXT, encoder_for, write_voice
from .report import REPO_ROOT, command_line, plural, provenance, replace_section, table, write_section

SECTION = "stream_fidelity"
DEFAULT_DOC = REPO_ROOT / "docs" / "realtime.md"
#: The stream's client rate: 16 kHz, so the stream's input is the offline input unresampled.
CLIENT_RATE = SAMPLE_RATE
#: (a): the largest block StreamSettings allows; the clip is this long.
SINGLE_BLOCK_MS = 2000
#: (b): block, crossfade, left contexts and clip length of the full run.
BLOCK_MS = 1000
CROSSFADE_MS = 50
EXTRAS_MS = (0, 250, 1000, 2000, 4000)
#: (a): no left context (the window's lead is the 10 ms search frame, so StreamConverter adds
#: one frame to stay on the offline grid), then 10 ms (a lead of 20 ms: on the grid as it is).
SINGLE_BLOCK_EXTRAS_MS = (0, 10)
#: Correlations this close to the best count as no further gain.
FLAT_CORRELATION = 0.005
SECONDS = 16.0
METHOD = "fcpe"
#: The largest lag searched when aligning the streamed output with the offline one.
MAX_LAG_MS = 250
#: --quick: a short clip, 3 blocks of 200 ms, small contexts.
QUICK_SINGLE_BLOCK_MS = 500
QUICK_BLOCK_MS = 200
QUICK_EXTRAS_MS = (100, 200)
QUICK_SECONDS = 0.6


@contextlib.contextmanager
def zeroed_noise() -> Iterator[None]:
    """While inside: the synthesizer's Gaussian noise (prior and NSF source) is all zeros."""
    from rvc_pipeline.synth import nsf, synthesizer

    def zeros(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
              dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(shape, device=device, dtype=dtype)

    saved = nsf.gaussian_noise, synthesizer.gaussian_noise
    nsf.gaussian_noise = synthesizer.gaussian_noise = zeros  # both modules look the name up at call time
    try:
        yield
    finally:
        nsf.gaussian_noise, synthesizer.gaussian_noise = saved


@dataclass(frozen=True)
class Agreement:
    """How one output agrees with a reference after alignment."""

    lag_ms: float  # the test lags the reference by this much (positive: later)
    correlation: float  # Pearson correlation over the overlap
    snr_db: float  # reference power over difference power over the overlap
    overlap_s: float


def find_lag(reference: np.ndarray, test: np.ndarray, max_lag: int) -> int:
    """The lag L in [-max_lag, max_lag] samples maximising sum reference[n] * test[n + L]
    (means removed first, so that a DC offset does not decide)."""
    ref, out = (np.asarray(x, np.float64) - np.mean(x) for x in (reference, test))
    full = signal.correlate(out, ref, mode="full", method="fft")
    zero = reference.shape[0] - 1  # index of lag 0
    lo, hi = max(zero - max_lag, 0), min(zero + max_lag + 1, full.shape[0])
    return int(np.argmax(full[lo:hi])) + lo - zero


def aligned(reference: np.ndarray, test: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """The overlapping parts of reference[n] and test[n + lag], equal lengths, float64."""
    ref, out = reference.astype(np.float64), test.astype(np.float64)
    if lag >= 0:
        out = out[lag:]
    else:
        ref = ref[-lag:]
    n = min(ref.shape[0], out.shape[0])
    return ref[:n], out[:n]


def agreement(reference: np.ndarray, test: np.ndarray, rate: int, max_lag_ms: float = MAX_LAG_MS) -> Agreement:
    """Align `test` to `reference` (both (N,) at `rate`) by cross-correlation, then compare."""
    lag = find_lag(reference, test, int(max_lag_ms * rate / 1000))
    ref, out = aligned(reference, test, lag)
    ref, out = ref - ref.mean(), out - out.mean()  # random-weight voices put out a DC offset
    return Agreement(1000 * lag / rate, float(np.corrcoef(ref, out)[0, 1]), snr_db(ref, out), ref.shape[0] / rate)


def speech(seconds: float) -> np.ndarray:
    """(seconds * 16000,) float32: espeak-ng speech looped to `seconds`."""
    return np.resize(espeak_speech(TEXT * 3, speed_wpm=160), int(seconds * SAMPLE_RATE)).astype(np.float32)


def options_for(method: str) -> ConversionOptions:
    """Both paths' options: `method` F0, no retrieval, no loudness mixing, seed 0."""
    return ConversionOptions(f0_method=method, index_rate=0.0, rms_mix_rate=1.0, seed=0)


def offline(audio16k: np.ndarray, engine: LocalStreamEngine, options: ConversionOptions) -> np.ndarray:
    """`convert()` of (N,) 16 kHz audio: its output at the voice's rate."""
    return convert(audio16k, engine.voice, engine.encoder, engine.pitch_estimator, options,
                   chunking=ChunkingConfig.CPU_FP32).audio


def streamed(audio16k: np.ndarray, settings: StreamSettings, engine: LocalStreamEngine) -> np.ndarray:
    """(N,) 16 kHz audio through a fresh StreamConverter, block by block (the tail padded with
    silence to a whole block): the concatenated output at 16 kHz."""
    n = settings.block_samples
    padded = np.concatenate([audio16k, np.zeros(-audio16k.shape[0] % n, np.float32)])
    converter = StreamConverter(settings, engine.sample_rate)
    return np.concatenate([converter.process(padded[i : i + n], engine) for i in range(0, padded.shape[0], n)])


def settings_for(block_ms: float, extra_ms: float, crossfade_ms: float, options: ConversionOptions) -> StreamSettings:
    """A 16 kHz float stream with the gate at its floor (no block is gated unless digitally silent)."""
    return StreamSettings(sample_rate=CLIENT_RATE, sample_format="f32le", block_ms=block_ms, extra_ms=extra_ms,
                          crossfade_ms=crossfade_ms, silence_db=-120.0, options=options)


def engine_on_offline_window(audio16k: np.ndarray, engine: LocalStreamEngine, options: ConversionOptions) -> np.ndarray:
    """The stream engine run on `prepare()`'s padded input, decoding the clip's own frames
    (skip_head = x_pad): the offline input through the stream's model path, at the voice's rate."""
    chunking = ChunkingConfig.CPU_FP32
    prepared = stages.prepare(audio16k, chunking)
    if len(prepared.chunks) != 1:
        raise SystemExit("the single-block clip must be one offline chunk")
    window = StreamWindow(audio16k=prepared.padded.astype(np.float32), skip_head=prepared.input_start_frame,
                          return_length=prepared.filtered.shape[0] // WINDOW, seed=stages.chunk_seed(options.seed, 0),
                          options=options)
    return engine.run(window)


def content_grid(settings: StreamSettings) -> str:
    """Where the stream's 20 ms content frames sit against the offline path's: "same" or
    "10 ms off", read from the windows a StreamConverter makes for its first blocks.

    HuBERT puts out one frame per 20 ms (two 10 ms frames) counted from the start of its
    input. Offline, that is x_pad (an even number of 10 ms frames) before the clip; a
    stream window must start an even number of 10 ms frames after the stream's start to
    match (StreamConverter takes one more frame of context where it would not).
    """
    converter = StreamConverter(settings, SAMPLE_RATE)
    quiet = np.full(settings.block_samples, 1e-3, dtype=np.float32)  # above a -120 dB gate: every block runs
    offsets = set()
    for k in range(2):
        window = converter.push(quiet)
        frames = window.audio16k.shape[0] // WINDOW
        offsets.add(((k + 1) * settings.block_frames - frames) % 2)
        converter.finish(window, None)
    return "same" if offsets == {0} else "10 ms off"


def single_block_rows(clip: np.ndarray, engine: LocalStreamEngine, options: ConversionOptions,
                      block_ms: float) -> list[tuple[str, str, Agreement]]:
    """(a): one block covering `clip` ((N,) 16 kHz, N = block) against convert() of it:
    (what the stream path sees, its content grid, agreement) rows."""
    reference = offline(clip, engine, options)
    reference16k = resample(reference, engine.sample_rate, SAMPLE_RATE)
    prepared = stages.prepare(clip, ChunkingConfig.CPU_FP32)
    rows = []
    for extra_ms in SINGLE_BLOCK_EXTRAS_MS:
        settings = settings_for(block_ms, extra_ms, 0, options)
        rows.append((f"the clip as it is, {extra_ms:g} ms of left context", content_grid(settings),
                     agreement(reference16k, streamed(clip, settings, engine), SAMPLE_RATE)))
    high_passed = streamed(prepared.filtered.astype(np.float32), settings, engine)
    rows.append((f"the offline path's prepared input (peak-limited, 48 Hz high-pass), {extra_ms:g} ms of left context",
                 content_grid(settings), agreement(reference16k, high_passed, SAMPLE_RATE)))
    window = engine_on_offline_window(clip, engine, options)
    rows.append(("the engine on the offline path's padded window (40 kHz)", "same",
                 agreement(reference, window, engine.sample_rate)))
    return rows


def context_rows(audio16k: np.ndarray, engine: LocalStreamEngine, options: ConversionOptions, block_ms: float,
                 extras_ms: Sequence[float], crossfade_ms: float) -> list[tuple[float, str, Agreement]]:
    """(b): `block_ms` blocks with each left context against convert() of the whole clip:
    (left context ms, content grid, agreement) rows."""
    reference16k = resample(offline(audio16k, engine, options), engine.sample_rate, SAMPLE_RATE)
    rows = []
    for extra in extras_ms:
        settings = settings_for(block_ms, extra, crossfade_ms, options)
        rows.append((extra, content_grid(settings), agreement(reference16k, streamed(audio16k, settings, engine),
                                                               SAMPLE_RATE)))
        print(f"  extra {extra:g} ms: correlation {rows[-1][2].correlation:.3f} (grid {rows[-1][1]})", flush=True)
    return rows


def trend_lines(rows: Sequence[tuple[float, str, Agreement]], tolerance: float = FLAT_CORRELATION) -> list[str]:
    """What the measured correlations did as the left context grew, and what that says."""
    listed = ", ".join(f"{r.correlation:.3f} at {extra:g} ms" for extra, _, r in rows)
    lines = [f"Measured here (correlation by left context): {listed}."]
    same = [(extra, r) for extra, grid, r in rows if grid == "same"]
    off = [f"{extra:g} ms" for extra, grid, _ in rows if grid != "same"]
    if off:
        lines.append(f"Rows whose content grid is not the offline one ({', '.join(off)}) measure that 10 ms shift of "
                     "the content frames more than the context; the rest of this paragraph uses the others.")
    if not same:
        return lines
    best_extra, best = max(same, key=lambda row: row[1].correlation)
    plateau = [extra for extra, r in same if best.correlation - r.correlation <= tolerance]
    if plateau[0] == same[0][0]:
        lines.append(f"Left context makes no difference beyond {tolerance} in correlation over the measured range: "
                     "the remaining difference is what left context cannot restore (above).")
    else:
        lines.append(f"It rises up to {plateau[0]:g} ms of left context and stays within {tolerance} of its best "
                     f"({best.correlation:.3f} at {best_extra:g} ms) from there: with these models more left context "
                     "than that costs compute (the encoder, the pitch estimator and the text encoder and flow run "
                     "over the whole window every block) without bringing the stream closer to the offline output; "
                     "what remains is what left context cannot restore (above).")
    lines.append("The weights are random; trained encoders may use longer context, so where the curve flattens "
                 "may differ with real voices.")
    return lines


def agreement_cells(a: Agreement) -> tuple[str, str, str, str]:
    return f"{a.lag_ms:.1f}", f"{a.correlation:.3f}", f"{a.snr_db:.1f}", f"{a.overlap_s:.2f}"


def parse_list(text: str) -> list[float]:
    return [float(item) for item in text.split(",") if item.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default=METHOD, help="pitch method of both paths")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of the clip of (b)")
    parser.add_argument("--extras", default=",".join(map(str, EXTRAS_MS)), help="left contexts of (b) in ms")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (default: the machine's cores)")
    parser.add_argument("--quick", action="store_true", help="thin voice, small encoder, 2-3 blocks: checks the script")
    parser.add_argument("--write", type=Path, nargs="?", const=DEFAULT_DOC, metavar="FILE",
                        help="write the figures between FILE's stream_fidelity markers (default docs/realtime.md)")
    args = parser.parse_args(argv)
    if args.write:  # fail before minutes of converting, not after
        replace_section(args.write.read_text(encoding="utf-8"), SECTION, [])
    single_ms, block_ms = SINGLE_BLOCK_MS, BLOCK_MS
    if args.quick:
        single_ms, block_ms, args.seconds = QUICK_SINGLE_BLOCK_MS, QUICK_BLOCK_MS, QUICK_SECONDS
        args.extras = ",".join(map(str, QUICK_EXTRAS_MS))
    extras = parse_list(args.extras)
    torch.set_num_threads(args.threads)
    options = options_for(args.method)
    audio = speech(args.seconds)
    clip = audio[: int(single_ms * SAMPLE_RATE / 1000)] if audio.shape[0] * 1000 >= single_ms * SAMPLE_RATE \
        else speech(single_ms / 1000)

    with tempfile.TemporaryDirectory(prefix="stream_fidelity_") as tmp, zeroed_noise():
        voice = load_voice(write_voice(Path(tmp) / "v2-40k.pth", args.quick), device="cpu", dtype=torch.float32)
        encoder = encoder_for(DEMO_ENCODER_CONFIG if args.quick else HubertConfig(), torch.device("cpu"), torch.float32)
        engine = LocalStreamEngine(voice, encoder, PitchEstimator(device="cpu"))
        single = single_block_rows(clip, engine, options, single_ms)
        contexts = context_rows(audio, engine, options, block_ms, extras, CROSSFADE_MS)

    voice_name = "thin test voice (v2 40 kHz layout)" if args.quick else "full-size v2 40 kHz voice"
    encoder_name = "small demo encoder" if args.quick else "full-size HuBERT base (12 layers)"
    lines = [
        "## Streamed versus offline: `python -m bench.stream_fidelity`",
        "",
        *provenance(command_line("bench.stream_fidelity", argv), [
            f"{voice_name} and {encoder_name}, random weights, exact fp32, {plural(args.threads, 'torch thread')}; "
            f"espeak-ng speech; pitch `{args.method}`, index_rate 0, rms_mix_rate 1 (no loudness mixing), "
            "noise zeroed: `gaussian_noise` in `rvc_pipeline.synth.nsf` and `.synthesizer` replaced by zeros "
            "for the run (there is no option for it), so both paths are deterministic",
            f"Stream at a {CLIENT_RATE} Hz client rate (its input unresampled); `convert()`'s output resampled "
            f"to {CLIENT_RATE} Hz by the same `resample`; the lag is found by cross-correlation within "
            f"±{MAX_LAG_MS} ms, then correlation and SNR are taken over the overlap with each signal's mean "
            "removed (random-weight voices put out a DC offset that would otherwise dominate the SNR)",
        ]),
        "",
        f"### (a) One {single_ms} ms block covering the whole clip against `convert()` of it",
        "",
        f"Stream settings: block {single_ms} ms{' (the largest allowed)' if single_ms == BLOCK_MS_RANGE[1] else ''}, "
        "no crossfade, left context as listed (the output lags by the 10 ms SOLA search frame and drops the "
        "clip's last 10 ms).",
        "",
        "Content grid: HuBERT puts out one content frame per 20 ms, counted from the start of the audio it is "
        "given, and the synthesizer repeats each for two 10 ms frames. Offline, the grid starts x_pad (1 s) "
        "before the clip; a stream window starts extra + crossfade + search (10 ms) before its block. Where "
        "that would put a window an odd number of 10 ms frames after the stream's start, StreamConverter "
        "takes one more frame of left context, so its content frames stay on the offline grid (before it "
        "did, a 250 ms context measured 0.873 here against 0.959 now: content frames 10 ms off the pitch).",
        "",
        *table(["the stream path sees", "content grid vs offline", "lag ms", "correlation", "SNR dB", "overlap s"],
               [(name, grid, *agreement_cells(a)) for name, grid, a in single]),
        "",
        "What differs between the paths: `convert()` peak-limits the input, high-passes it at 48 Hz with "
        "`filtfilt` (zero phase), reflect-pads it by x_pad (1 s) on both sides, so that the content encoder, "
        "the pitch estimator and the synthesizer see mirrored speech around the clip, and finally "
        "peak-limits the output (its loudness mix is off here, as the stream's is); the stream path "
        "converts the raw block with silence (zeros) as its left context and nothing to its right, and "
        "repeats the last content frame (RVC realtime). Feeding the stream the high-passed input removes "
        "the first difference; running the stream engine on the offline padded window removes all but "
        "the repeated content frame and the decoder's halo, which is the agreement of the two model paths.",
        "",
        f"### (b) {block_ms} ms blocks against `convert()` of the whole {args.seconds:g} s clip",
        "",
        f"Crossfade {CROSSFADE_MS} ms; each row a fresh stream with that much left context (extra_ms).",
        "",
        *table(["left context ms", "content grid vs offline", "lag ms", "correlation", "SNR dB", "overlap s"],
               [(f"{extra:g}", grid, *agreement_cells(a)) for extra, grid, a in contexts]),
        "",
        "What left context changes: every block's window is converted on its own, so the content encoder "
        "(HuBERT's convolutional front end, then self-attention over the whole window), the pitch estimator, "
        "and the synthesizer's text encoder (self-attention over the window) and flow see only extra_ms of "
        "the past, where the offline path sees the whole chunk, past and future. More left context brings "
        "each block's features, F0 and latent closer to the offline ones until it covers what these "
        "layers effectively look at; the decoder's own receptive field is short and is given its halo "
        "of frames either way. What left context cannot restore: the missing right context (each block's "
        "last decoded frames sit at the window's end), the offline reflect padding, and SOLA's joins "
        "between blocks.",
        "",
        *trend_lines(contexts),
    ]
    print("\n".join(lines))
    if args.write:
        write_section(args.write, SECTION, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

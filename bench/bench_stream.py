"""Realtime streaming speed: processing time per block and end-to-end latency, in process.

    python -m bench.bench_stream [--seconds 20] [--blocks 100,200,300,500,1000] [--methods pm,fcpe]
                                 [--extra-ms 1000] [--crossfade-ms 50] [--write [FILE]]
    python -m bench.bench_stream --quick      # a thin voice and encoder, 2-3 blocks: checks the script

A full-size v2 40 kHz voice and a full-size 12-layer HuBERT base encoder (random weights:
speed does not depend on them) convert espeak-ng speech (looped to `--seconds`, at the
48 kHz client rate) block by block through `StreamConverter.process` with a
`LocalStreamEngine`, in this process, with as many torch threads as the machine has cores.
For every block size, pitch method and precision it prints:

- the processing time per block (one `process` call: resampling, content features, F0,
  synthesis of the decoded frames, SOLA), p50 and p95 over the clip's blocks after a
  warm-up session of two blocks;
- the real-time factor (mean processing time / block length: below 1 keeps up on average);
- the algorithmic latency (`StreamSettings.latency_ms`: block + crossfade + SOLA search)
  and the end-to-end latency = algorithmic + p95 processing (device buffers excluded);

then, per pitch method, the smallest block whose p95 processing stays under the block
length (a stream that can keep up on this machine). The silence gate is off (silence_db
-120 and the input dithered at -90 dBFS), so every block runs the models. bf16 rows are
added only where the CPU has native bf16 (AVX512-BF16 or AMX); rmvpe only with an
`rmvpe.pt` (`--rmvpe FILE`).

`--write [FILE]` puts the same Markdown between the bench_stream markers of FILE
(default docs/realtime.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rvc_pipeline import ConversionOptions, PitchEstimator, load_voice
from rvc_pipeline.audio import resample
from rvc_pipeline.constants import SAMPLE_RATE
from rvc_pipeline.content import HubertConfig
from rvc_pipeline.demo import DEMO_ENCODER_CONFIG
from rvc_pipeline.device import cpu_has_fast_bf16
from rvc_pipeline.stream import LocalStreamEngine, StreamConverter, StreamSettings
from rvc_pipeline.testing.audio import espeak_speech
from rvc_pipeline.testing.machine import cpu_flags_line

from .bench_pipeline import TEXT, encoder_for, write_voice
from .report import REPO_ROOT, command_line, plural, portable_arg, provenance, replace_section, table, write_section

SECTION = "bench_stream"
DEFAULT_DOC = REPO_ROOT / "docs" / "realtime.md"
#: The client side of the stream: 48 kHz float32, as a browser microphone delivers it.
CLIENT_RATE = 48000
CLIENT_FORMAT = "f32le"
#: Block sizes, pitch methods, left context and crossfade of the full run.
BLOCKS_MS = (100, 200, 300, 500, 1000)
METHODS = ("pm", "fcpe")
EXTRA_MS = 1000
CROSSFADE_MS = 50
SECONDS = 16.0
#: The gate's floor, and a dither above it, so that no block skips the models.
GATE_OFF_DB = -120.0
DITHER_DBFS = -90.0
#: Blocks of the warm-up session run before each measured one (first-call kernel setup).
WARMUP_BLOCKS = 2
#: --quick: a few blocks of a thin voice and the small demo encoder.
QUICK_BLOCKS_MS = (100, 200)
QUICK_SECONDS = 0.6
QUICK_EXTRA_MS = 200


@dataclass(frozen=True)
class Row:
    """One measured stream: its settings and the processing times of its blocks."""

    block_ms: float
    method: str
    precision: str
    blocks: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    latency_ms: float

    @property
    def rtf(self) -> float:
        """Mean processing time / block length."""
        return self.mean_ms / self.block_ms

    @property
    def end_to_end_ms(self) -> float:
        """Algorithmic latency + p95 processing time."""
        return self.latency_ms + self.p95_ms

    @property
    def keeps_up(self) -> bool:
        """p95 processing under the block length."""
        return self.p95_ms < self.block_ms


def client_speech(seconds: float, rate: int = CLIENT_RATE, seed: int = 0) -> np.ndarray:
    """(seconds * rate,) float32: espeak-ng speech looped to `seconds`, resampled from 16 kHz
    to `rate`, with white dither at DITHER_DBFS so that no block is digital silence."""
    speech = np.resize(espeak_speech(TEXT * 3, speed_wpm=160), int(seconds * SAMPLE_RATE))
    audio = resample(speech, SAMPLE_RATE, rate)[: int(seconds * rate)]
    dither = np.random.default_rng(seed).standard_normal(audio.shape[0]) * 10 ** (DITHER_DBFS / 20)
    return (audio + dither).astype(np.float32)


def stream_settings(block_ms: float, method: str, extra_ms: float, crossfade_ms: float) -> StreamSettings:
    """The measured stream's settings: 48 kHz f32le, gate off, `method` F0, seed 0."""
    return StreamSettings(sample_rate=CLIENT_RATE, sample_format=CLIENT_FORMAT, block_ms=block_ms,
                          extra_ms=extra_ms, crossfade_ms=crossfade_ms, silence_db=GATE_OFF_DB,
                          options=ConversionOptions(f0_method=method, seed=0))


def run_stream(audio: np.ndarray, settings: StreamSettings, engine: LocalStreamEngine) -> list[float]:
    """Stream the whole blocks of (N,) float32 `audio` at the client rate through a fresh
    converter (as wire bytes); returns each block's `process` time in ms."""
    converter = StreamConverter(settings, engine.sample_rate)
    n, times = settings.block_samples, []
    for start in range(0, audio.shape[0] - n + 1, n):
        data = converter.encode(audio[start : start + n])
        started = time.perf_counter()
        converter.process(data, engine)
        times.append((time.perf_counter() - started) * 1000)
    if converter.stats()["gated"]:
        raise SystemExit("a block was gated: the measurement must run the models on every block")
    return times


def measure(audio: np.ndarray, settings: StreamSettings, engine: LocalStreamEngine, precision: str) -> Row:
    """One row: a warm-up session of WARMUP_BLOCKS blocks, then the whole clip in a fresh session."""
    run_stream(audio[: WARMUP_BLOCKS * settings.block_samples], settings, engine)
    times = np.asarray(run_stream(audio, settings, engine), dtype=np.float64)
    return Row(settings.block_ms, settings.options.f0_method, precision, times.size, float(np.percentile(times, 50)),
               float(np.percentile(times, 95)), float(times.mean()), settings.latency_ms)


def smallest_keeping_up(rows: Sequence[Row], method: str, precision: str) -> Row | None:
    """The row of the smallest block whose p95 processing stays under the block length."""
    fitting = [r for r in rows if r.method == method and r.precision == precision and r.keeps_up]
    return min(fitting, key=lambda r: r.block_ms, default=None)


def finding_lines(rows: Sequence[Row], methods: Sequence[str], precision: str) -> list[str]:
    """Per pitch method, the smallest block that keeps up, as bullet lines."""
    lines = []
    for method in methods:
        best = smallest_keeping_up(rows, method, precision)
        if best is None:
            largest = max(r.block_ms for r in rows if r.method == method)
            lines.append(f"- `{method}` ({precision}): no measured block keeps up (p95 processing is over the "
                         f"block length up to {largest:g} ms)")
        else:
            lines.append(f"- `{method}` ({precision}): {best.block_ms:g} ms blocks (p95 {best.p95_ms:.0f} ms; "
                         f"end-to-end latency {best.end_to_end_ms:.0f} ms)")
    return lines


def bf16_line(run_bf16: bool) -> str:
    """Why bf16 was or was not measured."""
    if run_bf16:
        return "bf16: measured (this CPU has native bf16 kernels)."
    return (f"bf16: skipped; this CPU has no native bf16 (AVX512-BF16 or AMX; {cpu_flags_line()}), so torch "
            "would emulate it, many times slower than fp32.")


def parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of the streamed speech")
    parser.add_argument("--blocks", default=",".join(map(str, BLOCKS_MS)), help="block sizes in ms")
    parser.add_argument("--methods", default=",".join(METHODS), help="pitch methods")
    parser.add_argument("--rmvpe", type=Path, help="an rmvpe.pt: adds the rmvpe method")
    parser.add_argument("--extra-ms", type=float, default=EXTRA_MS, help="left context of every block")
    parser.add_argument("--crossfade-ms", type=float, default=CROSSFADE_MS)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (default: the machine's cores)")
    parser.add_argument("--quick", action="store_true", help="thin voice, small encoder, 2-3 blocks: checks the script")
    parser.add_argument("--write", type=Path, nargs="?", const=DEFAULT_DOC, metavar="FILE",
                        help="write the figures between FILE's bench_stream markers (default docs/realtime.md)")
    args = parser.parse_args(argv)
    if args.write:  # fail before minutes of measuring, not after
        replace_section(args.write.read_text(encoding="utf-8"), SECTION, [])
    if args.quick:
        args.seconds, args.extra_ms = QUICK_SECONDS, QUICK_EXTRA_MS
        args.blocks = ",".join(map(str, QUICK_BLOCKS_MS))
    blocks = [float(b) for b in parse_list(args.blocks)]
    methods = parse_list(args.methods)
    if args.rmvpe is not None:
        if not args.rmvpe.is_file():
            parser.error(f"--rmvpe {portable_arg(str(args.rmvpe))} is not a file")
        methods.append("rmvpe")
    threads, cores = args.threads, os.cpu_count() or 1
    torch.set_num_threads(threads)
    run_bf16 = cpu_has_fast_bf16()
    precisions = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if run_bf16 else {})}
    print(f"{plural(threads, 'torch thread')} (the machine has {plural(cores, 'core')}); left context "
          f"{args.extra_ms:g} ms, crossfade {args.crossfade_ms:g} ms; {bf16_line(run_bf16)}", flush=True)

    audio = client_speech(args.seconds)
    estimator = PitchEstimator(device="cpu", rmvpe_path=args.rmvpe)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench_stream_") as tmp:
        voice_path = write_voice(Path(tmp) / "v2-40k.pth", args.quick)
        for precision, dtype in precisions.items():
            voice = load_voice(voice_path, device="cpu", dtype=dtype)
            encoder = encoder_for(DEMO_ENCODER_CONFIG if args.quick else HubertConfig(), torch.device("cpu"), dtype)
            engine = LocalStreamEngine(voice, encoder, estimator)
            for method in methods:
                for block_ms in blocks:
                    settings = stream_settings(block_ms, method, args.extra_ms, args.crossfade_ms)
                    rows.append(measure(audio, settings, engine, precision))
                    r = rows[-1]
                    print(f"  {precision} {method} {block_ms:g} ms: p50 {r.p50_ms:.1f} ms, p95 {r.p95_ms:.1f} ms, "
                          f"RTF {r.rtf:.2f}", flush=True)

    voice_name = "thin test voice (v2 40 kHz layout)" if args.quick else "full-size v2 40 kHz voice"
    encoder_name = "small demo encoder" if args.quick else "full-size HuBERT base (12 layers)"
    lines = [
        "## Realtime blocks: `python -m bench.bench_stream`",
        "",
        *provenance(command_line("bench.bench_stream", argv), [
            f"Input: {args.seconds:g} s of espeak-ng speech at {CLIENT_RATE} Hz {CLIENT_FORMAT}, dithered at "
            f"{DITHER_DBFS:g} dBFS with the gate off (silence_db {GATE_OFF_DB:g}) so every block runs the models; "
            f"{voice_name} and {encoder_name}, random weights (speed does not depend on them)",
            f"`StreamConverter.process` with a `LocalStreamEngine` in this process, {plural(threads, 'torch thread')} "
            f"(the machine has {plural(cores, 'core')}); left context (extra_ms) {args.extra_ms:g} ms, crossfade "
            f"{args.crossfade_ms:g} ms; times are `process` calls (push, models, finish) per block after a warm-up session of "
            f"{plural(WARMUP_BLOCKS, 'block')}",
            bf16_line(run_bf16),
        ]),
        "",
        "RTF = mean processing time / block length. Algorithmic latency = block + crossfade + SOLA search "
        "(`StreamSettings.latency_ms`); end-to-end = algorithmic + p95 processing (audio device buffers and "
        "the network are extra).",
        "",
        *table(["block ms", "pitch", "precision", "blocks", "p50 ms", "p95 ms", "RTF", "algorithmic latency ms",
                "end-to-end latency ms", "p95 < block"],
               [(f"{r.block_ms:g}", f"`{r.method}`", r.precision, r.blocks, f"{r.p50_ms:.1f}", f"{r.p95_ms:.1f}",
                 f"{r.rtf:.2f}", f"{r.latency_ms:g}", f"{r.end_to_end_ms:.0f}", "yes" if r.keeps_up else "no")
                for r in rows]),
        "",
        "Smallest block whose p95 processing stays under the block length:",
        "",
        *[line for precision in precisions for line in finding_lines(rows, methods, precision)],
    ]
    print("\n".join(lines))
    if args.write:
        write_section(args.write, SECTION, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

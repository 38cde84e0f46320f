"""Time each stage of `rvc_pipeline.convert()` on a speech clip, and what loading and decoding cost.

    python -m bench.bench_pipeline [--seconds 16] [--threads 2] [--methods pm,harvest,...] [--repeat 2]
                                   [--profile] [--write docs/performance.md]
    python -m bench.bench_pipeline --small --seconds 2 --repeat 1 --methods pm --long-seconds 5  # seconds

With a full-size v2 40 kHz voice and a full-size HuBERT-base encoder, both with random
weights (speed does not depend on the weights), and speech made by espeak-ng, it prints as
Markdown:

- the seconds and real-time factor (RTF = processing time / audio duration) of every stage
  and pitch method, and of the whole conversion (decode + `convert()`) in exact fp32;
- loading the voice: reading the checkpoint, and the whole `load_voice` (read, build the
  modules, fold weight norm), after a warm-up read (the file is in the page cache);
- decoding memory: the tracemalloc peak while decoding a long 44.1 kHz stereo WAV;
- with --profile, the synthesizer's top torch ops by self CPU time;
- the fast mode (bf16 on CPU, fp16 on CUDA) and its SNR against fp32, where it is native.

`--write FILE` puts the same Markdown between the bench_pipeline markers of FILE.
`--small` swaps in a small voice and encoder (a quick check that the script works; its
figures say nothing about real models). The full `crepe` model is not in the default
methods: it takes minutes per clip on a CPU; `--methods crepe` measures it.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from rvc_pipeline import ConversionOptions, PitchEstimator, convert, decode_audio, encode_wav, load_voice
from rvc_pipeline import pipeline as stages
from rvc_pipeline.checkpoint import read_checkpoint
from rvc_pipeline.constants import SAMPLE_RATE
from rvc_pipeline.content import ContentEncoder, HubertConfig
from rvc_pipeline.demo import DEMO_ENCODER_CONFIG, write_demo_voice
from rvc_pipeline.device import cpu_has_fast_bf16, resolve_device
from rvc_pipeline.options import ChunkingConfig
from rvc_pipeline.testing.audio import espeak_speech, snr_db
from rvc_pipeline.testing.rmvpe import write_random_rmvpe
from rvc_pipeline.testing.voices import standard_config, write_webui_voice

from .report import command_line, plural, provenance, table, timed, write_section

SECTION = "bench_pipeline"
TEXT = (
    "Retrieval based voice conversion turns one voice into another. "
    "It keeps the words, the timing and the melody, and changes who is speaking. "
)
#: The issue's target for the whole conversion in exact fp32 (the reference pipeline is
#: not in this repository, so its own RTF is not measured here).
TARGET_RTF = 0.7
#: Sample rate and channels of the long file whose decoding memory is measured.
LONG_RATE, LONG_CHANNELS = 44100, 2
MIB = 2**20
#: --small: the v2 40 kHz layout with thin layers (a 3 MB file instead of 55 MB).
SMALL_VOICE = dict(upsample_initial_channel=32, hidden_channels=64, filter_channels=64, inter_channels=64)


def speech_clip(seconds: float) -> bytes:
    """WAV bytes of espeak-ng speech, looped to `seconds`."""
    audio = np.resize(espeak_speech(TEXT * 3, speed_wpm=160), int(seconds * SAMPLE_RATE))
    return encode_wav(audio, SAMPLE_RATE)


def encoder_for(config: HubertConfig, device: torch.device, dtype: torch.dtype) -> ContentEncoder:
    """A random-weight content encoder of `config` (speed does not depend on the weights)."""
    torch.manual_seed(0)
    model = ContentEncoder(config).eval().requires_grad_(False)
    model.to(device=device, dtype=dtype)
    model.feature_extractor.norm.float()
    return model


def write_voice(path: Path, small: bool) -> Path:
    """The full-size random v2 40 kHz voice (as the demo voice), or a thin one with --small."""
    if not small:
        return write_demo_voice(path)
    config = dataclasses.replace(standard_config("v2", 40000, 1), **SMALL_VOICE)
    return write_webui_voice(path, "v2", 40000, f0=True, config=config)


def fmt(seconds: float) -> str:
    return f"{seconds:.3f}"


def conversion_runs(wav: bytes, voice, encoder, estimator, options, chunking, repeat: int):
    """decode + convert() `repeat` times after a warm-up: (wall seconds, {stage: [seconds]}, last audio)."""
    walls, stage_times, out = [], {}, None
    for i in range(repeat + 1):
        started = time.perf_counter()
        result = convert(decode_audio(wav), voice, encoder, estimator, options, chunking=chunking)
        if i == 0:
            continue  # the warm-up
        walls.append(time.perf_counter() - started)
        for stage, seconds in result.timings.items():
            stage_times.setdefault(stage, []).append(seconds)
        out = result.audio
    return walls, {k: statistics.median(v) for k, v in stage_times.items()}, out


def voice_load_lines(voice_path: Path, device, repeat: int) -> list[str]:
    """Reading the checkpoint, and the whole load_voice, median of `repeat` after a warm-up."""
    read_s, _, _ = timed(lambda: read_checkpoint(voice_path), repeat)
    load_s, _, _ = timed(lambda: load_voice(voice_path, device=device, dtype=torch.float32), repeat)
    size_mb = voice_path.stat().st_size / 1e6
    return [
        f"### Loading the voice ({size_mb:.1f} MB file, median of {plural(repeat, 'run')} after a warm-up read)",
        "",
        *table(["step", "seconds"], [
            ("read and check the checkpoint (`read_checkpoint`)", fmt(read_s)),
            ("ready to convert (`load_voice`: read, build, fold weight norm)", fmt(load_s)),
        ]),
    ]


def decode_memory_lines(seconds: float, work: Path) -> list[str]:
    """Time and tracemalloc peak of decoding a long 44.1 kHz stereo 16-bit WAV to 16 kHz mono."""
    rng = np.random.default_rng(0)
    samples = rng.integers(-3000, 3000, size=(int(seconds * LONG_RATE), LONG_CHANNELS), dtype=np.int16)
    path = work / "long.wav"
    sf.write(path, samples, LONG_RATE, subtype="PCM_16")
    del samples
    started = time.perf_counter()
    decoded = decode_audio(path)
    decode_s = time.perf_counter() - started
    decoded_mib = decoded.nbytes / MIB
    del decoded
    tracemalloc.start()
    decode_audio(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return [
        f"### Decoding a long file ({seconds:.0f} s, {LONG_RATE} Hz stereo 16-bit WAV, "
        f"{path.stat().st_size / MIB:.1f} MiB)",
        "",
        *table(["measure", "value"], [
            ("decode to 16 kHz mono float32, seconds (one run)", fmt(decode_s)),
            ("peak of Python-tracked memory while decoding (tracemalloc), MiB", f"{peak / MIB:.1f}"),
            ("the decoded 16 kHz float32 audio itself, MiB", f"{decoded_mib:.1f}"),
        ]),
    ]


def profile_lines(audio, voice, encoder, estimator, options, chunking, top: int) -> list[str]:
    """torch-profiler table of one synthesis of every chunk: top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    prepared = stages.prepare(audio, chunking)
    pitch = stages.estimate_pitch(prepared.padded, estimator, options)
    inputs = [(chunk, prepared.chunk_audio(chunk)) for chunk in prepared.chunks]
    features = [stages.extract_features(encoder, piece, voice.version) for _, piece in inputs]

    def synthesize() -> None:
        for (chunk, piece), feats in zip(inputs, features):
            stages.synthesize_chunk(voice, feats, pitch.slice(chunk), piece.shape[0], options, chunking,
                                    stages.chunk_seed(options.seed, chunk.index))

    synthesize()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        synthesize()
    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    rows = [(f"`{e.key}`", fmt(e.self_cpu_time_total / 1e6), f"{100 * e.self_cpu_time_total / total_us:.1f} %", e.count)
            for e in ranked]
    return [
        f"### Where synthesis spends its time (torch profiler, one run, top {top} ops by self CPU time)",
        "",
        f"All ops together: {total_us / 1e6:.3f} s of self CPU time (the profiler adds some).",
        "",
        *table(["op", "self CPU s", "share", "calls"], rows),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=16.0, help="length of the speech clip")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default="pm,harvest,dio,fcpe,crepe-tiny,rmvpe")
    parser.add_argument("--main-method", default="pm", help="pitch method of the whole-conversion run")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs after one warm-up (figures are medians)")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="length of the file whose decoding memory is measured")
    parser.add_argument("--profile", action="store_true", help="also profile synthesis with the torch profiler")
    parser.add_argument("--top", type=int, default=8, help="ops in the profile table")
    parser.add_argument("--small", action="store_true", help="a small voice and encoder: checks the script, not speed")
    parser.add_argument("--write", type=Path, metavar="FILE", help="write the figures between FILE's bench_pipeline markers")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.main_method not in methods:
        parser.error(f"--main-method {args.main_method} must be one of --methods")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    fast_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    fast_name = str(fast_dtype).split(".")[-1]
    run_fast = device.type == "cuda" or cpu_has_fast_bf16()
    command = command_line("bench.bench_pipeline", argv)

    wav, duration = speech_clip(args.seconds), args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        voice_path = write_voice(Path(tmp) / "v2-40k.pth", args.small)
        voice = load_voice(voice_path, device=device, dtype=torch.float32)
        rmvpe = write_random_rmvpe(Path(tmp) / "rmvpe.pt") if "rmvpe" in methods else None
        estimator = PitchEstimator(device=device, rmvpe_path=rmvpe)
        encoder_config = DEMO_ENCODER_CONFIG if args.small else HubertConfig()
        encoder_name = "small demo encoder" if args.small else "HuBERT base"
        encoder = encoder_for(encoder_config, device, torch.float32)
        chunking = ChunkingConfig.for_device(device, torch.float32)
        options = ConversionOptions(f0_method=args.main_method)

        decode_s, _, audio = timed(lambda: decode_audio(wav), args.repeat)
        prepared = stages.prepare(audio, chunking)
        pitch_s = {}
        for method in methods:
            method_options = ConversionOptions(f0_method=method)
            pitch_s[method], _, _ = timed(lambda: stages.estimate_pitch(prepared.padded, estimator, method_options), args.repeat)
        walls, exact, out32 = conversion_runs(wav, voice, encoder, estimator, options, chunking, args.repeat)
        fast_lines = []
        if run_fast:
            fast_voice = load_voice(voice_path, device=device, dtype=fast_dtype)
            fast_encoder = encoder_for(encoder_config, device, fast_dtype)
            fast_walls, fast, out_fast = conversion_runs(wav, fast_voice, fast_encoder, estimator, options,
                                                         ChunkingConfig.for_device(device, fast_dtype), args.repeat)
            whole_fast = statistics.median(fast_walls)
            fast_lines = [f"Fast mode ({fast_name}), pitch `{args.main_method}`: {fmt(whole_fast)} s, RTF "
                          f"{whole_fast / duration:.3f}; features {fmt(fast['features'])} s, synthesize "
                          f"{fmt(fast['synthesize'])} s; SNR against fp32 {snr_db(out32, out_fast):.1f} dB."]
        else:
            fast_lines = [f"Fast mode ({fast_name}): not measured; this CPU has no native bf16 (AVX512-BF16 or AMX), "
                          "so torch would emulate it, many times slower than fp32."]
        load = voice_load_lines(voice_path, device, args.repeat)
        memory = decode_memory_lines(args.long_seconds, Path(tmp))
        profiled = profile_lines(audio, voice, encoder, estimator, options, chunking, args.top) if args.profile else []

    whole = statistics.median(walls)
    stage_rows = [("decode (WAV -> 16 kHz)", decode_s)]
    stage_rows += [(f"pitch: {m}" + (" (default)" if m == ConversionOptions().f0_method else ""), pitch_s[m]) for m in methods]
    stage_rows += [("prepare (fp32)", exact["prepare"]), (f"features ({encoder_name}, fp32)", exact["features"]),
                   ("synthesize (v2 40 kHz, fp32)", exact["synthesize"]), ("finish (fp32)", exact["finish"])]
    # Another method's whole conversion: the measured one with its pitch time swapped.
    others = {m: whole - exact["pitch"] + pitch_s[m] for m in methods if m != args.main_method}
    whole_rows = [(f"`{args.main_method}`", fmt(whole), f"{whole / duration:.3f}",
                   f"measured: decode + `convert()`, median of {plural(args.repeat, 'run')}")]
    whole_rows += [(f"`{m}`", fmt(s), f"{s / duration:.3f}", f"the `{args.main_method}` run with the `{m}` pitch row instead")
                   for m, s in sorted(others.items(), key=lambda kv: kv[1])]
    voice_name = "small test voice (v2 40 kHz layout, thin layers)" if args.small else "full-size v2 40 kHz voice"
    lines = [
        "## Engine: `python -m bench.bench_pipeline`",
        "",
        *provenance(command, [
            f"Input: a {duration:g} s espeak-ng speech clip; {voice_name} and {encoder_name}, random weights "
            f"(speed does not depend on the weights); exact fp32 on {device}; median of {plural(args.repeat, 'run')} after a warm-up",
        ]),
        "",
        *table(["stage", "seconds", "RTF"], [(name, fmt(s), f"{s / duration:.3f}") for name, s in stage_rows]),
        "",
        f"Whole conversion per pitch method (target: RTF below {TARGET_RTF} in exact fp32; "
        f"`{args.main_method}` {'meets' if whole / duration < TARGET_RTF else 'misses'} it):",
        "",
        *table(["pitch method", "seconds", "RTF", "how"], whole_rows),
        "",
        *fast_lines,
        "",
        *load,
        "",
        *memory,
    ]
    if profiled:
        lines += ["", *profiled]
    print("\n".join(lines))
    if args.write:
        write_section(args.write, SECTION, lines)


if __name__ == "__main__":
    main()

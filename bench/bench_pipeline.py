"""Time each stage of `rvc_pipeline.convert()` on a 16 s speech clip and print real-time factors.

    python bench/bench_pipeline.py [--seconds 16] [--threads 2] [--methods pm,harvest,...] [--repeat 2]

Uses a full-size v2 40 kHz voice and a full-size HuBERT-base encoder, both with random
weights (speed does not depend on the weights), and speech made by espeak-ng. Prints the
seconds and real-time factor (RTF = processing time / audio duration) of every stage and
pitch method, the whole conversion in exact fp32, and the fast mode (bf16 on CPU, fp16 on
CUDA) with its SNR against the fp32 output.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rvc_pipeline import ConversionOptions, PitchEstimator, decode_audio, encode_wav, load_voice  # noqa: E402
from rvc_pipeline import pipeline as stages  # noqa: E402
from rvc_pipeline.content import ContentEncoder, HubertConfig  # noqa: E402
from rvc_pipeline.demo import write_demo_voice  # noqa: E402
from rvc_pipeline.device import cpu_has_fast_bf16, resolve_device  # noqa: E402
from rvc_pipeline.options import ChunkingConfig  # noqa: E402

SR = 16000
TEXT = (
    "Retrieval based voice conversion turns one voice into another. "
    "It keeps the words, the timing and the melody, and changes who is speaking. "
)


def speech_clip(seconds: float) -> bytes:
    """WAV bytes of espeak-ng speech, looped to `seconds`."""
    wav = subprocess.run(["espeak-ng", "--stdout", "-s", "160", TEXT * 3], check=True, capture_output=True).stdout
    audio = decode_audio(wav)
    audio = np.resize(audio, int(seconds * SR))
    return encode_wav(audio, SR)


def timed(fn, repeat: int):
    """(median seconds, last result) of `repeat` calls after one warm-up call."""
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def full_size_encoder(device: torch.device, dtype: torch.dtype) -> ContentEncoder:
    torch.manual_seed(0)
    model = ContentEncoder(HubertConfig()).eval().requires_grad_(False)
    model.to(device=device, dtype=dtype)
    model.feature_extractor.norm.float()
    return model


def run_pipeline(audio, voice, encoder, estimator, options, chunking):
    """The stages of convert(), timed one by one. Returns (audio, {stage: seconds})."""
    times = {}
    t = time.perf_counter()
    prepared = stages.prepare(audio, chunking)
    times["prepare"] = time.perf_counter() - t
    t = time.perf_counter()
    pitch = stages.estimate_pitch(prepared.padded, estimator, options)
    times["pitch"] = time.perf_counter() - t
    times["features"] = times["synthesize"] = 0.0
    outputs = []
    for chunk in prepared.chunks:
        piece = prepared.chunk_audio(chunk)
        t = time.perf_counter()
        feats = stages.extract_features(encoder, piece, voice.version)
        times["features"] += time.perf_counter() - t
        t = time.perf_counter()
        outputs.append(
            stages.synthesize_chunk(
                voice, feats, pitch.slice(chunk), piece.shape[0], options, chunking, stages.chunk_seed(options.seed, chunk.index)
            )
        )
        times["synthesize"] += time.perf_counter() - t
    t = time.perf_counter()
    out, _ = stages.finish(outputs, prepared, voice.sample_rate, options)
    times["finish"] = time.perf_counter() - t
    return out, times


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = reference - test
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(np.sum(noise.astype(np.float64) ** 2), 1e-30)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default="pm,harvest,dio,fcpe,crepe-tiny,rmvpe")
    parser.add_argument("--main-method", default="pm", help="pitch method of the whole-conversion figures")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    fast_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    run_fast = device.type == "cuda" or cpu_has_fast_bf16()

    print(f"machine: {torch.get_num_threads()} torch threads, device {device}, torch {torch.__version__}")
    wav = speech_clip(args.seconds)
    duration = args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        voice_path = write_demo_voice(Path(tmp) / "v2-40k.pth")
        voice = load_voice(voice_path, device=device, dtype=torch.float32)
        fast_voice = load_voice(voice_path, device=device, dtype=fast_dtype) if run_fast else None
        rmvpe = None
        if "rmvpe" in args.methods:
            from tests.factories.rmvpe import write_random_rmvpe

            rmvpe = write_random_rmvpe(Path(tmp) / "rmvpe.pt")
        estimator = PitchEstimator(device=device, rmvpe_path=rmvpe)
        encoder = full_size_encoder(device, torch.float32)
        fast_encoder = full_size_encoder(device, fast_dtype) if run_fast else None

        rows = []
        decode_s, audio = timed(lambda: decode_audio(wav), args.repeat)
        rows.append(("decode (WAV -> 16 kHz)", decode_s))
        chunking = ChunkingConfig.for_device(device, torch.float32)
        prepared = stages.prepare(audio, chunking)
        for method in args.methods.split(","):
            options = ConversionOptions(f0_method=method)
            seconds, _ = timed(lambda: stages.estimate_pitch(prepared.padded, estimator, options), args.repeat)
            rows.append((f"pitch: {method}", seconds))

        options = ConversionOptions(f0_method=args.main_method)
        exact = {}
        for _ in range(args.repeat + 1):
            out32, times = run_pipeline(audio, voice, encoder, estimator, options, chunking)
            for k, v in times.items():
                exact.setdefault(k, []).append(v)
        for k in ("prepare", "features", "synthesize", "finish"):
            rows.append((f"{k} (fp32)", statistics.median(exact[k][1:])))
        fast = {}
        for _ in range(args.repeat + 1 if run_fast else 0):
            out_fast, times = run_pipeline(audio, fast_voice, fast_encoder, estimator, options, chunking)
            for k, v in times.items():
                fast.setdefault(k, []).append(v)
        for k in ("features", "synthesize") if run_fast else ():
            rows.append((f"{k} ({str(fast_dtype).split('.')[-1]})", statistics.median(fast[k][1:])))

    print(f"\n{duration:.0f} s clip, v2 40 kHz voice, HuBERT base (random weights), median of {args.repeat}")
    print(f"{'stage':34} {'seconds':>8} {'RTF':>7}")
    for name, seconds in rows:
        print(f"{name:34} {seconds:8.3f} {seconds / duration:7.3f}")
    total32 = sum(statistics.median(v[1:]) for v in exact.values())
    total_fast = sum(statistics.median(v[1:]) for v in fast.values()) if run_fast else 0.0
    print(f"\nwhole conversion, pitch '{args.main_method}', decode included:")
    print(f"  fp32 (exact): {decode_s + total32:7.3f} s  RTF {(decode_s + total32) / duration:.3f}")
    if not run_fast:
        print("  fast (bf16): skipped -- this CPU has no native bf16 (AVX512-BF16/AMX); torch would emulate it")
        return
    print(
        f"  fast ({str(fast_dtype).split('.')[-1]}):  {decode_s + total_fast:7.3f} s  RTF {(decode_s + total_fast) / duration:.3f}"
        f"  SNR vs fp32 {snr_db(out32, out_fast):.1f} dB"
    )


if __name__ == "__main__":
    main()

"""glibc's malloc against the jemalloc Ray ships, on the work each kind of replica does.

    python -m bench.bench_allocator [--repeat 5] [--clip-seconds 4] [--write docs/performance.md]

Each allocator runs in fresh processes (jemalloc preloaded as `serve_app.heap.allocator_env`
does for a replica), alternating, each with one torch thread as replicas have:
- a whole conversion (`convert`, pm, the untrained demo voice (v2 40 kHz) and the small demo
  content encoder): mostly the VoiceSynthesizer's and PitchExtractor's work;
- content features of the clip with a full-size HuBERT base (random weights): the
  ContentFeatures replica's work;
- the ingress's own work on one request: decode the upload, cut it into chunks, join and
  finish the output, encode WAV.
Both free their C heap after each run as the replicas do (`release_free_heap`). Prints the
median seconds per run of each, and the slowdown of jemalloc against glibc. These figures
decide which deployments default to jemalloc (serve_app/config.py `DEPLOYMENT_DEFAULTS`);
the memory side is `python -m load_tests.reliability memory` (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.report import REPO_ROOT, command_line, provenance, table, write_section

ALLOCATORS = ("system", "jemalloc")


def child(repeat: int, clip_seconds: float) -> dict:
    """Runs in a fresh process: seconds per run of a whole conversion and of the ingress's work."""
    import tempfile

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from rvc_pipeline import (ConversionOptions, PitchEstimator, convert, extract_features, finish,
                              load_content_encoder, load_voice, prepare)
    from rvc_pipeline.audio import decode_audio
    from rvc_pipeline.demo import write_demo_assets
    from rvc_pipeline.output_format import encode_audio
    from rvc_pipeline.testing.audio import voiced_clip, wav_bytes
    from rvc_pipeline.testing.hubert import BASE_CONFIG, write_fairseq_hubert
    from serve_app.heap import release_free_heap, running_allocator

    folder = Path(tempfile.gettempdir()) / "rvc-bench-allocator"
    assets = write_demo_assets(folder / "demo")
    voice, encoder = load_voice(assets.voice_path), load_content_encoder(assets.encoder_path)
    hubert_path = folder / "hubert_base.pt"
    if not hubert_path.exists():
        write_fairseq_hubert(hubert_path, config=BASE_CONFIG)
    hubert = load_content_encoder(hubert_path)
    estimator, options = PitchEstimator(), ConversionOptions(f0_method="pm")
    audio = voiced_clip(clip_seconds)
    upload = wav_bytes(audio)
    converted = convert(audio, voice, encoder, estimator, options).audio  # warm-up, and the output to finish

    def conversion() -> None:
        convert(audio, voice, encoder, estimator, options)

    def features() -> None:
        extract_features(hubert, audio, "v2")

    def ingress_work() -> None:
        prepared = prepare(decode_audio(upload))
        pieces = np.array_split(converted, len(prepared.chunks))
        out, rate = finish(pieces, prepared, voice.sample_rate, options)
        encode_audio(out, rate, "wav")

    result: dict = {"allocator": running_allocator()}
    for name, work, runs in (("conversion", conversion, repeat), ("features", features, repeat),
                             ("ingress", ingress_work, repeat * 20)):
        work()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            work()
            release_free_heap()
            times.append(time.perf_counter() - started)
        result[name] = statistics.median(times)
    return result


def run_child(allocator: str, repeat: int, clip_seconds: float) -> dict:
    from serve_app.heap import process_env_with

    env = process_env_with(allocator)  # type: ignore[arg-type]
    done = subprocess.run([sys.executable, "-m", "bench.bench_allocator", "--child", "--repeat", str(repeat),
                           "--clip-seconds", str(clip_seconds)], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed conversions per process (the ingress work: 20x)")
    parser.add_argument("--rounds", type=int, default=2, help="processes per allocator, alternating")
    parser.add_argument("--clip-seconds", type=float, default=4.0)
    parser.add_argument("--write", type=Path, help="put the section into this markdown file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.repeat, args.clip_seconds)))
        return 0

    from serve_app.heap import bundled_jemalloc

    if bundled_jemalloc() is None:
        print("this Ray has no ray/core/libjemalloc.so: nothing to compare")
        return 1
    runs: dict[str, list[dict]] = {name: [] for name in ALLOCATORS}
    for _ in range(args.rounds):
        for name in ALLOCATORS:
            runs[name].append(run_child(name, args.repeat, args.clip_seconds))
            if runs[name][-1]["allocator"] != name:
                raise SystemExit(f"asked for {name}, the child ran on {runs[name][-1]['allocator']}")
    works = ("conversion", "features", "ingress")
    median = {name: {work: statistics.median(r[work] for r in runs[name]) for work in works} for name in ALLOCATORS}
    rows = [[name, f"{median[name]['conversion']:.3f}", f"{median[name]['features']:.3f}",
             f"{median[name]['ingress'] * 1000:.2f}"] for name in ALLOCATORS]
    slower = {work: median["jemalloc"][work] / median["system"][work] for work in works}
    rows.append(["jemalloc / glibc", *[f"{slower[work]:.2f}x" for work in works]])
    lines = [
        "## The replicas' C heap allocator: `python -m bench.bench_allocator`",
        "",
        *provenance(command_line("bench.bench_allocator", argv), [
            f"Work: a whole {args.clip_seconds:g} s conversion (pm, the untrained demo voice (v2 40 kHz) and demo content "
            f"encoder), the clip's content features with a full-size HuBERT base (random weights), and the ingress's "
            f"own work on that request (decode, chunk, finish, encode WAV); 1 torch thread; "
            f"the C heap freed after each run as replicas do; median over {args.rounds} fresh processes per allocator "
            f"(alternating) of each one's median of {args.repeat} runs ({args.repeat * 20} of the ingress's work)",
        ]),
        "",
        *table(["allocator", "conversion, s", "HuBERT base features, s", "ingress work, ms"], rows),
    ]
    print("\n".join(lines))
    if args.write:
        write_section(args.write, "bench_allocator", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

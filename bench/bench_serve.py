"""Time a 10 s conversion through the HTTP service against the same work done in-process.

    python -m bench.bench_serve [--models-dir DIR] [--repeat 3] [--write docs/performance.md]

The in-process run does what the graph does, in this process: decode, prepare, then pitch
estimation in one worker thread while content features are extracted in another (as the
PitchExtractor and ContentFeatures replicas run side by side), synthesis of each chunk
once its features and the pitch are ready, finish and WAV encoding, with 1 torch thread
per worker as in every replica. Then it starts a local Ray cluster and the app (CPU, 1
torch thread per replica), posts the same clip to /convert, and prints both medians and
the serving overhead (target: < 10 % + 50 ms) as Markdown; `--write FILE` puts it
between FILE's bench_serve markers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rvc_pipeline.constants import SAMPLE_RATE
from rvc_pipeline.testing.audio import espeak_speech, wav_bytes

from .report import command_line, provenance, table, write_section

SECTION = "bench_serve"
#: Serving overhead budget: this share of the in-process time plus a fixed allowance.
BUDGET_SHARE, BUDGET_FIXED_S = 0.10, 0.050
#: Torch threads in every replica and in each in-process worker.
TORCH_THREADS = 1


def _speech_10s() -> np.ndarray:
    text = "The quick brown fox jumps over the lazy dog. " * 4
    return np.resize(espeak_speech(text, speed_wpm=150), SAMPLE_RATE * 10)


def _models(root: Path) -> tuple[Path, Path]:
    """A random v2 40k voice (real size) and the small demo HuBERT, unless a folder is given."""
    from rvc_pipeline.demo import write_demo_encoder, write_demo_voice

    write_demo_voice(root / "bench.pth")
    return root, write_demo_encoder(root / "assets" / "hubert_base")


def _timed_into(times: dict[str, float], stage: str, fn: Callable[..., Any], *args: Any) -> Any:
    started = time.perf_counter()
    try:
        return fn(*args)
    finally:
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - started


class GraphInProcess:
    """The graph's conversion in one process: pitch and features in parallel threads, synthesis per chunk."""

    def __init__(self, voice: Any, encoder: Any, estimator: Any) -> None:
        import torch

        self.voice, self.encoder, self.estimator = voice, encoder, estimator
        init = lambda: torch.set_num_threads(TORCH_THREADS)  # noqa: E731 -- per worker, as per replica
        self.pitch_worker = ThreadPoolExecutor(1, thread_name_prefix="pitch", initializer=init)
        self.content_worker = ThreadPoolExecutor(1, thread_name_prefix="content", initializer=init)

    def convert(self, upload: bytes, options: Any) -> tuple[bytes, dict[str, float]]:
        """WAV bytes of the converted upload, and seconds by stage (as the X-Stage-Times header)."""
        from rvc_pipeline import pipeline as stages
        from rvc_pipeline.audio import decode_audio, encode_wav
        from rvc_pipeline.options import ChunkingConfig

        voice, times = self.voice, {}
        audio16k = _timed_into(times, "decode", decode_audio, upload)
        chunking = ChunkingConfig.for_device(voice.device, voice.dtype)
        prepared = _timed_into(times, "prepare", stages.prepare, audio16k, chunking)
        pitch = None
        if voice.f0:
            pitch = self.pitch_worker.submit(_timed_into, times, "pitch", stages.estimate_pitch,
                                             prepared.padded, self.estimator, options)
        features = [self.content_worker.submit(_timed_into, times, "features", stages.extract_features,
                                               self.encoder, prepared.chunk_audio(chunk), voice.version)
                    for chunk in prepared.chunks]
        outputs = []
        for chunk, feats in zip(prepared.chunks, features):
            track = pitch.result().slice(chunk) if pitch is not None else None
            outputs.append(_timed_into(times, "synthesize", stages.synthesize_chunk, voice, feats.result(), track,
                                       prepared.chunk_audio(chunk).shape[0], options, chunking,
                                       stages.chunk_seed(options.seed, chunk.index)))
        audio, rate = _timed_into(times, "finish", stages.finish, outputs, prepared, voice.sample_rate, options)
        return _timed_into(times, "encode", encode_wav, audio, rate), times

    def close(self) -> None:
        self.pitch_worker.shutdown()
        self.content_worker.shutdown()


def _stage_text(times: dict[str, float]) -> str:
    return ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in times.items())


def _runs(fn: Callable[[], dict[str, float]], repeat: int) -> tuple[list[float], dict[str, float]]:
    """Wall seconds of `repeat` calls after a warm-up one, and the last call's stage times."""
    walls, stages = [], {}
    for i in range(repeat + 1):
        started = time.perf_counter()
        stages = fn()
        if i:  # the first call warms caches (and, over HTTP, loads the voice)
            walls.append(time.perf_counter() - started)
    return walls, stages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=None, help="use this folder's voice --voice instead")
    parser.add_argument("--voice", default="bench")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--f0-method", default="harvest")
    parser.add_argument("--write", type=Path, metavar="FILE", help="write the figures between FILE's bench_serve markers")
    args = parser.parse_args(argv)
    command = command_line("bench.bench_serve", argv)

    import torch

    from rvc_pipeline import ConversionOptions, ModelsFolder, PitchEstimator, load_content_encoder, load_voice
    from rvc_pipeline.retrieval import set_search_threads
    from serve_app import testing as service  # defaults RAY_AUTH_MODE before Ray is imported

    root = args.models_dir or _models(Path(tempfile.mkdtemp(prefix="rvc-bench-")))[0]
    folder = ModelsFolder(root)
    entry, encoder_path = folder.find_voice(args.voice), folder.content_encoder_path()
    upload = wav_bytes(_speech_10s())

    torch.set_num_threads(TORCH_THREADS)
    set_search_threads(TORCH_THREADS)  # FAISS, as every replica sets it
    voice = load_voice(entry.pth_path, entry.index_path, name=entry.name, device="cpu")
    graph = GraphInProcess(voice, load_content_encoder(encoder_path, device="cpu"), PitchEstimator(device="cpu"))
    options = ConversionOptions(f0_method=args.f0_method)
    try:
        local, local_stages = _runs(lambda: graph.convert(upload, options)[1], args.repeat)
    finally:
        graph.close()

    import httpx

    from serve_app.config import AppArgs

    app = AppArgs(models_dir=str(root), device="cpu", torch_threads=TORCH_THREADS, demo_fallback=False)
    url = service.start_local_service(app, num_cpus=2)
    try:
        service.wait_healthy(url)
        with httpx.Client(timeout=600) as client:
            def post() -> dict[str, float]:
                r = client.post(f"{url}/convert", data={"voice_name": args.voice, "f0_method": args.f0_method},
                                files={"audio": ("a.wav", upload, "audio/wav")})
                r.raise_for_status()
                pairs = (item.split("=") for item in r.headers["x-stage-times"].split(";") if "=" in item)
                return {k.strip(): float(v) for k, v in pairs}

            remote, remote_stages = _runs(post, args.repeat)
    finally:
        service.stop_local_service()

    t_local, t_http = statistics.median(local), statistics.median(remote)
    overhead = t_http - t_local
    budget = BUDGET_SHARE * t_local + BUDGET_FIXED_S
    runs = lambda xs: ", ".join(f"{x:.3f}" for x in xs)  # noqa: E731
    lines = [
        "## Service overhead: `python -m bench.bench_serve`",
        "",
        *provenance(command, [
            f"Input: a 10 s espeak-ng clip, `{args.f0_method}`, voice `{args.voice}` "
            + ("(random weights, real v2 40 kHz size) and the small demo content encoder" if args.models_dir is None
               else f"from {args.models_dir}"),
            f"In-process: pitch and features in parallel worker threads, synthesis per chunk, decode and WAV "
            f"encoding included, {TORCH_THREADS} torch thread per worker; HTTP: a local Ray cluster (2 CPUs), "
            f"{TORCH_THREADS} torch thread per replica",
        ]),
        "",
        *table(["path", f"median of {args.repeat}, s", "runs, s"], [
            ("in-process, as the graph runs it", f"{t_local:.3f}", runs(local)),
            ("HTTP `/convert` through the graph", f"{t_http:.3f}", runs(remote)),
        ]),
        "",
        f"Overhead: {overhead * 1000:+.0f} ms ({overhead / t_local * 100:+.1f} %) against a budget of "
        f"{BUDGET_SHARE:.0%} + {BUDGET_FIXED_S * 1000:.0f} ms = {budget * 1000:.0f} ms: "
        f"{'within the target' if overhead <= budget else 'over the target'}.",
        "",
        f"Stage times of the last run: in-process {_stage_text(local_stages)}; "
        f"over HTTP (the X-Stage-Times header) {_stage_text(remote_stages)}.",
    ]
    print("\n".join(lines))
    if args.write:
        write_section(args.write, SECTION, lines)


if __name__ == "__main__":
    main()

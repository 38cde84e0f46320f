"""The GPU check, in one run: CUDA tests, fp32/fp16 speed and agreement, the service with GPU
fractions under Locust at 8, 32 and 64 users, and docs/gpu.md written from the figures.

    bash bench/gpu_check.sh              # on a GPU machine (about 6 minutes on an H100/H200)
    bash bench/gpu_check.sh --dry-run    # the same steps on the CPU with tiny sizes (CI runs it)

Steps:
1. `pytest -m cuda`: the tests that need a GPU (all skip on a CPU).
2. One conversion of a 16 s espeak-ng clip (full-size v2 40 kHz voice, HuBERT base, random
   weights; pitch rmvpe on a GPU) in fp32 and in fp16: RTF of each and fp16's SNR against
   fp32 (the GPU targets: RTF <= 0.01 in fp16).
3. The service on a private Ray cluster with GPU fractions (content 0.2, pitch 0.1 and two
   synthesis replicas at 0.3 each: four replicas share one GPU), fp16, batching on.
4. Locust at 8, 32 and 64 users (`load_tests.throughput`): audio seconds converted per
   second, p50 and p95 latency (target: >= 300 audio s/s at 64 users on one GPU).
5. docs/gpu.md (with --dry-run: a file in the output folder, never docs/).

--dry-run: CPU, a thin voice and the demo encoder, a 2 s clip, pm, 1 and 2 users for a
few seconds each, and bf16 where fp16 would be. It proves the script, not the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "gpu.md"
SECTION = "gpu_check"
#: GPU targets from the issue (H100/H200 class).
TARGET_RTF_FP16 = 0.01
TARGET_AUDIO_S_PER_S = 300.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a real run and a dry run differ in."""

    device: str
    fast_precision: str  # fp16 on CUDA; bf16 in a CPU dry run
    clip_s: float
    small: bool
    f0_method: str
    users: tuple[int, ...]
    warmup_s: float
    window_s: float
    repeat: int


REAL = Settings("cuda", "fp16", 16.0, False, "rmvpe", (8, 32, 64), 15.0, 30.0, 3)
# 10 s warm-up and 30 s windows: on a loaded 2-core machine a fresh service's first requests
# take longer than a 20 s window, which then measured nothing.
DRY = Settings("cpu", "bf16", 2.0, True, "pm", (1, 2), 10.0, 30.0, 1)


def step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def run_cuda_tests() -> str:
    """pytest -m cuda; returns its last line ("3 passed", "6 skipped", ...)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
                          cwd=REPO, capture_output=True, text=True)
    print(done.stdout[-3000:], done.stderr[-2000:], flush=True)
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    if done.returncode not in (0, 5):  # 5: nothing collected
        raise SystemExit(f"the CUDA tests failed: {summary}")
    return summary


def precision_rows(s: Settings, work: Path) -> list[tuple[str, str, str, str]]:
    """(precision, seconds, RTF, SNR vs fp32) of one conversion per precision."""
    import torch

    from rvc_pipeline import ChunkingConfig, ConversionOptions, PitchEstimator, load_voice
    from rvc_pipeline.content import HubertConfig
    from rvc_pipeline.demo import DEMO_ENCODER_CONFIG
    from rvc_pipeline.device import resolve_dtype
    from rvc_pipeline.testing.audio import snr_db
    from rvc_pipeline.testing.rmvpe import write_random_rmvpe

    from .bench_pipeline import conversion_runs, encoder_for, speech_clip, write_voice

    device = torch.device(s.device)
    wav = speech_clip(s.clip_s)
    voice_path = write_voice(work / "voice.pth", s.small)
    rmvpe = write_random_rmvpe(work / "rmvpe.pt") if s.f0_method == "rmvpe" else None
    estimator = PitchEstimator(device=device, rmvpe_path=rmvpe)
    config = DEMO_ENCODER_CONFIG if s.small else HubertConfig()
    options = ConversionOptions(f0_method=s.f0_method)
    rows, reference = [], None
    for precision in ("fp32", s.fast_precision):
        dtype = resolve_dtype(precision, device)
        voice = load_voice(voice_path, device=device, dtype=dtype)
        encoder = encoder_for(config, device, dtype)
        walls, _, audio = conversion_runs(wav, voice, encoder, estimator, options,
                                          ChunkingConfig.for_device(device, dtype), s.repeat)
        seconds = statistics.median(walls)
        reference = audio if reference is None else reference
        snr = "-" if precision == "fp32" else f"{snr_db(reference, audio):.1f}"
        rows.append((precision, f"{seconds:.3f}", f"{seconds / s.clip_s:.4f}", snr))
        print(f"  {precision}: {seconds:.3f} s, RTF {seconds / s.clip_s:.4f}, SNR vs fp32 {snr}", flush=True)
        del voice, encoder
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def service_args(s: Settings, models: Path):
    """AppArgs: GPU fractions, two synthesis replicas sharing the GPU, the fast precision, batching."""
    from serve_app.config import DeploymentSettings
    from serve_app.testing import app_args

    def deployment(gpus: float, replicas: int = 1, ongoing: int = 64) -> DeploymentSettings:
        return DeploymentSettings(num_cpus=0.25 if s.small else 1, num_gpus=gpus, num_replicas=replicas,
                                  max_ongoing_requests=ongoing, graceful_shutdown_timeout_s=2)

    threads = 1 if s.small else 2
    args = app_args(models, device=s.device, precision=s.fast_precision if s.device == "cuda" else "fp32",
                    torch_threads=threads, batching="on", voices_per_replica=4,
                    rmvpe=str(models / "assets" / "rmvpe.pt") if s.f0_method == "rmvpe" else None,
                    limits={"max_in_flight": 128, "request_timeout_s": 300})
    return args.model_copy(update={
        "ingress": deployment(0.0, 2 if not s.small else 1, 128),
        "content": deployment(0.2), "pitch": deployment(0.1), "synthesizer": deployment(0.3, 2),
    })


def write_models(s: Settings, root: Path) -> Path:
    """The load test's voices; on a real run a full-size HuBERT base and an rmvpe.pt beside them."""
    from serve_app.testing import write_test_models

    models = write_test_models(root)
    if s.f0_method == "rmvpe":
        from rvc_pipeline.testing.rmvpe import write_random_rmvpe

        write_random_rmvpe(models / "assets" / "rmvpe.pt")
    if not s.small:
        import shutil

        from rvc_pipeline.content import HubertConfig
        from rvc_pipeline.testing.hubert import write_fairseq_hubert

        shutil.rmtree(models / "assets" / "hubert_base")
        write_fairseq_hubert(models / "assets" / "hubert_base.pt", small=False, config=HubertConfig())
    return models


def load_rows(s: Settings, work: Path) -> tuple[list[list[str]], dict]:
    """Start the service with GPU fractions, Locust at each user count; rows and /health."""
    import httpx

    from load_tests.throughput import run_fixed_users
    from serve_app.testing import local_service

    models = write_models(s, work / "models")
    args = service_args(s, models)
    wanted = sum(d.num_cpus * d.num_replicas for d in (args.ingress, args.content, args.pitch, args.synthesizer))
    # Logical CPUs: at least what the replicas reserve, or Serve would wait for them forever.
    with local_service(args, num_cpus=max(float(os.cpu_count() or 2), wanted)) as url:
        print(f"  service at {url}", flush=True)
        rows = []
        for users in s.users:
            m = run_fixed_users(url, users, s.warmup_s, s.window_s, s.f0_method, voices="alice,bob")
            print(f"  {users} users: {m.audio_s_per_s:.2f} audio s/s, p50 {m.p50_s:.2f} s, p95 {m.p95_s:.2f} s "
                  f"({m.ok} ok, {m.failed} failed)", flush=True)
            rows.append(m.row())
        health = httpx.get(f"{url}/health", timeout=30).json()
    return rows, health


def write_report(path: Path, lines: list[str]) -> None:
    """Put `lines` between the gpu_check markers of `path` (a new file holds only them)."""
    from .report import begin_marker, end_marker, write_section

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{begin_marker(SECTION)}\n{end_marker(SECTION)}\n", encoding="utf-8")
    write_section(path, SECTION, lines)


def machine_lines() -> list[str]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return [f"GPU: {gpu}; CUDA {torch.version.cuda or 'none'}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script, not the figures")
    parser.add_argument("--out", type=Path, help="report file (default docs/gpu.md; with --dry-run <tmp>/gpu.md)")
    args = parser.parse_args(argv)
    import torch

    s = DRY if args.dry_run else REAL
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA GPU here; run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    from .report import provenance, table

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        out = args.out or (work / "gpu.md" if args.dry_run else DOC)
        t = step("1/4 CUDA tests (pytest -m cuda)")
        tests = run_cuda_tests()
        tests_s = time.monotonic() - t
        t = step(f"2/4 fp32 and {s.fast_precision}: one {s.clip_s:g} s conversion each")
        precision = precision_rows(s, work)
        precision_s = time.monotonic() - t
        t = step(f"3-4/4 the service with GPU fractions, Locust at {', '.join(map(str, s.users))} users")
        load, health = load_rows(s, work)
        load_s = time.monotonic() - t
        synth = health.get("synthesis_replicas", [])
        memory = [f"{r.get('replica', '?')}: "
                  + (f"GPU memory allocated {r['gpu_allocated_mb']} MB, reserved {r['gpu_reserved_mb']} MB; "
                     if "gpu_allocated_mb" in r else "")
                  + "voice weights " + (", ".join(f"{v['name']} {v.get('weights_mb')} MB" for v in r.get("voices", [])) or "none")
                  + f"; {r.get('batches', 0)} batches of {r.get('batched_chunks', 0)} chunks" for r in synth]
        fast_rtf = float(precision[-1][2])
        best = max((float(row[1]) for row in load), default=0.0)
        lines = [
            "## `bash bench/gpu_check.sh`" + (" (DRY RUN on the CPU: the figures say nothing)" if args.dry_run else ""),
            "",
            *provenance("bash bench/gpu_check.sh" + (" --dry-run" if args.dry_run else ""), machine_lines()),
            "",
            f"1. CUDA tests (`pytest -m cuda`): {tests} ({tests_s:.0f} s).",
            f"2. One conversion of a {s.clip_s:g} s speech clip, {'thin test voice and demo encoder' if s.small else 'full-size v2 40 kHz voice and HuBERT base'} "
            f"(random weights), pitch `{s.f0_method}`, median of {s.repeat} after a warm-up ({precision_s:.0f} s):",
            "",
            *table(["precision", "seconds", "RTF", "SNR vs fp32 (dB)"], precision),
            "",
            f"   {s.fast_precision} RTF {fast_rtf:.4f}: target <= {TARGET_RTF_FP16} "
            f"{'met' if fast_rtf <= TARGET_RTF_FP16 else 'NOT met'}.",
            f"3. The service: content 0.2 GPU, pitch 0.1, two synthesis replicas at 0.3 each (one GPU shared by "
            f"four replicas), {s.fast_precision if s.device == 'cuda' else 'fp32'}, batching on; Locust users post "
            f"1-3 s clips (voices alice and bob, pitch `{s.f0_method}`), {s.warmup_s:g} s discarded and {s.window_s:g} s "
            f"measured per user count ({load_s:.0f} s in all):",
            "",
            *table(["users", "audio s per s", "requests per s", "p50 latency s", "p95 latency s", "ok", "failed"], load),
            "",
            f"   Best throughput {best:.1f} audio s per s: target >= {TARGET_AUDIO_S_PER_S:g} at 64 users "
            f"{'met' if best >= TARGET_AUDIO_S_PER_S else 'NOT met'}.",
            "4. Synthesis replicas after the load (from /health): " + ("; ".join(memory) or "none reported") + ".",
            "",
            f"Whole check: {time.monotonic() - started:.0f} s.",
            "",
        ]
        print("\n".join(lines))
        write_report(out, lines)
        print(f"wrote {out}" + (" (temporary)" if args.dry_run and args.out is None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synthesis speed of this checkout against another commit's, side by side, and their agreement.

    git worktree add ../rvc-8b72235 8b72235
    python -m bench.bench_synth --baseline ../rvc-8b72235 [--seconds 16] [--threads 2] [--repeat 3]
                                [--write docs/performance.md]
    python -m bench.bench_synth --baseline . --small --seconds 2 --repeat 1   # checks the script

For a full-size v2 40 kHz and a full-size v1 48 kHz voice (random weights: speed does not
depend on them), one chunk of `--seconds` of content features and a voiced/unvoiced F0
contour is synthesised by `synthesize_chunk` (exact fp32, the CPU chunking rule, noise
zeroed) in a fresh process per run, alternating between the two checkouts (`bench/
synth_worker.py` imports each checkout's own `rvc_pipeline`). It prints the median seconds
of each, the speed-up, and the SNR of this checkout's output against the baseline's: the
same function computed differently should agree far above 60 dB.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from rvc_pipeline.testing.audio import snr_db

from .bench_pipeline import SMALL_VOICE
from .report import command_line, provenance, table, write_section

SECTION = "bench_synth"
REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("synth_worker.py")
#: The voices measured: (version, sample rate).
VOICES = (("v2", 40000), ("v1", 48000))
#: Speed-up over the baseline that the fp32 work aims at, and the agreement it must keep.
TARGET_SPEEDUP = 1.25
TARGET_SNR_DB = 60.0


def chunk_inputs(seconds: float, content_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A padded chunk of `seconds` of input: features (T, C) at 50/s, coarse and f0 at 100/s.

    The F0 contour glides between 110 and 330 Hz with an unvoiced 150 ms gap every second,
    as speech has; features are unit-variance noise (their values do not change the cost).
    """
    from rvc_pipeline.constants import SAMPLE_RATE, WINDOW
    from rvc_pipeline.options import ChunkingConfig
    from rvc_pipeline.pitch import coarse_f0

    samples = int((seconds + 2 * ChunkingConfig.CPU_FP32.x_pad) * SAMPLE_RATE)
    frames = samples // WINDOW + 1
    content_frames = (samples - 400) // 320 + 1
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / 100.0
    f0 = (220 + 110 * np.sin(2 * np.pi * 0.3 * t)).astype(np.float32)
    f0[(t % 1.0) > 0.85] = 0.0
    return {
        "features": rng.standard_normal((content_frames, content_dim)).astype(np.float32),
        "coarse": np.asarray(coarse_f0(f0), dtype=np.int64),
        "f0": f0,
        "samples": np.array(samples),
    }


def write_voice(path: Path, version: str, sr: int, small: bool) -> Path:
    from rvc_pipeline.testing.voices import standard_config, write_webui_voice

    config = standard_config(version, sr, 1)
    if small:
        config = dataclasses.replace(config, **SMALL_VOICE)
    return write_webui_voice(path, version, sr, f0=True, config=config)


def run_worker(repo: Path, inputs: Path, out: Path, threads: int) -> float:
    """Seconds of one timed synthesis (after a warm-up) in a fresh process importing `repo`'s code."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(WORKER), str(repo), str(inputs), str(out), "--threads", str(threads)],
                          capture_output=True, text=True, env=env, cwd=repo)
    if done.returncode != 0:
        raise SystemExit(f"the synthesis worker failed for {repo}:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(report["module"]) != repo.resolve():
        raise SystemExit(f"the worker imported {report['module']}, not {repo}")
    return report["seconds"][0]


def revision(repo: Path) -> str:
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (done.stdout.strip() or "unknown") + (" + uncommitted changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="checkout of the commit to compare with")
    parser.add_argument("--seconds", type=float, default=16.0, help="audio seconds in the chunk (plus 1 s padding each side)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each checkout per voice, alternating")
    parser.add_argument("--small", action="store_true", help="thin voices: checks the script, not speed")
    parser.add_argument("--write", type=Path, metavar="FILE", help="write the table between FILE's bench_synth markers")
    args = parser.parse_args(argv)
    baseline = args.baseline.resolve()
    if not (baseline / "rvc_pipeline").is_dir():
        parser.error(f"{args.baseline} is not a checkout of this project (no rvc_pipeline/)")
    checkouts = {"baseline": baseline, "this": REPO}
    rows, passed = [], True
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        for version, sr in VOICES:
            voice = write_voice(Path(tmp) / f"{version}-{sr}.pth", version, sr, args.small)
            inputs = Path(tmp) / f"{version}-{sr}.npz"
            np.savez(inputs, voice=str(voice), **chunk_inputs(args.seconds, 256 if version == "v1" else 768))
            seconds: dict[str, list[float]] = {name: [] for name in checkouts}
            outs = {name: Path(tmp) / f"{version}-{sr}-{name}.npy" for name in checkouts}
            for r in range(args.repeat):
                order = list(checkouts) if r % 2 == 0 else list(reversed(checkouts))
                for name in order:
                    seconds[name].append(run_worker(checkouts[name], inputs, outs[name], args.threads))
                    print(f"  {version} {sr}: {name} run {r + 1}: {seconds[name][-1]:.3f} s", flush=True)
            base, this = (statistics.median(seconds[n]) for n in ("baseline", "this"))
            agreement = snr_db(np.load(outs["baseline"]), np.load(outs["this"]))
            speedup = base / this
            ok = speedup >= TARGET_SPEEDUP and agreement >= TARGET_SNR_DB
            passed &= ok
            rows.append((f"{version} {sr // 1000} kHz", f"{base:.3f}", f"{this:.3f}", f"{speedup:.2f}x",
                         f"{agreement:.1f}", "PASS" if ok else "FAIL"))
    lines = [
        "## Synthesis against an earlier commit: `python -m bench.bench_synth`",
        "",
        *provenance(command_line("bench.bench_synth", argv), [
            f"Baseline: `{revision(baseline)}`; this: `{revision(REPO)}`",
            f"One chunk of {args.seconds:g} s (+1 s padding each side) through `synthesize_chunk`, exact fp32, "
            f"{args.threads} torch threads, noise zeroed; {'thin test voices' if args.small else 'full-size voices'}, "
            f"random weights; median of {args.repeat} runs per checkout, alternating, each in a fresh process "
            "after one warm-up call",
        ]),
        "",
        *table(["voice", "baseline s", "this s", "speed-up", "SNR vs baseline (dB)",
                f"target {TARGET_SPEEDUP}x, {TARGET_SNR_DB:g} dB"], rows),
    ]
    print("\n".join(lines))
    if args.write:
        write_section(args.write, SECTION, lines)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

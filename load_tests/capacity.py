"""Capacity planning: predict latency and throughput from measured stage costs, size a cluster.

    python -m load_tests.capacity validate [--users 1,2,4,8] [--write docs/capacity.md]
    python -m load_tests.capacity calibrate --url http://HEAD:8003 --cores 16 [--gpus 1] --out profile.json
    python -m load_tests.capacity predict --profile profile.json --users 8,32,64 [--cores 32] [--gpus 2]
    python -m load_tests.capacity size --profile profile.json --concurrent-users 1000 --clip-seconds 10 \\
        --period-s 60 [--cores-per-node 16] [--gpus-per-node 1]

**Calibrate** posts each load-test clip to a running service, one request at a time, and
reads X-Stage-Times: the seconds every stage computed (decode, prepare, pitch, features,
synthesize, finish, encode) and the client's latency. Stages that ran on a GPU (features
and synthesis, and rmvpe/crepe/fcpe pitch, on a GPU service) are GPU demand; the rest is CPU
demand. Costs are kept per audio second, so they scale to other clip lengths.

**Predict** treats the service under N Locust users as a closed queueing network solved by
exact mean-value analysis: the CPU cores are one queue (multi-server, Seidmann's
approximation: demand D/C queued plus D(C-1)/C of delay), the GPUs another, and a delay
station holds what no resource queues for (HTTP, Ray hops, the parallelism of pitch and
features): the one-user latency minus the queued demands. Users think USER_WAIT_S between
requests. It returns mean latency (compared with the measured p50) and throughput.

**Size** turns an open load (U users, each sending a clip of S seconds every P seconds) into
the cores, GPUs and nodes that keep every resource at most TARGET_UTILISATION busy, and
the replicas per deployment that implies at the profiled threads per replica.

**Validate** starts the local service (as the load test does), calibrates at one user,
predicts 1, 2, 4, 8 users, measures them with `load_tests.throughput` and compares: the
issue's bar is within 25 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from bench.report import table

from .load_plan import USER_WAIT_S

#: Stages each request runs, as X-Stage-Times names them.
STAGES = ("decode", "prepare", "pitch", "features", "synthesize", "finish", "encode")
#: Stages that run on the GPU when the service has one (pitch only for the neural methods).
GPU_STAGES = ("features", "synthesize")
GPU_PITCH_METHODS = ("rmvpe", "crepe", "crepe-tiny", "fcpe")
#: The busiest a resource may be in a sizing (queueing delay grows fast above it).
TARGET_UTILISATION = 0.7
#: The bar the predictions must meet against measured runs.
TOLERANCE = 0.25
#: Sequential posts per clip when calibrating (after one warm-up post of each).
CALIBRATION_ROUNDS = 3


@dataclasses.dataclass
class Profile:
    """Measured costs of one request, per audio second, on one machine and settings."""

    cpu_s_per_audio_s: float  # CPU seconds computed per audio second (summed over stages)
    gpu_s_per_audio_s: float  # GPU seconds per audio second (0 without a GPU)
    latency_s_per_audio_s: float  # one-user latency per audio second (client wall clock)
    latency_fixed_s: float  # one-user latency not proportional to length (fitted intercept)
    stage_s_per_audio_s: dict[str, float]
    cores: float
    gpus: int
    f0_method: str
    mean_clip_s: float
    machine: str = ""
    stage_cpu_s_per_audio_s: Optional[float] = None  # the stages' own sum, where cpu_s_per_audio_s was measured machine-wide

    def demands(self, audio_s: float) -> tuple[float, float, float]:
        """(CPU s, GPU s, one-user latency s) of one request of `audio_s` seconds."""
        latency = self.latency_fixed_s + self.latency_s_per_audio_s * audio_s
        return self.cpu_s_per_audio_s * audio_s, self.gpu_s_per_audio_s * audio_s, latency


@dataclasses.dataclass(frozen=True)
class Prediction:
    users: int
    latency_s: float
    requests_per_s: float
    audio_s_per_s: float
    cpu_utilisation: float
    gpu_utilisation: float


def gpu_stages(f0_method: str, gpus: int) -> tuple[str, ...]:
    """The stages that run on a GPU for this pitch method (none without a GPU)."""
    if gpus <= 0:
        return ()
    return GPU_STAGES + (("pitch",) if f0_method in GPU_PITCH_METHODS else ())


def fit_profile(samples: Sequence[tuple[float, float, dict[str, float]]], cores: float, gpus: int, f0_method: str,
                machine: str = "") -> Profile:
    """A Profile from (audio s, client latency s, {stage: s}) of sequential one-user requests.

    Stage costs are summed and divided by the total audio; latency is a least-squares line
    in the clip length (clips of one length only: no intercept)."""
    total_audio = sum(a for a, _, _ in samples)
    per_stage = {s: sum(st.get(s, 0.0) for _, _, st in samples) / total_audio for s in STAGES}
    on_gpu = gpu_stages(f0_method, gpus)
    gpu = sum(v for s, v in per_stage.items() if s in on_gpu)
    cpu = sum(v for s, v in per_stage.items() if s not in on_gpu)
    xs, ys = [a for a, _, _ in samples], [lat for _, lat, _ in samples]
    if len(set(xs)) > 1:
        slope, intercept = statistics.linear_regression(xs, ys)
    else:
        slope, intercept = sum(ys) / sum(xs), 0.0
    return Profile(cpu, gpu, slope, intercept, per_stage, cores, gpus, f0_method, statistics.fmean(xs), machine)


def predict(profile: Profile, users: int, *, audio_s: Optional[float] = None, cores: Optional[float] = None,
            gpus: Optional[int] = None, think_s: float = sum(USER_WAIT_S) / 2) -> Prediction:
    """Mean latency and throughput of `users` closed-loop users (exact MVA, Seidmann multi-server)."""
    audio_s = profile.mean_clip_s if audio_s is None else audio_s
    cores = profile.cores if cores is None else cores
    gpus = profile.gpus if gpus is None else gpus
    cpu_d, gpu_d, one_user = profile.demands(audio_s)
    queues = [(cpu_d, cores)] + ([(gpu_d, gpus)] if gpus > 0 and gpu_d > 0 else [])
    queued = [d / c for d, c in queues]  # per-request demand at each queue (Seidmann)
    delay = max(one_user - sum(queued), 0.0)  # the one-user latency not spent queueing
    lengths = [0.0] * len(queues)
    latency = throughput = 0.0
    for n in range(1, users + 1):
        residence = [q * (1 + length) for q, length in zip(queued, lengths)]
        latency = sum(residence) + delay
        throughput = n / (latency + think_s)
        lengths = [throughput * r for r in residence]
    return Prediction(users, latency, throughput, throughput * audio_s,
                      min(1.0, throughput * cpu_d / cores), min(1.0, throughput * gpu_d / gpus) if gpus else 0.0)


def size(profile: Profile, concurrent_users: int, clip_s: float, period_s: float, cores_per_node: float,
         gpus_per_node: int, threads_per_replica: int = 1) -> list[tuple[str, str]]:
    """Resources for an open load of `concurrent_users` each sending a `clip_s` clip every `period_s`."""
    rate = concurrent_users / period_s  # requests per second
    cpu_d, gpu_d, one_user = profile.demands(clip_s)
    cores = rate * cpu_d / TARGET_UTILISATION
    gpus = rate * gpu_d / TARGET_UTILISATION if profile.gpus > 0 else 0.0
    nodes = max(math.ceil(cores / cores_per_node), math.ceil(gpus / gpus_per_node) if gpus and gpus_per_node else 0)
    rows = [
        ("load", f"{rate:.2f} requests/s, {rate * clip_s:.1f} audio s per s"),
        ("CPU seconds per request", f"{cpu_d:.2f}"),
        ("GPU seconds per request", f"{gpu_d:.3f}" if profile.gpus else "none (CPU service)"),
        (f"cores at {TARGET_UTILISATION:.0%} busy", f"{math.ceil(cores)}"),
    ]
    if profile.gpus:
        rows.append((f"GPUs at {TARGET_UTILISATION:.0%} busy", f"{math.ceil(gpus)}"))
    rows.append((f"nodes of {cores_per_node:g} cores" + (f" and {gpus_per_node} GPU(s)" if profile.gpus else ""), str(nodes)))
    on_gpu = gpu_stages(profile.f0_method, profile.gpus)
    for deployment, stages in (("PitchExtractor", ("pitch",)), ("ContentFeatures", ("features",)),
                               ("VoiceSynthesizer", ("synthesize",)), ("Ingress", ("decode", "prepare", "finish", "encode"))):
        busy = rate * clip_s * sum(profile.stage_s_per_audio_s.get(s, 0.0) for s in stages)  # busy seconds per second
        if all(s in on_gpu for s in stages):
            rows.append((f"{deployment} replicas", f"GPU work ({busy:.2f} GPU-s/s): share the GPUs above with fractions"))
        else:
            replicas = math.ceil(busy / (TARGET_UTILISATION * threads_per_replica))
            rows.append((f"{deployment} replicas ({threads_per_replica} thread each)", str(max(1, replicas))))
    rows.append(("one-user latency of such a request", f"{one_user:.2f} s"))
    return rows


# ------------------------------------------------------------------ measuring


def machine_busy_s() -> Optional[float]:
    """CPU seconds this machine has spent busy since boot, all cores together (/proc/stat), or None."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def calibrate(url: str, cores: float, gpus: int, f0_method: str, rounds: int = CALIBRATION_ROUNDS,
              voices: Sequence[str] = (), same_machine: bool = False) -> Profile:
    """Post every load-test clip `rounds` times, one at a time (after a warm-up of each), and fit a Profile.

    With `same_machine` (the service runs here), the CPU demand is what the whole machine spent
    busy during the timed posts (/proc/stat) per audio second: that includes what the stage
    timings cannot see (Ray's processes, the HTTP proxy, serialisation, library threads).
    """
    import httpx

    from rvc_pipeline.testing.machine import machine_line
    from serve_app.http_utils import parse_stage_times

    from .clips import fetch_voices, make_clips, wav_seconds

    clips = make_clips()
    names = list(voices) or fetch_voices(url)
    samples = []
    busy_from = None
    with httpx.Client(timeout=600) as client:
        for r in range(rounds + 1):
            if r == 1:
                busy_from = machine_busy_s()
            for i, clip in enumerate(clips):
                started = time.perf_counter()
                response = client.post(f"{url}/convert", data={"voice_name": names[i % len(names)], "f0_method": f0_method},
                                       files={"audio": ("clip.wav", clip, "audio/wav")})
                latency = time.perf_counter() - started
                if response.status_code != 200:
                    raise RuntimeError(f"/convert answered {response.status_code}: {response.text[:300]}")
                if r > 0:
                    samples.append((wav_seconds(clip), latency, parse_stage_times(response.headers.get("x-stage-times", ""))))
    busy_to = machine_busy_s()
    profile = fit_profile(samples, cores, gpus, f0_method, machine_line())
    if same_machine and busy_from is not None and busy_to is not None and gpus == 0:
        profile.stage_cpu_s_per_audio_s = profile.cpu_s_per_audio_s
        profile.cpu_s_per_audio_s = (busy_to - busy_from) / sum(a for a, _, _ in samples)
    return profile


def comparison_rows(profile: Profile, measured: Sequence) -> tuple[list[list[str]], bool]:
    """Predicted vs measured per user count, and whether all are within TOLERANCE."""
    rows, ok = [], True
    for m in measured:
        p = predict(profile, m.users, audio_s=m.mean_audio_s)
        lat_err = p.latency_s / m.p50_s - 1
        thr_err = p.audio_s_per_s / m.audio_s_per_s - 1
        within = abs(lat_err) <= TOLERANCE and abs(thr_err) <= TOLERANCE
        ok &= within
        rows.append([str(m.users), f"{p.latency_s:.2f}", f"{m.p50_s:.2f}", f"{lat_err:+.0%}", f"{p.audio_s_per_s:.2f}",
                     f"{m.audio_s_per_s:.2f}", f"{thr_err:+.0%}", f"{p.cpu_utilisation:.0%}", "yes" if within else "NO"])
    return rows, ok


def validate(args: argparse.Namespace) -> int:
    """Local service -> calibrate -> predict and measure each user count -> report."""
    from bench.report import command_line, provenance
    from serve_app import testing as service

    from .throughput import run_fixed_users

    users = [int(u) for u in args.users.split(",")]
    cores = args.cores or float(os.cpu_count() or 1)
    with service.local_service(num_cpus=cores) as url:
        profile = calibrate(url, cores, 0, args.f0_method, same_machine=True)
        print(json.dumps(dataclasses.asdict(profile), indent=1), flush=True)
        measured = []
        for n in users:
            m = run_fixed_users(url, n, args.warmup, args.window, args.f0_method)
            print(f"  {n} users: p50 {m.p50_s:.2f} s, {m.audio_s_per_s:.2f} audio s/s ({m.ok} ok, {m.failed} failed)",
                  flush=True)
            measured.append(m)
    rows, ok = comparison_rows(profile, measured)
    stage_rows = [(s, f"{v:.3f}") for s, v in profile.stage_s_per_audio_s.items()]
    sizing = size(profile, 1000, 10.0, 60.0, cores_per_node=16, gpus_per_node=0)
    lines = [
        "## Capacity model against measured runs: `python -m load_tests.capacity validate`",
        "",
        *provenance(command_line("load_tests.capacity", args.argv), [
            f"Service: the load test's local app (random-weight voices, demo content encoder, 1 torch thread and "
            f"0.25 CPU per replica, one replica each) on a {cores:g}-CPU Ray cluster; pitch `{args.f0_method}`",
            f"Calibration: each of the 4 load-test clips (mean {profile.mean_clip_s:.2f} s) posted "
            f"{CALIBRATION_ROUNDS} times one at a time; runs: Locust with N users from the start, "
            f"{args.warmup:g} s discarded, {args.window:g} s measured",
        ]),
        "",
        "Measured cost per audio second (one user):",
        "",
        *table(["stage", "seconds per audio second"], stage_rows),
        "",
        f"CPU demand {profile.cpu_s_per_audio_s:.3f} s per audio second: the whole machine's busy time during "
        f"the calibration posts (/proc/stat), against {profile.stage_cpu_s_per_audio_s or float('nan'):.3f} s in "
        "the stages' own timings (the rest is Ray, the proxy, serialisation and library threads); one-user latency "
        f"{profile.latency_fixed_s:.2f} s + {profile.latency_s_per_audio_s:.3f} s per audio second.",
        "",
        f"Predicted (mean latency) against measured (p50); bar: within {TOLERANCE:.0%}: "
        f"{'all within' if ok else 'NOT all within'}.",
        "",
        *table(["users", "predicted latency s", "measured p50 s", "error", "predicted audio s/s", "measured audio s/s",
                 "error", "predicted CPU busy", f"within {TOLERANCE:.0%}"], rows),
        "",
        "Sizing from this profile: 1,000 concurrent users, each converting a 10 s clip a minute, "
        "on 16-core CPU nodes (`python -m load_tests.capacity size --profile ... --concurrent-users 1000 "
        "--clip-seconds 10 --period-s 60 --cores-per-node 16`):",
        "",
        *table(["quantity", "value"], sizing),
    ]
    print("\n".join(lines))
    if args.write:
        from bench.report import write_section

        write_section(args.write, "capacity", lines)
    if args.profile_out:
        args.profile_out.write_text(json.dumps(dataclasses.asdict(profile), indent=1))
    return 0 if ok else 1


def load_profile(path: Path) -> Profile:
    return Profile(**json.loads(path.read_text()))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="calibrate a local service and check predictions against runs")
    v.add_argument("--users", default="1,2,4,8")
    v.add_argument("--warmup", type=float, default=15.0)
    v.add_argument("--window", type=float, default=60.0)
    v.add_argument("--cores", type=float, default=0.0, help="CPUs of the local cluster (default: this machine's)")
    v.add_argument("--f0-method", default="harvest")
    v.add_argument("--write", type=Path, metavar="FILE", help="write the report between FILE's capacity markers")
    v.add_argument("--profile-out", type=Path, help="also save the calibrated profile (JSON)")
    c = sub.add_parser("calibrate", help="measure a running service's stage costs")
    c.add_argument("--url", required=True)
    c.add_argument("--cores", type=float, required=True, help="CPU cores the service runs on")
    c.add_argument("--gpus", type=int, default=0)
    c.add_argument("--f0-method", default="harvest")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--same-machine", action="store_true",
                   help="the service runs on this machine: measure CPU demand machine-wide (/proc/stat)")
    p = sub.add_parser("predict", help="latency and throughput for user counts")
    p.add_argument("--profile", type=Path, required=True)
    p.add_argument("--users", default="1,2,4,8,16,32,64")
    p.add_argument("--cores", type=float)
    p.add_argument("--gpus", type=int)
    p.add_argument("--clip-seconds", type=float)
    s = sub.add_parser("size", help="resources for an open load")
    s.add_argument("--profile", type=Path, required=True)
    s.add_argument("--concurrent-users", type=int, default=1000)
    s.add_argument("--clip-seconds", type=float, default=10.0)
    s.add_argument("--period-s", type=float, default=60.0, help="each user sends one clip this often")
    s.add_argument("--cores-per-node", type=float, default=16)
    s.add_argument("--gpus-per-node", type=int, default=1)
    s.add_argument("--threads-per-replica", type=int, default=1)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.command == "validate":
        return validate(args)
    if args.command == "calibrate":
        profile = calibrate(args.url, args.cores, args.gpus, args.f0_method, same_machine=args.same_machine)
        args.out.write_text(json.dumps(dataclasses.asdict(profile), indent=1))
        print(json.dumps(dataclasses.asdict(profile), indent=1))
        return 0
    profile = load_profile(args.profile)
    if args.command == "predict":
        rows = []
        for n in (int(u) for u in args.users.split(",")):
            r = predict(profile, n, audio_s=args.clip_seconds, cores=args.cores, gpus=args.gpus)
            rows.append([str(n), f"{r.latency_s:.2f}", f"{r.requests_per_s:.2f}", f"{r.audio_s_per_s:.2f}",
                         f"{r.cpu_utilisation:.0%}", f"{r.gpu_utilisation:.0%}"])
        print("\n".join(table(["users", "mean latency s", "requests/s", "audio s/s", "CPU busy", "GPU busy"], rows)))
        return 0
    rows = size(profile, args.concurrent_users, args.clip_seconds, args.period_s, args.cores_per_node,
                args.gpus_per_node, args.threads_per_replica)
    print("\n".join(table(["quantity", "value"], rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

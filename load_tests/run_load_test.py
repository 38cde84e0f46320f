"""One command: start the service (or target one), run Locust, sample replicas, write the report.

    python -m load_tests.run_load_test                       # local cluster, ~4.5 min of load
    python -m load_tests.run_load_test --max-users 4 --ramp-up 20 --hold 30 --ramp-down 10 --idle 40 \\
        --out-dir /tmp/loadsmoke                             # a short smoke run
    python -m load_tests.run_load_test --url http://head:8003 --ray-address ray://head:10001

Without --url it writes three random-weight voices (or uses --models-dir), starts a private
Ray cluster (with Ray token auth) and the app with autoscaling, and shuts both down on
exit, Ctrl-C included. Writes <out-dir>/load-test.md and load-test.png (default docs/).
Run it from the repository root; the local service comes from `serve_app.testing`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import command_line
from rvc_pipeline.testing.machine import machine_line
from serve_app import testing as service  # sets RAY_AUTH_MODE before anything imports ray

from . import report
from .clips import SENTENCES, fetch_voices, speak
from .load_plan import LoadPlan, add_plan_arguments, locust_command, plan_from_arguments

REPO_ROOT = Path(__file__).resolve().parents[1]

AUTOSCALABLE = ("content", "pitch", "synthesizer")
#: Autoscaling metrics are pushed this often (Serve's default is 10 s) on the local cluster.
METRIC_PUSH_INTERVAL_S = "2"
#: Seconds Locust may run past the plan before it is stopped.
LOCUST_GRACE_S = 120
#: Seconds a user being stopped (ramp-down) may take to finish its request, so none is cut off unrecorded.
USER_STOP_TIMEOUT_S = 60


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    plan = p.add_argument_group("load plan")
    add_plan_arguments(plan)
    plan.add_argument("--f0-method", default="harvest", help="f0_method of every request")
    plan.add_argument("--voices", default="", help="comma-separated voice names (default: all of GET /voices)")
    target = p.add_argument_group("target")
    target.add_argument("--url", help="an already running service (skips the local cluster)")
    target.add_argument("--ray-address", help="with --url: attach here (ray.init(address=...)) to sample replicas")
    target.add_argument("--app-name", default=service.APP_NAME, help="Serve application name to sample")
    local = p.add_argument_group("local service (without --url)")
    local.add_argument("--models-dir", type=Path, help="voices folder (default: 3 random-weight voices in a temp dir)")
    local.add_argument("--num-cpus", type=float, default=float(os.cpu_count() or 2), help="logical CPUs of the cluster")
    local.add_argument("--replica-cpus", type=float, default=0.25, help="CPUs reserved per replica")
    local.add_argument("--autoscale", default=",".join(AUTOSCALABLE),
                       help=f"deployments to autoscale, comma-separated from {','.join(AUTOSCALABLE)} (or 'none')")
    local.add_argument("--max-synth-replicas", type=int, default=3)
    local.add_argument("--max-other-replicas", type=int, default=2, help="max replicas of content and pitch")
    local.add_argument("--target-ongoing", type=float, default=1.0, help="target_ongoing_requests per replica")
    local.add_argument("--upscale-delay", type=float, default=5.0)
    local.add_argument("--downscale-delay", type=float, default=20.0)
    local.add_argument("--look-back", type=float, default=15.0,
                       help="look_back_period_s (Serve wants it above its 10 s metrics interval)")
    local.add_argument("--voices-per-replica", type=int, default=2)
    local.add_argument("--max-in-flight", type=int, default=8, help="conversions per ingress replica before 503")
    out = p.add_argument_group("output")
    out.add_argument("--out-dir", type=Path, default=REPO_ROOT / "docs", help="where load-test.md/.png go")
    out.add_argument("--raw-dir", type=Path, help="also keep the raw data here (request log, Locust CSVs, replica samples)")
    out.add_argument("--sample-interval", type=float, default=2.0, help="seconds between replica samples")
    args = p.parse_args(argv)
    unknown = set(_autoscaled(args)) - set(AUTOSCALABLE)
    if unknown:
        p.error(f"--autoscale: unknown deployment(s) {sorted(unknown)}; choose from {', '.join(AUTOSCALABLE)}")
    if args.ray_address and not args.url:
        p.error("--ray-address is for --url runs; without --url the script starts its own cluster")
    return args


def _autoscaled(args: argparse.Namespace) -> list[str]:
    return [] if args.autoscale.strip() == "none" else [x.strip() for x in args.autoscale.split(",") if x.strip()]


def build_app_args(args: argparse.Namespace, models_dir: Path):
    """AppArgs for the local run: small replicas, autoscaling on the chosen deployments."""
    from serve_app.config import AppArgs, Autoscaling, DeploymentSettings, ServiceLimits

    def settings(name: str, max_replicas: int, max_ongoing: int) -> DeploymentSettings:
        scaling = None
        if name in _autoscaled(args):
            scaling = Autoscaling(min_replicas=1, max_replicas=max_replicas, target_ongoing_requests=args.target_ongoing,
                                  upscale_delay_s=args.upscale_delay, downscale_delay_s=args.downscale_delay,
                                  look_back_period_s=args.look_back)
        return DeploymentSettings(num_cpus=args.replica_cpus, max_ongoing_requests=max_ongoing,
                                  graceful_shutdown_timeout_s=5, autoscaling=scaling)

    return AppArgs(
        models_dir=str(models_dir), content_encoder=str(models_dir / "assets" / "hubert_base"), device="cpu",
        torch_threads=1, voices_per_replica=args.voices_per_replica, demo_fallback=False,
        limits=ServiceLimits(max_in_flight=args.max_in_flight, request_timeout_s=120),
        ingress=DeploymentSettings(num_cpus=args.replica_cpus, max_ongoing_requests=32, graceful_shutdown_timeout_s=5),
        content=settings("content", args.max_other_replicas, 32),
        pitch=settings("pitch", args.max_other_replicas, 16),
        synthesizer=settings("synthesizer", args.max_synth_replicas, 16),
    )


def describe_setup(args: argparse.Namespace, health: dict) -> list[str]:
    """Report lines that say what was tested."""
    lines = [f"Requests: f0_method={args.f0_method}"]
    if args.url:
        lines.append(f"Target: {args.url} (a running service; device {health.get('device')})")
        return lines
    auto = _autoscaled(args)
    lines += [
        f"Service: local Ray cluster (num_cpus={args.num_cpus:g}), {args.replica_cpus:g} CPU per replica, "
        f"torch_threads=1, device {health.get('device')}, voices_per_replica={args.voices_per_replica}, "
        f"max_in_flight={args.max_in_flight}",
        "Voices: " + ("random-weight alice (v2 40k, index), bob (v2 40k, 2 speakers), carol (v2 32k, no f0); "
                      "small untrained content encoder" if not args.models_dir else str(args.models_dir)),
        "Autoscaling: " + (", ".join(
            f"{n} 1 -> {args.max_synth_replicas if n == 'synthesizer' else args.max_other_replicas}" for n in auto)
            + f" (target_ongoing_requests={args.target_ongoing:g}, upscale_delay_s={args.upscale_delay:g}, "
              f"downscale_delay_s={args.downscale_delay:g}, look_back_period_s={args.look_back:g})"
            if auto else "off"),
    ]
    return lines


def reading_notes(args: argparse.Namespace) -> list[str]:
    """The report's caveats: no measured figures (those are all in its tables), only the setup's."""
    if args.url:
        return []
    notes = [
        f"Every replica runs on this machine's {os.cpu_count()} cores (each reserves {args.replica_cpus:g} CPU of a "
        f"{args.num_cpus:g}-CPU cluster), so replicas beyond the idle cores share them: more replicas add throughput "
        "only where there are cores (or GPUs) for them. On a bigger machine or a cluster run the same command with "
        "`--url`/`--ray-address` (see `load_tests/README.md`).",
    ]
    if not args.models_dir:
        notes.append("The voices have random weights at the real synthesizer sizes and the content encoder is small; "
                     "a real HuBERT base adds its feature-extraction time (the features row of `performance.md`).")
    return notes


def warm_up(url: str, voices: str) -> None:
    """One conversion before the load, so a broken service fails fast with its error."""
    import httpx

    voice = voices.split(",")[0].strip() if voices else (fetch_voices(url) or [None])[0]
    if voice is None:
        raise RuntimeError(f"{url}/voices lists no usable voice")
    response = httpx.post(f"{url}/convert", data={"voice_name": voice, "f0_method": "pm"},
                          files={"audio": ("clip.wav", speak(SENTENCES[0]), "audio/wav")}, timeout=180)
    if response.status_code != 200:
        raise RuntimeError(f"warm-up conversion failed: HTTP {response.status_code} {response.text[:300]}")


def run_locust(args: argparse.Namespace, url: str, plan: LoadPlan, work: Path) -> Path:
    """Run Locust headless for the plan; returns the request log path."""
    request_log = work / "requests.jsonl"
    cmd = locust_command(url, plan, args.f0_method, request_log, args.voices, extra=[
        "--csv", str(work / "locust"), "--csv-full-history", "--only-summary", "--loglevel", "WARNING",
        "--stop-timeout", str(USER_STOP_TIMEOUT_S)])
    print(f"[load] locust for {plan.total_s:.0f} s: {shlex.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT))
    try:
        rc = proc.wait(timeout=plan.total_s + LOCUST_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.terminate()
        rc = proc.wait(timeout=30)
        print(f"[load] locust ran past the plan and was stopped (rc {rc})", flush=True)
    except BaseException:
        proc.terminate()
        proc.wait(timeout=30)
        raise
    # Locust exits 1 when any request failed; failures are part of the report, not an error here.
    if rc not in (0, 1) or not request_log.is_file():
        raise RuntimeError(f"locust exited with {rc} and no request log; see its output above")
    return request_log


def write_report(args: argparse.Namespace, plan: LoadPlan, request_log: Path, work: Path,
                 sampler: service.ReplicaSampler | None, health: dict, command: str) -> Path:
    """load-test.md and load-test.png in --out-dir."""
    start, requests = report.read_request_log(request_log)
    users = report.read_user_history(work / "locust_stats_history.csv", start)
    phases = report.phase_stats(requests, plan)
    samples = sampler.samples if sampler else []
    load_end = plan.phases()[2].end_s
    replicas = report.replica_summary(samples, start, load_end) if samples else {}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = args.out_dir / "load-test.png"
    report.plot(png, plan, requests, users, samples, start,
                f"RVC /convert load test: up to {plan.max_users} users ({machine_line().split(',')[0]})")
    note = ("Replicas were not sampled: pass --ray-address to attach to the target cluster."
            if sampler is None else f"No replica samples were taken ({sampler.errors[-1:] or 'no data'}).")
    text = report.markdown(plan=plan, phases=phases, replicas=replicas, setup=describe_setup(args, health),
                           command=command,
                           machine=machine_line() + (" (the load client; the service runs at --url)" if args.url else ""),
                           plot_name=png.name, sampler_note=note, notes=reading_notes(args))
    md = args.out_dir / "load-test.md"
    md.write_text(text, encoding="utf-8")
    (work / "summary.json").write_text(json.dumps({"phases": phases, "replicas": replicas}, indent=1, default=str))
    (work / "replica_samples.json").write_text(json.dumps(samples))
    if args.raw_dir:
        args.raw_dir.mkdir(parents=True, exist_ok=True)
        for path in work.iterdir():
            if path.is_file():
                shutil.copy2(path, args.raw_dir / path.name)
    return md


def main(argv: list[str] | None = None) -> int:
    """Run the whole load test; 0 on success."""
    args = parse_args(argv)
    plan = plan_from_arguments(args)
    command = command_line("load_tests.run_load_test", argv)
    started_cluster = attached = False
    with tempfile.TemporaryDirectory(prefix="rvc-load-") as tmp:
        work = Path(tmp)
        try:
            if args.url:
                url = args.url.rstrip("/")
                if args.ray_address:
                    import ray

                    ray.init(address=args.ray_address, log_to_driver=False)
                    attached = True
            else:
                models = args.models_dir or service.write_test_models(work / "models")
                print(f"[load] starting a local Ray cluster (num_cpus={args.num_cpus:g}) with {models}", flush=True)
                for var in ("RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S",
                            "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S"):
                    os.environ.setdefault(var, METRIC_PUSH_INTERVAL_S)  # inherited by the cluster's workers
                started_cluster = True
                url = service.start_local_service(build_app_args(args, models), num_cpus=args.num_cpus)
            health = service.wait_healthy(url)
            print(f"[load] {url} is healthy; warming up", flush=True)
            warm_up(url, args.voices)
            sampler = None
            if started_cluster or attached:
                sampler = service.ReplicaSampler(app_name=args.app_name, interval_s=args.sample_interval)
                sampler.start()
            try:
                request_log = run_locust(args, url, plan, work)
            finally:
                if sampler is not None:
                    sampler.stop()
            md = write_report(args, plan, request_log, work, sampler, health, command)
            print(f"[load] report: {md} and {md.with_suffix('.png')}", flush=True)
            print(md.read_text(encoding="utf-8"), flush=True)
            return 0
        finally:
            if started_cluster:
                print("[load] shutting down the local cluster", flush=True)
                service.stop_local_service()
            elif attached:
                import ray

                ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())

"""Cold start: time to healthy, and the first /convert against warm ones, started the README's way.

    python -m bench.bench_cold_start                                   # the current checkout
    python -m bench.bench_cold_start --repo /tmp/rvc-old --label before
    python -m bench.bench_cold_start --compare-with /tmp/rvc-old --write docs/cold-start.md

Each run starts `serve run serve_config.yaml` (Ray token auth on, as the README runs it) as a subprocess from a
repository folder (`--repo`, default this checkout; PYTHONPATH is set to that folder, so a
git worktree of an older commit runs its own code), with an empty models folder so the
untrained demo voice and encoder are used (RVC_MODELS_DIR and RVC_CACHE_DIR point at a
temporary folder: nothing in the home folder is touched). It waits for GET /health to
answer 200 with status ok (time to healthy), POSTs the same 10 s espeak-ng speech clip to
/convert once (the first request) and `--warm` more times (default options: harvest),
prints the figures and stops the service: SIGINT to `serve run`, bounded waits, and only
when that process started its own Ray cluster, the cluster's leftover processes (by pid)
are ended. Target: the first request costs at most 1.5x the warm median.

`--compare-with DIR` runs DIR first (labelled "before") and then `--repo` ("after");
`--write FILE` writes every run's figures, the command and the machine as Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from serve_app.http_utils import parse_stage_times

from .report import command_line

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = "serve_config.yaml"
DEMO_VOICE = "demo-untrained"
CLIP_SECONDS = 10
TARGET_RATIO = 1.5
HEALTH_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 90.0
#: The README's start command (the bench runs exactly this, from the repository folder).
README_COMMAND = f"serve run {CONFIG}"


@dataclass
class Run:
    """One start of the service and its requests."""

    label: str
    repo: Path
    revision: str
    healthy_s: float = float("nan")
    first_s: float = float("nan")
    first_stages: dict[str, float] = field(default_factory=dict)
    warm_s: list[float] = field(default_factory=list)
    warm_stages: list[dict[str, float]] = field(default_factory=list)
    warmup_log: list[str] = field(default_factory=list)  # "Ingress: 1.23 s" from the replicas' logs
    started_cluster: bool = False
    stopped_cleanly: bool = False
    exit_code: Optional[int] = None
    leftovers: int = 0  # processes of its own cluster still alive after `serve run` exited, ended by pid
    load: list[float] = field(default_factory=list)  # 1-minute load average at the start and after each request
    error: str = ""

    @property
    def warm_median(self) -> float:
        return statistics.median(self.warm_s) if self.warm_s else float("nan")

    @property
    def ratio(self) -> float:
        return self.first_s / self.warm_median if self.warm_s else float("nan")

    @property
    def passed(self) -> bool:
        return not self.error and self.ratio <= TARGET_RATIO

    def warm_stage_median(self, stage: str) -> float:
        values = [s[stage] for s in self.warm_stages if stage in s]
        return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------ machine


def cpu_summary() -> str:
    """'AMD EPYC, 2 cores; AVX2, FMA; no AVX-512, no AMX' from /proc/cpuinfo (Linux), else the architecture."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    has = [label for flag, label in (("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
                                     ("avx512_vnni", "AVX512-VNNI"), ("amx_tile", "AMX")) if flag in flags]
    lacks = [label for flag, label in (("avx512f", "AVX-512"), ("amx_tile", "AMX")) if flag not in flags]
    text = f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if flags:
        text += f"; {', '.join(has) or 'no AVX2'}" + (f"; no {', no '.join(lacks)}" if lacks else "")
    return text


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0


def revision(repo: Path) -> str:
    """Short commit of `repo`, with '+local changes' when its tree differs from the commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True).stdout.strip()
        return commit + (" + local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ------------------------------------------------------------------ the service


def speech_clip() -> bytes:
    """The same 10 s espeak-ng speech clip for every request, as 16-bit WAV."""
    import numpy as np

    from rvc_pipeline.constants import SAMPLE_RATE
    from rvc_pipeline.testing.audio import espeak_speech, wav_bytes

    text = "The quick brown fox jumps over the lazy dog. " * 4
    return wav_bytes(np.resize(espeak_speech(text, speed_wpm=150), SAMPLE_RATE * CLIP_SECONDS))


def config_port(config: Path) -> int:
    match = re.search(r"^\s*port:\s*(\d+)", config.read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 8000


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def serve_executable() -> str:
    local = Path(sys.executable).parent / "serve"
    found = str(local) if local.exists() else shutil.which("serve")
    if found is None:
        raise SystemExit("error: the `serve` command (Ray Serve's CLI) is not installed; activate .venv")
    return found


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    import httpx

    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`serve run` exited with code {process.returncode} before /health was ok")
        try:
            r = httpx.get(f"{url}/health", timeout=10)
            if r.status_code == 200 and r.json().get("status") == "ok":
                return
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except (httpx.HTTPError, ValueError) as e:
            last = repr(e)
        time.sleep(0.25)
    raise RuntimeError(f"/health not ok within {timeout_s:.0f} s (last: {last})")


def descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def stop_service(process: subprocess.Popen, run: Run) -> None:
    """SIGINT `serve run` (it shuts Serve down, and the cluster if it started one); bounded waits.

    Where `serve run` started its own Ray cluster, the processes of that cluster still alive
    after it exited are ended by pid: never `ray stop`, which would end every Ray cluster on
    the machine, other people's included.
    """
    import psutil

    tree = descendants(process.pid)
    run.started_cluster = any("gcs_server" in _name(p) for p in tree)
    asked = time.monotonic()
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    leftovers = [p for p in tree if _alive(p)] if run.started_cluster else []
    for p in leftovers:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(leftovers, timeout=15)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass
    run.stopped_cleanly = process.returncode == 0 and not leftovers
    run.exit_code, run.leftovers = process.returncode, len(leftovers)
    print(f"  service stopped in {time.monotonic() - asked:.1f} s (serve run exit code {process.returncode}; "
          f"{len(leftovers)} leftover cluster processes ended)", flush=True)


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default, so `serve run` gets its KeyboardInterrupt
    even when this bench runs in the background (where shells start jobs with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _name(p) -> str:
    try:
        return " ".join(p.cmdline()[:1]) or p.name()
    except Exception:
        return ""


def _alive(p) -> bool:
    try:
        return p.is_running() and p.status() != "zombie"
    except Exception:
        return False


def warmup_lines(log_text: str) -> list[str]:
    """'Ingress: 1.23 s' for each replica log line saying 'warmed up in 1.23s'."""
    found = []
    for line in log_text.splitlines():
        m = re.search(r"warmed up in ([\d.]+)\s*s", line)
        if m:
            who = re.search(r"ServeReplica:[^:\s]+:(\w+)", line)
            found.append(f"{who.group(1) if who else 'replica'}: {float(m.group(1)):.2f} s")
    return found


def measure(repo: Path, label: str, warm: int, port: Optional[int], clip: bytes) -> Run:
    """Start the service from `repo`, time /health and the requests, stop it."""
    import httpx

    repo = repo.resolve()
    run = Run(label, repo, revision(repo))
    config = repo / CONFIG
    if not config.exists():
        run.error = f"{config} not found"
        return run
    tmp = Path(tempfile.mkdtemp(prefix="rvc-cold-"))
    config_to_run, wanted = CONFIG, config_port(config)
    if port is not None and port != wanted:  # the same file with only the port changed
        text = re.sub(r"^(\s*port:\s*)\d+", rf"\g<1>{port}", config.read_text(), count=1, flags=re.MULTILINE)
        config_to_run = str(tmp / CONFIG)
        Path(config_to_run).write_text(text)
        wanted = port
    if port_in_use(wanted):
        run.error = f"port {wanted} is already in use (another service?); pass --port"
        return run
    (tmp / "models").mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RVC_CONTENT_ENCODER", "RVC_RMVPE", "RVC_DEVICE", "PYTHONPATH")
           and not k.startswith("RAY_AUTH")}  # the README's way: Ray's default (token auth for a new local cluster)
    env.update(PYTHONPATH=str(repo), RVC_MODELS_DIR=str(tmp / "models"),
               RVC_CACHE_DIR=str(tmp / "cache"), PYTHONUNBUFFERED="1")
    log_path = tmp / "serve.log"
    url = f"http://127.0.0.1:{wanted}"
    print(f"== {label}: {repo} ({run.revision}); `{README_COMMAND}` on port {wanted}; log {log_path}", flush=True)
    with open(log_path, "w") as log:
        started = time.monotonic()
        run.load.append(os.getloadavg()[0])
        process = subprocess.Popen([serve_executable(), "run", config_to_run], cwd=repo, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=_default_sigint)
        try:
            wait_healthy(url, process, HEALTH_TIMEOUT_S)
            run.healthy_s = time.monotonic() - started
            print(f"  healthy after {run.healthy_s:.1f} s", flush=True)
            with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
                for i in range(warm + 1):
                    t0 = time.perf_counter()
                    r = client.post(f"{url}/convert", data={"voice_name": DEMO_VOICE},
                                    files={"audio": ("speech.wav", clip, "audio/wav")})
                    seconds = time.perf_counter() - t0
                    run.load.append(os.getloadavg()[0])
                    if r.status_code != 200:
                        raise RuntimeError(f"/convert answered {r.status_code}: {r.text[:300]}")
                    stages = parse_stage_times(r.headers.get("x-stage-times", ""))
                    if i == 0:
                        run.first_s, run.first_stages = seconds, stages
                    else:
                        run.warm_s.append(seconds)
                        run.warm_stages.append(stages)
                    print(f"  {'first' if i == 0 else f'warm {i}'}: {seconds:.2f} s  "
                          f"{r.headers.get('x-stage-times', '')}", flush=True)
        except Exception as e:
            run.error = f"{type(e).__name__}: {e}"
            print(f"  error: {run.error}; last lines of {log_path}:\n" + "\n".join(
                log_path.read_text(errors="replace").splitlines()[-30:]), flush=True)
        finally:
            stop_service(process, run)
    run.warmup_log = warmup_lines(log_path.read_text(errors="replace"))
    for folder in ("models", "cache"):  # the demo files; the log stays for reading
        shutil.rmtree(tmp / folder, ignore_errors=True)
    return run


# ------------------------------------------------------------------ report


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def summary_lines(run: Run) -> list[str]:
    lines = [
        f"{run.label}: {run.repo} ({run.revision})",
        f"  time to healthy      {_fmt(run.healthy_s, 1)} s",
        f"  first request        {_fmt(run.first_s)} s   stages {run.first_stages}",
        f"  warm median          {_fmt(run.warm_median)} s   over {len(run.warm_s)}: {[round(s, 2) for s in run.warm_s]}",
        f"  ratio first/warm     {_fmt(run.ratio)}x   target {TARGET_RATIO}x: {'PASS' if run.passed else 'FAIL'}",
        f"  load average         {_fmt(min(run.load, default=float('nan')), 1)}-{_fmt(max(run.load, default=float('nan')), 1)}"
        f" (1 minute; {os.cpu_count()} cores)",
    ]
    if run.warmup_log:
        lines.append(f"  replica warm-ups     {'; '.join(run.warmup_log)}")
    if run.error:
        lines.append(f"  error                {run.error}")
    return lines


def write_markdown(path: Path, runs: list[Run], command: str, warm: int) -> None:
    stages = []
    for run in runs:
        for stage in [*run.first_stages, *(s for w in run.warm_stages for s in w)]:
            if stage not in stages:
                stages.append(stage)
    lines = [
        "# Cold start",
        "",
        f"Produced by `{command}` (bench/bench_cold_start.py) on {time.strftime('%Y-%m-%d', time.gmtime())}: "
        f"{cpu_summary()}, {memory_gib():.0f} GiB memory, {'a GPU present' if has_gpu() else 'no GPU'}, "
        f"Python {platform.python_version()}.",
        "",
        f"Each run starts the service the README's way, `{README_COMMAND}`, from the named checkout, with an empty "
        "models folder (so the untrained demo voice, a full-size v2 40 kHz synthesizer, and the small demo content "
        f"encoder are used), waits for GET /health to answer 200 with status ok, then posts the same {CLIP_SECONDS} s "
        f"espeak-ng speech clip to /convert once (the first request) and {warm} more times (warm), default options "
        "(harvest). Times are the client's wall-clock seconds. Target: the first request costs at most "
        f"{TARGET_RATIO}x the warm median. Each run's 1-minute load average is listed below: above the core "
        "count, other work shared the CPUs and the warm times (hence the ratio) are inflated.",
        "",
        "| run | code | time to healthy (s) | first request (s) | warm median (s) | first - warm (s) | ratio first/warm "
        f"| target {TARGET_RATIO}x |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        lines.append(f"| {run.label} | `{run.repo.name}` ({run.revision}) | {_fmt(run.healthy_s, 1)} | {_fmt(run.first_s)} | "
                     f"{_fmt(run.warm_median)} | {_fmt(run.first_s - run.warm_median)} | {_fmt(run.ratio)}x | "
                     f"{'PASS' if run.passed else 'FAIL'} |")
    lines += ["", "Stage seconds (X-Stage-Times) of the first request and the warm median:", ""]
    header = "| stage | " + " | ".join(f"{r.label}: first | {r.label}: warm" for r in runs) + " |"
    lines += [header, "|---|" + "---:|---:|" * len(runs)]
    for stage in stages:
        cells = []
        for run in runs:
            cells += [_fmt(run.first_stages.get(stage, float("nan")), 3), _fmt(run.warm_stage_median(stage), 3)]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("")
    for run in runs:
        detail = f"- {run.label}: warm runs {', '.join(_fmt(s) for s in run.warm_s)} s"
        if run.warmup_log:
            detail += f"; replica warm-ups logged: {'; '.join(run.warmup_log)}"
        if run.error:
            detail += f"; error: {run.error}"
        detail += (f"; `serve run` exit code {run.exit_code} after SIGINT"
                   + (f", {run.leftovers} processes of its cluster still exiting were ended by pid" if run.leftovers else ""))
        if run.load:
            detail += f"; 1-minute load average {min(run.load):.1f}-{max(run.load):.1f} during the run"
        lines.append(detail)
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"written: {path}")


# ------------------------------------------------------------------ main


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO_ROOT,
                        help="repository folder whose code and serve_config.yaml run (default: this checkout)")
    parser.add_argument("--label", default=None, help="name of the --repo run in the output (default: after/current)")
    parser.add_argument("--compare-with", type=Path, default=None, metavar="DIR",
                        help="run this folder first, labelled 'before' (e.g. a git worktree of an older commit)")
    parser.add_argument("--warm", type=int, default=3, help="requests after the first (default 3)")
    parser.add_argument("--port", type=int, default=None,
                        help="HTTP port (default: serve_config.yaml's; another one runs a copy of it with the port changed)")
    parser.add_argument("--write", type=Path, default=None, metavar="FILE", help="write the figures as Markdown")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if args.warm < 1:
        print("error: --warm must be at least 1", file=sys.stderr)
        return 2
    clip = speech_clip()
    plan = []
    if args.compare_with is not None:
        plan.append((args.compare_with, "before"))
    plan.append((args.repo, args.label or ("after" if args.compare_with is not None else "current")))
    runs = [measure(repo, label, args.warm, args.port, clip) for repo, label in plan]
    print()
    print(f"machine: {cpu_summary()}, {memory_gib():.0f} GiB, {'GPU' if has_gpu() else 'no GPU'}")
    for run in runs:
        print("\n".join(summary_lines(run)))
    if args.write is not None:
        command = command_line("bench.bench_cold_start", argv)
        write_markdown(args.write, runs, command, args.warm)
    return 0 if all(r.passed for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Steady-state throughput of a running service at a fixed number of Locust users.

    python -m load_tests.throughput --url http://127.0.0.1:8003 --users 1,2,4,8 --warmup 20 --window 60

For each user count, Locust (load_tests/locustfile.py: 1-3 s spoken clips, think time
USER_WAIT_S) runs with that many users from the start; the first `--warmup` seconds are
discarded and requests that finish in the next `--window` seconds are counted. Throughput
is audio seconds converted per wall second; latency percentiles are of successful requests.
Used by `load_tests.capacity` (to check its predictions) and by `bench/gpu_check.sh`.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from .load_plan import LoadPlan, locust_command
from bench.report import table

from .report import Request, read_request_log, summarize

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Seconds Locust may run past its plan before it is stopped.
GRACE_S = 120


@dataclasses.dataclass(frozen=True)
class Throughput:
    """What one fixed-users run measured over its window."""

    users: int
    window_s: float
    ok: int
    failed: int
    audio_s_per_s: float  # audio seconds converted per wall second
    requests_per_s: float
    p50_s: float
    p95_s: float
    mean_audio_s: float  # mean clip length of the counted requests

    def row(self) -> list[str]:
        return [str(self.users), f"{self.audio_s_per_s:.2f}", f"{self.requests_per_s:.2f}", f"{self.p50_s:.2f}",
                f"{self.p95_s:.2f}", str(self.ok), str(self.failed)]

    HEADER = ["users", "audio s per s", "requests per s", "p50 latency s", "p95 latency s", "ok", "failed"]


def summarize_window(requests: Sequence[Request], users: int, warmup_s: float, window_s: float) -> Throughput:
    """Requests that finished inside [warmup_s, warmup_s + window_s) of the run."""
    inside = [r for r in requests if warmup_s <= r.end_s < warmup_s + window_s]
    stats = summarize(inside, window_s)
    audio = sum(r.audio_s for r in inside if r.ok)
    nan = float("nan")
    return Throughput(users, window_s, stats["ok"], stats["failed"], audio / window_s, stats["throughput_rps"],
                      stats["p50"] if stats["p50"] is not None else nan, stats["p95"] if stats["p95"] is not None else nan,
                      audio / stats["ok"] if stats["ok"] else nan)


def run_fixed_users(url: str, users: int, warmup_s: float, window_s: float, f0_method: str,
                    voices: str = "", work: Optional[Path] = None) -> Throughput:
    """Locust with `users` users for warmup + window seconds against `url`; the window's figures."""
    with tempfile.TemporaryDirectory(prefix="rvc_throughput_") as tmp:
        work = work or Path(tmp)
        log = work / f"requests-{users}.jsonl"
        plan = LoadPlan(max_users=users, ramp_up_s=0, hold_s=warmup_s + window_s, ramp_down_s=0, idle_s=0)
        cmd = locust_command(url, plan, f0_method, log, voices,
                             extra=["--only-summary", "--loglevel", "WARNING", "--stop-timeout", "0"])
        proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=plan.total_s + GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode not in (0, 1) or not log.is_file():  # 1: some request failed (counted, not fatal)
            raise RuntimeError(f"locust exited with {proc.returncode} and no request log:\n{(err or '')[-2000:]}")
        _, requests = read_request_log(log)
    return summarize_window(requests, users, warmup_s, window_s)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--users", default="1,2,4,8", help="comma-separated user counts, one run each")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds discarded at the start of each run")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured after the warm-up")
    parser.add_argument("--f0-method", default="harvest")
    parser.add_argument("--voices", default="")
    args = parser.parse_args(argv)
    rows = [run_fixed_users(args.url, int(n), args.warmup, args.window, args.f0_method, args.voices).row()
            for n in args.users.split(",")]
    print("\n".join(table(Throughput.HEADER, rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

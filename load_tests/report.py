"""Figures from a load-test run: per-phase stats, replica summary, the markdown and the plot.

Inputs are the locustfile's request log (JSON lines), Locust's `*_stats_history.csv`
(user count over time) and the ReplicaSampler's samples. Times in the report are seconds
since the load plan started.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .load_plan import LoadPlan

PERCENTILES = (50, 95, 99)
BIN_S = 5.0


@dataclass(frozen=True)
class Request:
    """One POST /convert: start (s since plan start), latency (s), HTTP status (0: no answer)."""

    start_s: float
    latency_s: float
    status: int
    ok: bool
    audio_s: float = 0.0  # seconds of audio the request sent (0 where the log has none)

    @property
    def end_s(self) -> float:
        """When the answer arrived."""
        return self.start_s + self.latency_s


def read_request_log(path: Path) -> tuple[float, list[Request]]:
    """(plan start epoch, requests) from the locustfile's --load-request-log file."""
    start, raw = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("event") == "start":
            start = row["t"] if start is None else start
        else:
            raw.append(row)
    if start is None:
        raise RuntimeError(f"{path} has no start marker; was it written by load_tests/locustfile.py?")
    requests = [Request(r["t"] - start, r["ms"] / 1000.0, int(r["status"]), bool(r["ok"]), float(r.get("audio_s") or 0.0))
                for r in raw]
    return start, sorted(requests, key=lambda r: r.start_s)


def read_user_history(path: Path, start_epoch: float) -> list[tuple[float, int]]:
    """(s since plan start, users) from Locust's stats history CSV ([] when absent)."""
    if not path.is_file():
        return []
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("Name") == "Aggregated":
                out.append((float(row["Timestamp"]) - start_epoch, int(float(row["User Count"]))))
    return out


def summarize(requests: list[Request], duration_s: float) -> dict[str, Any]:
    """Count, throughput (successful answers per second), latency percentiles, error rate, statuses."""
    ok = [r.latency_s for r in requests if r.ok]
    latency = {f"p{p}": float(np.percentile(ok, p)) if ok else None for p in PERCENTILES}
    failed = len(requests) - len(ok)
    return {
        "requests": len(requests),
        "ok": len(ok),
        "failed": failed,
        "error_rate": failed / len(requests) if requests else 0.0,
        "throughput_rps": len(ok) / duration_s if duration_s > 0 else 0.0,
        "mean_s": float(np.mean(ok)) if ok else None,
        **latency,
        "statuses": dict(sorted(Counter(r.status for r in requests).items())),
    }


def phase_stats(requests: list[Request], plan: LoadPlan) -> list[tuple[str, float, dict[str, Any]]]:
    """Per phase (by request start time) and overall: (name, seconds, summary)."""
    rows = []
    for phase in plan.phases():
        if phase.duration_s <= 0:
            continue
        inside = [r for r in requests if phase.start_s <= r.start_s < phase.end_s]
        rows.append((phase.name, phase.duration_s, summarize(inside, phase.duration_s)))
    rows.append(("overall", plan.total_s, summarize(requests, plan.total_s)))
    return rows


def replica_summary(samples: list[tuple[float, dict[str, int]]], start_epoch: float,
                    load_end_s: float) -> dict[str, dict[str, Any]]:
    """Per deployment: min/max running replicas, when it first grew, when it was back at its minimum."""
    names = sorted({name for _, counts in samples for name in counts})
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        series = [(t - start_epoch, counts.get(name, 0)) for t, counts in samples]
        during = [c for t, c in series if t >= 0] or [c for _, c in series]
        floor = min(during)
        peak = max(during)
        first_up = next((t for t, c in series if t >= 0 and c > floor), None)
        peak_at = next((t for t, c in series if t >= 0 and c == peak), None) if peak > floor else None
        back_down = None
        if peak > floor:
            after = [(t, c) for t, c in series if t >= load_end_s]
            back_down = next((t for t, c in after if c == floor), None)
        out[name] = {"min": floor, "max": peak, "first_scale_up_s": first_up, "peak_at_s": peak_at,
                     "back_to_min_s": back_down, "final": series[-1][1] if series else None}
    return out


def _bins(requests: list[Request], total_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bin centres, throughput (ok answers/s by end time), p50 and p95 latency (by start time)."""
    edges = np.arange(0.0, total_s + BIN_S, BIN_S)
    centres = edges[:-1] + BIN_S / 2
    ends = np.array([r.end_s for r in requests if r.ok])
    throughput = np.histogram(ends, bins=edges)[0] / BIN_S if len(ends) else np.zeros(len(centres))
    p50, p95 = np.full(len(centres), np.nan), np.full(len(centres), np.nan)
    for i in range(len(centres)):
        lat = [r.latency_s for r in requests if r.ok and edges[i] <= r.start_s < edges[i + 1]]
        if lat:
            p50[i], p95[i] = np.percentile(lat, 50), np.percentile(lat, 95)
    return centres, throughput, p50, p95


def plot(path: Path, plan: LoadPlan, requests: list[Request], users: list[tuple[float, int]],
         samples: list[tuple[float, dict[str, int]]], start_epoch: float, title: str) -> None:
    """Three panels over time: users + throughput, latency, running replicas per deployment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_load, ax_lat, ax_rep) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    centres, throughput, p50, p95 = _bins(requests, plan.total_s)
    if users:
        t, u = zip(*users)
    else:
        t = np.arange(0, plan.total_s, 1.0)
        u = [plan.users_at(x) or 0 for x in t]
    ax_load.step(t, u, where="post", color="tab:gray", label="users")
    ax_load.set_ylabel("users")
    twin = ax_load.twinx()
    twin.plot(centres, throughput, color="tab:blue", marker=".", label=f"throughput (ok req/s, {BIN_S:.0f} s bins)")
    twin.set_ylabel("req/s")
    ax_load.legend(loc="upper left")
    twin.legend(loc="upper right")
    ax_lat.plot(centres, p50, marker=".", label="p50")
    ax_lat.plot(centres, p95, marker=".", label="p95")
    ax_lat.set_ylabel("latency (s)")
    ax_lat.legend(loc="upper left")
    names = sorted({name for _, counts in samples for name in counts})
    for offset, name in enumerate(names):
        ts = [s - start_epoch for s, _ in samples]
        counts = [c.get(name, 0) + 0.04 * offset for _, c in samples]  # small offset keeps lines apart
        ax_rep.step(ts, counts, where="post", label=name)
    ax_rep.set_ylabel("running replicas\n(lines offset slightly)")
    ax_rep.set_xlabel("seconds since the load started")
    if names:
        ax_rep.legend(loc="upper left")
    else:
        ax_rep.text(0.5, 0.5, "replicas not sampled (no Ray connection)", ha="center", transform=ax_rep.transAxes)
    for ax in (ax_load, ax_lat, ax_rep):
        for phase in plan.phases()[1:]:
            ax.axvline(phase.start_s, color="k", alpha=0.2, linestyle="--")
        ax.set_xlim(0, plan.total_s)
    for phase in plan.phases():
        if phase.duration_s > 0:
            ax_load.text((phase.start_s + phase.end_s) / 2, 1.02, phase.name, ha="center",
                         transform=ax_load.get_xaxis_transform(), fontsize=9)
    fig.suptitle(title, y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(*, plan: LoadPlan, phases: list[tuple[str, float, dict[str, Any]]],
             replicas: dict[str, dict[str, Any]], setup: Iterable[str], command: str, machine: str,
             plot_name: str, sampler_note: str, notes: Iterable[str] = ()) -> str:
    """The report page; `notes` (plain caveats, no figures) go under "Reading it"."""
    lines = [
        "# Load test",
        "",
        "Locust users POST `/convert` with 1-3 s espeak-ng clips, round-robin over the voices of",
        "`GET /voices` (`load_tests/`). Latency percentiles are over successful (200) answers;",
        "throughput is successful answers per second of the phase; every non-200 answer (503",
        "overload included) and every connection error (status 0) counts as an error.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine}",
        f"- Plan: 0 -> {plan.max_users} users in {plan.ramp_up_s:.0f} s, hold {plan.hold_s:.0f} s, "
        f"-> 0 in {plan.ramp_down_s:.0f} s, idle {plan.idle_s:.0f} s ({plan.total_s:.0f} s in all)",
        *[f"- {line}" for line in setup],
        "",
        "## Requests per phase",
        "",
        "| phase | seconds | requests | ok req/s | p50 s | p95 s | p99 s | error rate | status codes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, seconds, s in phases:
        statuses = ", ".join(f"{code}: {n}" for code, n in s["statuses"].items()) or "-"
        lines.append(
            f"| {name} | {seconds:.0f} | {s['requests']} | {s['throughput_rps']:.2f} | {_fmt(s['p50'])} | "
            f"{_fmt(s['p95'])} | {_fmt(s['p99'])} | {s['error_rate']:.1%} | {statuses} |"
        )
    lines += ["", "## Replicas (running, sampled every ~2 s)", ""]
    if replicas:
        lines += ["| deployment | min | max | first scale-up at s | peak at s | back to min at s | at the end |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in replicas.items():
            lines.append(f"| {name} | {r['min']} | {r['max']} | {_fmt(r['first_scale_up_s'], '.0f')} | "
                         f"{_fmt(r['peak_at_s'], '.0f')} | {_fmt(r['back_to_min_s'], '.0f')} | {r['final']} |")
        lines += ["", *_verdict(replicas)]
    else:
        lines.append(sampler_note)
    lines += ["", f"![users, throughput, latency and replicas over time]({plot_name})", ""]
    notes = list(notes)
    if notes:
        lines += ["## Reading it", "", *[f"- {note}" for note in notes], ""]
    return "\n".join(lines)


def _verdict(replicas: dict[str, dict[str, Any]]) -> list[str]:
    """Plain sentences: which deployments scaled up, and whether they came back down."""
    grew = [n for n, r in replicas.items() if r["max"] > r["min"]]
    if not grew:
        return ["No deployment changed its replica count during the run: either autoscaling was off, or",
                "the load never pushed ongoing requests per replica above the target for the upscale delay."]
    out = []
    for name in grew:
        r = replicas[name]
        down = (f"back to {r['min']} at {r['back_to_min_s']:.0f} s" if r["back_to_min_s"] is not None
                else f"not back to {r['min']} by the end of the run (ended at {r['final']})")
        out.append(f"- {name}: {r['min']} -> {r['max']} replicas (first scale-up at "
                   f"{r['first_scale_up_s']:.0f} s), {down}.")
    return out

"""Reliability scenarios for the RVC service on a local Ray cluster, with a markdown report.

Starts its own Ray cluster and the app (random-weight voices in a temporary folder, the
small untrained demo content encoder), runs the chosen scenarios and writes the report:

    python -m load_tests.reliability                       # all scenarios -> docs/reliability.md
    python -m load_tests.reliability memory kill --conversions 20 --out /tmp/reliability.md
    python -m load_tests.reliability memory --update      # re-run one scenario: only its section changes

(from the repository root). The local service, replica and HTTP helpers are
`serve_app.testing`'s; the test voices and clip are `rvc_pipeline.testing`'s.

Scenarios:
- memory:   N conversions in a row (default 310); resident memory (RSS) of every replica
            process and of Serve's proxy sampled every 10 conversions after warm-up. Targets:
            growth under 50 MB per replica, and a least-squares RSS slope of at most
            1 MB per 100 conversions for every process, fitted over at least 300 conversions
            after warm-up (a slow leak stays far under the growth limit for a long time).
- kill:     a synthesis replica is killed under concurrent load; every request must end
            with 200 + WAV or a 5xx JSON error, and the replica must come back.
- overload: a burst far beyond the in-flight limit; the excess must get a quick 503 JSON,
            the ingress memory must stay bounded, and the service must serve afterwards.
- two-node: synthesis pinned to a worker node (custom resource); the node is removed and a
            new one added; requests fail clearly meanwhile and succeed again afterwards.

Every Ray cluster here is this script's own (free ports, no dashboard); nothing else on
the machine is touched. Needs the `serve` and `test` extras (httpx) and psutil (`load`).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import httpx
import numpy as np

from bench.report import command_line
from rvc_pipeline.constants import CLASSIC_PITCH_METHODS as PITCH_METHODS
from rvc_pipeline.testing.audio import voiced_clip, wav_bytes
from serve_app.testing import (  # sets RAY_AUTH_MODE before anything imports Ray
    INGRESS_DEPLOYMENT,
    SERVE_NAMESPACE,
    SYNTH_DEPLOYMENT,
    VOICES,
    LoadLoop,
    Outcome,
    Replica,
    app_args,
    deploy,
    deployment_state,
    free_port,
    import_psutil,
    list_replicas,
    post_convert,
    proxy_pids,
    resident_parts_mb,
    rss_mb,
    start_local_cluster,
    stop_local_service,
    wait_for,
    write_test_models,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("memory", "kill", "overload", "two-node")
#: Length of the memory scenario's clip (s); the other scenarios post 1 s clips.
CLIP_SECONDS = 1.5
DEFAULT_REPORT = REPO_ROOT / "docs" / "reliability.md"
#: Growth of a replica's RSS after warm-up that counts as a leak (MB).
MEMORY_GROWTH_LIMIT_MB = 50.0
#: The conversion after which memory is first sampled: every voice x pitch-method pair of the
#: rotation (2 x 3) has run 10 times, so models, per-shape kernels and the allocator's arenas are
#: in place. Every run recorded with a 10-conversion warm-up rose 3-30 MB up to conversion 60-70
#: and then stayed within a few MB, so a shorter warm-up fits that one-time rise as a slope.
WARMUP_CONVERSIONS = 60
SAMPLE_EVERY = 10
#: Steepest trend of private memory that passes (MB per 100 conversions), for every replica and the proxy.
SLOPE_LIMIT_MB_PER_100 = 1.0
#: The part of resident memory the limits apply to (`resident_parts_mb`), and all the parts reported.
LEAK_KIND = "private"
MEMORY_KINDS = ("total", "private", "shared", "files")
#: Conversions after warm-up that a slope must be fitted over to count.
MIN_SLOPE_CONVERSIONS = 300
#: Default conversions of the memory scenario: warm-up plus the slope window.
MEMORY_CONVERSIONS = WARMUP_CONVERSIONS + MIN_SLOPE_CONVERSIONS
SYNTH_RESOURCE = "synth_node"


# ------------------------------------------------------------------ report


def summarize(outcomes: list[Outcome]) -> dict[str, int]:
    """'200', '503 json', 'timeout'... -> count."""
    counts: dict[str, int] = {}
    for o in outcomes:
        key = "200" if o.kind == "ok" else (f"{o.status} {o.kind}" if o.status else o.kind)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def error_examples(outcomes: list[Outcome], limit: int = 4) -> list[str]:
    seen: list[str] = []
    for o in outcomes:
        text = f"{o.status or '-'} {o.kind}: {o.error}"
        if o.kind != "ok" and text not in seen:
            seen.append(text)
    return seen[:limit]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Section:
    """One scenario's result: pass/fail, a few headline figures and markdown lines."""

    name: str
    passed: bool
    summary: str
    lines: list[str] = field(default_factory=list)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def write_report(path: Path, sections: list[Section], command: str, started: float) -> None:
    lines = [
        "# Reliability",
        "",
        f"Produced by `{command}` (load_tests/reliability.py) on {_today()}: {_machine()}; "
        f"{time.monotonic() - started:.0f} s in all.",
        "Voices have random weights (real v2 synthesizer sizes) and the content encoder is the small untrained",
        "demo one (2 layers, cheaper than HuBERT base), so the audio is noise; pitch, retrieval and synthesis run",
        "at their real cost.",
        "",
        "| scenario | result | summary |",
        "|---|---|---|",
    ]
    lines += [_summary_row(s) for s in sections]
    lines.append("")
    for s in sections:
        lines += [f"## {s.name}", ""] + s.lines + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")


def update_report(path: Path, sections: list[Section], command: str, started: float) -> None:
    """Replace only `sections` (their "## name" part and summary row) in the report at `path`,
    keeping every other section and any hand-written text; notes the re-run under the title."""
    if not path.exists():
        write_report(path, sections, command, started)
        return
    lines = path.read_text().rstrip("\n").split("\n")
    names = {s.name for s in sections}
    # Summary rows: replace those of the re-run scenarios, add any missing ones after the last row.
    rows = [i for i, line in enumerate(lines) if line.startswith("| ") and line.split("|")[1].strip() in SCENARIOS
            and not line.startswith("| scenario")]
    by_name = {s.name: s for s in sections}
    for i in rows:
        name = lines[i].split("|")[1].strip()
        if name in by_name:
            lines[i] = _summary_row(by_name.pop(name))
    if by_name:
        at = (rows[-1] + 1) if rows else len(lines)
        lines[at:at] = [_summary_row(s) for s in by_name.values()]
    # The note of this re-run, after the "Produced by" paragraph (an earlier note for the same scenarios goes).
    note = (f"Updated by `{command}` on {_today()}: the {', '.join(sorted(names))} "
            f"section{'s' if len(names) > 1 else ''} re-run ({_machine()}; {time.monotonic() - started:.0f} s).")
    for i in reversed(range(1, len(lines))):
        if lines[i].startswith("Updated by `") and _updated_names(lines[i]) == names and lines[i - 1] == "":
            del lines[i - 1:i + 1]
    blank = next((i for i, line in enumerate(lines) if i > 2 and line == ""), len(lines))
    lines[blank:blank] = ["", note]
    # Sections: each "## name" block runs to the next "## " heading.
    text_sections = {s.name: [f"## {s.name}", ""] + s.lines for s in sections}
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        name = line[3:].strip() if line.startswith("## ") else None
        if name in text_sections:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("## "):
                j += 1
            out += text_sections.pop(name) + [""]
            i = j
            continue
        out.append(line)
        i += 1
    for block in text_sections.values():  # scenarios the report did not have yet
        out += [""] + block
    path.write_text("\n".join(out).rstrip() + "\n")


def _updated_names(line: str) -> set[str]:
    """The scenarios named by an "Updated by ... : the memory, kill sections re-run" note."""
    match = re.search(r": the (.+?) sections? re-run", line)
    return {name.strip() for name in match.group(1).split(",")} if match else set()


def _summary_row(s: Section) -> str:
    return f"| {s.name} | {'PASS' if s.passed else 'FAIL'} | {s.summary} |"


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def _machine() -> str:
    return f"{os.cpu_count()} CPU cores ({_cpu_name()}), {_total_memory_gb():.0f} GiB memory, no GPU unless stated"


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_memory_gb() -> float:
    return import_psutil().virtual_memory().total / 1024**3


# ------------------------------------------------------------------ scenarios


def rss_slope(conversions: Sequence[float], rss: Sequence[float]) -> float:
    """Least-squares slope of RSS (MB) against the conversion count, in MB per 100 conversions.

    Samples that are not finite (a process gone) are left out; nan when fewer than two
    samples at different counts remain. A single outlier moves a least-squares slope by
    (its distance from the mean count) x (its height) / sum of squared distances: little
    in a long, evenly sampled window, so one spike does not make a leak.
    """
    x, y = np.asarray(conversions, dtype=float), np.asarray(rss, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2 or np.ptp(x) == 0:
        return float("nan")
    dx = x - x.mean()
    return float(dx @ (y - y.mean()) / (dx @ dx) * 100)


def slope_ok(slope_mb_per_100: float, limit: float = SLOPE_LIMIT_MB_PER_100) -> bool:
    """Whether an RSS trend passes: at most `limit` MB per 100 conversions (nan fails)."""
    return math.isfinite(slope_mb_per_100) and slope_mb_per_100 <= limit


def scenario_memory(base_url: str, models_dir: Path, conversions: int, warmup: int = WARMUP_CONVERSIONS) -> Section:
    """Sequential conversions; resident memory of every replica and the proxy, split by kind
    (`resident_parts_mb`), after warm-up and every SAMPLE_EVERY after; per process the growth and
    the least-squares slope (MB per 100 conversions) of each kind."""
    from ray import serve

    app = "rel_memory"
    url = deploy(app_args(models_dir), app, base_url)
    audio = wav_bytes(voiced_clip(CLIP_SECONDS))
    warmup = min(warmup, max(conversions // 2, 1))
    samples: dict[int, dict[str, dict[str, float]]] = {}
    labels: dict[str, int] = {}
    outcomes: list[Outcome] = []
    started = time.monotonic()
    try:
        with httpx.Client() as client:
            for i in range(1, conversions + 1):
                voice, method = VOICES[i % len(VOICES)], PITCH_METHODS[i % len(PITCH_METHODS)]
                outcomes.append(post_convert(client, url, audio, voice, method, timeout_s=120))
                if i == warmup:
                    labels = {f"{r.deployment} {r.replica_id}": r.pid for r in list_replicas(app)}
                    labels.update(proxy_pids())
                if i >= warmup and ((i - warmup) % SAMPLE_EVERY == 0 or i == conversions):
                    samples[i] = {label: resident_parts_mb(pid) for label, pid in labels.items()}
                if i % 50 == 0:
                    print(f"  {i}/{conversions} conversions, {time.monotonic() - started:.0f} s", flush=True)
    finally:
        serve.delete(app)
    first, last = min(samples), max(samples)
    window = last - first
    counts = sorted(samples)

    def series(label: str, kind: str) -> list[float]:
        return [samples[i][label][kind] for i in counts]

    rows, worst, slopes = [], 0.0, {}
    for label in labels:
        growth = samples[last][label][LEAK_KIND] - samples[first][label][LEAK_KIND]
        worst = max(worst, growth) if label != "proxy" else worst
        kind_slopes = {kind: rss_slope(counts, series(label, kind)) for kind in MEMORY_KINDS}
        slopes[label] = kind_slopes[LEAK_KIND]
        rows.append([label, f"{samples[first][label]['total']:.0f}", f"{samples[last][label]['total']:.0f}",
                     f"{samples[first][label][LEAK_KIND]:.0f}", f"{samples[last][label][LEAK_KIND]:.0f}",
                     f"{growth:+.1f}", *[f"{kind_slopes[kind]:+.2f}" for kind in MEMORY_KINDS],
                     "PASS" if slope_ok(slopes[label]) else "FAIL"])
    steepest = max(slopes, key=lambda k: slopes[k] if math.isfinite(slopes[k]) else math.inf)
    ok = sum(o.kind == "ok" for o in outcomes)
    seconds = [o.seconds for o in outcomes if o.kind == "ok"]
    long_enough = window >= MIN_SLOPE_CONVERSIONS
    passed = (ok == conversions and worst < MEMORY_GROWTH_LIMIT_MB and long_enough
              and all(slope_ok(v) for v in slopes.values()))
    lines = [
        f"{conversions} conversions in a row of a {CLIP_SECONDS} s clip, voices {', '.join(VOICES)} and pitch methods "
        f"{', '.join(PITCH_METHODS)} in rotation. Resident memory (MB) of each replica process and of Serve's HTTP "
        f"proxy, split by what backs the pages (Linux /proc/<pid>/status: `private` = RssAnon, the process's own "
        f"heap; `shared` = RssShmem, chiefly Ray's object store in /dev/shm; `files` = RssFile, mapped libraries), "
        f"sampled after conversion {first} (warm-up) and every {SAMPLE_EVERY} conversions up to {last}. Targets, on "
        f"private memory, where a leak grows: replica growth under {MEMORY_GROWTH_LIMIT_MB:.0f} MB, and for every "
        f"process (the proxy included) a least-squares slope of at most {SLOPE_LIMIT_MB_PER_100:g} MB per 100 "
        f"conversions, fitted over all {len(samples)} samples ({window} conversions; at least "
        f"{MIN_SLOPE_CONVERSIONS} count). The slope is what catches a slow leak: 1 MB per 100 conversions is 10 MB "
        f"per thousand, far under the growth limit over a short run. The total (RSS) and its other parts are "
        f"shown beside it.",
        "",
        f"Requests: {summarize(outcomes)}; latency p50 {percentile(seconds, 50):.2f} s, p95 {percentile(seconds, 95):.2f} s.",
        "",
    ]
    if not long_enough:
        lines += [f"**The slope window ({window} conversions) is shorter than {MIN_SLOPE_CONVERSIONS}: "
                  f"the slopes are shown but the scenario cannot pass.** Run with --conversions "
                  f"{warmup + MIN_SLOPE_CONVERSIONS} or more.", ""]
    lines += table(["process", f"RSS after {first}", f"RSS after {last}", f"private after {first}",
                    f"private after {last}", "private growth (MB)",
                    *[f"slope: {kind} (MB per 100 conversions)" for kind in MEMORY_KINDS],
                    f"private slope <= {SLOPE_LIMIT_MB_PER_100:g}"], rows)
    lines += ["Samples, MB (RSS total / private / shared):", ""]
    lines += table(["after conversion"] + list(labels),
                   [[i] + [f"{v['total']:.1f} / {v['private']:.1f} / {v['shared']:.1f}" for v in s.values()]
                    for i, s in sorted(samples.items())])
    summary = (f"{ok}/{conversions} ok; steepest private-memory slope {slopes[steepest]:+.2f} MB/100 conversions "
               f"({steepest.split()[0]}; limit {SLOPE_LIMIT_MB_PER_100:g}, over {window} conversions); worst replica "
               f"private growth {worst:+.1f} MB (limit {MEMORY_GROWTH_LIMIT_MB:.0f})")
    return Section("memory", passed, summary, lines)


def scenario_kill(base_url: str, models_dir: Path, clients: int = 4, timeout_s: float = 30) -> Section:
    """Kill the only synthesis replica under concurrent load; measure recovery."""
    import ray
    from ray import serve

    app = "rel_kill"
    url = deploy(app_args(models_dir, limits={"request_timeout_s": timeout_s}), app, base_url)
    events: list[list[Any]] = []
    try:
        with LoadLoop(url, clients, timeout_s + 10) as load:
            wait_for(lambda: load.count(lambda o: o.kind == "ok") >= 2 * clients, 120)
            (victim,) = list_replicas(app, SYNTH_DEPLOYMENT)
            killed_at = time.monotonic()
            ray.kill(ray.get_actor(victim.actor_name, namespace=SERVE_NAMESPACE), no_restart=True)
            events.append(["0.0", f"ray.kill on replica {victim.replica_id} (pid {victim.pid})"])

            def new_replica() -> list[Replica]:
                return [r for r in list_replicas(app, SYNTH_DEPLOYMENT) if r.replica_id != victim.replica_id]

            replaced = wait_for(lambda: bool(new_replica()) and deployment_state(app, SYNTH_DEPLOYMENT).startswith("HEALTHY"), 120)
            replica_back = time.monotonic() - killed_at
            successor = new_replica()
            events.append([f"{replica_back:.1f}", f"new replica {successor[0].replica_id if successor else '-'}; "
                                                  f"{deployment_state(app, SYNTH_DEPLOYMENT)}"])
            wait_for(lambda: load.count(lambda o: o.kind == "ok" and o.started > killed_at + replica_back) >= 2 * clients, 120)
        outcomes = load.outcomes
    finally:
        serve.delete(app)
    during = [o for o in outcomes if o.finished >= killed_at and o.started <= killed_at + replica_back]
    after = [o for o in outcomes if o.started > killed_at + replica_back]
    first_ok = min((o.finished for o in outcomes if o.kind == "ok" and o.started > killed_at), default=float("nan"))
    events.append([f"{first_ok - killed_at:.1f}", "first conversion sent after the kill answered 200"])
    events.sort(key=lambda e: float(e[0]))
    bad = [o for o in outcomes if o.kind not in ("ok", "json_error") or (o.kind == "json_error" and o.status < 500)]
    passed = replaced and not bad and bool(after) and all(o.kind == "ok" for o in after)
    lines = [
        f"{clients} clients post 1 s conversions in a loop (voices {', '.join(VOICES)}, pm; client timeout "
        f"{timeout_s + 10:.0f} s, service request_timeout_s {timeout_s:.0f}); the only {SYNTH_DEPLOYMENT} replica is "
        "killed with `ray.kill(..., no_restart=True)` once every client has succeeded; Serve's controller replaces it.",
        "",
    ]
    lines += table(["seconds after the kill", "event"], events)
    lines += table(["requests", "outcomes"], [
        ["all", summarize(outcomes)],
        ["in flight or sent until the replica was back", summarize(during)],
        ["sent after the replica was back", summarize(after)],
    ])
    examples = error_examples(outcomes)
    if examples:
        lines += ["Errors seen (status, kind, body):", ""] + [f"- `{e}`" for e in examples] + [""]
    worst = max((o.seconds for o in outcomes), default=0.0)
    lines.append(f"Slowest request: {worst:.1f} s (client timeout {timeout_s + 10:.0f} s).")
    summary = (f"replica back in {replica_back:.1f} s, first success {first_ok - killed_at:.1f} s after the kill; "
               f"{summarize(outcomes)}")
    return Section("kill", passed, summary, lines)


def scenario_overload(base_url: str, models_dir: Path, burst: int = 48, rounds: int = 3,
                      max_in_flight: int = 2) -> Section:
    """Bursts of `burst` simultaneous requests against max_in_flight; quick 503s, bounded memory."""
    from ray import serve

    app = "rel_overload"
    args = app_args(models_dir, limits={"max_in_flight": max_in_flight, "request_timeout_s": 60},
                    ingress={"max_ongoing_requests": 16, "max_queued_requests": 16})
    url = deploy(args, app, base_url)
    audio = wav_bytes(voiced_clip(1.0))
    try:
        with httpx.Client() as client:  # warm: voices loaded before measuring
            warm = [post_convert(client, url, audio, v, "pm", 120) for v in VOICES]
        (ingress,) = list_replicas(app, INGRESS_DEPLOYMENT)
        processes = {"Ingress": ingress.pid, **proxy_pids()}
        before = {k: rss_mb(p) for k, p in processes.items()}
        rounds_out: list[list[Outcome]] = []
        for _ in range(rounds):
            with ThreadPoolExecutor(burst) as pool, httpx.Client(limits=httpx.Limits(max_connections=burst)) as client:
                rounds_out.append(list(pool.map(
                    lambda i: post_convert(client, url, audio, VOICES[i % 2], "pm", 120), range(burst))))
        after_rss = {k: rss_mb(p) for k, p in processes.items()}
        with httpx.Client() as client:
            afterwards = [post_convert(client, url, audio, VOICES[i % 2], "pm", 120) for i in range(4)]
        alive = list_replicas(app, INGRESS_DEPLOYMENT)
    finally:
        serve.delete(app)
    outcomes = [o for r in rounds_out for o in r]
    rejected = [o for o in outcomes if o.status == 503]
    served = [o for o in outcomes if o.kind == "ok"]
    reject_s = [o.seconds for o in rejected]
    # Our ingress answers JSON 503s; beyond its Serve queue (max_queued_requests) Ray Serve's
    # proxy drops the request itself with a plain-text 503. Both are the documented overload answer.
    other = [o for o in outcomes if o.kind != "ok" and o.status != 503]
    serve_dropped = [o for o in rejected if o.kind != "json_error"]
    growth = {k: after_rss[k] - before[k] for k in processes}
    passed = (all(o.kind == "ok" for o in warm + afterwards) and bool(rejected) and not other
              and growth["Ingress"] < MEMORY_GROWTH_LIMIT_MB and alive == [ingress])
    lines = [
        f"{rounds} bursts of {burst} simultaneous 1 s conversions against an ingress with max_in_flight={max_in_flight}, "
        "max_ongoing_requests=16 and max_queued_requests=16 (Serve's own queue in front of it).",
        "",
    ]
    lines += table(["measure", "value"], [
        ["outcomes of the bursts", summarize(outcomes)],
        ["503 answer time p50 / p95 / max (s)", f"{percentile(reject_s, 50):.2f} / {percentile(reject_s, 95):.2f} / "
                                                f"{max(reject_s, default=float('nan')):.2f}"],
        ["200 latency p50 / max (s)", f"{percentile([o.seconds for o in served], 50):.2f} / "
                                      f"{max((o.seconds for o in served), default=float('nan')):.2f}"],
        *[[f"{k} RSS before / after (MB)", f"{before[k]:.0f} / {after_rss[k]:.0f} ({growth[k]:+.1f})"] for k in processes],
        ["503s answered by Serve's proxy queue (plain text, not JSON)", len(serve_dropped)],
        ["same ingress replica afterwards (no crash)", alive == [ingress]],
        ["4 conversions afterwards", summarize(afterwards)],
    ])
    examples = error_examples(outcomes)
    if examples:
        lines += ["Answers other than 200:", ""] + [f"- `{e}`" for e in examples] + [""]
    summary = (f"{len(rejected)}/{len(outcomes)} got 503 (p95 {percentile(reject_s, 95):.2f} s), {len(served)} served; "
               f"ingress RSS {growth['Ingress']:+.1f} MB; afterwards {summarize(afterwards)}")
    return Section("overload", passed, summary, lines)


def scenario_two_node(models_dir: Path, timeout_s: float = 10) -> Section:
    """Synthesis on a worker node with a custom resource; remove the node, add a new one."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    events: list[list[Any]] = []
    outcomes_by_phase: dict[str, list[Outcome]] = {}
    try:
        # The worker has only the custom resource: nothing but synthesis (num_cpus=0) fits there.
        worker = cluster.add_node(num_cpus=0, resources={SYNTH_RESOURCE: 1})
        ray.init(address=cluster.address, log_to_driver=False)
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        app = "rel_two_node"
        args = app_args(models_dir, limits={"request_timeout_s": timeout_s},
                        synth={"num_cpus": 0, "resources": {SYNTH_RESOURCE: 1}})
        url = deploy(args, app, f"http://127.0.0.1:{port}")
        audio = wav_bytes(voiced_clip(1.0))
        client = httpx.Client()
        run = lambda n: [post_convert(client, url, audio, VOICES[i % 2], "pm", timeout_s + 20) for i in range(n)]  # noqa: E731
        (first,) = list_replicas(app, SYNTH_DEPLOYMENT)
        head_id = cluster.head_node.node_id
        events.append(["start", f"synthesis replica {first.replica_id} on node {first.node_id[:8]} "
                                f"(worker {worker.node_id[:8]}, head {head_id[:8]})"])
        outcomes_by_phase["worker present"] = run(3)

        removed_at = time.monotonic()
        cluster.remove_node(worker)
        events.append(["0.0", f"worker node {worker.node_id[:8]} removed"])
        outage: list[Outcome] = []
        while time.monotonic() - removed_at < 2 * timeout_s + 5:
            outage += run(1)
        outcomes_by_phase["no node with the resource"] = outage
        events.append([f"{time.monotonic() - removed_at:.1f}", f"{SYNTH_DEPLOYMENT}: {deployment_state(app, SYNTH_DEPLOYMENT)}"])

        added_at = time.monotonic()
        new_worker = cluster.add_node(num_cpus=0, resources={SYNTH_RESOURCE: 1})
        events.append([f"{added_at - removed_at:.1f}", f"new worker node {new_worker.node_id[:8]} added"])
        recovery: list[Outcome] = []

        def converts() -> bool:
            recovery.extend(run(1))
            return recovery[-1].kind == "ok"

        recovered = wait_for(converts, 180)
        back_s = time.monotonic() - added_at
        replicas = list_replicas(app, SYNTH_DEPLOYMENT)
        on_new = bool(replicas) and all(r.node_id == new_worker.node_id for r in replicas)
        events.append([f"{time.monotonic() - removed_at:.1f}", f"first success {back_s:.1f} s after the node was added; "
                       f"replica {replicas[0].replica_id if replicas else '-'} on node "
                       f"{replicas[0].node_id[:8] if replicas else '-'}"])
        outcomes_by_phase["node added, until the first success"] = recovery
        outcomes_by_phase["afterwards"] = run(3)
        client.close()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
    placed = first.node_id == worker.node_id
    outage_clear = all(o.kind == "json_error" and o.status >= 500 for o in outage)
    outage_bounded = all(o.seconds < timeout_s + 5 for o in outage)
    passed = (placed and on_new and recovered and outage_clear and outage_bounded
              and all(o.kind == "ok" for o in outcomes_by_phase["worker present"] + outcomes_by_phase["afterwards"]))
    lines = [
        f"`ray.cluster_utils.Cluster`: a head node (2 CPUs, no custom resource) and a worker with only "
        f"`{{{SYNTH_RESOURCE}: 1}}` standing in for a GPU node; {SYNTH_DEPLOYMENT} asks for that resource "
        f"(`synthesizer.resources` in AppArgs). Service request_timeout_s {timeout_s:.0f}; requests are sequential.",
        "",
    ]
    lines += table(["seconds after removal", "event"], events)
    lines += table(["phase", "outcomes", "slowest (s)"], [
        [phase, summarize(outs), f"{max((o.seconds for o in outs), default=0):.1f}"] for phase, outs in outcomes_by_phase.items()
    ])
    examples = error_examples(outage + recovery)
    if examples:
        lines += ["Errors while no node could host synthesis:", ""] + [f"- `{e}`" for e in examples] + [""]
    lines.append(f"Replica placed on the worker: {placed}; rescheduled onto the new worker: {on_new}.")
    summary = (f"placed on worker: {placed}; outage answers {summarize(outage)}; "
               f"back {back_s:.1f} s after a new node joined")
    return Section("two-node", passed, summary, lines)


# ------------------------------------------------------------------ main


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_REPORT, help="markdown report (default docs/reliability.md)")
    parser.add_argument("--conversions", type=int, default=MEMORY_CONVERSIONS,
                        help=f"conversions of the memory scenario (default {MEMORY_CONVERSIONS}: warm-up + "
                             f"the {MIN_SLOPE_CONVERSIONS} a slope needs)")
    parser.add_argument("--warmup", type=int, default=WARMUP_CONVERSIONS,
                        help="conversions before the first memory sample (at most half of --conversions)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of the kill scenario")
    parser.add_argument("--burst", type=int, default=48, help="simultaneous requests per overload burst")
    parser.add_argument("--num-cpus", type=float, default=4, help="CPUs the local Ray cluster advertises")
    parser.add_argument("--update", action="store_true",
                        help="replace only the chosen scenarios' sections (and summary rows) in --out, keeping the rest")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        print(f"error: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    chosen = [s for s in SCENARIOS if s in (args.scenarios or SCENARIOS)]
    if args.conversions < 2:
        print("error: --conversions must be at least 2", file=sys.stderr)
        return 2
    started = time.monotonic()
    sections: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="rvc_reliability_") as tmp:
        models_dir = write_test_models(Path(tmp))
        local = [s for s in chosen if s != "two-node"]
        if local:
            sections += run_local(local, models_dir, args)
        if "two-node" in chosen:
            print("== two-node", flush=True)
            sections.append(scenario_two_node(models_dir))
    command = command_line("load_tests.reliability", argv)
    (update_report if args.update else write_report)(args.out, sections, command, started)
    for s in sections:
        print(f"{s.name}: {'PASS' if s.passed else 'FAIL'} - {s.summary}")
    print(f"report: {args.out}")
    return 0 if all(s.passed for s in sections) else 1


def run_local(names: list[str], models_dir: Path, args: argparse.Namespace) -> list[Section]:
    """The single-node scenarios, each on its own app of one local cluster."""
    base_url = start_local_cluster(num_cpus=args.num_cpus)
    runners = {
        "memory": lambda: scenario_memory(base_url, models_dir, args.conversions, args.warmup),
        "kill": lambda: scenario_kill(base_url, models_dir, clients=args.clients),
        "overload": lambda: scenario_overload(base_url, models_dir, burst=args.burst),
    }
    sections = []
    try:
        for name in names:
            print(f"== {name}", flush=True)
            sections.append(runners[name]())
    finally:
        stop_local_service()
    return sections


if __name__ == "__main__":
    sys.exit(main())

"""Reliability scenarios for the RVC service on a local Ray cluster, with a markdown report.

Starts its own Ray cluster and the app (random-weight voices in a temporary folder, the
small untrained demo content encoder), runs the chosen scenarios and writes the report:

    python load_tests/reliability.py                       # all scenarios -> docs/reliability.md
    python load_tests/reliability.py memory kill --conversions 20 --out /tmp/reliability.md

Scenarios:
- memory:   N conversions in a row; resident memory (RSS) of every replica process after
            warm-up and at the end (target: growth under 50 MB per replica).
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
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load_tests.reliability_support import (  # noqa: E402  (sets RAY_AUTH_MODE before Ray is imported)
    CLIP_SECONDS,
    INGRESS_DEPLOYMENT,
    REPO_ROOT,
    SERVE_NAMESPACE,
    SYNTH_DEPLOYMENT,
    VOICES,
    LoadLoop,
    Outcome,
    Replica,
    app_args,
    deploy,
    deployment_state,
    error_examples,
    free_port,
    list_replicas,
    percentile,
    post_convert,
    proxy_pids,
    rss_mb,
    summarize,
    voiced_clip,
    wait_for,
    wav_bytes,
    write_models,
)

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402  (importable once reliability_support ran)

SCENARIOS = ("memory", "kill", "overload", "two-node")
DEFAULT_REPORT = REPO_ROOT / "docs" / "reliability.md"
#: Growth of a replica's RSS after warm-up that counts as a leak (MB).
MEMORY_GROWTH_LIMIT_MB = 50.0
#: The conversion after which memory is first sampled (models loaded, allocator warm).
WARMUP_CONVERSIONS = 10
SAMPLE_EVERY = 10
PITCH_METHODS = ("pm", "harvest", "dio")
SYNTH_RESOURCE = "synth_node"


# ------------------------------------------------------------------ report


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
        f"Produced by `{command}` (load_tests/reliability.py) on {time.strftime('%Y-%m-%d', time.gmtime())}: "
        f"{os.cpu_count()} CPU cores ({_cpu_name()}), "
        f"{_total_memory_gb():.0f} GiB memory, no GPU unless stated; {time.monotonic() - started:.0f} s in all.",
        "Voices have random weights (real v2 synthesizer sizes) and the content encoder is the small untrained",
        "demo one (2 layers, cheaper than HuBERT base), so the audio is noise; pitch, retrieval and synthesis run",
        "at their real cost.",
        "",
        "| scenario | result | summary |",
        "|---|---|---|",
    ]
    lines += [f"| {s.name} | {'PASS' if s.passed else 'FAIL'} | {s.summary} |" for s in sections]
    lines.append("")
    for s in sections:
        lines += [f"## {s.name}", ""] + s.lines + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")


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
    return psutil.virtual_memory().total / 1024**3


# ------------------------------------------------------------------ scenarios


def scenario_memory(base_url: str, models_dir: Path, conversions: int, warmup: int = WARMUP_CONVERSIONS) -> Section:
    """Sequential conversions; RSS of every replica after warm-up and every SAMPLE_EVERY after."""
    from ray import serve

    app = "rel_memory"
    url = deploy(app_args(models_dir), app, base_url)
    audio = wav_bytes(voiced_clip())
    warmup = min(warmup, max(conversions // 2, 1))
    samples: dict[int, dict[str, float]] = {}
    labels: dict[str, int] = {}
    outcomes: list[Outcome] = []
    try:
        with httpx.Client() as client:
            for i in range(1, conversions + 1):
                voice, method = VOICES[i % len(VOICES)], PITCH_METHODS[i % len(PITCH_METHODS)]
                outcomes.append(post_convert(client, url, audio, voice, method, timeout_s=120))
                if i == warmup:
                    labels = {f"{r.deployment} {r.replica_id}": r.pid for r in list_replicas(app)}
                    labels.update(proxy_pids())
                if i >= warmup and ((i - warmup) % SAMPLE_EVERY == 0 or i == conversions):
                    samples[i] = {label: rss_mb(pid) for label, pid in labels.items()}
    finally:
        serve.delete(app)
    first, last = min(samples), max(samples)
    rows, worst = [], 0.0
    for label in labels:
        growth = samples[last][label] - samples[first][label]
        peak = max(s[label] for s in samples.values())
        worst = max(worst, growth) if label != "proxy" else worst
        rows.append([label, f"{samples[first][label]:.0f}", f"{samples[last][label]:.0f}", f"{peak:.0f}",
                     f"{growth:+.1f}", _trend(samples, label)])
    ok = sum(o.kind == "ok" for o in outcomes)
    seconds = [o.seconds for o in outcomes if o.kind == "ok"]
    passed = ok == conversions and worst < MEMORY_GROWTH_LIMIT_MB
    lines = [
        f"{conversions} conversions in a row of a {CLIP_SECONDS} s clip, voices {', '.join(VOICES)} and pitch methods "
        f"{', '.join(PITCH_METHODS)} in rotation; RSS (MB) of each process sampled after conversion {first} "
        f"(warm-up) and every {SAMPLE_EVERY} conversions up to {last}. Target: replica growth under "
        f"{MEMORY_GROWTH_LIMIT_MB:.0f} MB (the Serve proxy is listed for information). The trend column (least-squares "
        "slope over all samples) separates a steady leak from a one-time step such as a new allocator arena.",
        "",
        f"Requests: {summarize(outcomes)}; latency p50 {percentile(seconds, 50):.2f} s, p95 {percentile(seconds, 95):.2f} s.",
        "",
    ]
    lines += table(["process", f"RSS after {first}", f"RSS after {last}", "peak", "growth (MB)",
                    "trend (MB per 100 conversions)"], rows)
    lines += table(["after conversion"] + list(labels), [[i] + [f"{v:.0f}" for v in s.values()] for i, s in sorted(samples.items())])
    summary = f"{ok}/{conversions} ok; worst replica growth {worst:+.1f} MB after warm-up (limit {MEMORY_GROWTH_LIMIT_MB:.0f})"
    return Section("memory", passed, summary, lines)


def _trend(samples: dict[int, dict[str, float]], label: str) -> str:
    """Least-squares slope of RSS against the conversion count, per 100 conversions."""
    if len(samples) < 3:
        return "-"  # two points say nothing beyond the growth column
    x = np.array(sorted(samples), dtype=float)
    y = np.array([samples[int(i)][label] for i in x])
    return f"{np.polyfit(x, y, 1)[0] * 100:+.1f}"


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
    parser.add_argument("--conversions", type=int, default=100, help="conversions of the memory scenario")
    parser.add_argument("--warmup", type=int, default=WARMUP_CONVERSIONS,
                        help="conversions before the first memory sample (at most half of --conversions)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of the kill scenario")
    parser.add_argument("--burst", type=int, default=48, help="simultaneous requests per overload burst")
    parser.add_argument("--num-cpus", type=float, default=4, help="CPUs the local Ray cluster advertises")
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
        models_dir = write_models(Path(tmp))
        local = [s for s in chosen if s != "two-node"]
        if local:
            sections += run_local(local, models_dir, args)
        if "two-node" in chosen:
            print("== two-node", flush=True)
            sections.append(scenario_two_node(models_dir))
    command = " ".join(["python load_tests/reliability.py", *(sys.argv[1:] if argv is None else argv)])
    write_report(args.out, sections, command, started)
    for s in sections:
        print(f"{s.name}: {'PASS' if s.passed else 'FAIL'} - {s.summary}")
    print(f"report: {args.out}")
    return 0 if all(s.passed for s in sections) else 1


def run_local(names: list[str], models_dir: Path, args: argparse.Namespace) -> list[Section]:
    """The single-node scenarios, each on its own app of one local cluster."""
    import ray
    from ray import serve

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base_url = f"http://127.0.0.1:{port}"
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
        serve.shutdown()
        ray.shutdown()
    return sections


if __name__ == "__main__":
    sys.exit(main())

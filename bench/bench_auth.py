"""Per-request cost of API-key authentication and per-key rate limiting.

    python -m bench.bench_auth [--requests 2000]

Times, per request, what the ingress adds when keys are on: reading and checking the
Bearer key (`KeyStore.authenticate`: parse, HMAC, constant-time compare) and one call to
the shared usage ledger actor (`UsageLedger.admit`) on a local Ray cluster started with
token auth. Prints p50/p95/p99 of each and of their sum (target: under 2 ms at p95).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "mean": statistics.fmean(ordered) * 1000}


def _row(label: str, stats: dict[str, float]) -> str:
    return f"| {label} | {stats['p50']:.3f} | {stats['p95']:.3f} | {stats['p99']:.3f} | {stats['mean']:.3f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=100, help="keys in the key file")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray
    import yaml

    from serve_app.api_keys import KeyStore, new_key
    from serve_app.usage import UsageLedger

    folder = Path(tempfile.mkdtemp(prefix="rvc-auth-bench-"))
    issued, entries = [], []
    for i in range(args.keys):
        key, stored = new_key(f"client-{i}")
        issued.append(key)
        entries.append({"id": f"client-{i}", "hash": stored, "voices": "*", "requests_per_minute": 10**9,
                        "audio_seconds_per_minute": 1e12})
    (folder / "keys.yaml").write_text(yaml.safe_dump({"keys": entries}))
    store = KeyStore(file=folder / "keys.yaml")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ledger = UsageLedger.remote()
        ray.get(ledger.admit.remote("warm-up", {}, 1.0))
        auth_s, ledger_s, total_s = [], [], []
        for i in range(args.requests):
            presented = issued[i % len(issued)]
            started = time.perf_counter()
            key = store.authenticate(presented)
            checked = time.perf_counter()
            wait = ray.get(ledger.admit.remote(key.id, key.limits(), 10.0))
            done = time.perf_counter()
            assert key is not None and wait == 0
            auth_s.append(checked - started)
            ledger_s.append(done - checked)
            total_s.append(done - started)
    finally:
        ray.shutdown()

    import platform

    total = _percentiles(total_s)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{args.requests} requests over {args.keys} keys")
    print("| per request | p50 ms | p95 ms | p99 ms | mean ms |")
    print("|---|---:|---:|---:|---:|")
    print(_row("authenticate (Bearer key, HMAC, constant-time compare)", _percentiles(auth_s)))
    print(_row("rate limit (one call to the shared ledger actor)", _percentiles(ledger_s)))
    print(_row("**both**", total))
    print(f"target p95 < 2 ms: {'met' if total['p95'] < 2 else 'NOT met'} ({total['p95']:.3f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

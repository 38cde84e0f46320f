"""Benchmarks that print figures; run from the repository root:

    python -m bench.bench_pipeline
    RAY_AUTH_MODE=disabled python -m bench.bench_serve
"""

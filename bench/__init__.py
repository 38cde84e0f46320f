"""Benchmarks that print figures; run from the repository root:

    python -m bench.bench_pipeline
    python -m bench.bench_serve
"""

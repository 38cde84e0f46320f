"""`bash bench/gpu_check.sh --dry-run`: every step of the GPU check runs on the CPU, tiny sizes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_in_a_dry_run(tmp_path):
    report = tmp_path / "gpu.md"
    # Its own Ray cluster: none of this session's RAY_* variables (RAY_ADDRESS would attach to ours).
    # A short RAY_TMPDIR: Ray's socket paths must stay under 108 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="rvcgc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=ray_tmp, GPU_CHECK_TIMEOUT_S="420")
    try:
        done = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run", "--out", str(report)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=480)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text()
    assert "DRY RUN" in text and "1. CUDA tests" in text
    # fp32 and the fast precision each converted, with an SNR for the fast one.
    assert re.search(r"\| fp32 \| [\d.]+ \| [\d.]+ \| - \|", text)
    assert re.search(r"\| bf16 \| [\d.]+ \| [\d.]+ \| -?[\d.]+ \|", text)
    # Locust at 1 and 2 users through the service: answers came back, none failed.
    for users in (1, 2):
        row = re.search(rf"^\| {users} \| ([\d.]+) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| (\d+) \| (\d+) \|$", text, re.M)
        assert row, text
        assert float(row.group(1)) > 0 and int(row.group(2)) > 0 and int(row.group(3)) == 0
    assert "batches of" in text  # the synthesis replicas reported their batching counters

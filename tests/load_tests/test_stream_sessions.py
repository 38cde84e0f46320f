"""`python -m load_tests.stream_sessions`: what a step counts, where the sweep stops, and a
--quick run against a local service that writes its section of a copy of docs/realtime.md."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from load_tests.stream_sessions import SECTION, SessionResult, Step, sessions_held, summarize_step

REPO = Path(__file__).resolve().parents[2]
#: Seconds the --quick run may take (a Ray cluster starts in about 30 s on 2 cores).
QUICK_TIMEOUT_S = 240


def _session(trips: list[float], p50: float, p95: float, dropped: int = 0, errors: tuple[str, ...] = ()) -> SessionResult:
    stats = {"blocks_out": len(trips) + 2, "process_ms_p50": p50, "process_ms_p95": p95, "dropped": dropped}
    return SessionResult("alice", trips, stats, list(errors))


def _step(sessions: int, p95: float, dropped: int = 0, errors: int = 0) -> Step:
    return Step(sessions, 100, 100.0, 150.0, 80.0, p95, dropped, errors, 250.0)


def test_a_step_pools_round_trips_and_takes_the_worst_sessions_p95():
    step = summarize_step([_session([100.0, 120.0], 90.0, 140.0), _session([300.0], 110.0, 260.0, dropped=2)], 250.0)
    assert (step.sessions, step.blocks, step.dropped, step.errors) == (2, 7, 2, 0)
    assert step.round_trip_p50_ms == pytest.approx(120.0) and step.process_p95_ms == 260.0
    assert step.process_p50_ms == pytest.approx(100.0)
    assert step.over_block and not step.holds
    failed = summarize_step([_session([100.0], 90.0, 140.0), SessionResult("bob", [], {}, ["ConnectionClosed"])], 250.0)
    assert failed.errors == 1 and failed.over_block  # a session without counters cannot count as within the block


def test_the_figure_is_the_last_session_count_before_the_first_that_does_not_hold():
    assert sessions_held([_step(1, 120.0), _step(2, 200.0), _step(3, 251.0)]) == 2
    assert sessions_held([_step(1, 120.0), _step(2, 200.0, dropped=1)]) == 1
    assert sessions_held([_step(1, 300.0)]) == 0
    assert sessions_held([_step(1, 100.0), _step(2, 110.0, errors=1)]) == 1


@pytest.mark.slow
def test_a_quick_run_writes_a_table_with_numbers(tmp_path):
    doc = tmp_path / "realtime.md"
    shutil.copy(REPO / "docs" / "realtime.md", doc)
    # Its own Ray cluster: none of this session's RAY_* variables (RAY_ADDRESS would attach to another).
    # A short RAY_TMPDIR: Ray's socket paths must stay under 108 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="rvcss")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_TMPDIR"] = ray_tmp
    try:
        done = subprocess.run([sys.executable, "-m", "load_tests.stream_sessions", "--quick", "--write", "--doc", str(doc)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    section = doc.read_text().split(f"<!-- {SECTION}:begin")[1].split(f"<!-- {SECTION}:end")[0]
    rows = re.findall(r"^\| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \| (\d+) \| (yes|no) \|$",
                      section, re.M)
    assert rows and rows[0][0] == "1", section
    sessions, blocks, rtt50, rtt95, proc50, proc95, dropped, errors, _ = rows[0]
    assert int(blocks) > 0 and 0 < float(rtt50) <= float(rtt95) and 0 < float(proc50) <= float(proc95)
    assert int(errors) == 0
    assert re.search(r"Sessions this \d+-core machine holds in realtime: (at least )?\d+", section)
    assert "Replicas: Ingress 1" in section and "CPU flags:" in section
    assert str(tmp_path) not in section and str(REPO) not in section  # no machine paths

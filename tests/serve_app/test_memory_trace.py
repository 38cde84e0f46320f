"""RVC_TRACE_PYTHON_MEMORY: a replica's Python-heap growth, by source line, written to a folder."""

from __future__ import annotations

import subprocess
import sys

PROBE = r"""
import os, sys, time
sys.path.insert(0, os.getcwd())
from serve_app import memory_trace
memory_trace.BASELINE_AFTER_S, memory_trace.REPORT_EVERY_S = 0.2, 0.3
assert memory_trace.maybe_trace_python_memory("Probe")
time.sleep(0.4)                       # the baseline is taken
kept = [bytearray(1000) for _ in range(2000)]   # about 2 MB that stays: the growth to find
time.sleep(1.0)                       # a report is written
"""


def test_growth_after_the_baseline_is_reported_by_source_line(tmp_path):
    env = {"RVC_TRACE_PYTHON_MEMORY": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", PROBE], check=True, env=env, timeout=60)
    (report,) = tmp_path.glob("Probe-*.txt")
    text = report.read_text()
    top = text.splitlines()[1]
    assert top.startswith("+") and float(top[1:].split()[0]) > 1500  # kB: the ~2 MB that stayed
    allocating_line = PROBE.splitlines().index(next(l for l in PROBE.splitlines() if l.startswith("kept ="))) + 1
    assert text.splitlines()[2].strip() == f"<string>:{allocating_line}"  # the line that allocated it
    assert "tracemalloc.py" not in text and "memory_trace.py" not in text  # its own snapshots are not counted


def test_off_without_the_variable(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os,sys; sys.path.insert(0, os.getcwd());"
                           "from serve_app.memory_trace import maybe_trace_python_memory as m; print(m('X'))"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60, check=True)
    assert done.stdout.strip() == "False"

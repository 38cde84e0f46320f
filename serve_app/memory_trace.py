"""Opt-in diagnosis of a replica's Python-heap growth (what the memory scenario's slope cannot say).

With RVC_TRACE_PYTHON_MEMORY=DIR in the cluster's environment, every replica starts
`tracemalloc`, takes a baseline snapshot BASELINE_AFTER_S seconds after it started (past
the warm-up) and then every REPORT_EVERY_S seconds writes DIR/<deployment>-<pid>.txt: the
Python and numpy allocations that grew most since the baseline, by source line. Native
allocations (torch's CPU tensors, FAISS, glibc's own bookkeeping) are not traced: growth
that RSS shows and this file does not is native. Off (no cost) without the variable.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from pathlib import Path

TRACE_ENV = "RVC_TRACE_PYTHON_MEMORY"
BASELINE_AFTER_S = float(os.environ.get("RVC_TRACE_BASELINE_S", "240"))
REPORT_EVERY_S = 60.0
TOP = 15
FRAMES = 6


def maybe_trace_python_memory(deployment: str) -> bool:
    """Start tracing this process when RVC_TRACE_PYTHON_MEMORY names a folder; True if started."""
    folder = os.environ.get(TRACE_ENV)
    if not folder or tracemalloc.is_tracing():
        return False
    tracemalloc.start(FRAMES)
    out = Path(folder) / f"{deployment}-{os.getpid()}.txt"
    threading.Thread(target=_report_forever, args=(out,), name="memory-trace", daemon=True).start()
    return True


def _snapshot() -> tracemalloc.Snapshot:
    """The traced allocations, without tracemalloc's and this module's own (the snapshots themselves)."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__, all_frames=True),
              tracemalloc.Filter(False, __file__, all_frames=True)]
    return tracemalloc.take_snapshot().filter_traces(ignore)


def _report_forever(out: Path) -> None:
    time.sleep(BASELINE_AFTER_S)
    baseline, since = _snapshot(), time.monotonic()
    while True:
        time.sleep(REPORT_EVERY_S)
        snapshot = _snapshot()
        grown = [s for s in snapshot.compare_to(baseline, "traceback") if s.size_diff > 0][:TOP]
        lines = [f"{time.monotonic() - since:.0f} s after the baseline; traced now "
                 f"{tracemalloc.get_traced_memory()[0] / 1e6:.1f} MB"]
        for stat in grown:
            lines.append(f"+{stat.size_diff / 1e3:.1f} kB in {stat.count_diff:+d} blocks:")
            lines += [f"    {frame.filename}:{frame.lineno}" for frame in stat.traceback]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")

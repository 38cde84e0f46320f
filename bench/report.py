"""What the benchmarks share: the command line, the machine, markdown tables and `--write`.

A benchmark's section of a document lies between two markers,

    <!-- bench_pipeline:begin (written by python -m bench.bench_pipeline --write; do not edit) -->
    ...
    <!-- bench_pipeline:end -->

and `write_section` replaces what is between them, leaving the rest of the file as it is.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rvc_pipeline.testing.machine import cpu_flags_line, machine_line

REPO_ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float], Any]:
    """(median seconds, every run's seconds, last result) of `repeat` calls after one warm-up call."""
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def plural(n: int, word: str) -> str:
    """"1 run", "2 runs"."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def portable_arg(arg: str) -> str:
    """An argument as a report may show it: a path inside the repository relative to it, any
    other absolute path as <its name> (reports carry no machine paths)."""
    if not os.path.isabs(arg):
        return arg
    path = Path(arg).resolve()
    try:
        return str(path.relative_to(REPO_ROOT)) or "."
    except ValueError:
        return f"<{path.name}>"


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """`python -m <module> <the arguments this process got>`, as a reader would type it (no machine paths)."""
    args = [portable_arg(a) for a in (sys.argv[1:] if argv is None else argv)]
    return shlex.join(["python", "-m", module, *args])


def provenance(command: str, extra: Iterable[str] = ()) -> list[str]:
    """Bullet lines: the command, the machine, the software and the date of a run."""
    import torch

    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown"
    return [
        f"- Command: `{command}`",
        f"- Machine: {machine_line()}; {cpu_flags_line()}",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"{plural(torch.get_num_threads(), 'torch thread')} in this process",
        *[f"- {line}" for line in extra],
        f"- Date: {datetime.date.today().isoformat()}; 1-minute load average when it started: {load}",
    ]


def _numeric(cell: str) -> bool:
    return bool(re.fullmatch(r"[-+]?\d[\d.,]*( %)?|[-+]?\d[\d.,]*(, [-+]?\d[\d.,]*)*", cell.strip()))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table; columns whose every cell is a number (or a list of numbers) are right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    align = ["---:" if cells and all(_numeric(row[i]) for row in cells) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return lines


#: Sections written by something other than `python -m bench.<name> --write`.
WRITERS = {
    "capacity": "python -m load_tests.capacity validate --write",
    "gpu_check": "bash bench/gpu_check.sh",
    "stream_sessions": "python -m load_tests.stream_sessions --write",
}


def begin_marker(name: str) -> str:
    writer = WRITERS.get(name, f"python -m bench.{name} --write")
    return f"<!-- {name}:begin (written by {writer}; do not edit by hand) -->"


def end_marker(name: str) -> str:
    return f"<!-- {name}:end -->"


def replace_section(text: str, name: str, lines: Sequence[str]) -> str:
    """`text` with the lines between `name`'s markers replaced by `lines`."""
    begin, end = begin_marker(name), end_marker(name)
    head, found, rest = text.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not (found and found_end):
        raise ValueError(f"the document lacks the markers {begin} ... {end}")
    return "\n".join([head + begin, *lines, end]) + tail


def write_section(path: Path, name: str, lines: Sequence[str]) -> None:
    """Replace `name`'s section of the markdown file at `path` (which must hold its markers)."""
    try:
        text = replace_section(path.read_text(encoding="utf-8"), name, lines)
    except ValueError as e:
        raise SystemExit(f"{path}: {e}") from None
    path.write_text(text, encoding="utf-8")
    print(f"wrote the {name} section of {path}")

"""Every measured figure in docs/ comes from a command the doc names.

- each table of measurements (seconds, RTF, MB, req/s ...) sits in a section, or a page,
  that names the command which wrote it;
- performance.md quotes figures only between the benchmarks' markers;
- `bench_pipeline --write` fills its section with the rows it prints, leaving the rest of
  the page alone (a seconds-long run with a small voice and encoder);
- load-test.md's notes are the ones the report writer prints for the command it names.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
#: A command line a reader can run: a module, a repo script.
COMMAND = re.compile(r"python -m [\w.]+|python scripts/\S+\.py|bash (scripts|bench)/\S+\.sh")
#: A table header that announces measurements.
MEASURED_HEADER = re.compile(r"\bseconds\b|\bRTF\b|\bMB\b|\bMiB\b|\bGB\b|\bms\b|req/s|\bp50\b|\bs\b|self CPU|RSS")
#: A number with a unit, or a decimal, in prose.
FIGURE = re.compile(r"\d+(\.\d+)?\s?(s|ms|MB|MiB|GB|GiB|%)(?!\w)|\b\d+\.\d+\b")


def _sections(text: str) -> list[str]:
    """The page split at its level-2 headings (the first part is the preamble)."""
    return re.split(r"(?m)^(?=## )", text)


def _measured_tables(section: str) -> list[str]:
    """Header rows of the markdown tables in `section` that hold measurements."""
    lines = section.splitlines()
    headers = [line for line, below in zip(lines, lines[1:]) if line.startswith("|") and re.match(r"^\|[-:| ]+\|$", below)]
    return [h for h in headers if MEASURED_HEADER.search(h)]


@pytest.mark.parametrize("doc", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_every_measured_table_names_the_command_that_wrote_it(doc: Path) -> None:
    preamble, *sections = _sections(doc.read_text(encoding="utf-8"))
    for section in [preamble, *sections]:
        tables = _measured_tables(section)
        if tables:
            assert COMMAND.search(preamble) or COMMAND.search(section), (
                f"{doc.name}: the table {tables[0]!r} is in a section that names no command "
                "(python -m ..., bash scripts/...) that writes it"
            )


def _outside_markers(text: str) -> str:
    return re.sub(r"(?s)<!-- (\w+):begin.*?<!-- \1:end -->", "", text)


def test_performance_page_quotes_figures_only_where_a_benchmark_writes_them() -> None:
    text = (DOCS / "performance.md").read_text(encoding="utf-8")
    for name in ("bench_pipeline", "bench_synth", "bench_serve", "capacity"):
        assert f"<!-- {name}:begin" in text and f"<!-- {name}:end -->" in text
    figures = [m.group(0) for m in FIGURE.finditer(_outside_markers(text))]
    assert not figures, f"performance.md quotes figures outside the benchmark sections: {figures}"


@pytest.mark.slow
def test_bench_pipeline_write_fills_its_section_with_its_rows(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    doc = tmp_path / "performance.md"
    original = (DOCS / "performance.md").read_text(encoding="utf-8")
    doc.write_text(original, encoding="utf-8")
    args = ["--small", "--seconds", "1", "--repeat", "1", "--methods", "pm", "--threads", "1",
            "--long-seconds", "2", "--profile", "--top", "3", "--write", str(doc)]
    run = subprocess.run([sys.executable, "-m", "bench.bench_pipeline", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    written = doc.read_text(encoding="utf-8")
    section = written.split("<!-- bench_pipeline:begin")[1].split("<!-- bench_pipeline:end -->")[0]
    for row in ("| decode (WAV -> 16 kHz) |", "| pitch: pm |", "| prepare (fp32) |",
                "| features (small demo encoder, fp32) |", "| synthesize (v2 40 kHz, fp32) |", "| finish (fp32) |",
                "| `pm` |", "| read and check the checkpoint", "| ready to convert", "(tracemalloc), MiB |",
                "| op | self CPU s | share | calls |"):
        assert row in section, f"{row!r} missing from the written section"
    # the command as run, with the temporary file's machine path shown as <name>
    shown = [f"<{doc.name}>" if a == str(doc) else a for a in args]
    assert f"- Command: `{shlex.join(['python', '-m', 'bench.bench_pipeline', *shown])}`" in section
    assert str(tmp_path) not in written
    assert "amx_bf16" in section and "avx512_bf16" in section and "torch " in section and "Date: " in section
    # what the script prints is what it writes, and nothing outside its markers changes
    assert section.split("-->", 1)[1].strip() in run.stdout
    assert _outside_markers(written) == _outside_markers(original)


def test_load_test_page_notes_are_the_report_writers() -> None:
    from load_tests.run_load_test import parse_args, reading_notes

    text = (DOCS / "load-test.md").read_text(encoding="utf-8")
    command = re.search(r"- Command: `python -m load_tests\.run_load_test ?(.*)`", text)
    assert command, "load-test.md does not name the python -m load_tests.run_load_test command that wrote it"
    for note in reading_notes(parse_args(shlex.split(command.group(1)))):
        assert f"- {note}" in text

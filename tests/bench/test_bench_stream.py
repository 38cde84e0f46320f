"""`python -m bench.bench_stream --quick` and `python -m bench.stream_fidelity --quick` write
their sections of a copy of docs/realtime.md with figures in them (thin voice, a few blocks)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench import bench_stream, stream_fidelity
from bench.report import begin_marker, end_marker

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "realtime.md"
#: A number with a decimal point, as the tables print them.
NUMBER = r"-?\d+\.\d+"


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    copy = tmp_path / "realtime.md"
    shutil.copyfile(DOC, copy)
    return copy


@pytest.fixture(autouse=True)
def _needs_espeak():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")


def section(text: str, name: str) -> str:
    """What lies between `name`'s markers."""
    return text.split(begin_marker(name), 1)[1].split(end_marker(name), 1)[0]


def assert_portable(text: str, tmp_path: Path) -> None:
    assert str(tmp_path) not in text and str(REPO) not in text


@pytest.mark.slow
def test_bench_stream_writes_its_table(doc, tmp_path):
    before = doc.read_text()
    assert bench_stream.main(["--quick", "--threads", "1", "--methods", "pm,fcpe", "--write", str(doc)]) == 0
    text = doc.read_text()
    written = section(text, "bench_stream")
    assert "--quick" in written and "CPU flags: avx2" in written
    for method in ("pm", "fcpe"):
        for block in bench_stream.QUICK_BLOCKS_MS:
            row = re.search(rf"^\| {block} \| `{method}` \| fp32 \| (\d+) \| ({NUMBER}) \| ({NUMBER}) \| ({NUMBER}) \| "
                            rf"(\d+) \| (\d+) \| (yes|no) \|$", written, re.M)
            assert row, written
            blocks, p50, p95, rtf, algorithmic, end_to_end = (float(g) for g in row.groups()[:6])
            assert blocks >= 2 and 0 < p50 <= p95 and rtf > 0
            assert algorithmic == block + 50 + 10 and end_to_end == pytest.approx(algorithmic + p95, abs=1)
        assert re.search(rf"^- `{method}` \(fp32\): ", written, re.M)
    assert "bf16" in written
    assert section(text, "stream_fidelity") == section(before, "stream_fidelity")  # left alone
    assert_portable(written, tmp_path)


@pytest.mark.slow
def test_stream_fidelity_writes_its_tables(doc, tmp_path):
    before = doc.read_text()
    assert stream_fidelity.main(["--quick", "--threads", "1", "--method", "pm", "--write", str(doc)]) == 0
    text = doc.read_text()
    written = section(text, "stream_fidelity")
    assert "--quick" in written and "noise zeroed" in written
    single = re.findall(rf"^\| the [^|]+ \| (same|10 ms off) \| {NUMBER} \| ({NUMBER}) \| ({NUMBER}) \| {NUMBER} \|$",
                        written, re.M)
    assert [grid for grid, _, _ in single] == ["same"] * 4, written  # StreamConverter keeps the offline grid
    # The stream engine on the offline path's own window is the same model path: it agrees closely.
    assert float(single[3][1]) > 0.99 and float(single[3][2]) > 40
    for extra in stream_fidelity.QUICK_EXTRAS_MS:
        assert re.search(rf"^\| {extra} \| (same|10 ms off) \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|$",
                         written, re.M), written
    assert section(text, "bench_stream") == section(before, "bench_stream")
    assert_portable(written, tmp_path)

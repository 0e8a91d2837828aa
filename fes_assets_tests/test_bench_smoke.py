"""The benchmark runs end to end at tiny sizes (no timing assertions: speed lives in bench/)."""

from __future__ import annotations

import pytest

from bench.run import main as bench


@pytest.mark.timeout(600)
def test_bench_tiny_writes_its_report(tmp_path):
    assert bench(["--tiny", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "benchmarks-tiny.md").read_text()
    for item in (
        "1. indexing throughput",
        "2. sensor tick",
        "3. query latency",
        "4. peak memory",
        "5. backfill",
    ):
        assert f"## {item}" in text
    assert len(list(tmp_path.glob("bench-tiny-*.png"))) == 5

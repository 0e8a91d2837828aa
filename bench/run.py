"""Benchmark runner: `python -m bench.run [--full | --tiny] [--out DIR]`.

Generates its own seeded data, starts the embedded servers, measures each item beside its
anchor in the same run, and writes DIR/benchmarks.md with plots (DIR defaults to docs/).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench import measures, report
from bench.freshness import freshness


@dataclass(frozen=True)
class Sizes:
    name: str
    rows: int  # item 1
    files: int
    big_rows: int | None  # item 1, larger size
    big_files: int
    buckets: tuple[int, ...]  # item 2
    query_rows: int  # item 3
    query_files: int
    memory_bytes: int  # item 4
    backfill_rows: int  # item 5
    repeats: int
    fresh_puts: int = 0  # item 6 (each mode's dagster dev takes a minute: not in tiny runs)
    feast_rows: int = 0  # item 7: rows of the denser view (Feast's start-up: not in tiny runs)
    feast_drivers: int = 50


TINY = Sizes("tiny", 20_000, 4, None, 0, (50,), 20_000, 4, 8 * 2**20, 3_000, 2)
QUICK = Sizes(
    "quick",
    1_000_000,
    20,
    None,
    0,
    (1_000, 10_000),
    1_000_000,
    20,
    256 * 2**20,
    300_000,
    5,
    6,
    1_000_000,
    500,
)
FULL = Sizes(
    "full",
    1_000_000,
    20,
    10_000_000,
    100,
    (1_000, 10_000, 100_000),
    10_000_000,
    100,
    2 * 2**30,
    1_000_000,
    5,
    12,
    3_000_000,
    500,
)


def machine() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="the full sizes (tens of minutes)")
    mode.add_argument("--tiny", action="store_true", help="tiny sizes: does it work at all")
    parser.add_argument("--out", default="docs", help="folder for benchmarks.md and plots")
    parser.add_argument("--only", nargs="*", type=int, help="item numbers to run")
    args = parser.parse_args(argv)
    sizes = FULL if args.full else TINY if args.tiny else QUICK
    only = set(args.only or [1, 2, 3, 4, 5, 6, 7])
    warnings.filterwarnings("ignore")
    # Stop the embedded servers on SIGTERM too (the default would skip the clean-up).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("DAGSTER_HOME", "")
    import dagster as dg

    results: list[measures.Result] = []
    started = time.perf_counter()

    def step(name: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {name}", file=sys.stderr, flush=True)

    with measures.Servers() as servers, dg.DagsterInstance.ephemeral() as instance:
        if 1 in only:
            step(f"1. indexing throughput, {sizes.rows:,} rows")
            results += measures.throughput(servers, sizes.rows, sizes.files, instance)
            if sizes.big_rows:
                step(f"1. indexing throughput, {sizes.big_rows:,} rows")
                results += measures.throughput(servers, sizes.big_rows, sizes.big_files, instance)
        if 2 in only:
            step(f"2. sensor tick, buckets of {sizes.buckets}")
            results += measures.sensor_tick(servers, list(sizes.buckets))
        if 3 in only:
            step(f"3. query latency, {sizes.query_rows:,} rows")
            results += measures.query_latency(
                servers, sizes.query_rows, sizes.query_files, instance, sizes.repeats
            )
        if 4 in only:
            step(f"4. peak memory, {sizes.memory_bytes / 2**20:.0f} MiB file")
            results += measures.memory(servers, sizes.memory_bytes)
        if 5 in only:
            step(f"5. backfill, {sizes.backfill_rows:,} rows")
            results += measures.backfill(servers, sizes.backfill_rows, instance)
        if 6 in only and sizes.fresh_puts:
            step(f"6. freshness, {sizes.fresh_puts} puts a mode")
            results += freshness(servers, sizes.fresh_puts)
        if 7 in only and sizes.feast_rows:
            from bench.feast_retrieval import feast_retrieval

            step(f"7. Feast retrieval, {sizes.feast_rows:,} rows")
            results += feast_retrieval(servers, sizes.feast_rows, sizes.feast_drivers, instance)
    step("writing the report")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.write(
        out,
        sizes.name,
        machine(),
        results,
        time.perf_counter() - started,
        replace_only=bool(args.only),
    )
    for r in results:
        print(
            f"{r.item:24} {r.measure:50} ours {r.ours:12.4g} {r.unit:14} anchor "
            f"{r.anchor:12.4g} ratio {r.ratio:8.3g}  goal {r.goal:22} "
            f"{'met' if r.met else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

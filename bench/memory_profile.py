"""Where a backfill's peak memory goes, ten years against one: `python -m bench.memory_profile
[--rows N]`. Runs the scale benchmark's two backfills, each in a process of its own, sampling
every 20 ms the resident set, Arrow's allocations and Python's traced heap, and prints the
largest Python allocation sites at the end. The findings are in bench/notes-scale.md."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import threading
import time
import tracemalloc
import warnings
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta

from bench.scale import LAST_DAY, YEARS, Index, _first_day, _indexer, stock_servers, utf8_database


def child(spec: dict) -> dict:
    import psutil
    import pyarrow as pa

    warnings.filterwarnings("ignore")
    first, last = date.fromisoformat(spec["first"]), date.fromisoformat(spec["last"])
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    indexer = _indexer(spec)
    process = psutil.Process()
    tracemalloc.start(5)
    idle = process.memory_info().rss
    peaks = {"rss": idle, "arrow": 0, "python": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peaks["rss"] = max(peaks["rss"], process.memory_info().rss)
            peaks["arrow"] = max(peaks["arrow"], pa.total_allocated_bytes())
            peaks["python"] = max(peaks["python"], tracemalloc.get_traced_memory()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    indexer.run(days)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    top = tracemalloc.take_snapshot().statistics("lineno")[:8]
    return {
        "seconds": seconds,
        "rss above idle MiB": (peaks["rss"] - idle) / 2**20,
        "Arrow peak MiB": peaks["arrow"] / 2**20,
        "Python heap peak MiB": peaks["python"] / 2**20,
        "Python heap at the end MiB": tracemalloc.get_traced_memory()[0] / 2**20,
        "largest sites at the end": [f"{s.size / 2**20:.1f} MiB {s.traceback[0]}" for s in top],
        "pool": pa.default_memory_pool().backend_name,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_profile", description=__doc__)
    parser.add_argument("--rows", type=int, default=30_000_000, help="rows over ten years")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    servers = stock_servers("memory")
    ctx = multiprocessing.get_context("spawn")
    with servers:
        url = utf8_database(servers)
        for years, rows in ((1, args.rows // YEARS), (YEARS, args.rows)):
            index = Index(servers, url, years, rows)
            spec = index.spec(_first_day(years), LAST_DAY)
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                found = pool.submit(child, spec).result()
            print(f"\n{years} year(s), {rows:,} rows:")
            for name, value in found.items():
                if isinstance(value, list):
                    print(f"  {name}:")
                    for line in value:
                        print(f"    {line}")
                elif isinstance(value, float):
                    print(f"  {name}: {value:,.1f}")
                else:
                    print(f"  {name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

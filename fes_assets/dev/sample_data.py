"""Feast-style sample parquet for the demo: three feature tables over the last 14 days up to
now (as Feast's own project template does), with an INT64 entity, a STRING entity, a
composite key and a created-timestamp column. Nothing is dated after now, so the checks pass."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ..core.days import ONE_DAY, day_start

DAYS = 14
TS = pa.timestamp("us", tz="UTC")
DRIVERS = np.arange(1001, 1051)
CUSTOMERS = np.array([f"C-{i:04d}" for i in range(1, 201)])
EXAMPLE_REGISTRY = "example_fes.yaml"


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as a parquet file's bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def driver_hourly_stats(hours: list[datetime], now: datetime, rng: np.random.Generator) -> pa.Table:
    """Every driver once an hour; created shortly after, but never after now."""
    ids = np.repeat(DRIVERS, len(hours))
    ts = np.tile(hours, len(DRIVERS))
    created = [min(t + timedelta(minutes=10), now) for t in ts]
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array(ts, TS),
            "created": pa.array(created, TS),
            "conv_rate": rng.random(len(ids)).astype("float32"),
            "acc_rate": rng.random(len(ids)).astype("float32"),
            "avg_daily_trips": rng.integers(0, 1000, len(ids)).astype("int64"),
        }
    )


def _instants(start: datetime, end: datetime, n: int, rng: np.random.Generator) -> list:
    """`n` random instants in [start, end), to the second."""
    seconds = max(int((end - start).total_seconds()), 1)
    return [start + timedelta(seconds=int(s)) for s in rng.integers(0, seconds, n)]


def customer_profile(start: datetime, end: datetime, rng: np.random.Generator) -> pa.Table:
    active = rng.choice(CUSTOMERS, size=60, replace=False)
    ts = _instants(start, end, len(active), rng)
    return pa.table(
        {
            "customer_id": pa.array(active),
            "event_timestamp": pa.array(ts, TS),
            "created": pa.array(ts, TS),
            "current_balance": rng.random(len(active)).astype("float32") * 100,
            "lifetime_trip_count": rng.integers(0, 500, len(active)).astype("int64"),
        }
    )


def driver_customer_trips(start: datetime, end: datetime, rng: np.random.Generator) -> pa.Table:
    n = 150
    return pa.table(
        {
            "drv": pa.array(rng.choice(DRIVERS, n), pa.int64()),  # mapped to driver_id
            "customer_id": pa.array(rng.choice(CUSTOMERS, n)),
            "ts": pa.array(_instants(start, end, n, rng), TS),
            "trip_minutes": rng.integers(3, 90, n).astype("int32"),
        }
    )


@dataclass(frozen=True)
class SampleData:
    objects: dict[str, bytes]  # object key -> parquet bytes
    first_day: date
    now: datetime

    def registry_yaml(self) -> str:
        """The example registry with its partitions starting on the data's first day."""
        from importlib.resources import files

        raw = yaml.safe_load((files("fes_assets") / EXAMPLE_REGISTRY).read_text())
        raw["partitions_start"] = self.first_day.isoformat()
        return "# Written by `fes demo`: the sample data's registry.\n" + yaml.safe_dump(
            raw, sort_keys=False
        )


def sample_objects(now: datetime, seed: int = 7) -> SampleData:
    """One file per feature table and day (Hive-style keys) for the 14 days up to `now`."""
    rng = np.random.default_rng(seed)
    first_day = now.date() - timedelta(days=DAYS - 1)
    last_hour = now.replace(minute=0, second=0, microsecond=0)
    objects = {}
    for n in range(DAYS):
        start = day_start(first_day + timedelta(days=n))
        end = min(start + ONE_DAY, now)
        stamp = start.date().isoformat()
        hours = [
            start + timedelta(hours=h) for h in range(24) if start + timedelta(hours=h) <= last_hour
        ]
        if hours:
            objects[f"driver_hourly_stats/date={stamp}/part-0.parquet"] = parquet_bytes(
                driver_hourly_stats(hours, now, rng)
            )
        if end > start:
            objects[f"customer_profile/date={stamp}/part-0.parquet"] = parquet_bytes(
                customer_profile(start, end, rng)
            )
            objects[f"trips/date={stamp}/part-0.parquet"] = parquet_bytes(
                driver_customer_trips(start, end, rng)
            )
    return SampleData(objects, first_day, now)

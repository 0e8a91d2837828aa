"""Runs that overlap give the result of one serial run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa

from fes_assets.core.indexing import EntityIndexer

T0 = datetime(2021, 4, 1, tzinfo=UTC)
DRIVERS = {
    "driver_hourly_stats": {
        "prefix": "d/",
        "entities": {"driver_id": "INT64"},
        "timestamp_column": "event_timestamp",
    }
}
DAYS = [date(2021, 4, 1) + timedelta(days=i) for i in range(5)]
COLS = ("driver_id", "event_timestamp", "path")


def drivers(ids, day: int) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array(
                [T0 + timedelta(days=day, minutes=i) for i in ids], pa.timestamp("us", tz="UTC")
            ),
        }
    )


def fill(lab) -> None:
    for i in range(10):
        lab.put(f"d/{i}.parquet", drivers(list(range(i * 100, i * 100 + 50)), i % 5))


def indexer(lab) -> EntityIndexer:
    return EntityIndexer(lab.store, lab.db, lab.registry, "driver_id", log=lambda m: None)


def truth(lab) -> list[tuple]:
    return sorted(
        (i, T0 + timedelta(days=n % 5, minutes=i), f"s3://{lab.bucket}/d/{n}.parquet")
        for n in range(10)
        for i in range(n * 100, n * 100 + 50)
    )


def test_two_runs_of_the_same_partitions_at_once(lab):
    lab.use_registry(DRIVERS)
    fill(lab)
    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(indexer(lab).run, DAYS) for _ in range(2)]:
            f.result()
    indexer(lab).catch_up_latest()
    assert lab.ids("entity_driver_id", *COLS) == truth(lab)
    assert lab.sql("SELECT count(*) FROM latest_driver_id") == [(500,)]


def test_a_backfill_overlapping_sensor_runs(lab):
    lab.use_registry(DRIVERS)
    fill(lab)
    sensor = lab.sensor()
    first = lab.tick(sensor)
    # The backfill and the sensor's runs race over the same days.
    with ThreadPoolExecutor(2) as pool:
        backfill = pool.submit(indexer(lab).run, DAYS)
        runs = pool.submit(lab.execute, first)
        backfill.result()
        assert all(r.success for r in runs.result())
    lab.settle(sensor)
    indexer(lab).catch_up_latest()
    assert lab.ids("entity_driver_id", *COLS) == truth(lab)
    assert lab.sql("SELECT count(*), count(DISTINCT driver_id) FROM latest_driver_id") == [
        (500, 500)
    ]


def test_two_sensor_ticks_racing(lab):
    lab.use_registry(DRIVERS)
    fill(lab)
    sensor = lab.sensor()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: lab.tick(sensor), range(2)))
    for result in results:
        assert all(r.success for r in lab.execute(result))
    lab.settle(sensor)
    assert lab.ids("entity_driver_id", *COLS) == truth(lab)
    assert lab.sql("SELECT count(*) FROM files") == [(10,)]
    assert lab.sql("SELECT count(*) FROM latest_driver_id") == [(500,)]

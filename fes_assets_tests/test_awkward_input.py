"""Awkward but valid input is indexed exactly; rows outside every partition are counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from fes_assets_tests.conftest import drivers, drivers_registry

T0 = datetime(2021, 4, 1, 6, tzinfo=UTC)
DRIVERS = {
    "driver_hourly_stats": {
        "prefix": "d/",
        "entities": {"driver_id": "INT64"},
        "timestamp_column": "event_timestamp",
    }
}


def test_awkward_valid_input(lab):
    lab.use_registry(DRIVERS)
    empty = pa.table(
        {
            "driver_id": pa.array([], pa.int64()),
            "event_timestamp": pa.array([], pa.timestamp("us", tz="UTC")),
        }
    )
    lab.put("d/empty.parquet", empty)
    lab.put(
        "d/naive.parquet",
        pa.table(
            {  # naive means UTC
                "driver_id": pa.array([1], pa.int64()),
                "event_timestamp": pa.array([T0.replace(tzinfo=None)], pa.timestamp("ns")),
            }
        ),
    )
    lab.put(
        "d/aware.parquet",
        pa.table(
            {
                "driver_id": pa.array([2], pa.int64()),
                "event_timestamp": pa.array([T0], pa.timestamp("ms", tz="Asia/Kolkata")),
            }
        ),
    )
    lab.put(
        "d/../dots/..parquet",
        pa.table(
            {
                "driver_id": pa.array([3], pa.int64()),
                "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    long_key = "d/" + "k" * 1000 + ".parquet"  # S3 allows keys up to 1024 bytes
    lab.put(
        long_key,
        pa.table(
            {
                "driver_id": pa.array([4], pa.int64()),
                "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    # Version 1 and 2 of one object with different schemas that both fit.
    lab.put(
        "d/evolving.parquet",
        pa.table(
            {
                "driver_id": pa.array([5], pa.int32()),
                "x": [1.0],
                "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    assert lab.settle(lab.sensor()) == 1
    lab.put(
        "d/evolving.parquet",
        pa.table(
            {
                "event_timestamp": pa.array([T0 + timedelta(hours=1)], pa.timestamp("ns")),
                "y": ["new column"],
                "driver_id": pa.array([6], pa.uint8()),
            }
        ),
    )
    assert lab.settle(lab.sensor()) == 1
    assert lab.ids("entity_driver_id", "driver_id", "event_timestamp") == [
        (1, T0),
        (2, T0),
        (3, T0),
        (4, T0),
        (6, T0 + timedelta(hours=1)),
    ]
    assert lab.sql("SELECT status, row_count FROM files WHERE key = 'd/empty.parquet'") == [
        ("indexed", 0)
    ]
    assert lab.sql("SELECT count(*) FROM files WHERE status <> 'indexed'") == [(0,)]


def test_timestamps_outside_every_partition_are_counted_not_lost(lab, monkeypatch):
    monkeypatch.setenv("FES_NOW", "2021-04-02T00:00:00+00:00")
    lab.use_registry(DRIVERS)
    lab.put(
        "d/extreme.parquet",
        pa.table(
            {
                "driver_id": pa.array([1, 2, 3, 4], pa.int64()),
                "event_timestamp": pa.array(
                    [
                        datetime(1850, 1, 1, tzinfo=UTC),
                        datetime(1899, 12, 31, tzinfo=UTC),
                        T0,
                        datetime(2250, 1, 1, tzinfo=UTC),
                    ],
                    pa.timestamp("us", tz="UTC"),
                ),
            }
        ),
    )
    lab.settle(lab.sensor())
    assert lab.ids("entity_driver_id", "driver_id") == [(3,)]
    assert lab.sql("SELECT row_count, rows_before_start, rows_after_end, status FROM files") == [
        (4, 2, 1, "indexed")
    ]


def test_rows_before_1970_land_in_their_own_day(lab):
    lab.use_registry(drivers_registry(), start="1969-12-30")
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    times = [epoch - timedelta(microseconds=1), epoch, epoch - timedelta(days=1, microseconds=1)]
    lab.put("d/old.parquet", drivers([1, 2, 3], times))
    assert lab.materialize("driver_id", ("1969-12-30", "1970-01-01")).success
    assert lab.ids("entity_driver_id", "driver_id", "event_timestamp") == sorted(
        zip([1, 2, 3], times, strict=True)
    )
    assert lab.sql(
        "SELECT driver_id FROM entity_driver_id "
        "WHERE event_timestamp >= '1969-12-31' AND event_timestamp < '1970-01-01'"
    ) == [(1,)]

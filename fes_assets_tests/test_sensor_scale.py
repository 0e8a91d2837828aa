"""The sensor's cost follows what is new, and a large backlog drains in bounded ticks."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from fes_assets.core.scanning import BucketScanner, ScanCursor, ScanSettings
from fes_assets_tests.conftest import parquet_bytes

T0 = datetime(2021, 4, 1, tzinfo=UTC)
DRIVERS = {
    "driver_hourly_stats": {
        "prefix": "driver_hourly_stats/",
        "entities": {"driver_id": "INT64"},
        "timestamp_column": "event_timestamp",
    }
}


def fill(lab, keys_and_bodies) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kb: lab.put(*kb), keys_and_bodies))


def body(i: int, day: int = 0) -> bytes:
    return parquet_bytes(
        pa.table(
            {
                "driver_id": pa.array([i], pa.int64()),
                "event_timestamp": pa.array(
                    [T0 + timedelta(days=day, minutes=i % 1000)], pa.timestamp("us", tz="UTC")
                ),
            }
        )
    )


def test_steady_ticks_cost_the_same_on_small_and_large_buckets(lab, pg_url, s3_server, instance):
    from fes_assets_tests.conftest import Lab

    lab.use_registry(DRIVERS)
    costs = {}
    for size in (1_000, 5_000):
        one = Lab(
            pg_url, s3_server.endpoint_url, f"{lab.bucket}-{size}", f"{lab.schema}_{size}", instance
        )
        one.use_registry(DRIVERS)
        tiny = body(0)
        fill(one, [(f"driver_hourly_stats/old/{i:06d}.parquet", tiny) for i in range(size)])
        # The steady state: everything already seen and reconciled a moment ago.
        settings = ScanSettings(reconcile_interval=3600)
        last_old = f"driver_hourly_stats/old/{size - 1:06d}.parquet"
        start = ScanCursor(
            after={f"{one.bucket}/driver_hourly_stats/": last_old},
            last_reconcile=time.time(),
        )
        scanner = BucketScanner(one.store, one.db, one.registry, settings)
        idle = scanner.scan(start, datetime.now(UTC))
        idle_lists = scanner.store.requests["ListObjectsV2"]
        assert ScanCursor.loads(idle.cursor.dumps()) == idle.cursor
        fill(one, [(f"driver_hourly_stats/z-new/{i}.parquet", body(i)) for i in range(5)])
        scanner = BucketScanner(one.store, one.db, one.registry, settings)
        busy = scanner.scan(idle.cursor, datetime.now(UTC))
        assert len(busy.changes.new) == 5
        costs[size] = (idle_lists, scanner.store.requests["ListObjectsV2"], busy.listed)
    assert costs[1_000] == costs[5_000] == (1, 1, 5)


def test_a_backlog_over_30_days_drains_in_capped_ticks(lab):
    lab.use_registry(DRIVERS)
    fill(lab, [(f"driver_hourly_stats/{i:04d}.parquet", body(i, day=i % 30)) for i in range(1_000)])
    sensor = lab.sensor(max_objects=200, reconcile_interval=3600)
    runs = 0
    catalogued = []
    for _ in range(12):
        result = lab.tick(sensor)
        catalogued.append(lab.sql("SELECT count(*) FROM files")[0][0])
        if not result.run_requests:
            break
        for run in lab.execute(result):
            assert run.success
            runs += 1
    assert catalogued[:5] == [200, 400, 600, 800, 1000]
    assert lab.sql("SELECT count(*), count(DISTINCT driver_id) FROM entity_driver_id") == [
        (1000, 1000)
    ]
    assert lab.sql("SELECT count(*) FROM latest_driver_id") == [(1000,)]
    assert lab.sql("SELECT count(*) FROM jobs WHERE status = 'success'") == [(1000,)]
    assert runs <= 10, runs  # far fewer than 30 days x 1 entity key

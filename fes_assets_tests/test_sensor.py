"""bucket_sensor end to end: ticks, the runs they request, executed on a real instance."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fes_assets.core.catalogue import Catalog
from fes_assets.core.scanning import ScanCursor
from fes_assets_tests.conftest import T0, drivers, drivers_registry

DRIVERS = drivers_registry("driver_hourly_stats/")


def test_put_overwrite_delete_follow_the_bucket(lab):
    lab.use_registry(DRIVERS)
    sensor = lab.sensor()
    first = lab.tick(sensor)
    assert not first.run_requests and "nothing to index" in first.skip_reason.skip_message

    lab.put("driver_hourly_stats/a.parquet", drivers([1, 2], [T0, T0 + timedelta(days=1)]))
    lab.put("driver_hourly_stats/b.parquet", drivers([3], [T0]))
    result = lab.tick(sensor)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.tags["dagster/asset_partition_range_start"] == "2021-04-01"
    assert request.tags["dagster/asset_partition_range_end"] == "2021-04-02"
    assert all(r.success for r in lab.execute(result))
    assert lab.ids("entity_driver_id", "driver_id") == [(1,), (2,), (3,)]
    assert lab.ids("latest_driver_id", "driver_id") == [(1,), (2,), (3,)]
    assert not lab.tick(sensor).run_requests  # nothing new: nothing requested twice

    lab.put("driver_hourly_stats/a.parquet", drivers([10], [T0 + timedelta(hours=5)]))
    assert lab.settle(sensor) == 1
    assert lab.ids("entity_driver_id", "driver_id") == [(3,), (10,)]
    assert lab.ids("latest_driver_id", "driver_id") == [(3,), (10,)]

    lab.delete("driver_hourly_stats/b.parquet")
    assert lab.settle(sensor) == 1
    assert lab.ids("entity_driver_id", "driver_id") == [(10,)]
    assert lab.ids("latest_driver_id", "driver_id") == [(10,)]
    assert lab.sql("SELECT key, status FROM files ORDER BY key") == [
        ("driver_hourly_stats/a.parquet", "indexed"),
        ("driver_hourly_stats/b.parquet", "deleted"),
    ]


def test_delete_then_identical_reput_is_indexed_again(lab):
    lab.use_registry(DRIVERS)
    sensor = lab.sensor()
    body = drivers([7], [T0])
    lab.put("driver_hourly_stats/a.parquet", body)
    assert lab.settle(sensor) == 1
    lab.delete("driver_hourly_stats/a.parquet")
    assert lab.settle(sensor) == 1
    assert lab.ids("entity_driver_id", "driver_id") == []
    lab.put("driver_hourly_stats/a.parquet", body)
    assert lab.settle(sensor) == 1
    assert lab.ids("entity_driver_id", "driver_id") == [(7,)]
    assert lab.ids("latest_driver_id", "driver_id") == [(7,)]
    assert lab.sql("SELECT generation, status FROM files") == [(3, "indexed")]


def test_awkward_keys(lab):
    lab.use_registry(DRIVERS)
    sensor = lab.sensor()
    keys = [
        "with space.parquet",
        "ünï cødé.parquet",
        "date=2021-04-01/x.parquet",
        "pct%20encoded%2F.parquet",
        "plus+sign.parquet",
    ]
    for i, k in enumerate(keys):
        lab.put(f"driver_hourly_stats/{k}", drivers([i], [T0]))
    lab.put("driver_hourly_stats/", b"")  # a directory marker
    lab.put("elsewhere/x.parquet", drivers([99], [T0]))  # outside every prefix
    assert lab.settle(sensor) == 1
    assert lab.ids("entity_driver_id", "driver_id") == [(i,) for i in range(len(keys))]
    paths = {p for (p,) in lab.sql("SELECT path FROM entity_driver_id")}
    assert paths == {f"s3://{lab.bucket}/driver_hourly_stats/{k}" for k in keys}
    lab.delete("driver_hourly_stats/ünï cødé.parquet")
    assert lab.settle(sensor) == 1
    assert (1,) not in lab.ids("entity_driver_id", "driver_id")


def test_bad_object_yields_no_run_and_replacing_a_good_one_removes_its_rows(lab):
    lab.use_registry(DRIVERS)
    sensor = lab.sensor()
    lab.put("driver_hourly_stats/bad.parquet", b"not parquet")
    result = lab.tick(sensor)
    assert not result.run_requests
    assert lab.sql("SELECT status FROM files") == [("failed",)]
    lab.put("driver_hourly_stats/good.parquet", drivers([1], [T0]))
    assert lab.settle(sensor) == 1
    lab.put("driver_hourly_stats/good.parquet", b"now broken")
    assert lab.settle(sensor) == 1  # removes the rows of the version it replaced
    assert lab.ids("entity_driver_id", "driver_id") == []
    errors = lab.sql("SELECT key, error FROM files WHERE status = 'failed' ORDER BY key")
    assert [k for k, _ in errors] == [
        "driver_hourly_stats/bad.parquet",
        "driver_hourly_stats/good.parquet",
    ]
    # Fixed in place: a new ETag, indexed without anyone asking.
    lab.put("driver_hourly_stats/bad.parquet", drivers([5], [T0]))
    assert lab.settle(sensor) == 1
    assert lab.ids("entity_driver_id", "driver_id") == [(5,)]


def test_runs_applied_out_of_order_leave_the_newest_truth(lab):
    lab.use_registry(DRIVERS)
    sensor = lab.sensor()
    lab.put("driver_hourly_stats/a.parquet", drivers([1], [T0]))
    old = lab.tick(sensor)
    lab.put("driver_hourly_stats/a.parquet", drivers([2], [T0]))
    new = lab.tick(sensor)
    assert old.run_requests and new.run_requests
    assert old.run_requests[0].run_key != new.run_requests[0].run_key
    lab.execute(new)
    lab.execute(old)  # late: it must not bring id 1 back
    assert lab.ids("entity_driver_id", "driver_id") == [(2,)]
    assert lab.ids("latest_driver_id", "driver_id") == [(2,)]
    assert lab.settle(sensor) == 0


def test_a_run_that_fails_while_postgres_is_down_is_requested_again(lab, pg_server):
    if pg_server is None:
        pytest.skip("needs the embedded PostgreSQL, which the test can stop")
    lab.use_registry(DRIVERS)
    sensor = lab.sensor()
    lab.put("driver_hourly_stats/a.parquet", drivers([4], [T0]))
    result = lab.tick(sensor)
    pg_server.stop()
    try:
        runs = lab.execute(result)
    finally:
        pg_server.start()
    assert not runs[0].success
    retry = lab.tick(sensor)
    assert len(retry.run_requests) == 1
    assert retry.run_requests[0].run_key != result.run_requests[0].run_key
    assert all(r.success for r in lab.execute(retry))
    assert lab.ids("latest_driver_id", "driver_id") == [(4,)]
    assert lab.sql("SELECT attempt, applied_generation, generation FROM files") == [(1, 1, 1)]


def test_a_failure_between_listing_and_cataloguing_loses_nothing(lab, monkeypatch):
    lab.use_registry(DRIVERS)
    sensor = lab.sensor()
    for i in range(5):
        lab.put(f"driver_hourly_stats/{i}.parquet", drivers([i], [T0]))
    real = Catalog.record
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("injected: the database went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Catalog, "record", failing)
    before = lab.cursor
    with pytest.raises(Exception, match="injected"):
        lab.tick(sensor)
    assert lab.cursor == before
    monkeypatch.setattr(Catalog, "record", real)
    lab.settle(sensor)
    assert lab.ids("entity_driver_id", "driver_id") == [(i,) for i in range(5)]
    assert lab.sql("SELECT count(*), min(generation), max(generation) FROM files") == [(5, 1, 1)]


def test_cursor_round_trips():
    cursor = ScanCursor(
        after={"b/p/": "p/x.parquet"},
        reconcile={"prefix": 1, "after": "k", "started": 5.0},
        last_reconcile=3.0,
        today="2021-04-01",
        events=["2021-04-01T00:00:00+00:00", "17"],
    )
    assert ScanCursor.loads(cursor.dumps()) == cursor
    assert ScanCursor.loads(None) == ScanCursor()


def test_future_rows_are_requested_again_when_their_day_starts(lab, monkeypatch):
    monkeypatch.setenv("FES_NOW", "2021-04-01T12:00:00+00:00")
    lab.use_registry(DRIVERS)
    sensor = lab.sensor()
    lab.put("driver_hourly_stats/a.parquet", drivers([1, 2], [T0, T0 + timedelta(days=2)]))
    assert lab.settle(sensor) == 1
    assert lab.ids("entity_driver_id", "driver_id") == [(1,)]
    assert lab.sql("SELECT rows_after_end FROM files") == [(1,)]
    monkeypatch.setenv("FES_NOW", "2021-04-03T00:10:00+00:00")
    assert lab.settle(sensor) == 1
    assert lab.ids("entity_driver_id", "driver_id") == [(1,), (2,)]
    assert lab.ids("latest_driver_id", "driver_id") == [(1,), (2,)]
    assert lab.sql("SELECT rows_after_end FROM files") == [(0,)]
    monkeypatch.setenv("FES_NOW", "2021-04-04T00:10:00+00:00")
    assert lab.settle(sensor) == 0


def test_a_file_named_before_the_cursor_in_the_newest_hive_folder_is_found_without_reconcile(
    lab,
):
    lab.use_registry(drivers_registry())
    sensor = lab.sensor(reconcile_interval=10**9)  # no pass after the first tick's
    lab.tick(sensor)
    lab.put("d/date=2021-04-01/part-f0.parquet", drivers([1]))
    lab.settle(sensor)
    # Spark-style names are random: this one sorts before the key the listing reached.
    lab.put("d/date=2021-04-01/part-0a.parquet", drivers([2]))
    # In an older folder, it waits for the reconcile pass.
    lab.put("d/date=2021-03-31/part-zz.parquet", drivers([3]))
    lab.settle(sensor)
    assert lab.ids("entity_driver_id", "driver_id") == [(1,), (2,)]

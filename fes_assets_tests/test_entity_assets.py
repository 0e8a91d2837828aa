"""Materializing entity_<key> and latest_<key> through Dagster against real servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

DRIVERS = {
    "driver_hourly_stats": {
        "prefix": "driver_hourly_stats/",
        "entities": {"driver_id": "INT64"},
        "timestamp_column": "event_timestamp",
        "created_timestamp_column": "created",
    }
}
T0 = datetime(2021, 4, 1, tzinfo=UTC)


def drivers(ids, times, created=None) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
            "created": pa.array(created or [T0] * len(ids), pa.timestamp("us", tz="UTC")),
            "conv_rate": pa.array([0.5] * len(ids)),
        }
    )


def check(result, name: str) -> bool:
    evaluations = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    assert evaluations, f"no {name} evaluation"
    return all(e.passed for e in evaluations)


def test_int64_ids_land_in_their_days_and_latest(lab):
    lab.use_registry(DRIVERS)
    lab.put(
        "driver_hourly_stats/a.parquet",
        drivers([1, 2, 3], [T0, T0 + timedelta(days=1), T0 + timedelta(days=2, hours=5)]),
    )
    lab.put("driver_hourly_stats/b.parquet", drivers([1], [T0 + timedelta(hours=3)]))
    result = lab.materialize("driver_id", ("2021-04-01", "2021-04-03"))
    assert result.success
    assert lab.ids("entity_driver_id", "driver_id", "event_timestamp", "path") == [
        (1, T0, f"s3://{lab.bucket}/driver_hourly_stats/a.parquet"),
        (1, T0 + timedelta(hours=3), f"s3://{lab.bucket}/driver_hourly_stats/b.parquet"),
        (2, T0 + timedelta(days=1), f"s3://{lab.bucket}/driver_hourly_stats/a.parquet"),
        (3, T0 + timedelta(days=2, hours=5), f"s3://{lab.bucket}/driver_hourly_stats/a.parquet"),
    ]
    assert lab.ids("latest_driver_id", "driver_id", "event_timestamp") == [
        (1, T0 + timedelta(hours=3)),
        (2, T0 + timedelta(days=1)),
        (3, T0 + timedelta(days=2, hours=5)),
    ]
    entity = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.path[-1] == "entity_driver_id"
    ]
    meta = entity[0].materialization.metadata
    assert meta["dagster/row_count"].value == 4
    assert meta["dagster/table_name"].value == f"{lab.schema}.entity_driver_id"
    assert meta["rows_per_day"].value == {"2021-04-01": 2, "2021-04-02": 1, "2021-04-03": 1}
    assert check(result, "timestamps_valid") and check(result, "source_files_valid")
    jobs = lab.sql("SELECT status, row_count FROM jobs ORDER BY path")
    assert jobs == [("success", 3), ("success", 1)]


def test_string_and_composite_keys_with_field_mapping(lab):
    lab.use_registry(
        {
            "customer_profile": {
                "prefix": "customers/",
                "entities": {"customer_id": "STRING"},
                "timestamp_column": "event_timestamp",
            },
            "trips": {
                "prefix": "trips/",
                "entities": {"driver_id": "INT64", "customer_id": "STRING"},
                "timestamp_column": "ts",
                "field_mapping": {"drv": "driver_id"},
            },
        }
    )
    lab.put(
        "customers/c.parquet",
        pa.table(
            {
                "customer_id": ["c-1", "ünïcode", "c 3"],
                "event_timestamp": pa.array([T0] * 3, pa.timestamp("ms", tz="UTC")),
            }
        ),
    )
    lab.put(
        "trips/t.parquet",
        pa.table(
            {
                "drv": pa.array([7, 8], pa.int32()),
                "customer_id": ["c-1", "c-2"],
                "ts": pa.array([T0, T0 + timedelta(hours=1)], pa.timestamp("ns")),
            }
        ),
    )
    assert lab.materialize("customer_id", "2021-04-01").success
    assert lab.materialize("customer_id__driver_id", "2021-04-01").success
    assert lab.ids("entity_customer_id", "customer_id") == [("c 3",), ("c-1",), ("ünïcode",)]
    assert lab.ids(
        "latest_customer_id__driver_id", "customer_id", "driver_id", "feature_table"
    ) == [("c-1", 7, "trips"), ("c-2", 8, "trips")]


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "America/New_York"])
def test_timestamp_units_and_zones(lab, unit, tz):
    lab.use_registry(DRIVERS)
    local = datetime(2021, 4, 1, 23, 30, 0, 123456)
    if tz == "America/New_York":
        moment = local.replace(tzinfo=timezone(timedelta(hours=-4)))
    else:
        moment = local.replace(tzinfo=UTC)
    values = pa.array([moment.astimezone(UTC).replace(tzinfo=None)], pa.timestamp(unit))
    if tz:
        values = values.cast(pa.timestamp(unit, tz="UTC")).cast(pa.timestamp(unit, tz=tz))
    lab.put(
        "driver_hourly_stats/x.parquet",
        pa.table(
            {
                "driver_id": pa.array([5], pa.int64()),
                "event_timestamp": values,
                "created": pa.array([T0], pa.timestamp("us")),
            }
        ),
    )
    day = moment.astimezone(UTC).date().isoformat()
    assert lab.materialize("driver_id", day).success
    expected = moment.astimezone(UTC)
    if unit == "ms":
        expected = expected.replace(microsecond=123000)
    assert lab.ids("entity_driver_id", "driver_id", "event_timestamp") == [(5, expected)]


def test_int96_timestamps(lab):
    lab.use_registry(DRIVERS)
    lab.put(
        "driver_hourly_stats/old.parquet",
        drivers([9], [T0 + timedelta(hours=2)]),
        use_deprecated_int96_timestamps=True,
    )
    assert lab.materialize("driver_id", "2021-04-01").success
    assert lab.ids("entity_driver_id", "driver_id", "event_timestamp") == [
        (9, T0 + timedelta(hours=2))
    ]


def test_overwrite_and_delete_give_the_new_truth(lab):
    lab.use_registry(DRIVERS)
    lab.put("driver_hourly_stats/a.parquet", drivers([1, 2], [T0, T0 + timedelta(days=1)]))
    lab.put("driver_hourly_stats/b.parquet", drivers([3], [T0 + timedelta(hours=1)]))
    assert lab.materialize("driver_id", ("2021-04-01", "2021-04-02")).success
    lab.put("driver_hourly_stats/a.parquet", drivers([10, 20], [T0, T0 + timedelta(days=1)]))
    lab.delete("driver_hourly_stats/b.parquet")
    assert lab.materialize("driver_id", ("2021-04-01", "2021-04-02")).success
    assert lab.ids("entity_driver_id", "driver_id") == [(10,), (20,)]
    assert lab.ids("latest_driver_id", "driver_id") == [(10,), (20,)]
    assert lab.sql("SELECT status, generation FROM files ORDER BY key") == [
        ("indexed", 2),
        ("deleted", 2),
    ]


def test_range_run_equals_single_day_runs_and_reruns_change_nothing(
    lab, pg_url, s3_server, instance
):
    from fes_assets_tests.conftest import Lab

    lab.use_registry(DRIVERS)
    other = Lab(pg_url, s3_server.endpoint_url, lab.bucket + "-b", lab.schema + "_b", instance)
    other.use_registry(DRIVERS)
    for i in range(6):
        table = drivers(
            list(range(i * 10, i * 10 + 5)),
            [T0 + timedelta(hours=13 * i + j * 7) for j in range(5)],
        )
        lab.put(f"driver_hourly_stats/f{i}.parquet", table)
        other.put(f"driver_hourly_stats/f{i}.parquet", table)
    assert lab.materialize("driver_id", ("2021-04-01", "2021-04-05")).success
    for d in range(1, 6):
        assert other.materialize("driver_id", f"2021-04-0{d}").success
    cols = ("driver_id", "event_timestamp", "created_timestamp", "feature_table")
    ranged = lab.ids("entity_driver_id", *cols)
    assert ranged == other.ids("entity_driver_id", *cols)
    assert len(ranged) == 30
    assert lab.ids("latest_driver_id", *cols) == other.ids("latest_driver_id", *cols)
    assert lab.materialize("driver_id", "2021-04-02").success
    assert lab.materialize("driver_id", ("2021-04-01", "2021-04-05")).success
    assert lab.ids("entity_driver_id", *cols) == ranged
    assert lab.sql("SELECT count(*) FROM _c_driver_id") == [(0,)]


def test_future_rows_fail_the_check_block_latest_and_catch_up_later(lab, monkeypatch):
    monkeypatch.setenv("FES_NOW", "2021-04-02T12:00:00+00:00")
    lab.use_registry(DRIVERS)
    lab.put("driver_hourly_stats/good.parquet", drivers([1], [T0]))
    assert lab.materialize("driver_id", "2021-04-01").success
    assert lab.ids("latest_driver_id", "driver_id") == [(1,)]
    # Rows dated later today, and beyond the last partition (2021-04-03 does not exist yet).
    lab.put(
        "driver_hourly_stats/future.parquet",
        drivers([2, 3], [T0 + timedelta(days=1, hours=20), T0 + timedelta(days=5)]),
    )
    lab.put("driver_hourly_stats/more.parquet", drivers([4], [T0 + timedelta(hours=1)]))
    result = lab.materialize("driver_id", ("2021-04-01", "2021-04-02"))
    assert not check(result, "timestamps_valid")
    ev = [e for e in result.get_asset_check_evaluations() if e.check_name == "timestamps_valid"]
    assert "future.parquet" in ev[0].description
    skipped = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.path[-1] == "latest_driver_id"
    ]
    assert skipped == []
    assert lab.ids("latest_driver_id", "driver_id") == [(1,)]  # blocked
    assert (2,) in lab.ids("entity_driver_id", "driver_id")
    assert lab.sql("SELECT rows_after_end FROM files WHERE key LIKE '%%future%%'") == [(1,)]
    # The data is fixed: the next run catches latest up with everything changed meanwhile.
    lab.put("driver_hourly_stats/future.parquet", drivers([2], [T0 + timedelta(days=1)]))
    result = lab.materialize("driver_id", "2021-04-02")
    assert result.success and check(result, "timestamps_valid")
    assert lab.ids("latest_driver_id", "driver_id") == [(1,), (2,), (4,)]


def test_missing_created_timestamps_fail_the_check(lab):
    lab.use_registry(DRIVERS)
    lab.put("driver_hourly_stats/a.parquet", drivers([1, 2], [T0, T0], created=[T0, None]))
    result = lab.materialize("driver_id", "2021-04-01")
    assert not check(result, "timestamps_valid")


def test_bad_file_shows_in_source_files_valid_and_blocks_nothing(lab):
    lab.use_registry(DRIVERS)
    lab.put("driver_hourly_stats/good.parquet", drivers([1], [T0]))
    lab.put("driver_hourly_stats/bad.parquet", b"this is not parquet")
    result = lab.materialize("driver_id", "2021-04-01")
    assert result.success
    assert check(result, "timestamps_valid")
    assert not check(result, "source_files_valid")
    ev = [e for e in result.get_asset_check_evaluations() if e.check_name == "source_files_valid"]
    assert ev[0].severity.value == "WARN" and "bad.parquet" in ev[0].description
    assert lab.ids("latest_driver_id", "driver_id") == [(1,)]


def test_rows_beyond_the_last_partition_are_counted_then_indexed_when_their_day_exists(
    lab, monkeypatch
):
    monkeypatch.setenv("FES_NOW", "2021-04-01T12:00:00+00:00")
    lab.use_registry(DRIVERS)
    lab.put(
        "driver_hourly_stats/early.parquet",
        drivers([1, 2], [T0, T0 + timedelta(days=3)], created=[T0, T0]),
    )
    result = lab.materialize("driver_id", "2021-04-01")
    assert not check(result, "timestamps_valid")
    assert lab.sql("SELECT rows_after_end FROM files") == [(1,)]
    assert lab.ids("entity_driver_id", "driver_id") == [(1,)]
    monkeypatch.setenv("FES_NOW", "2021-04-05T00:00:00+00:00")
    result = lab.materialize("driver_id", ("2021-04-01", "2021-04-05"))
    assert result.success and check(result, "timestamps_valid")
    assert lab.ids("entity_driver_id", "driver_id") == [(1,), (2,)]
    assert lab.ids("latest_driver_id", "driver_id") == [(1,), (2,)]
    assert lab.sql("SELECT rows_after_end FROM files") == [(0,)]


def test_latest_ties_and_removals_as_files_come_and_go(lab):
    """Appends reach latest as candidates (greater wins: newest event, then created, then
    path); removing an id's latest row recomputes it from what history still holds."""
    lab.use_registry(DRIVERS)
    sensor = lab.sensor()
    path = f"s3://{lab.bucket}/driver_hourly_stats/"
    lab.put(
        "driver_hourly_stats/a.parquet",
        drivers([1, 2], [T0 + timedelta(hours=2), T0 + timedelta(days=1)], [T0, T0]),
    )
    lab.settle(sensor)
    later = T0 + timedelta(hours=1)
    # Same event as id 1's latest with a newer created timestamp: it wins. Id 2's row is
    # older than its latest, however new its created timestamp.
    lab.put(
        "driver_hourly_stats/b.parquet",
        drivers([1, 2], [T0 + timedelta(hours=2), T0 + timedelta(hours=5)], [later, later]),
    )
    lab.settle(sensor)
    cols = ("driver_id", "event_timestamp", "created_timestamp", "path")
    assert lab.ids("latest_driver_id", *cols) == [
        (1, T0 + timedelta(hours=2), later, path + "b.parquet"),
        (2, T0 + timedelta(days=1), T0, path + "a.parquet"),
    ]
    # Full ties: the greatest path wins, whether it arrives with a smaller one or after.
    same = drivers([1], [T0 + timedelta(hours=2)], [later])
    lab.put("driver_hourly_stats/0.parquet", same)
    lab.put("driver_hourly_stats/c.parquet", same)
    lab.settle(sensor)
    assert lab.ids("latest_driver_id", *cols)[0] == (
        1,
        T0 + timedelta(hours=2),
        later,
        path + "c.parquet",
    )
    # Id 1's latest rows go: the best of what remains takes over.
    lab.delete("driver_hourly_stats/c.parquet")
    lab.delete("driver_hourly_stats/b.parquet")
    lab.settle(sensor)
    assert lab.ids("latest_driver_id", *cols) == [
        (1, T0 + timedelta(hours=2), later, path + "0.parquet"),
        (2, T0 + timedelta(days=1), T0, path + "a.parquet"),
    ]
    lab.delete("driver_hourly_stats/0.parquet")
    lab.settle(sensor)
    assert lab.ids("latest_driver_id", *cols)[0] == (
        1,
        T0 + timedelta(hours=2),
        T0,
        path + "a.parquet",
    )
    assert lab.sql("SELECT count(*) FROM _c_driver_id") == [(0,)]
    # A rebuild of every day from the bucket agrees.
    before = lab.ids("latest_driver_id", *cols)
    assert lab.materialize("driver_id", ("2021-04-01", "2021-04-02")).success
    assert lab.ids("latest_driver_id", *cols) == before

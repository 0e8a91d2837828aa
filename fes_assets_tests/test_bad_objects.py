"""Bad objects are recorded as failed with their reason; the good ones are still indexed."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa

from fes_assets_tests.conftest import parquet_bytes

T0 = datetime(2021, 4, 1, 6, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def table(**columns) -> pa.Table:
    base = {"driver_id": pa.array([1, 2], pa.int64()), "event_timestamp": pa.array([T0, T0], TS)}
    base.update(columns)
    return pa.table({k: v for k, v in base.items() if v is not None})


GOOD = table(driver_id=pa.array([100, 200], pa.int64()))
BAD: dict[str, tuple[bytes | pa.Table, str]] = {
    "not_parquet": (b"id,ts\n1,2021-04-01\n", "not a readable parquet file"),
    "empty": (b"", "not a readable parquet file"),
    "truncated": (parquet_bytes(GOOD)[:-30], "not a readable parquet file"),
    "missing_id": (table(driver_id=None), "missing join key column 'driver_id'"),
    "missing_ts": (table(event_timestamp=None), "missing event timestamp column"),
    "ts_as_string": (table(event_timestamp=pa.array(["2021-04-01", "x"])), "expected a timestamp"),
    "ts_as_int": (table(event_timestamp=pa.array([1, 2], pa.int64())), "expected a timestamp"),
    "ts_as_date": (
        table(event_timestamp=pa.array([date(2021, 4, 1)] * 2)),
        "a date, not a timestamp",
    ),
    "null_ids": (table(driver_id=pa.array([1, None], pa.int64())), "null value"),
    "null_ts": (table(event_timestamp=pa.array([T0, None], TS)), "null value"),
    "float_ids": (table(driver_id=pa.array([1.0, 2.5])), "cannot be stored losslessly"),
    "overflowing_ids": (table(driver_id=pa.array([1, 2**63 + 5], pa.uint64())), "overflows"),
}


def test_each_bad_kind_is_recorded_and_others_are_indexed(lab):
    lab.use_registry(
        {
            "drivers": {
                "prefix": "d/",
                "entities": {"driver_id": "INT64"},
                "timestamp_column": "event_timestamp",
            }
        }
    )
    lab.put("d/good.parquet", GOOD)
    for name, (body, _) in BAD.items():
        lab.put(f"d/{name}.parquet", body)
    result = lab.materialize("driver_id", "2021-04-01")
    assert result.success
    assert lab.ids("entity_driver_id", "driver_id") == [(100,), (200,)]
    files = {
        k.removeprefix("d/").removesuffix(".parquet"): (status, error)
        for k, status, error in lab.sql("SELECT key, status, error FROM files")
    }
    assert files.pop("good") == ("indexed", None)
    for name, (_, reason) in BAD.items():
        status, error = files[name]
        assert status == "failed", name
        assert reason in error, (name, error)
    jobs = {
        p.rsplit("/", 1)[-1].removesuffix(".parquet"): (s, m)
        for p, s, m in lab.sql("SELECT path, status, status_msg FROM jobs")
    }
    for name, (_, reason) in BAD.items():
        assert jobs[name][0] == "failed" and reason in jobs[name][1], name
    entity = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.path[-1] == "entity_driver_id"
    ][0]
    assert entity.materialization.metadata["files_failed"].value == len(BAD)


def test_int32_and_string_id_limits(lab):
    lab.use_registry(
        {
            "small": {
                "prefix": "s/",
                "entities": {"shop": "INT32"},
                "timestamp_column": "event_timestamp",
            },
            "names": {
                "prefix": "n/",
                "entities": {"name": "STRING"},
                "timestamp_column": "event_timestamp",
            },
        }
    )
    ts = pa.array([T0], TS)
    lab.put(
        "s/widened.parquet", pa.table({"shop": pa.array([7], pa.int16()), "event_timestamp": ts})
    )
    lab.put(
        "s/overflow.parquet",
        pa.table({"shop": pa.array([2**40], pa.int64()), "event_timestamp": ts}),
    )
    lab.put("n/ok.parquet", pa.table({"name": ["x" * 1024], "event_timestamp": ts}))
    lab.put("n/long.parquet", pa.table({"name": ["x" * 1025], "event_timestamp": ts}))
    assert lab.materialize("shop", "2021-04-01").success
    assert lab.materialize("name", "2021-04-01").success
    assert lab.ids("entity_shop", "shop") == [(7,)]
    assert lab.ids("entity_name", "length(name)") == [(1024,)]
    errors = dict(lab.sql("SELECT key, error FROM files WHERE status = 'failed'"))
    assert "overflows INT32" in errors["s/overflow.parquet"]
    assert "1025 bytes" in errors["n/long.parquet"]


def test_an_indexed_file_overwritten_by_a_bad_one_loses_its_rows(lab):
    lab.use_registry(
        {
            "drivers": {
                "prefix": "d/",
                "entities": {"driver_id": "INT64"},
                "timestamp_column": "event_timestamp",
            }
        }
    )
    lab.put("d/a.parquet", GOOD)
    assert lab.materialize("driver_id", "2021-04-01").success
    assert lab.ids("latest_driver_id", "driver_id") == [(100,), (200,)]
    lab.put("d/a.parquet", b"garbage")
    assert lab.materialize("driver_id", "2021-04-01").success
    assert lab.ids("entity_driver_id", "driver_id") == []
    assert lab.ids("latest_driver_id", "driver_id") == []
    assert lab.sql("SELECT status, generation FROM files") == [("failed", 2)]

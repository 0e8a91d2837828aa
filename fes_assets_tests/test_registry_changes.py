"""Adding, removing and retyping feature tables against an existing index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from fes_assets.cli import main as fes
from fes_assets.core import clock
from fes_assets.core.indexing import EntityIndexer
from fes_assets.core.queries import entity_df
from fes_assets_tests import truth
from fes_assets_tests.conftest import failure_message

T0 = datetime(2021, 4, 1, 8, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def rows(ids, type_: pa.DataType | None = None) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array(ids, type_ or pa.int64()),
            "event_timestamp": pa.array([T0] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )


def spec(prefix, type_="INT64"):
    return {
        "prefix": prefix,
        "entities": {"driver_id": type_},
        "timestamp_column": "event_timestamp",
    }


def test_added_table_is_indexed_and_removed_one_kept_until_pruned(lab, monkeypatch, tmp_path):
    lab.use_registry({"a": spec("a/"), "b": spec("b/")})
    lab.put("a/1.parquet", rows([1]))
    lab.put("b/1.parquet", rows([2]))
    lab.put("c/1.parquet", rows([3]))
    assert lab.materialize("driver_id", "2021-04-01").success
    assert lab.ids("entity_driver_id", "driver_id", "feature_table") == [(1, "a"), (2, "b")]

    lab.use_registry({"a": spec("a/"), "c": spec("c/")})  # b removed, c added
    assert lab.materialize("driver_id", "2021-04-01").success
    assert lab.ids("entity_driver_id", "driver_id", "feature_table") == [
        (1, "a"),
        (2, "b"),
        (3, "c"),
    ]

    monkeypatch.setenv("FES_PG_URL", lab.pg_url)
    monkeypatch.setenv("FES_SCHEMA", lab.schema)
    monkeypatch.setenv("FES_CONFIG", str(lab.write_registry(tmp_path)))
    assert fes(["prune", "a"]) == 2  # still in the registry
    assert fes(["prune", "b"]) == 0
    assert lab.ids("entity_driver_id", "driver_id", "feature_table") == [(1, "a"), (3, "c")]
    assert lab.ids("latest_driver_id", "driver_id", "feature_table") == [(1, "a"), (3, "c")]
    assert lab.sql("SELECT count(*) FROM files WHERE feature_table = 'b'") == [(0,)]


def ids_of(lab, feature_table: str) -> list:
    df = entity_df(feature_table, url=lab.pg_url, schema=lab.schema)
    return sorted(df.drop(columns="event_timestamp").itertuples(index=False, name=None))


def test_changed_entity_type_is_refused_with_the_rebuild_command(lab, monkeypatch):
    lab.use_registry({"a": spec("a/")})
    lab.put("a/1.parquet", rows([1]))
    assert lab.materialize("driver_id", "2021-04-01").success
    assert ids_of(lab, "a") == [(1,)]

    lab.use_registry({"a": spec("a/", "STRING")})
    lab.put("a/1.parquet", rows(["d-1"], pa.string()))
    result = lab.materialize("driver_id", "2021-04-01")
    assert not result.success
    assert "`fes reset-entity driver_id`" in failure_message(result)
    assert lab.ids("entity_driver_id", "driver_id") == [(1,)]  # untouched

    monkeypatch.setenv("FES_PG_URL", lab.pg_url)
    monkeypatch.setenv("FES_SCHEMA", lab.schema)
    assert fes(["reset-entity", "driver_id"]) == 0
    assert lab.materialize("driver_id", "2021-04-01").success
    assert lab.ids("entity_driver_id", "driver_id") == [("d-1",)]
    # The same process asks again: it is answered from the rebuilt storage.
    assert ids_of(lab, "a") == [("d-1",)]


def test_queries_follow_a_table_to_its_new_entity_key(lab):
    lab.use_registry({"a": spec("a/")})
    lab.put("a/1.parquet", rows([1]))
    assert lab.materialize("driver_id", "2021-04-01").success
    assert ids_of(lab, "a") == [(1,)]
    moved = spec("a/")
    moved["entities"] = {"driver_id": "INT64", "trip_id": "INT64"}
    lab.use_registry({"a": moved})
    lab.put("a/1.parquet", rows([2]).append_column("trip_id", pa.array([7], pa.int64())))
    assert lab.materialize("driver_id__trip_id", "2021-04-01").success
    assert ids_of(lab, "a") == [(2, 7)]


def test_a_newer_index_version_is_refused(lab):
    lab.use_registry({"a": spec("a/")})
    assert lab.materialize("driver_id", "2021-04-01").success
    lab.sql("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    result = lab.materialize("driver_id", "2021-04-01")
    assert not result.success
    assert "newer than this release" in failure_message(result)


def two_clocks(ids, first_day: int, second_day: int) -> pa.Table:
    """Rows with two timestamp columns on different days, and a customer column."""
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "drv": pa.array([i + 100 for i in ids], pa.int64()),
            "customer_id": pa.array([f"c{i}" for i in ids]),
            "event_timestamp": pa.array(
                [T0 + timedelta(days=first_day, minutes=i) for i in ids], TS
            ),
            "ts2": pa.array([T0 + timedelta(days=second_day, minutes=i) for i in ids], TS),
        }
    )


def assert_matches_bucket(lab, key: str) -> None:
    EntityIndexer(lab.store, lab.db, lab.registry, key, log=lambda m: None).catch_up_latest()
    rows = truth.history(lab.s3, lab.registry, key, clock.now())
    keys = sorted(lab.registry.entity_types(key))
    cols = (*keys, "feature_table", "event_timestamp", "created_timestamp", "path")
    select = ", ".join(cols)
    assert truth.ordered(lab.sql(f"SELECT {select} FROM entity_{key}")) == rows
    assert truth.ordered(lab.sql(f"SELECT {select} FROM latest_{key}")) == truth.latest(rows)


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp_column": "ts2"},
        {"field_mapping": {"drv": "driver_id"}},
        {"created_timestamp_column": "ts2"},
    ],
)
def test_a_changed_column_is_followed_by_the_sensor_alone(lab, change):
    lab.use_registry({"a": spec("a/")})
    for n in range(3):
        lab.put(f"a/{n}.parquet", two_clocks([n * 10 + 1, n * 10 + 2], n, n + 5))
    lab.settle(lab.sensor())
    assert_matches_bucket(lab, "driver_id")
    lab.use_registry({"a": {**spec("a/"), **change}})  # the code location reloads
    lab.settle(lab.sensor())
    assert_matches_bucket(lab, "driver_id")
    assert lab.settle(lab.sensor()) == 0


def test_a_table_moved_to_an_existing_entity_key_moves_its_rows(lab, monkeypatch, capsys):
    composite = {"driver_id": "INT64", "customer_id": "STRING"}
    lab.use_registry({"a": spec("a/"), "b": {**spec("b/"), "entities": composite}})
    lab.put("a/1.parquet", two_clocks([1, 2], 0, 1))
    lab.put("b/1.parquet", two_clocks([3], 0, 1))
    lab.settle(lab.sensor())
    assert lab.ids("entity_driver_id", "driver_id") == [(1,), (2,)]
    lab.use_registry(
        {"a": {**spec("a/"), "entities": composite}, "b": {**spec("b/"), "entities": composite}}
    )
    lab.settle(lab.sensor())
    assert lab.ids("entity_driver_id", "driver_id") == []
    assert lab.ids("latest_driver_id", "driver_id") == []
    assert_matches_bucket(lab, "customer_id__driver_id")
    # The old key keeps its (now empty) storage until a command removes it, and says so.
    monkeypatch.setenv("FES_PG_URL", lab.pg_url)
    monkeypatch.setenv("FES_SCHEMA", lab.schema)
    assert fes(["status"]) == 0
    assert "fes reset-entity driver_id" in capsys.readouterr().out


def test_a_new_prefix_and_a_new_table_on_a_listed_prefix(lab):
    lab.use_registry({"a": spec("a/")})
    lab.put("a/1.parquet", rows([1]))
    lab.put("a2/1.parquet", rows([2]))
    sensor = lab.sensor(reconcile_interval=3600)  # steady listing only
    lab.settle(sensor)
    assert lab.ids("entity_driver_id", "driver_id", "feature_table") == [(1, "a")]
    # "b" reads the objects "a" already listed; "a" moves to another prefix.
    lab.use_registry({"a": spec("a2/"), "b": spec("a/")})
    lab.settle(lab.sensor(reconcile_interval=3600))
    assert lab.ids("entity_driver_id", "driver_id", "feature_table") == [(1, "b"), (2, "a")]
    assert_matches_bucket(lab, "driver_id")

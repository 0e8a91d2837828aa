"""entity_df and `fes entities`: the DataFrames a Feast user gets."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from fes_assets import QueryError, entity_df

T0 = datetime(2021, 4, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


@pytest.fixture
def indexed(lab):
    lab.use_registry(
        {
            "driver_hourly_stats": {
                "prefix": "d/",
                "entities": {"driver_id": "INT64"},
                "timestamp_column": "event_timestamp",
            },
            "customer_profile": {
                "prefix": "c/",
                "entities": {"customer_id": "STRING"},
                "timestamp_column": "event_timestamp",
            },
            "trips": {
                "prefix": "t/",
                "entities": {"driver_id": "INT64", "customer_id": "STRING"},
                "timestamp_column": "event_timestamp",
            },
        }
    )
    lab.put(
        "d/1.parquet",
        pa.table(
            {
                "driver_id": pa.array([1, 1, 2, 3], pa.int64()),
                "event_timestamp": pa.array(
                    [T0, T0 + timedelta(hours=5), T0 + timedelta(days=1), T0 + timedelta(days=2)],
                    TS,
                ),
            }
        ),
    )
    lab.put(
        "d/2.parquet",
        pa.table(
            {  # a duplicate row: distinct in entity_df
                "driver_id": pa.array([1], pa.int64()),
                "event_timestamp": pa.array([T0], TS),
            }
        ),
    )
    lab.put(
        "c/1.parquet",
        pa.table(
            {
                "customer_id": ["a", "b"],
                "event_timestamp": pa.array([T0, T0 + timedelta(days=1)], TS),
            }
        ),
    )
    lab.put(
        "t/1.parquet",
        pa.table(
            {
                "driver_id": pa.array([1, 1], pa.int64()),
                "customer_id": ["a", "b"],
                "event_timestamp": pa.array([T0, T0 + timedelta(hours=1)], TS),
            }
        ),
    )
    for key in ("driver_id", "customer_id", "customer_id__driver_id"):
        assert lab.materialize(key, ("2021-04-01", "2021-04-03")).success
    return dict(url=lab.pg_url, schema=lab.schema)


def rows(df: pd.DataFrame) -> list[tuple]:
    return sorted(df.itertuples(index=False, name=None))


def test_training_window(indexed):
    df = entity_df("driver_hourly_stats", date(2021, 4, 1), "2021-04-02", **indexed)
    assert list(df.columns) == ["driver_id", "event_timestamp"]
    assert str(df["event_timestamp"].dt.tz) == "UTC"
    assert rows(df) == [(1, pd.Timestamp(T0)), (1, pd.Timestamp(T0 + timedelta(hours=5)))]
    everything = entity_df("driver_hourly_stats", **indexed)
    assert len(everything) == 4


def test_latest_and_as_of(indexed):
    assert rows(entity_df("driver_hourly_stats", latest=True, **indexed)) == [
        (1, pd.Timestamp(T0 + timedelta(hours=5))),
        (2, pd.Timestamp(T0 + timedelta(days=1))),
        (3, pd.Timestamp(T0 + timedelta(days=2))),
    ]
    assert rows(
        entity_df("driver_hourly_stats", end="2021-04-01T03:00", latest=True, **indexed)
    ) == [(1, pd.Timestamp(T0))]
    now = "2021-04-02T12:00:00Z"
    scored = entity_df("driver_hourly_stats", as_of=now, **indexed)
    assert rows(scored) == [(1, pd.Timestamp(now)), (2, pd.Timestamp(now))]
    assert rows(entity_df("driver_hourly_stats", start="2021-04-02", as_of=now, **indexed)) == [
        (2, pd.Timestamp(now))
    ]


def test_string_and_composite_keys(indexed):
    assert rows(entity_df("customer_profile", **indexed))[0] == ("a", pd.Timestamp(T0))
    df = entity_df("trips", latest=True, **indexed)
    assert list(df.columns) == ["customer_id", "driver_id", "event_timestamp"]
    assert rows(df) == [("a", 1, pd.Timestamp(T0)), ("b", 1, pd.Timestamp(T0 + timedelta(hours=1)))]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("nope",), {}, "unknown feature table"),
        (("driver_hourly_stats", "2021-04-02", "2021-04-01"), {}, "is not after start"),
        (("driver_hourly_stats", "yesterday"), {}, "not a date"),
        (("driver_hourly_stats",), {"latest": True, "as_of": "2021-04-01"}, "cannot be combined"),
    ],
)
def test_bad_arguments(indexed, args, kwargs, message):
    with pytest.raises(QueryError, match=message):
        entity_df(*args, **kwargs, **indexed)


def test_an_unbounded_as_of_is_answered_from_latest_only_when_that_is_exact(lab, indexed):
    from fes_assets import EntityQuery, IndexDb

    query = EntityQuery(IndexDb(indexed["url"], indexed["schema"]))

    def as_of(at: datetime) -> list[int]:
        table = query.arrow("driver_hourly_stats", as_of=at)
        assert set(table.column("event_timestamp").to_pylist()) <= {at}
        return sorted(table.column("driver_id").to_pylist())

    later = T0 + timedelta(days=10)
    assert as_of(later) == [1, 2, 3] and query.last_statement == "as_of_latest"
    # Driver 3's newest row is after the instant: latest cannot tell, the history answers.
    assert as_of(T0 + timedelta(days=1, hours=1)) == [1, 2]
    assert query.last_statement == "as_of"
    # A run not yet taken in by latest: the history answers until latest catches up.
    lab.put(
        "d/3.parquet",
        pa.table({"driver_id": pa.array([4], pa.int64()), "event_timestamp": pa.array([T0], TS)}),
    )
    assert lab.materialize("driver_id", "2021-04-01", latest=False).success
    assert as_of(later) == [1, 2, 3, 4] and query.last_statement == "as_of"
    assert lab.materialize("driver_id", "2021-04-01").success
    assert as_of(later) == [1, 2, 3, 4] and query.last_statement == "as_of_latest"

"""`fes_assets.feast.historical_features` and `fes features` with real Feast: every entity row
the index holds comes back once, with the values a brute-force point-in-time join gives."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fes_assets.cli import main as fes
from fes_assets.core.errors import QueryError
from fes_assets.dev.feast_repo import write_feature_store_yaml

from .conftest import ACCESS_KEY, SECRET_KEY

feast = pytest.importorskip("feast")
from feast.types import Float32, Int64  # noqa: E402

from fes_assets.feast import historical_features  # noqa: E402

TS = pa.timestamp("us", tz="UTC")
DAY = datetime(2021, 4, 1, tzinfo=UTC)
STATS_TTL = timedelta(hours=3)
TRIPS_TTL = None  # no TTL: any older row counts, however old


def _at(day: int, hour: float) -> datetime:
    return DAY + timedelta(days=day, hours=hour)


def _data(rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """Rows of driver_stats (conv_rate, created) and driver_trips (n_trips) over three days."""
    stats, trips = [], []
    for driver in range(1, 21):
        for day in range(3):
            for minute in sorted(rng.choice(24 * 60, size=5, replace=False)):
                t = _at(day, minute / 60)
                created = t + timedelta(minutes=int(rng.integers(0, 60)))
                stats.append(
                    {
                        "driver_id": driver,
                        "event_timestamp": t,
                        "created": created,
                        "conv_rate": float(np.float32(rng.random())),
                    }
                )
            if driver > 1 and rng.random() < 0.7:
                t = _at(day, float(rng.integers(0, 24 * 60)) / 60)
                trips.append(
                    {
                        "driver_id": driver,
                        "event_timestamp": t,
                        "n_trips": int(rng.integers(0, 100)),
                    }
                )
    # Two versions of one event, the newer written first: the later created wins.
    stats.append(
        {"driver_id": 1, "event_timestamp": _at(1, 10), "created": _at(1, 10.5), "conv_rate": 0.75}
    )
    stats.append(
        {"driver_id": 1, "event_timestamp": _at(1, 10), "created": _at(1, 10.1), "conv_rate": 0.25}
    )
    # Driver 1's trips start after its stats row at 10:00: Feast's file store drops that row.
    trips.append({"driver_id": 1, "event_timestamp": _at(1, 12), "n_trips": 7})
    # Driver 21's only trips row is older than the partitions: it still counts (no TTL).
    for day in range(3):
        stats.append(
            {
                "driver_id": 21,
                "event_timestamp": _at(day, 9),
                "created": _at(day, 9),
                "conv_rate": 0.5,
            }
        )
    trips.append(
        {"driver_id": 21, "event_timestamp": datetime(2021, 3, 20, tzinfo=UTC), "n_trips": 42}
    )
    # Driver 25 has trips only: its rows come from driver_trips' index.
    trips.append({"driver_id": 25, "event_timestamp": _at(1, 8), "n_trips": 3})
    return stats, trips


def _table(rows: list[dict], types: dict[str, pa.DataType]) -> pa.Table:
    return pa.table({c: pa.array([r[c] for r in rows], t) for c, t in types.items()})


STATS_TYPES = {
    "driver_id": pa.int64(),
    "event_timestamp": TS,
    "created": TS,
    "conv_rate": pa.float32(),
}
TRIPS_TYPES = {"driver_id": pa.int64(), "event_timestamp": TS, "n_trips": pa.int64()}


def _value(rows: list[dict], driver: int, t: datetime, ttl: timedelta, column: str):
    """Brute force: the newest row at or before t within the TTL (newest created on ties)."""
    oldest = t - ttl if ttl else datetime.min.replace(tzinfo=UTC)
    found = [r for r in rows if r["driver_id"] == driver and oldest <= r["event_timestamp"] <= t]
    if not found:
        return None
    return max(found, key=lambda r: (r["event_timestamp"], r.get("created", t)))[column]


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return b is not None and math.isclose(a, b, rel_tol=1e-6)


def _check(table: pa.Table, expected_rows: set, stats: list[dict], trips: list[dict]) -> None:
    got = table.to_pylist()
    keys = [(r["driver_id"], r["event_timestamp"]) for r in got]
    assert len(keys) == len(set(keys)), "an entity row came back twice"
    assert set(keys) == expected_rows
    for r in got:
        d, t = r["driver_id"], r["event_timestamp"]
        assert _same(r["conv_rate"], _value(stats, d, t, STATS_TTL, "conv_rate")), (d, t)
        assert _same(r["trips"], _value(trips, d, t, TRIPS_TTL, "n_trips")), (d, t)


@pytest.fixture
def indexed(lab, tmp_path, monkeypatch):
    """Two feature views sharing driver_id, indexed, and a Feast store that knows them."""
    lab.use_registry(
        {
            "driver_stats": {
                "prefix": "stats/",
                "entities": {"driver_id": "INT64"},
                "timestamp_column": "event_timestamp",
                "created_timestamp_column": "created",
            },
            "driver_trips": {
                "prefix": "trips/",
                "entities": {"driver_id": "INT64"},
                "timestamp_column": "event_timestamp",
            },
        },
        start="2021-04-01",
    )
    stats, trips = _data(np.random.default_rng(11))
    for day in range(3):
        part = [r for r in stats if r["event_timestamp"].date() == _at(day, 0).date()]
        # Small row groups: the reader skips those outside the window.
        lab.put(f"stats/day={day}.parquet", _table(part, STATS_TYPES), row_group_size=16)
    lab.put("trips/all.parquet", _table([r for r in trips if r["driver_id"] != 21], TRIPS_TYPES))
    lab.put("trips/old.parquet", _table([r for r in trips if r["driver_id"] == 21], TRIPS_TYPES))
    assert lab.materialize("driver_id", ("2021-04-01", "2021-04-03")).success

    for name, value in {
        "FES_PG_URL": lab.pg_url,
        "FES_SCHEMA": lab.schema,
        "FES_S3_ENDPOINT_URL": lab.endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "FES_DEMO_DIR": str(tmp_path / "no-demo"),
    }.items():
        monkeypatch.setenv(name, value)
    repo = tmp_path / "repo"
    write_feature_store_yaml(repo, "fes_features")
    store = feast.FeatureStore(repo_path=str(repo))
    driver = feast.Entity(name="driver", join_keys=["driver_id"], value_type=feast.ValueType.INT64)
    customer = feast.Entity(
        name="customer", join_keys=["customer_id"], value_type=feast.ValueType.STRING
    )

    def view(name, prefix, ttl, schema, entity=driver, **source):
        return feast.FeatureView(
            name=name,
            entities=[entity],
            ttl=ttl,
            schema=schema,
            source=feast.FileSource(
                path=f"s3://{lab.bucket}/{prefix}", timestamp_field="event_timestamp", **source
            ),
        )

    store.apply(
        [
            driver,
            customer,
            view(
                "driver_stats",
                "stats/",
                STATS_TTL,
                [feast.Field(name="conv_rate", dtype=Float32)],
                created_timestamp_column="created",
            ),
            view(
                "driver_trips",
                "trips/",
                TRIPS_TTL,
                [feast.Field(name="trips", dtype=Int64)],
                field_mapping={"n_trips": "trips"},
            ),
            view("driver_ghost", "ghost/", TRIPS_TTL, [feast.Field(name="x", dtype=Int64)]),
            view(
                "customer_stats",
                "cust/",
                TRIPS_TTL,
                [feast.Field(name="y", dtype=Int64)],
                entity=customer,
            ),
        ]
    )
    return lab, store, repo, stats, trips


REFS = ["driver_stats:conv_rate", "driver_trips:trips"]


def test_every_entity_row_once_with_its_point_in_time_values(indexed):
    lab, store, _, stats, trips = indexed
    lo, hi = _at(1, 0), _at(2, 0)

    reads: dict[str, int] = {}

    def progress(view: str, done: int, total: int) -> None:
        reads[view] = reads.get(view, 0) + (done == total) * total

    window = historical_features(store, REFS, lo, hi, progress=progress).to_arrow()
    expected = {
        (r["driver_id"], r["event_timestamp"])
        for r in stats + trips
        if lo <= r["event_timestamp"] < hi
    }
    _check(window, expected, stats, trips)
    assert window.schema.field("driver_id").type == pa.int64()
    assert window.schema.field("conv_rate").type == pa.float32()
    assert window.column_names == ["driver_id", "event_timestamp", "conv_rate", "trips"]
    rows = {(r["driver_id"], r["event_timestamp"]): r for r in window.to_pylist()}
    # The row Feast's file store drops: stats at 10:00, trips only from 12:00.
    assert rows[(1, _at(1, 10))]["conv_rate"] == 0.75 and rows[(1, _at(1, 10))]["trips"] is None
    assert rows[(25, _at(1, 8))]["conv_rate"] is None and rows[(25, _at(1, 8))]["trips"] == 3
    assert rows[(21, _at(1, 9))]["trips"] == 42  # from before the partitions
    # Only the objects that can hold the answer: two of the three days for a 3-hour TTL.
    assert reads["driver_stats"] == 2, reads

    latest = historical_features(store, REFS, _at(0, 0), _at(3, 0), latest=True).to_arrow()
    newest: dict[int, datetime] = {}
    for r in stats + trips:
        newest[r["driver_id"]] = max(
            newest.get(r["driver_id"], r["event_timestamp"]), r["event_timestamp"]
        )
    _check(latest, set(newest.items()), stats, trips)

    as_of = _at(2, 6)
    scored = historical_features(store, REFS, _at(1, 0), as_of=as_of).to_df()
    seen = {r["driver_id"] for r in stats + trips if _at(1, 0) <= r["event_timestamp"] < as_of}
    _check(
        pa.Table.from_pandas(scored, preserve_index=False), {(d, as_of) for d in seen}, stats, trips
    )
    assert scored["conv_rate"].isna().any() and scored["conv_rate"].notna().any()  # TTL 3 h


def test_fes_features_writes_the_same_rows_and_names_what_it_cannot_answer(
    indexed, tmp_path, capsys
):
    lab, store, repo, stats, trips = indexed
    out = tmp_path / "features.parquet"
    assert (
        fes(
            [
                "features",
                "--repo",
                str(repo),
                *REFS,
                "--start",
                "2021-04-02",
                "--end",
                "2021-04-03",
                "--full-feature-names",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    written = pq.read_table(out)
    helper = historical_features(
        store, REFS, "2021-04-02", "2021-04-03", full_feature_names=True
    ).to_arrow()
    assert written.column_names == [
        "driver_id",
        "event_timestamp",
        "driver_stats__conv_rate",
        "driver_trips__trips",
    ]
    assert written.num_rows > 0 and written.to_pylist() == helper.to_pylist()
    assert f"{written.num_rows} row(s) written" in capsys.readouterr().err

    with pytest.raises(QueryError, match="feature view 'driver_ghost' is not indexed"):
        historical_features(store, ["driver_ghost:x"], "2021-04-02", "2021-04-03")
    with pytest.raises(QueryError, match="share their join keys"):
        historical_features(store, ["driver_stats:conv_rate", "customer_stats:y"])
    with pytest.raises(QueryError, match="no feature"):
        historical_features(store, ["driver_stats:nope"])
    assert fes(["features", "--repo", str(repo), "driver_ghost:x", "-o", str(out)]) == 2
    assert "driver_ghost" in capsys.readouterr().err


def test_a_latest_behind_the_history_is_not_taken_for_where_rows_are(indexed):
    # A new day indexed without latest's catch-up: driver 30 is new, driver 2 has only older
    # trips. Latest (not caught up) would say driver 30 has no stats row at all.
    lab, store, _, stats, trips = indexed
    new = [
        {"driver_id": 30, "event_timestamp": _at(3, 10), "created": _at(3, 10), "conv_rate": 0.5},
        {"driver_id": 2, "event_timestamp": _at(3, 11), "created": _at(3, 11), "conv_rate": 0.25},
    ]
    lab.put("stats/day=3.parquet", _table(new, STATS_TYPES))
    assert lab.materialize("driver_id", "2021-04-04", latest=False).success
    stats = stats + new
    answer = historical_features(store, REFS, _at(3, 0), _at(4, 0)).to_arrow()
    _check(answer, {(30, _at(3, 10)), (2, _at(3, 11))}, stats, trips)
    assert {r["driver_id"]: r["conv_rate"] for r in answer.to_pylist()} == {30: 0.5, 2: 0.25}

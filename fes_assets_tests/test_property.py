"""Fidelity: random sequences of puts, overwrites and deletes across days and entity keys, with
sensor ticks and their runs in between, leave the index equal to a brute-force recomputation
from the bucket; a full range rebuild gives the same result."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fes_assets_tests.conftest import Lab

T0 = datetime(2021, 4, 1, tzinfo=UTC)
TABLES = {
    "drivers": {
        "prefix": "d/",
        "entities": {"driver_id": "INT64"},
        "timestamp_column": "event_timestamp",
    },
    "customers": {
        "prefix": "c/",
        "entities": {"customer_id": "STRING"},
        "timestamp_column": "event_timestamp",
    },
}
KEYS = ["d/a.parquet", "d/b.parquet", "d/2021/c.parquet", "c/a.parquet", "c/b.parquet"]

puts = st.tuples(
    st.just("put"),
    st.sampled_from(KEYS),
    st.lists(st.integers(0, 6), min_size=0, max_size=5),
    st.integers(0, 3),
)
deletes = st.tuples(st.just("delete"), st.sampled_from(KEYS), st.just([]), st.just(0))
bad = st.tuples(st.just("bad"), st.sampled_from(KEYS), st.just([]), st.just(0))
ticks = st.tuples(st.just("tick"), st.just(""), st.just([]), st.just(0))
operations = st.lists(st.one_of(puts, puts, deletes, bad, ticks), min_size=1, max_size=10)


def table_for(key: str, ids: list[int], day: int) -> pa.Table:
    times = [T0 + timedelta(days=day, minutes=i) for i in ids]
    column = (
        ("customer_id", pa.array([f"c{i}" for i in ids]))
        if key.startswith("c/")
        else ("driver_id", pa.array(ids, pa.int64()))
    )
    return pa.table(
        {column[0]: column[1], "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC"))}
    )


def expected(lab: Lab, bucket_now: dict[str, tuple[list[int], int] | None], prefix: str):
    rows = []  # a file's duplicate rows stay duplicates: the history mirrors the files
    for key, content in bucket_now.items():
        if key.startswith(prefix) and content:
            ids, day = content
            for i in ids:
                ident = i if prefix == "d/" else f"c{i}"
                rows.append(
                    (ident, T0 + timedelta(days=day, minutes=i), f"s3://{lab.bucket}/{key}")
                )
    latest: dict = {}
    for ident, ts, path in rows:
        if ident not in latest or (ts, path) > latest[ident]:
            latest[ident] = (ts, path)
    return sorted(rows), sorted((k, *v) for k, v in latest.items())


def check(lab: Lab, bucket_now) -> None:
    for prefix, view, key in (
        ("d/", "driver_id", "driver_id"),
        ("c/", "customer_id", "customer_id"),
    ):
        rows, latest = expected(lab, bucket_now, prefix)
        assert lab.ids(f"entity_{view}", key, "event_timestamp", "path") == rows
        assert lab.ids(f"latest_{view}", key, "event_timestamp", "path") == latest


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_index_equals_the_bucket_after_any_sequence(pg_url, s3_server, instance, ops):
    suffix = uuid.uuid4().hex[:10]
    lab = Lab(pg_url, s3_server.endpoint_url, f"prop-{suffix}", f"prop_{suffix}", instance)
    lab.use_registry(TABLES)
    sensor = lab.sensor()
    bucket_now: dict[str, tuple[list[int], int] | None] = {}
    for op, key, ids, day in ops:
        if op == "put":
            lab.put(key, table_for(key, ids, day))
            bucket_now[key] = (ids, day)
        elif op == "delete":
            lab.delete(key)
            bucket_now[key] = None
        elif op == "bad":
            lab.put(key, b"not parquet " + suffix.encode())
            bucket_now[key] = None  # a bad version has no rows
        else:
            lab.settle(sensor)
    lab.settle(sensor)
    check(lab, bucket_now)
    # A full range rebuild agrees.
    for entity in ("driver_id", "customer_id"):
        assert lab.materialize(entity, ("2021-04-01", "2021-04-04")).success
    check(lab, bucket_now)

"""The point-in-time join against a brute-force one, on random rows: ties, TTLs, no TTL, ids
with no row at all, two join keys; and it reads only back as far as each entity row needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from fes_assets.core.point_in_time import join_looking_back

T0 = datetime(2001, 1, 1, 0, 0, 0, 570078, tzinfo=UTC)  # sub-second, outside 2005..2041
TS = pa.timestamp("us", tz="UTC")


def _rows(rng: np.random.Generator, n: int, days: int) -> pa.Table:
    # On the hour (many ties), plus a few off by sub-second amounts far from 1970.
    seconds = rng.integers(0, days * 86_400, n) // 3600 * 3600
    return pa.table(
        {
            "a": pa.array(rng.integers(0, 6, n), pa.int64()),
            "b": pa.array(rng.choice(["x", "y"], n)),
            "event_timestamp": pa.array([T0 + timedelta(seconds=int(s)) for s in seconds], TS),
            "created_timestamp": pa.array(
                [
                    None if rng.random() < 0.2 else T0 + timedelta(minutes=int(m))
                    for m in rng.integers(0, 10**6, n)
                ],
                TS,
            ),
            "value": pa.array(np.arange(n), pa.int64()),
        }
    )


def _brute(rows: list[dict], a, b, t, ttl) -> int | None:
    oldest = t - ttl if ttl else datetime.min.replace(tzinfo=UTC)
    found = [r for r in rows if (r["a"], r["b"]) == (a, b) and oldest <= r["event_timestamp"] <= t]
    if not found:
        return None
    newest = max(r["event_timestamp"] for r in found)
    tied = [r for r in found if r["event_timestamp"] == newest]
    # Nulls count as the oldest created; equal (event, created) pairs: any is right.
    best = max(r["created_timestamp"] or datetime.min.replace(tzinfo=UTC) for r in tied)
    return {
        r["value"]
        for r in tied
        if (r["created_timestamp"] or datetime.min.replace(tzinfo=UTC)) == best
    }


@pytest.mark.parametrize("seed", range(8))
def test_join_looking_back_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    days = 400
    rows = _rows(rng, 600, days)
    ttl = [None, timedelta(hours=5), timedelta(days=3, microseconds=1001), timedelta(days=900)][
        seed % 4
    ]
    entity_ts = [T0 + timedelta(seconds=int(s)) for s in rng.integers(0, days * 86_400, 80)]
    # Entity rows exactly at a row's time, and exactly a TTL after one.
    some = rows.column("event_timestamp").to_pylist()[:20]
    entity_ts[:20] = some[:10] + [t + (ttl or timedelta(0)) for t in some[10:20]]
    entities = pa.table(
        {
            "a": pa.array(rng.integers(0, 7, 80), pa.int64()),  # id 6 has no row at all
            "b": pa.array(rng.choice(["x", "y"], 80)),
            "event_timestamp": pa.array(entity_ts, TS),
        }
    )
    read: list[int] = []

    def read_rows(ranges, key, ids):
        ts = rows.column("event_timestamp").to_pylist()
        wanted = set(ids.to_pylist())
        keep = [
            any(lo <= t <= hi for lo, hi in ranges) and v in wanted
            for t, v in zip(ts, rows.column(key).to_pylist(), strict=True)
        ]
        picked = rows.filter(pa.array(keep, pa.bool_()))
        read.append(picked.num_rows)
        return picked

    earliest = min(rows.column("event_timestamp").to_pylist())
    newest = None
    if seed % 2:  # as the index knows them: each id's newest row, of any time
        last: dict = {}
        for r in rows.to_pylist():
            k = (r["a"], r["b"])
            last[k] = max(last.get(k, r["event_timestamp"]), r["event_timestamp"])
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        newest = np.array(
            [
                (last[(e["a"], e["b"])] - epoch) // timedelta(microseconds=1)
                if (e["a"], e["b"]) in last
                else -1
                for e in entities.to_pylist()
            ]
        )
    got = join_looking_back(entities, ["a", "b"], ttl, earliest, read_rows, ["value"], newest)
    truth_rows = rows.to_pylist()
    for e, value in zip(entities.to_pylist(), got["value"].to_pylist(), strict=True):
        want = _brute(truth_rows, e["a"], e["b"], e["event_timestamp"], ttl)
        assert (value is None and want is None) or (want is not None and value in want), e


def test_recent_matches_read_only_the_recent_past():
    # Every id has a row in the hour before the entity rows: one look back of a day suffices,
    # however long the history.
    rng = np.random.default_rng(1)
    history = _rows(rng, 5_000, 3650)
    at = T0 + timedelta(days=3650)
    recent = pa.table(
        {
            "a": pa.array(range(6), pa.int64()),
            "b": pa.array(["x"] * 6),
            "event_timestamp": pa.array([at - timedelta(minutes=30)] * 6, TS),
            "created_timestamp": pa.array([None] * 6, TS),
            "value": pa.array(range(10_000, 10_006), pa.int64()),
        }
    )
    rows = pa.concat_tables([history, recent])
    entities = recent.select(["a", "b"]).append_column("event_timestamp", pa.array([at] * 6, TS))
    looked: list = []

    def read_rows(ranges, key, ids):
        looked.append(ranges)
        ts = rows.column("event_timestamp").to_pylist()
        keep = [any(lo <= t <= hi for lo, hi in ranges) for t in ts]
        return rows.filter(pa.array(keep, pa.bool_()))

    got = join_looking_back(entities, ["a", "b"], None, T0, read_rows, ["value"])
    assert got["value"].to_pylist() == list(range(10_000, 10_006))
    assert len(looked) == 1 and looked[0][0][0] >= at - timedelta(days=1)


def test_a_known_newest_row_bounds_the_look_back():
    # One id's only rows are years old: told where its newest row is, the join reads it with
    # its first look instead of walking the years span by span.
    old = T0 + timedelta(days=400)
    at = T0 + timedelta(days=3650)
    rows = pa.table(
        {
            "a": pa.array([1, 1], pa.int64()),
            "b": pa.array(["x", "x"]),
            "event_timestamp": pa.array([old - timedelta(days=1), old], TS),
            "created_timestamp": pa.array([None, None], TS),
            "value": pa.array([5, 6], pa.int64()),
        }
    )
    entities = pa.table(
        {"a": pa.array([1], pa.int64()), "b": ["x"], "event_timestamp": pa.array([at], TS)}
    )
    looks: dict[str, int] = {}

    def read_rows(ranges, key, ids):
        looks["n"] = looks.get("n", 0) + 1
        ts = rows.column("event_timestamp").to_pylist()
        keep = [any(lo <= t <= hi for lo, hi in ranges) for t in ts]
        return rows.filter(pa.array(keep, pa.bool_()))

    newest = np.array([(old - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)])
    bounded = join_looking_back(entities, ["a", "b"], None, T0, read_rows, ["value"], newest)
    assert bounded["value"].to_pylist() == [6] and looks["n"] == 1
    looks.clear()
    walked = join_looking_back(entities, ["a", "b"], None, T0, read_rows, ["value"])
    assert walked["value"].to_pylist() == [6] and looks["n"] > 2

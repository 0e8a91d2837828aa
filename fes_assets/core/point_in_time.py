"""The point-in-time join Feast documents: for each entity row (join keys, event_timestamp),
a feature view's values come from its row with the same join keys and the newest
event_timestamp at or before the entity row's, no older than the view's TTL; ties go to the
newest created timestamp. An entity row without such a row keeps its place, with nulls."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

ROW = "__fes_row"
TS = "event_timestamp"
CREATED = "created_timestamp"


def _frame(table: pa.Table, keys: list[str]) -> pd.DataFrame:
    # Only the columns the matching needs go to pandas; values stay in Arrow.
    frame = table.select([*keys, TS]).to_pandas(
        types_mapper={pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype()}.get
    )
    frame[TS] = frame[TS].astype("datetime64[us, UTC]")
    return frame


def matching_rows(
    entities: pa.Table, rows: pa.Table, keys: list[str], ttl: timedelta | None
) -> pa.Array:
    """For each entity row, the index in `rows` of the row its features come from, or null.

    `rows` holds `keys`, `event_timestamp` and, when the source has one, `created_timestamp`."""
    if not rows.num_rows or not entities.num_rows:
        return pa.nulls(entities.num_rows, pa.int64())
    order = [(TS, "ascending", "at_start")]
    if CREATED in rows.column_names:
        # Equal event times: the newest created wins, and nulls count as oldest (as in Feast).
        order.append((CREATED, "ascending", "at_start"))
    right_index = pc.sort_indices(rows, sort_keys=order)
    right = _frame(rows.take(right_index), keys)
    right[ROW] = np.arange(len(right), dtype=np.int64)
    left = _frame(entities, keys)
    left[ROW] = np.arange(len(left), dtype=np.int64)
    left = left.sort_values(TS, kind="stable")
    tolerance = pd.Timedelta(ttl) if ttl else None
    merged = pd.merge_asof(
        left,
        right,
        on=TS,
        by=keys,
        direction="backward",
        allow_exact_matches=True,
        tolerance=tolerance,
        suffixes=("", "_match"),
    )
    found = merged[f"{ROW}_match"].to_numpy()
    positions = np.full(entities.num_rows, -1, dtype=np.int64)
    hit = ~np.isnan(found)
    positions[merged[ROW].to_numpy()[hit]] = found[hit].astype(np.int64)
    sorted_positions = pa.array(positions, mask=positions < 0)
    # Back from the sorted order to `rows`' own.
    return pc.take(right_index, sorted_positions)


FIRST_SPAN = timedelta(days=1)
GROWTH = 16  # each look further back covers this many times the span of the one before
MERGE_GAP = timedelta(hours=1)  # ranges closer than this are read as one
MAX_RANGES = 200  # more are merged across their smallest gaps: the catalogue tests each
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
OLDEST = (datetime(1, 1, 2, tzinfo=UTC) - EPOCH) // ONE_MICROSECOND  # microseconds


def micros(value: datetime | timedelta) -> int:
    """Exact microseconds since the epoch (or of a duration): no float on the way."""
    if isinstance(value, datetime):
        return (value - EPOCH) // ONE_MICROSECOND
    return value // ONE_MICROSECOND


def merged_ranges(los: np.ndarray, his: np.ndarray) -> list[tuple[datetime, datetime]]:
    """The union of the ranges [los[i], his[i]] (microseconds), as at most MAX_RANGES sorted
    ranges: a wider range only reads more rows, which the join then ignores."""
    order = np.argsort(los, kind="stable")
    gap = micros(MERGE_GAP)
    out: list[list[int]] = []
    for lo, hi in zip(los[order].tolist(), his[order].tolist(), strict=True):
        if out and lo <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    if len(out) > MAX_RANGES:
        gaps = np.array([b[0] - a[1] for a, b in zip(out, out[1:], strict=False)])
        split = set(np.argsort(gaps)[-(MAX_RANGES - 1) :].tolist())  # the widest gaps stay
        joined = [out[0]]
        for i, r in enumerate(out[1:]):
            if i in split:
                joined.append(r)
            else:
                joined[-1][1] = max(joined[-1][1], r[1])
        out = joined
    return [(_instant(lo), _instant(hi)) for lo, hi in out]


def _micros_of(ts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return ts.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


def _instant(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


# (ranges, join key, its values) -> rows with times in the ranges and the key in the values
ReadRows = Callable[[list[tuple[datetime, datetime]], str, pa.Array], pa.Table]


def join_looking_back(
    entities: pa.Table,
    keys: list[str],
    ttl: timedelta | None,
    earliest: datetime | None,
    read_rows: ReadRows,
    features: list[str],
    newest: np.ndarray | None = None,
) -> dict[str, pa.ChunkedArray]:
    """Feature columns aligned with `entities`, reading only as far back as each entity row
    needs: first the day up to each row's time, then spans growing back (to the TTL and to
    `earliest`, the oldest row there is; None: unknown) for the rows still without a match,
    for their ids only. `newest` (microseconds, -1: unknown) is each row's id's newest
    indexed time: the first look reads it too, and a match there is final.

    `read_rows(ranges, key, ids)` returns the rows with times in `ranges` (both ends included)
    whose `key` is one of `ids`. A match found in an entity row's own span is final: every
    newer row of its id up to its time was in the spans read for it before."""
    n = entities.num_rows
    ts = _micros_of(entities.column(TS))
    oldest = max(OLDEST, micros(earliest)) if earliest is not None else OLDEST
    floor = np.full(n, oldest, dtype=np.int64)
    if ttl is not None:
        # Clamped first: a TTL of centuries would overflow the subtraction.
        floor = np.maximum(floor, ts - min(micros(ttl), int(ts.max()) - OLDEST))
    floor = np.minimum(floor, ts)
    # The first look also reads each row's known newest row: if it is there, nothing between
    # it and the day before the row's time can be newer (the index holds no row there).
    probe = np.full(n, -1, dtype=np.int64) if newest is None else newest
    probe = np.where((probe >= floor) & (probe <= ts), probe, -1)
    # The id filter goes on the key with the most distinct values: it narrows the read most.
    key = max(keys, key=lambda k: pc.count_distinct(entities.column(k)).as_py())
    upper = ts.copy()
    span = micros(FIRST_SPAN)
    pending = np.arange(n, dtype=np.int64)
    found: list[pa.Table] = []
    where = np.full(n, -1, dtype=np.int64)  # entity row -> row of the kept matches
    kept = 0
    first = True
    while pending.size:
        lower = np.maximum(floor[pending], upper[pending] - span)
        accept = lower
        los, his = lower, upper[pending]
        if first and (probe >= 0).any():
            known = probe[pending] >= 0
            accept = np.where(known, np.minimum(lower, probe[pending]), lower)
            los = np.concatenate([lower, probe[pending][known]])
            his = np.concatenate([upper[pending], probe[pending][known]])
        first = False
        wanted = entities.take(pa.array(pending))
        rows = read_rows(merged_ranges(los, his), key, pc.unique(wanted.column(key)))
        match = matching_rows(wanted, rows, keys, ttl)
        hit = match.is_valid().to_numpy(zero_copy_only=False)
        if hit.any():
            # A row read for another entity row's span may be older than this one's span,
            # whose newer rows are not all read yet: it is final only inside its own span.
            at = rows.column(TS).take(pc.drop_null(match))
            hit[hit] = _micros_of(at) >= accept[hit]
            match = pc.if_else(pa.array(hit), match, pa.scalar(None, pa.int64()))
        if hit.any():
            found.append(rows.take(pc.drop_null(match)))
            where[pending[hit]] = kept + np.arange(int(hit.sum()), dtype=np.int64)
            kept += int(hit.sum())
        upper[pending] = lower - 1
        pending = pending[~hit & (lower > floor[pending])]
        span = min(span * GROWTH, 2**62)  # past any history: the floors end the loop
    if found:
        matches = pa.concat_tables(found, promote_options="permissive")
    else:
        matches = read_rows([], key, pa.array([], entities.schema.field(key).type))
    positions = pa.array(where, mask=where < 0)
    return {name: matches.column(name).take(positions) for name in features}

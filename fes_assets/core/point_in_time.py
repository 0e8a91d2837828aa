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
GROWTH = 4  # each look further back covers this many times the span of the one before
MERGE_GAP = timedelta(hours=1)  # ranges closer than this are read as one


def merged_ranges(los: np.ndarray, his: np.ndarray) -> list[tuple[datetime, datetime]]:
    """The union of the ranges [los[i], his[i]] (microseconds), as few sorted ranges."""
    order = np.argsort(los, kind="stable")
    gap = int(MERGE_GAP.total_seconds() * 1_000_000)
    out: list[list[int]] = []
    for lo, hi in zip(los[order].tolist(), his[order].tolist(), strict=True):
        if out and lo <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(_instant(lo), _instant(hi)) for lo, hi in out]


def _micros_of(ts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return ts.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


def _instant(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


ReadRows = Callable[[list[tuple[datetime, datetime]], pa.Array], pa.Table]


def join_looking_back(
    entities: pa.Table,
    keys: list[str],
    ttl: timedelta | None,
    earliest: datetime | None,
    read_rows: ReadRows,
    features: list[str],
) -> dict[str, pa.ChunkedArray]:
    """Feature columns aligned with `entities`, reading only as far back as each entity row
    needs: first the day up to each row's time, then spans growing back (to the TTL, or to
    `earliest` without one) for the rows still without a match, for their ids only.

    `read_rows(ranges, ids)` returns the rows with times in `ranges` (both ends included)
    and the given values of the first join key. A match found in a span is final: no row of
    that id is newer and still at or before the entity row's time, since every span after the
    first is older than the spans already read for it."""
    n = entities.num_rows
    ts = _micros_of(entities.column(TS))
    if ttl is not None:
        floor = ts - int(ttl.total_seconds() * 1_000_000)
    else:
        start = int(earliest.timestamp() * 1_000_000) if earliest is not None else int(ts.min())
        floor = np.minimum(np.full(n, start, dtype=np.int64), ts)
    upper = ts.copy()
    span = int(FIRST_SPAN.total_seconds() * 1_000_000)
    pending = np.arange(n, dtype=np.int64)
    found: list[pa.Table] = []
    where = np.full(n, -1, dtype=np.int64)  # entity row -> row of the kept matches
    kept = 0
    while pending.size:
        lower = np.maximum(floor[pending], upper[pending] - span)
        wanted = entities.take(pa.array(pending))
        rows = read_rows(merged_ranges(lower, upper[pending]), pc.unique(wanted.column(keys[0])))
        match = matching_rows(wanted, rows, keys, ttl)
        hit = match.is_valid().to_numpy(zero_copy_only=False)
        if hit.any():
            # A row read for another entity row's span may be older than this one's span,
            # whose newer rows are not all read yet: it is final only inside its own span.
            at = rows.column(TS).take(pc.drop_null(match))
            hit[hit] = _micros_of(at) >= lower[hit]
            match = pc.if_else(pa.array(hit), match, pa.scalar(None, pa.int64()))
        if hit.any():
            found.append(rows.take(pc.drop_null(match)))
            where[pending[hit]] = kept + np.arange(int(hit.sum()), dtype=np.int64)
            kept += int(hit.sum())
        upper[pending] = lower - 1
        pending = pending[~hit & (lower > floor[pending])]
        span *= GROWTH
    if found:
        matches = pa.concat_tables(found, promote_options="permissive")
    else:
        matches = read_rows([], pa.array([], entities.schema.field(keys[0]).type))
    positions = pa.array(where, mask=where < 0)
    return {name: matches.column(name).take(positions) for name in features}

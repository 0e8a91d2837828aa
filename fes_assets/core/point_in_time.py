"""The point-in-time join Feast documents: for each entity row (join keys, event_timestamp),
a feature view's values come from its row with the same join keys and the newest
event_timestamp at or before the entity row's, no older than the view's TTL; ties go to the
newest created timestamp. An entity row without such a row keeps its place, with nulls."""

from __future__ import annotations

from datetime import timedelta

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


def join_features(
    entities: pa.Table,
    rows: pa.Table,
    keys: list[str],
    ttl: timedelta | None,
    features: dict[str, str],
) -> dict[str, pa.ChunkedArray]:
    """Feature columns aligned with `entities`: output name -> column of `rows` (`features`
    maps output names to column names), nulls where no row matches."""
    positions = matching_rows(entities, rows, keys, ttl)
    return {name: rows.column(column).take(positions) for name, column in features.items()}

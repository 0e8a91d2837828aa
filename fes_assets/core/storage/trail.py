"""The trail (`_t_<key>`): which years each id has rows in, so that a latest recompute reads
those years only. Days add their ids in their own transaction; a run remembers what it has
committed this year, so a long backfill adds each id once a year instead of once a day."""

from __future__ import annotations

from datetime import date

import psycopg
import pyarrow as pa
from psycopg import sql

from ..registry import VALUE_TYPES
from ..sql_templates import template
from .names import EntityNames

# Ids a run remembers for the year it is writing; past this it stops remembering (a day then
# probes the trail for ids it may already hold, which costs time, never correctness).
REMEMBERED_IDS = 1_000_000


class TrailMemory:
    """The ids a run has committed to the trail for the year it is writing (days come in
    one direction, so a year, once left, is not met again)."""

    def __init__(self, names: EntityNames, remember: int = REMEMBERED_IDS) -> None:
        self.keys = [*names.join_keys, "feature_table_id"]
        self.remember = remember
        self._year: int | None = None
        self._known: list[pa.Table] = []
        self._count = 0

    def new_ids(self, day: date, rows: pa.Table | None) -> pa.Table | None:
        """The distinct ids of `rows` (a day's) that this run has not committed for the
        day's year."""
        if rows is None or not rows.num_rows:
            return None
        if day.year != self._year:
            self._year, self._known, self._count = day.year, [], 0
        ids = rows.select(self.keys).group_by(self.keys).aggregate([])
        if self._known:
            ids = pa.concat_tables(self._known).join(ids, self.keys, join_type="right anti")
        return ids.select(self.keys) if ids.num_rows else None

    def committed(self, day: date, ids: pa.Table | None) -> None:
        """`ids` are in the trail for `day`'s year: their day's transaction committed."""
        if ids is None or day.year != self._year or self._count + ids.num_rows > self.remember:
            return
        self._known.append(ids)
        self._count += ids.num_rows


def add_to_trail(
    conn: psycopg.Connection, names: EntityNames, day: date, ids: pa.Table | None
) -> None:
    """Within the day's transaction: `ids` have rows in `day`'s year."""
    if ids is None or not ids.num_rows:
        return
    types = [*(VALUE_TYPES[names.types[k]] for k in names.join_keys), "smallint"]
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(f"c{i}"), sql.SQL(t))
        for i, t in enumerate(types)
    )
    columns = [*names.join_keys, "feature_table_id"]
    params: dict[str, object] = {f"c{i}": ids[c].to_pylist() for i, c in enumerate(columns)}
    params["year"] = day.year
    conn.execute(template("entity", "trail_add", **names.parts(arrays=arrays)), params)

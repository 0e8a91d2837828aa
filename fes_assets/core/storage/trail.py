"""The trail (`_t_<key>`): which years each id has rows in, so that a latest recompute reads
those years only. Days add their ids in their own transaction; a run remembers what it has
committed this year, so a long backfill adds each id once a year instead of once a day."""

from __future__ import annotations

from datetime import date

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from ..registry import VALUE_TYPES
from ..sql_templates import template
from .names import EntityNames

# Ids a run remembers for the year it is writing (about 70 bytes each); past this it stops
# remembering, and a day probes the trail for ids it may already hold: time, not correctness.
REMEMBERED_IDS = 1_000_000


class TrailMemory:
    """The ids a run has committed to the trail for the year it is writing, looked up so that
    a day costs what its own ids cost (a join against everything remembered would cost the
    year's ids every day): a sorted array for one integer join key, a set otherwise."""

    def __init__(self, names: EntityNames, remember: int = REMEMBERED_IDS) -> None:
        self.keys = [*names.join_keys, "feature_table_id"]
        self.remember = remember
        self._year: int | None = None
        self._epoch: int | None = None
        self._sorted = np.empty(0, np.int64)  # (id << 16 | feature table), one integer key
        self._set: set = set()  # tuples, any other key

    def new_ids(self, day: date, rows: pa.Table | None, epoch: int) -> pa.Table | None:
        """The distinct ids of `rows` (a day's) that this run has not committed for the
        day's year, under the trail's `epoch` (read in the day's transaction: a catch-up that
        pruned the trail since may have removed what the run remembers)."""
        if rows is None or not rows.num_rows:
            return None
        if day.year != self._year or epoch != self._epoch:
            self._year, self._sorted, self._set = day.year, np.empty(0, np.int64), set()
            self._epoch = epoch
        ids = rows.select(self.keys).group_by(self.keys).aggregate([]).select(self.keys)
        packed = _packed(ids)
        if packed is not None:
            at = np.searchsorted(self._sorted, packed)
            known = (
                (at < len(self._sorted))
                & (self._sorted[np.minimum(at, len(self._sorted) - 1)] == packed)
                if len(self._sorted)
                else np.zeros(len(packed), bool)
            )
            ids = ids.filter(pa.array(~known))
        elif self._set:
            fresh = [key not in self._set for key in _tuples(ids)]
            ids = ids.filter(pa.array(fresh, pa.bool_()))
        return ids if ids.num_rows else None

    def committed(self, day: date, ids: pa.Table | None) -> None:
        """`ids` are in the trail for `day`'s year: their day's transaction committed."""
        if ids is None or day.year != self._year:
            return
        if len(self._sorted) + len(self._set) + ids.num_rows > self.remember:
            return
        packed = _packed(ids)
        if packed is not None:
            # `ids` came from `new_ids`: none is known yet, and each is there once.
            packed.sort()
            self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, packed), packed)
        else:
            self._set.update(_tuples(ids))


# Ids within this bound pack with a 16-bit feature table id into one int64.
_PACKABLE = 2**46


def _packed(ids: pa.Table) -> np.ndarray | None:
    """(id << 16 | feature table) per row for one integer join key small enough, else None."""
    if ids.num_columns != 2 or not pa.types.is_integer(ids.schema.field(0).type):
        return None
    values = ids.column(0).to_numpy().astype(np.int64)
    if values.size and (values.min() <= -_PACKABLE or values.max() >= _PACKABLE):
        return None
    tables = ids.column(1).to_numpy().astype(np.int64) & 0xFFFF
    return (values << 16) | tables


def _tuples(ids: pa.Table) -> list[tuple]:
    return list(zip(*(ids[c].to_pylist() for c in ids.column_names), strict=True))


def trail_epoch_key(names: EntityNames) -> str:
    return f"trail_epoch:{names.key}"


def trail_epoch(conn: psycopg.Connection, names: EntityNames) -> int:
    """Within a transaction holding the key's latest lock shared: the trail's prune count."""
    return conn.execute(
        template("entity", "trail_epoch", **names.parts()), {"key": trail_epoch_key(names)}
    ).fetchone()["epoch"]


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

"""Writing one day of an entity key: its partition, the day's transaction and lock, and the
replacement of some files' or feature tables' rows by new ones, with what latest must know."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from .. import copy_encoding
from ..days import day_bounds
from ..errors import IndexSchemaError
from ..latest_candidates import NewestRows, sort_for_latest
from ..registry import Registry
from ..sql_templates import template
from .database import IndexDb
from .names import EntityNames
from .schema import add_month_partition, ensure_layout, forget_layout
from .trail import add_to_trail

COPY_COLUMNS = ("feature_table_id", "event_timestamp", "created_timestamp", "file_id")


@dataclass(frozen=True)
class DayRows:
    """A day's new rows in storage order and its latest candidates, in COPY column order;
    encoded in pieces while written, so no day's stream is ever whole in memory."""

    rows: int
    ordered: pa.Table | None
    candidates: pa.Table | None
    markers: pa.Table | None = None  # ids whose candidates went with superseded versions


def ensure_partition(db: IndexDb, names: EntityNames, day: date) -> None:
    """The month partition holding `day`, made and attached if it is not yet."""
    qualified = sql.Identifier(names.schema, names.partition(day)).as_string(None)

    def attached(conn: psycopg.Connection) -> bool:
        found = conn.execute(template("entity", "attached_partition"), {"partition": qualified})
        return found.fetchone()["found"]

    with db.connect() as conn:
        if attached(conn):
            return
    with db.connect() as conn, conn.transaction():
        db.hold_schema(conn)
        # IF NOT EXISTS is not safe against a concurrent creator: one per month at a time.
        db.lock(conn, f"partition:{names.key}:{day:%Y%m}")
        if attached(conn):
            return
        legacy = conn.execute(
            template("entity", "legacy_days_of_month"),
            {
                "rows": sql.Identifier(names.schema, names.rows).as_string(None),
                "pattern": f"{names.partition(day)}__",
            },
        ).fetchone()["found"]
        if not legacy:
            add_month_partition(conn, names, day)
            return
    # A run of an earlier release made day partitions during the upgrade: the next run's
    # schema step moves them to months.
    with db.connect() as conn, conn.transaction():
        forget_layout(db, conn)
    raise IndexSchemaError(
        f"{names.partition(day)}: days stored by an earlier release; the next run moves them "
        "to month storage"
    )


@contextmanager
def day_transaction(
    db: IndexDb, names: EntityNames, day: date, registry: Registry
) -> Iterator[psycopg.Connection]:
    """A transaction holding the day's lock (ascending order: one day at a time) and a shared
    hold on the schema and on the entity key's latest gate, for a run of `registry` (which
    must still be the index's)."""
    with db.connect() as conn, conn.transaction():
        db.hold_schema(conn)
        ensure_layout(db, conn, registry)
        db.lock(conn, f"latest:{names.key}", shared=True)
        db.lock_day(conn, names.key, day)
        yield conn


def order_day(names: EntityNames, day: date, rows: pa.Table, newest: NewestRows) -> DayRows:
    """A day's new rows sorted (so each partition is stored in time order) and its latest
    candidates. CPU-only: runs ahead of the writes. `rows` carries a `path_rank` column (see
    `latest_candidates.path_ranks`)."""
    if not rows.num_rows:
        newest.candidates(day, rows)
        return DayRows(0, None, None)
    columns = [*names.join_keys, *COPY_COLUMNS]
    ordered = sort_for_latest(rows)
    candidates = newest.candidates(day, ordered)
    return DayRows(rows.num_rows, ordered.select(columns), candidates.select(columns))


def without_files(day_rows: DayRows, file_ids: set[int]) -> DayRows:
    """The day's rows less those of `file_ids` (versions superseded while the run read them).
    An id whose candidate came from one of them gets a marker instead: latest recomputes it
    from the history the day commits, since this run's older days skip ids it has seen."""
    if not file_ids or not day_rows.rows:
        return day_rows
    drop = pa.array(sorted(file_ids), pa.int64())
    ordered = day_rows.ordered.filter(pc.invert(pc.is_in(day_rows.ordered["file_id"], drop)))
    candidates = day_rows.candidates
    lost = pc.is_in(candidates["file_id"], drop)
    if pc.any(lost).as_py():
        markers = candidates.filter(lost)
        for column in COPY_COLUMNS[1:]:  # a NULL event timestamp makes a marker
            i = markers.schema.get_field_index(column)
            markers = markers.set_column(i, column, pa.nulls(len(markers), markers[column].type))
        candidates = pa.concat_tables([candidates.filter(pc.invert(lost)), markers])
        return DayRows(ordered.num_rows, ordered, candidates, markers)
    return DayRows(ordered.num_rows, ordered, candidates)


def write_markers(db: IndexDb, names: EntityNames, markers: pa.Table) -> None:
    """Markers again, once every day of the run has committed: a catch-up that ran between
    two of its days recomputed those ids without the rows of the days still to come."""
    with db.connect() as conn, conn.transaction():
        db.hold_schema(conn)
        db.lock(conn, f"latest:{names.key}", shared=True)
        with conn.cursor().copy(template("entity", "copy_changes", **names.parts())) as copy:
            for piece in copy_encoding.iter_encode(markers):
                copy.write(piece)


def rows_per_file(day_rows: DayRows) -> dict[int, int]:
    """File id -> how many of the day's rows it brings."""
    if not day_rows.rows:
        return {}
    counts = day_rows.ordered.group_by("file_id").aggregate([("file_id", "count")])
    return dict(
        zip(counts["file_id"].to_pylist(), counts["file_id_count"].to_pylist(), strict=True)
    )


def replace_day(
    conn: psycopg.Connection,
    names: EntityNames,
    day: date,
    day_rows: DayRows,
    *,
    feature_table_ids: Sequence[int] | None = None,
    keep_file_ids: Sequence[int] = (),
    file_ids: Sequence[int] | None = None,
    trail_ids: pa.Table | None = None,
) -> int:
    """Within `conn`'s day transaction: remove the day's rows of `feature_table_ids` but
    those of `keep_file_ids` (a rebuild) or the rows of `file_ids` (a change list), load the
    new rows, and leave latest its candidates and, where removed rows may have been an id's
    latest, markers; `trail_ids` (see `TrailMemory.new_ids`) join the trail for the day's
    year."""
    parts = names.parts(partition=sql.Identifier(names.partition(day)))
    if feature_table_ids is not None:
        removed = sql.SQL("feature_table_id = ANY(%(removed)s)")
        params: dict[str, object] = {"removed": list(feature_table_ids)}
        if keep_file_ids:
            removed = sql.SQL("{} AND NOT (file_id = ANY(%(kept)s))").format(removed)
            params["kept"] = list(keep_file_ids)
        _remove(conn, parts, day, removed, params)
    if file_ids:
        # BRIN cannot search an array; the range over the file ids (one id, for a sensor run
        # of one object) lets it skip the pages of other files.
        removed = sql.SQL(
            "file_id BETWEEN %(lowest)s AND %(highest)s AND file_id = ANY(%(removed)s)"
        )
        params = {"removed": list(file_ids), "lowest": min(file_ids), "highest": max(file_ids)}
        _remove(conn, parts, day, removed, params)
    if day_rows.rows:
        with conn.cursor().copy(template("entity", "copy_day", **parts)) as copy:
            for piece in copy_encoding.iter_encode(day_rows.ordered):
                copy.write(piece)
        with conn.cursor().copy(template("entity", "copy_changes", **parts)) as copy:
            for piece in copy_encoding.iter_encode(day_rows.candidates):
                copy.write(piece)
    add_to_trail(conn, names, day, trail_ids)
    return day_rows.rows


def summarize_day(db: IndexDb, names: EntityNames, day: date) -> None:
    """Summarize the pages a day's commit added to its month's BRIN index, in a short
    transaction of its own. Left to autovacuum when the month is busy: until then queries read
    those pages whole, and get the same answers."""
    qualified = sql.Identifier(names.schema, names.partition(day)).as_string(None)
    try:
        with db.connect() as conn, conn.transaction():
            conn.execute(template("entity", "summarize_lock_timeout"))
            conn.execute(template("entity", "summarize_day"), {"partition": qualified})
    except psycopg.errors.LockNotAvailable:
        pass


def _remove(
    conn: psycopg.Connection,
    parts: dict[str, sql.Composable],
    day: date,
    removed: sql.Composable,
    params: dict[str, object],
) -> None:
    """Remove the day's rows matching `removed`, marking for latest the ids whose latest row
    may go with them."""
    start, end = day_bounds(day)
    conn.execute(template("entity", "prefer_brin"))
    conn.execute(
        template("entity", "remove_rows", **parts, removed=removed),
        {**params, "day_start": start, "day_end": end},
    )
    conn.execute(template("entity", "planner_defaults"))

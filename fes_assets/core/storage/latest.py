"""Keeping `latest_<key>` current: merge the candidates runs left in the change log
(greater wins) and recompute, from history, only the ids whose latest row was removed."""

from __future__ import annotations

from datetime import date, datetime

import psycopg
from psycopg import sql

from ..clock import FUTURE_TOLERANCE
from ..sql_templates import template
from .database import IndexDb
from .names import EntityNames, partition_month
from .trail import trail_epoch_key


def catch_up_latest(db: IndexDb, names: EntityNames, now: datetime) -> dict[str, int]:
    """Bring latest up to date with the change log, under the entity key's exclusive latest
    lock (day writes hold it shared). Candidates dated after `now` (plus the tolerance the
    checks allow) stay in the log for a later catch-up."""
    with db.connect() as conn, conn.transaction():
        return catch_up_latest_in(db, conn, names, now)


def catch_up_latest_in(
    db: IndexDb, conn: psycopg.Connection, names: EntityNames, now: datetime
) -> dict[str, int]:
    """`catch_up_latest` within the caller's transaction."""
    parts = names.parts()
    db.hold_schema(conn)
    db.lock(conn, f"latest:{names.key}")
    conn.execute(template("entity", "latest_work_mem"))
    max_seq = conn.execute(template("entity", "latest_max_seq", **parts)).fetchone()["m"]
    if max_seq is None:
        return {"recomputed_ids": 0, "latest_rows_written": 0}
    p = {"max_seq": max_seq, "not_after": now + FUTURE_TOLERANCE}
    conn.execute(template("entity", "latest_collect", **parts), p)
    conn.execute(template("entity", "latest_marked", **parts))
    marked = conn.execute(template("entity", "latest_count_marked")).fetchone()["n"]
    written = 0
    if marked:
        conn.execute(template("entity", "latest_delete_marked", **parts))
        written += _recompute_marked(conn, names, marked)
    written += conn.execute(template("entity", "latest_merge_candidates", **parts)).rowcount
    conn.execute(template("entity", "latest_forget", **parts), p)
    return {"recomputed_ids": marked, "latest_rows_written": written}


def _recompute_marked(conn: psycopg.Connection, names: EntityNames, marked: int) -> int:
    """Latest rows for the marked ids from history, reading only the years the trail gives
    them, newest month first, and stopping once every id is found: a rebuilt recent day
    resolves in its own month, and an id whose every row went reads the years it had rows in.
    An id not found in a year it was given leaves the trail for that year."""
    conn.execute(template("entity", "latest_unresolved"))
    by_month: dict[date, list[str]] = {}
    for row in conn.execute(
        template("entity", "latest_partitions"), {"schema": names.schema, "rows": names.rows}
    ):
        by_month.setdefault(partition_month(row["name"]), []).append(row["name"])
    written, remaining = 0, marked
    before = 32767
    while remaining:
        year = conn.execute(
            template("entity", "latest_next_year", **names.parts()), {"before": before}
        ).fetchone()["year"]
        if year is None:
            break
        for month in sorted((m for m in by_month if m.year == year), reverse=True):
            if not remaining:
                break
            parts = names.parts(month_rows=_union(names, by_month[month]))
            found = conn.execute(template("entity", "latest_recompute_marked", **parts)).rowcount
            if found:
                conn.execute(template("entity", "latest_resolved", **parts))
                written += found
                remaining -= found
        pruned = conn.execute(
            template("entity", "latest_prune_trail", **names.parts()), {"year": year}
        ).rowcount
        if pruned:
            # Runs under way may remember these ids as in the trail for this year.
            conn.execute(
                template("entity", "bump_trail_epoch", **names.parts()),
                {"key": trail_epoch_key(names)},
            )
        before = year
    return written


def _union(names: EntityNames, partitions: list[str]) -> sql.Composable:
    """The rows of a month's partitions as one relation."""
    if len(partitions) == 1:
        return sql.Identifier(names.schema, partitions[0])
    selects = sql.SQL(" UNION ALL ").join(
        template("entity", "month_part", **names.parts(partition=sql.Identifier(p)))
        for p in partitions
    )
    return sql.SQL("({})").format(selects)

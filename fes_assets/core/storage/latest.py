"""Keeping `latest_<key>` current: merge the candidates runs left in the change log
(greater wins) and recompute, from history, only the ids whose latest row was removed."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql

from ..clock import FUTURE_TOLERANCE
from ..sql_templates import template
from .database import IndexDb
from .names import EntityNames


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
    """Latest rows for the marked ids from history, newest partition first, stopping once
    every id is found: a rebuilt recent day resolves its ids in the first partition instead of
    a join over the whole history."""
    conn.execute(template("entity", "latest_unresolved"))
    found_partitions = conn.execute(
        template("entity", "latest_partitions"), {"schema": names.schema, "rows": names.rows}
    ).fetchall()
    written, remaining = 0, marked
    for name in sorted((r["name"] for r in found_partitions), key=_partition_start, reverse=True):
        if not remaining:
            break
        parts = names.parts(partition=sql.Identifier(name))
        found = conn.execute(template("entity", "latest_recompute_marked", **parts)).rowcount
        if found:
            conn.execute(template("entity", "latest_resolved", **parts))
            written += found
            remaining -= found
    return written


def _partition_start(name: str) -> str:
    """A partition's first day as YYYYMMDD, from its name: months (`_YYYYMM`) and the days of
    indexes not yet moved to months (`_YYYYMMDD`) order together."""
    suffix = name.rpartition("_")[2]
    return suffix if len(suffix) == 8 else f"{suffix}01"

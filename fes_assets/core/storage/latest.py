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
    parts = names.parts()
    with db.connect() as conn, conn.transaction():
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
    """Latest rows for the marked ids from history, newest day first, stopping once every id
    is found: a rebuilt newest day resolves its ids in the first partition instead of a join
    over the whole history."""
    conn.execute(template("entity", "latest_unresolved"))
    days = conn.execute(
        template("entity", "latest_day_partitions"), {"schema": names.schema, "rows": names.rows}
    ).fetchall()
    written, remaining = 0, marked
    for day in days:
        if not remaining:
            break
        parts = names.parts(partition=sql.Identifier(day["name"]))
        found = conn.execute(template("entity", "latest_recompute_marked", **parts)).rowcount
        if found:
            conn.execute(template("entity", "latest_resolved", **parts))
            written += found
            remaining -= found
    return written

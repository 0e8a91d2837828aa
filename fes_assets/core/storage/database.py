"""One index schema in one database: pooled connections and the advisory locks that keep
schema changes, day writes and latest catch-ups apart."""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from sqlalchemy.engine import make_url

from ..errors import IndexSchemaError
from ..registry import NAME_RE, Registry
from ..settings import DEFAULT_SCHEMA
from ..sql_templates import template
from .names import EntityNames


def conninfo(url: str) -> str:
    """libpq connection string from a SQLAlchemy URL (`postgresql+psycopg://…`)."""
    u = make_url(url)
    params = {k: v for k, v in u.query.items() if isinstance(v, str)}
    if u.host:
        params.setdefault("host", u.host)
    if u.port:
        params["port"] = str(u.port)
    if u.username:
        params["user"] = u.username
    if u.password is not None:
        params["password"] = u.password
    if u.database:
        params["dbname"] = u.database
    return psycopg.conninfo.make_conninfo(**params)


class IndexDb:
    """One index schema in one database. Connections are short-lived and per operation."""

    def __init__(
        self, url: str, schema: str = DEFAULT_SCHEMA, *, lock_timeout: float | None = None
    ) -> None:
        if not NAME_RE.match(schema):
            raise IndexSchemaError(f"schema name {schema!r} must match {NAME_RE.pattern}")
        self.url = url
        self.schema = schema
        # Seconds a statement may wait for a lock before it fails (None: no limit). The sensor
        # sets it, so that a tick fails and is retried rather than outlasting its deadline
        # behind a long day's transaction.
        self.lock_timeout = lock_timeout
        self._conninfo = conninfo(url)
        self._idle: list[psycopg.Connection] = []
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:  # the URL may hold a password
        return f"IndexDb(schema={self.schema!r})"

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A connection that commits when the block succeeds and rolls back when it raises.
        Idle connections are kept for reuse: a run makes hundreds of short calls, and opening
        a connection costs more than most of them."""
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self._conninfo, row_factory=dict_row, connect_timeout=10)
            if self.lock_timeout is not None:
                conn.execute(
                    template("locks", "set_lock_timeout"),
                    {"timeout": f"{int(self.lock_timeout * 1000)}ms"},
                )
                conn.commit()
        try:
            yield conn
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            conn.close()  # its state is unknown: never hand it out again
            raise
        conn.commit()
        with self._pool_lock:
            if len(self._idle) < 4:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def names(self, registry: Registry, key: str) -> EntityNames:
        return EntityNames.from_registry(self.schema, registry, key)

    def statement(self, file: str, name: str, **parts: sql.Composable) -> sql.Composed:
        """Template `name` of `sql/<file>.sql` in this index's schema."""
        return template(file, name, schema=sql.Identifier(self.schema), **parts)

    def execute(
        self, file: str, name: str, params: dict[str, Any] | None = None, **parts: sql.Composable
    ) -> list[dict[str, Any]]:
        """Run one template on its own connection; the rows it returns, if any."""
        with self.connect() as conn:
            cur = conn.execute(self.statement(file, name, **parts), params)
            return cur.fetchall() if cur.description else []

    # --- advisory locks -----------------------------------------------------------------------

    def lock_id(self, what: str) -> int:
        # Advisory locks take integers: a stable hash of schema and purpose (signed 32 bit).
        return zlib.crc32(f"fes:{self.schema}:{what}".encode()) - 2**31

    def lock(self, conn: psycopg.Connection, what: str, *, shared: bool = False) -> None:
        """Within a transaction: the advisory lock named `what`, exclusive or shared."""
        name = "lock_shared" if shared else "lock"
        conn.execute(template("locks", name), {"key": self.lock_id(what)})

    def lock_day(self, conn: psycopg.Connection, key: str, day: date) -> None:
        """Within a transaction: the lock of one day of entity key `key`."""
        conn.execute(
            template("locks", "lock_day"),
            {"key": self.lock_id(f"day:{key}"), "day": day.toordinal()},
        )

    def hold_schema(self, conn: psycopg.Connection) -> None:
        """Within a data transaction: a shared hold that keeps schema changes out."""
        self.lock(conn, "schema", shared=True)

"""The PostgreSQL index: schema, catalogue rows, day replacement and latest maintenance."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.rows import dict_row
from sqlalchemy.engine import make_url

from . import pgcopy
from .newest import NewestRows, sort_for_latest
from .registry import NAME_RE, VALUE_TYPES, Registry
from .sqlfiles import template

SCHEMA_VERSION = 1
# Bumped when storage DDL changes in a way the same schema version can read: a new revision
# makes the next run apply the DDL (and its upgrades) once.
STORAGE_REVISION = 2
DEFAULT_SCHEMA = "entity_lookup"


class IndexSchemaError(RuntimeError):
    """The index in the database cannot be used with this registry or release."""


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


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


@dataclass(frozen=True)
class DayRows:
    """A day's new rows in storage order and its latest candidates, in COPY column order;
    encoded in pieces while written, so no day's stream is ever whole in memory."""

    rows: int
    ordered: pa.Table | None
    candidates: pa.Table | None


@dataclass(frozen=True)
class EntityNames:
    """Every identifier belonging to one entity key."""

    schema: str
    key: str
    join_keys: list[str]
    types: dict[str, str]

    def ident(self, name: str) -> sql.Identifier:
        return sql.Identifier(name)

    @property
    def entity_view(self) -> str:
        return f"entity_{self.key}"

    @property
    def latest_view(self) -> str:
        return f"latest_{self.key}"

    @property
    def rows(self) -> str:
        return f"_e_{self.key}"

    @property
    def latest_table(self) -> str:
        return f"_l_{self.key}"

    @property
    def changes(self) -> str:
        return f"_c_{self.key}"

    def partition(self, day: date) -> str:
        return f"_e_{self.key}_{day:%Y%m%d}"

    def parts(self, **extra: sql.Composable) -> dict[str, sql.Composable]:
        ids = [sql.Identifier(k) for k in self.join_keys]

        def qualified(alias: str) -> sql.Composable:
            return sql.SQL(", ").join(sql.Identifier(alias, k) for k in self.join_keys)

        def equal(a: str, b: str) -> sql.Composable:
            return sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier(a, k), sql.Identifier(b, k))
                for k in self.join_keys
            )

        return {
            "schema": sql.Identifier(self.schema),
            "rows": sql.Identifier(self.rows),
            "latest_table": sql.Identifier(self.latest_table),
            "changes": sql.Identifier(self.changes),
            "entity_view": sql.Identifier(self.entity_view),
            "latest_view": sql.Identifier(self.latest_view),
            "rows_time_index": sql.Identifier(f"{self.rows}_time"),
            "rows_id_index": sql.Identifier(f"{self.rows}_ids"),
            "id_columns": sql.SQL(", ").join(
                sql.SQL("{} {} NOT NULL").format(
                    sql.Identifier(k), sql.SQL(VALUE_TYPES[self.types[k]])
                )
                for k in self.join_keys
            ),
            "id_list": sql.SQL(", ").join(ids),
            "r_ids": qualified("r"),
            "l_eq_c": equal("l", "c"),
            "r_eq_c": equal("r", "c"),
            **extra,
        }


class IndexDb:
    """One index schema in one database. Connections are short-lived and per operation."""

    def __init__(self, url: str, schema: str = DEFAULT_SCHEMA) -> None:
        if not NAME_RE.match(schema):
            raise IndexSchemaError(f"schema name {schema!r} must match {NAME_RE.pattern}")
        self.url = url
        self.schema = schema
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
        types = registry.entity_types(key)
        return EntityNames(self.schema, key, sorted(types), types)

    def _s(self, file: str, name: str, **parts: sql.Composable) -> sql.Composed:
        return template(file, name, schema=sql.Identifier(self.schema), **parts)

    # --- schema -------------------------------------------------------------------------

    def _fingerprint(self, registry: Registry) -> str:
        layout = {
            "version": SCHEMA_VERSION,
            "storage": STORAGE_REVISION,
            "entities": {k: registry.entity_types(k) for k in registry.by_entity_key()},
            "tables": sorted(registry.feature_tables),
        }
        return hashlib.sha1(json.dumps(layout, sort_keys=True).encode()).hexdigest()

    def _current_ids(self, registry: Registry) -> dict[str, int] | None:
        """Feature-table ids when the index already has this registry's layout, else None."""
        s = sql.Identifier(self.schema)
        try:
            with self.connect() as conn:
                meta = {
                    r["key"]: r["value"]
                    for r in conn.execute(
                        sql.SQL(
                            "SELECT key, value FROM {}.meta "
                            "WHERE key IN ('layout', 'schema_version')"
                        ).format(s)
                    )
                }
                if meta.get("schema_version") != SCHEMA_VERSION or meta.get(
                    "layout"
                ) != self._fingerprint(registry):
                    return None
                rows = conn.execute(sql.SQL("SELECT id, name FROM {}.feature_tables").format(s))
                return {r["name"]: r["id"] for r in rows}
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return None

    def ensure_schema(self, registry: Registry) -> dict[str, int]:
        """Create what is missing, check the stored version and entity types, and register
        feature tables. Returns feature-table name -> id."""
        # DDL takes table locks even when it finds nothing to do, and would wait on (or
        # deadlock with) other runs' writes: skip it when the layout is already in place.
        current = self._current_ids(registry)
        if current is not None:
            return current
        with self.connect() as conn, conn.transaction():
            # Exclusive against every writer's shared hold (see `writing`), so DDL never
            # interleaves with data transactions.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_id("schema"),))
            # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema
            # exists: a role that owns only its schema (docs/deploy.md) must not need it.
            exists = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            ).fetchone()
            if not exists:
                conn.execute(self._s("schema", "create_schema"))
            for name in (
                "create_meta",
                "create_feature_tables",
                "create_files",
                "create_jobs",
            ):
                conn.execute(self._s("schema", name))
            self._check_meta(conn, registry)
            for key in registry.by_entity_key():
                n = self.names(registry, key)
                for name in ("create_rows", "create_latest", "create_changes", "create_views"):
                    conn.execute(template("entity", name, **n.parts()))
            ids = self._register_tables(conn, registry)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.meta (key, value) VALUES ('layout', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ).format(sql.Identifier(self.schema)),
                (json.dumps(self._fingerprint(registry)),),
            )
            return ids

    def hold_schema(self, conn: psycopg.Connection) -> None:
        """Within a data transaction: a shared hold that keeps schema changes out."""
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (self._lock_id("schema"),))

    def _check_meta(self, conn: psycopg.Connection, registry: Registry) -> None:
        meta = {
            r["key"]: r["value"]
            for r in conn.execute(
                sql.SQL("SELECT key, value FROM {}.meta").format(sql.Identifier(self.schema))
            )
        }
        version = meta.get("schema_version")
        if version is not None and version > SCHEMA_VERSION:
            raise IndexSchemaError(
                f"the index in schema {self.schema!r} has version {version}, newer than this "
                f"release supports ({SCHEMA_VERSION}); upgrade fes_assets"
            )
        stored: dict[str, dict[str, str]] = meta.get("entity_keys", {})
        for key, fts in registry.by_entity_key().items():
            want = dict(sorted(fts[0].entities.items()))
            have = stored.get(key)
            if have is not None and have != want:
                raise IndexSchemaError(
                    f"entity key {key!r}: the index stores {have} but the registry says {want} "
                    f"(feature table {fts[0].name!r}); rebuild it with "
                    f"`fes reset-entity {key}`, then backfill its partitions"
                )
            stored[key] = want
        upsert = sql.SQL(
            "INSERT INTO {}.meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ).format(sql.Identifier(self.schema))
        conn.execute(upsert, ("schema_version", json.dumps(SCHEMA_VERSION)))
        conn.execute(upsert, ("entity_keys", json.dumps(stored)))

    def _register_tables(self, conn: psycopg.Connection, registry: Registry) -> dict[str, int]:
        s = sql.Identifier(self.schema)
        for ft in registry.feature_tables.values():
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.feature_tables (name, entity_key) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET removed_at = NULL, "
                    "entity_key = excluded.entity_key"
                ).format(s),
                (ft.name, ft.entity_key),
            )
        conn.execute(
            sql.SQL(
                "UPDATE {}.feature_tables SET removed_at = now() "
                "WHERE removed_at IS NULL AND NOT (name = ANY(%s))"
            ).format(s),
            (list(registry.feature_tables),),
        )
        rows = conn.execute(sql.SQL("SELECT id, name FROM {}.feature_tables").format(s))
        return {r["name"]: r["id"] for r in rows}

    def _lock_id(self, what: str) -> int:
        # Advisory locks take integers: a stable hash of schema and purpose (signed 32 bit).
        return zlib.crc32(f"fes:{self.schema}:{what}".encode()) - 2**31

    # --- days -----------------------------------------------------------------------------

    def ensure_partition(self, names: EntityNames, day: date) -> None:
        start, end = day_bounds(day)
        statement = template(
            "entity",
            "create_day_partition",
            **names.parts(
                partition=sql.Identifier(names.partition(day)),
                day_start=sql.Literal(start),
                day_end=sql.Literal(end),
            ),
        )
        with self.connect() as conn, conn.transaction():
            # IF NOT EXISTS is not safe against a concurrent creator: take the day's lock.
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                (self._lock_id(f"day:{names.key}"), day.toordinal()),
            )
            conn.execute(statement)

    @contextmanager
    def day_transaction(self, names: EntityNames, day: date) -> Iterator[psycopg.Connection]:
        """A transaction holding the day's lock (ascending order: one day at a time) and a
        shared hold on the entity key's latest gate."""
        with self.connect() as conn, conn.transaction():
            self.hold_schema(conn)
            conn.execute(
                "SELECT pg_advisory_xact_lock_shared(%s)", (self._lock_id(f"latest:{names.key}"),)
            )
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                (self._lock_id(f"day:{names.key}"), day.toordinal()),
            )
            yield conn

    def order_day(
        self, names: EntityNames, day: date, rows: pa.Table, newest: NewestRows
    ) -> DayRows:
        """A day's new rows sorted (so each partition is stored in time order) and its latest
        candidates. CPU-only: runs ahead of the writes. `rows` carries a `path_rank` column
        (see `newest.path_ranks`)."""
        if not rows.num_rows:
            newest.candidates(day, rows)
            return DayRows(0, None, None)
        columns = [
            *names.join_keys,
            "feature_table_id",
            "event_timestamp",
            "created_timestamp",
            "file_id",
        ]
        ordered = sort_for_latest(rows)
        candidates = newest.candidates(day, ordered)
        return DayRows(rows.num_rows, ordered.select(columns), candidates.select(columns))

    def replace_day(
        self,
        conn: psycopg.Connection,
        names: EntityNames,
        day: date,
        day_rows: DayRows,
        *,
        feature_table_ids: Sequence[int] | None = None,
        file_ids: Sequence[int] | None = None,
    ) -> int:
        """Within `conn`'s day transaction: remove the day's rows of `feature_table_ids`
        (a rebuild) or of `file_ids` (a change list), load the new rows, and leave latest
        its candidates and, where removed rows may have been an id's latest, markers."""
        parts = names.parts(partition=sql.Identifier(names.partition(day)))
        if feature_table_ids is not None:
            # A rebuild that empties the day truncates it: cheaper than deleting every row.
            self._remove(conn, parts, day, "feature_table_id", feature_table_ids, truncate=True)
        if file_ids:
            self._remove(conn, parts, day, "file_id", file_ids, truncate=False)
        if day_rows.rows:
            with conn.cursor().copy(template("entity", "copy_day", **parts)) as copy:
                for piece in pgcopy.iter_encode(day_rows.ordered):
                    copy.write(piece)
            with conn.cursor().copy(template("entity", "copy_changes", **parts)) as copy:
                for piece in pgcopy.iter_encode(day_rows.candidates):
                    copy.write(piece)
            qualified = sql.Identifier(self.schema, names.partition(day)).as_string(conn)
            conn.execute(template("entity", "summarize_day"), {"partition": qualified})
        return day_rows.rows

    def _remove(
        self,
        conn: psycopg.Connection,
        parts: dict[str, sql.Composable],
        day: date,
        column: str,
        ids: Sequence[int],
        *,
        truncate: bool,
    ) -> None:
        """Remove the day's rows whose `column` is in `ids`, marking for latest the ids whose
        latest row may go with them."""
        parts = {
            **parts,
            "removed": sql.SQL("{} = ANY(%(removed)s)").format(sql.Identifier(column)),
        }
        params = {"removed": list(ids)}

        def exists(name: str) -> bool:
            return conn.execute(template("entity", name, **parts), params).fetchone()["found"]

        if not exists("has_removed"):
            return
        start, end = day_bounds(day)
        conn.execute(
            template("entity", "mark_removed", **parts),
            {**params, "day_start": start, "day_end": end},
        )
        if truncate and not exists("keeps_others"):
            conn.execute(template("entity", "truncate_day", **parts))
        else:
            conn.execute(template("entity", "delete_removed", **parts), params)

    # --- latest ---------------------------------------------------------------------------

    def catch_up_latest(self, names: EntityNames) -> dict[str, int]:
        """Bring latest up to date: merge the candidates written since the last catch-up
        (greater wins) and recompute marked ids from history."""
        parts = names.parts()
        with self.connect() as conn, conn.transaction():
            self.hold_schema(conn)
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s)", (self._lock_id(f"latest:{names.key}"),)
            )
            # Candidates and marked ids' history are sorted: with the default 4 MB a sort
            # spills to disk (seconds per million rows) where memory sorts in a fraction.
            conn.execute("SET LOCAL work_mem = '256MB'")
            row = conn.execute(
                sql.SQL("SELECT max(seq) AS m FROM {}.{}").format(
                    sql.Identifier(self.schema), sql.Identifier(names.changes)
                )
            ).fetchone()
            max_seq = row["m"]
            if max_seq is None:
                return {"recomputed_ids": 0, "latest_rows_written": 0}
            p = {"max_seq": max_seq}
            conn.execute(template("entity", "latest_collect", **parts), p)
            conn.execute(template("entity", "latest_marked", **parts))
            marked = conn.execute("SELECT count(*) AS n FROM fes_marked").fetchone()["n"]
            written = 0
            if marked:
                conn.execute(template("entity", "latest_delete_marked", **parts))
                written += self._recompute_marked(conn, names, marked)
            written += conn.execute(template("entity", "latest_merge_candidates", **parts)).rowcount
            conn.execute(template("entity", "latest_forget", **parts), p)
            return {"recomputed_ids": marked, "latest_rows_written": written}

    def _recompute_marked(self, conn: psycopg.Connection, names: EntityNames, marked: int) -> int:
        """Latest rows for the marked ids from history, newest day first, stopping once every
        id is found: a rebuilt newest day resolves its ids in the first partition instead of
        a join over the whole history."""
        conn.execute(template("entity", "latest_unresolved"))
        days = conn.execute(
            template("entity", "latest_day_partitions"),
            {"schema": self.schema, "rows": names.rows},
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

    def count_rows(self, names: EntityNames, table: str) -> int:
        with self.connect() as conn:
            return conn.execute(
                sql.SQL("SELECT count(*) AS n FROM {}.{}").format(
                    sql.Identifier(self.schema), sql.Identifier(table)
                )
            ).fetchone()["n"]

    def pending_changes(self, names: EntityNames) -> int:
        return self.count_rows(names, names.changes)

    def prune_feature_table(self, registry: Registry, name: str, entity_key: str) -> int:
        """Remove a feature table that left the registry: its rows, latest rows and files.
        Returns the number of entity rows removed."""
        if name in registry.feature_tables:
            raise IndexSchemaError(
                f"feature table {name!r} is still in the registry; remove it there first"
            )
        s = sql.Identifier(self.schema)
        types = self._stored_types(entity_key)
        names = EntityNames(self.schema, entity_key, sorted(types), types)
        with self.connect() as conn, conn.transaction():
            self.hold_schema(conn)
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s)", (self._lock_id(f"latest:{entity_key}"),)
            )
            row = conn.execute(
                sql.SQL("SELECT id FROM {}.feature_tables WHERE name = %s").format(s), (name,)
            ).fetchone()
            if row is None:
                raise IndexSchemaError(f"feature table {name!r} is not in the index")
            params = {"feature_table_id": row["id"]}
            parts = names.parts()
            removed = conn.execute(template("entity", "prune_rows", **parts), params).rowcount
            conn.execute(template("entity", "prune_changes", **parts), params)
            conn.execute(
                sql.SQL("DELETE FROM {}.{} WHERE feature_table_id = %s").format(
                    s, sql.Identifier(names.latest_table)
                ),
                (row["id"],),
            )
            conn.execute(
                sql.SQL("DELETE FROM {}.files WHERE feature_table = %s").format(s), (name,)
            )
            conn.execute(
                sql.SQL("DELETE FROM {}.feature_tables WHERE id = %s").format(s), (row["id"],)
            )
        return removed

    def removed_tables(self) -> dict[str, str]:
        """Feature tables in the index that left the registry: name -> entity key."""
        with self.connect() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT name, entity_key FROM {}.feature_tables WHERE removed_at IS NOT NULL"
                ).format(sql.Identifier(self.schema))
            )
            return {r["name"]: r["entity_key"] for r in rows}

    def _stored_types(self, key: str) -> dict[str, str]:
        with self.connect() as conn:
            row = conn.execute(
                sql.SQL("SELECT value FROM {}.meta WHERE key = 'entity_keys'").format(
                    sql.Identifier(self.schema)
                )
            ).fetchone()
        types = (row["value"] if row else {}).get(key)
        if not types:
            raise IndexSchemaError(f"entity key {key!r} is not in the index")
        return types

    def reset_entity(self, key: str) -> None:
        """Drop an entity key's storage and views, so the next run recreates them with the
        registry's types."""
        s = sql.Identifier(self.schema)
        with self.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_id("schema"),))
            conn.execute(sql.SQL("DELETE FROM {}.meta WHERE key = 'layout'").format(s))
            for view in (f"entity_{key}", f"latest_{key}"):
                conn.execute(sql.SQL("DROP VIEW IF EXISTS {}.{}").format(s, sql.Identifier(view)))
            for table in (f"_e_{key}", f"_l_{key}", f"_c_{key}"):
                conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}.{} CASCADE").format(s, sql.Identifier(table))
                )
            row = conn.execute(
                sql.SQL("SELECT value FROM {}.meta WHERE key = 'entity_keys'").format(s)
            ).fetchone()
            if row:
                stored = row["value"]
                stored.pop(key, None)
                conn.execute(
                    sql.SQL("UPDATE {}.meta SET value = %s WHERE key = 'entity_keys'").format(s),
                    (json.dumps(stored),),
                )
            conn.execute(
                sql.SQL(
                    "UPDATE {}.files SET status = 'pending', validated = false "
                    "WHERE feature_table IN (SELECT name FROM {}.feature_tables "
                    "WHERE entity_key = %s) AND status = 'indexed'"
                ).format(s, s),
                (key,),
            )

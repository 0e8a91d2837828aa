"""The index's schema: shared tables, each entity key's storage and views, the schema
version and entity types kept in `meta`, and the feature tables' ids."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Any

import psycopg
from psycopg import sql

from ..days import month_bounds
from ..errors import IndexSchemaError
from ..registry import Registry
from ..sql_templates import template
from .database import IndexDb
from .names import EntityNames, partition_month

# Releases refuse an index of a newer version. 2: the trail, which an earlier release would
# not keep (its runs would write rows the trail does not know).
SCHEMA_VERSION = 2
# Bumped when storage DDL changes in a way the same schema version can read: a new revision
# makes the next run apply the DDL (and its upgrades) once.
STORAGE_REVISION = 6
_SHARED_TABLES = (
    "create_meta",
    "create_feature_tables",
    "create_files",
    "create_file_days",
    "create_jobs",
)
_ENTITY_STORAGE = ("create_rows", "create_latest", "create_changes", "create_trail")


def layout_fingerprint(registry: Registry) -> str:
    """What the index's DDL depends on: when it differs from `meta`, a run applies the DDL."""
    layout = {
        "version": SCHEMA_VERSION,
        "storage": STORAGE_REVISION,
        "entities": {k: registry.entity_types(k) for k in registry.by_entity_key()},
        "tables": {name: ft.spec() for name, ft in sorted(registry.feature_tables.items())},
    }
    return hashlib.sha1(json.dumps(layout, sort_keys=True).encode()).hexdigest()


def _meta(db: IndexDb, conn: psycopg.Connection) -> dict[str, Any]:
    return {r["key"]: r["value"] for r in conn.execute(db.statement("schema", "read_meta"))}


def _write_meta(db: IndexDb, conn: psycopg.Connection, key: str, value: Any) -> None:
    conn.execute(db.statement("schema", "write_meta"), {"key": key, "value": json.dumps(value)})


def _table_ids(db: IndexDb, conn: psycopg.Connection) -> dict[str, int]:
    return {r["name"]: r["id"] for r in conn.execute(db.statement("schema", "feature_table_ids"))}


def _current_ids(db: IndexDb, registry: Registry) -> dict[str, int] | None:
    """Feature-table ids when the index already has this registry's layout, else None."""
    try:
        with db.connect() as conn:
            meta = _meta(db, conn)
            if meta.get("schema_version") != SCHEMA_VERSION or meta.get(
                "layout"
            ) != layout_fingerprint(registry):
                return None
            return _table_ids(db, conn)
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return None


def ensure_schema(db: IndexDb, registry: Registry) -> dict[str, int]:
    """Create what is missing, check the stored version and entity types, and register
    feature tables. Returns feature-table name -> id."""
    # DDL takes table locks even when it finds nothing to do, and would wait on (or
    # deadlock with) other runs' writes: skip it when the layout is already in place.
    current = _current_ids(db, registry)
    if current is not None:
        return current
    for key in registry.by_entity_key():
        _move_days_to_months(db, db.names(registry, key))
    with db.connect() as conn, conn.transaction():
        # Exclusive against every writer's shared hold (`IndexDb.hold_schema`), so DDL never
        # interleaves with data transactions.
        db.lock(conn, "schema")
        # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema
        # exists: a role that owns only its schema (docs/deploy.md) must not need it.
        exists = conn.execute(
            template("schema", "namespace_exists"), {"schema": db.schema}
        ).fetchone()
        if not exists:
            conn.execute(db.statement("schema", "create_schema"))
        for name in _SHARED_TABLES:
            conn.execute(db.statement("schema", name))
        stored_types = _check_meta(db, conn, registry)
        _take_in_table_changes(db, conn, registry, stored_types)
        for key in registry.by_entity_key():
            names = db.names(registry, key)
            parts = names.parts()
            for name in _ENTITY_STORAGE:
                conn.execute(template("entity", name, **parts))
            for view, source in (
                (names.entity_view, names.rows),
                (names.latest_view, names.latest_table),
            ):
                conn.execute(
                    template(
                        "entity",
                        "create_view",
                        **names.parts(view=sql.Identifier(view), source=sql.Identifier(source)),
                    )
                )
        ids = _register_tables(db, conn, registry)
        _write_meta(db, conn, "layout", layout_fingerprint(registry))
        return ids


def add_month_partition(conn: psycopg.Connection, names: EntityNames, day: date) -> None:
    """Make the month partition holding `day` and attach it (the caller holds the locks)."""
    parts = names.parts(partition=sql.Identifier(names.partition(day)))
    conn.execute(template("entity", "create_month_table", **parts))
    conn.execute(template("entity", "attach_lock_timeout"))
    _attach_month(conn, names, day)


def _attach_month(conn: psycopg.Connection, names: EntityNames, day: date) -> None:
    start, end = month_bounds(day)
    conn.execute(
        template(
            "entity",
            "attach_month",
            **names.parts(partition=sql.Identifier(names.partition(day))),
            month_start=sql.Literal(start),
            month_end=sql.Literal(end),
        )
    )


def _move_days_to_months(db: IndexDb, names: EntityNames) -> None:
    """Move the day-sized partitions of earlier releases into month partitions, a month per
    transaction: one transaction over years of days would need more locks than a stock server
    has. Each month moves whole (copy its days into a month table, then detach and drop them
    and attach the month), so a stop between two leaves every row queryable exactly once, and
    the next run goes on. Readers wait only for the swap, not for the copy."""
    where = {"schema": names.schema, "rows": names.rows}
    while True:
        with db.connect() as conn, conn.transaction():
            db.lock(conn, "schema")
            days = [
                r["name"] for r in conn.execute(template("entity", "legacy_day_partitions"), where)
            ]
            if not days:
                break
            month = days[0][-8:-2]
            first = date(int(month[:4]), int(month[4:]), 1)
            target = sql.Identifier(names.partition(first))
            batch = [d for d in days if d[-8:-2] == month]
            conn.execute(template("entity", "create_month_table", **names.parts(partition=target)))
            for day in batch:
                parts = names.parts(partition=sql.Identifier(day), month=target)
                conn.execute(template("entity", "move_day_rows", **parts))
            if table_exists(conn, names.schema, names.trail):
                conn.execute(
                    template("entity", "trail_of_partition", **names.parts(partition=target)),
                    {"year": first.year},
                )
            conn.execute(template("entity", "attach_lock_timeout"))
            for day in batch:
                parts = names.parts(partition=sql.Identifier(day))
                conn.execute(template("entity", "detach_partition", **parts))
                conn.execute(template("entity", "drop_partition", **parts))
            _attach_month(conn, names, first)
    with db.connect() as conn, conn.transaction():
        db.lock(conn, "schema")
        if table_exists(conn, names.schema, names.rows):
            # Per entity key and before the schema's DDL: the index is built on every month of
            # the key, a few hundred locks, which one transaction over all keys might not fit.
            conn.execute(template("entity", "create_brin", **names.parts()))
            if not table_exists(conn, names.schema, names.trail):
                _build_trail(db, conn, names)


def _build_trail(db: IndexDb, conn: psycopg.Connection, names: EntityNames) -> None:
    """The trail of an index made before it, from every partition. In the same transaction
    the layout is forgotten, so a run of the earlier release still under way refuses its next
    day (see `ensure_layout`), and the version is raised, so an earlier release's sensor or
    run cannot take the index back (it refuses a newer version): neither writes rows the trail
    would not know."""
    forget_layout(db, conn)
    _write_meta(db, conn, "schema_version", SCHEMA_VERSION)
    conn.execute(template("entity", "create_trail", **names.parts()))
    where = {"schema": names.schema, "rows": names.rows}
    for row in conn.execute(template("entity", "latest_partitions"), where).fetchall():
        conn.execute(
            template(
                "entity", "trail_of_partition", **names.parts(partition=sql.Identifier(row["name"]))
            ),
            {"year": partition_month(row["name"]).year},
        )


def table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    qualified = sql.Identifier(schema, table).as_string(None)
    return conn.execute(template("entity", "storage_exists"), {"rows": qualified}).fetchone()[
        "found"
    ]


def _check_meta(
    db: IndexDb, conn: psycopg.Connection, registry: Registry
) -> dict[str, dict[str, str]]:
    """Refuse a newer index or a retyped entity key; returns the entity keys' types as the
    index stores them (before this registry's new keys are added)."""
    meta = _meta(db, conn)
    version = meta.get("schema_version")
    if version is not None and version > SCHEMA_VERSION:
        raise IndexSchemaError(
            f"the index in schema {db.schema!r} has version {version}, newer than this "
            f"release supports ({SCHEMA_VERSION}); upgrade fes_assets"
        )
    stored: dict[str, dict[str, str]] = meta.get("entity_keys", {})
    before = dict(stored)
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
    _write_meta(db, conn, "schema_version", SCHEMA_VERSION)
    _write_meta(db, conn, "entity_keys", stored)
    return before


def _take_in_table_changes(
    db: IndexDb,
    conn: psycopg.Connection,
    registry: Registry,
    stored_types: dict[str, dict[str, str]],
) -> None:
    """Feature tables whose definition changed since the index took them in: their files are
    catalogued afresh (new generations, so the runs move their rows), files outside a new
    prefix leave the table, and a table that moved to another entity key leaves nothing under
    the old one. Runs under the exclusive schema lock, so no day is being written."""
    for row in conn.execute(db.statement("schema", "feature_table_specs")).fetchall():
        ft = registry.feature_tables.get(row["name"])
        if ft is None or row["spec"] is None or row["spec"] == ft.spec():
            continue  # removed (kept until pruned), taken in before specs were kept, or same
        params = {"name": ft.name, "bucket": ft.bucket, "prefix": ft.prefix}
        if row["entity_key"] != ft.entity_key and row["entity_key"] in stored_types:
            old = EntityNames.of(db.schema, row["entity_key"], stored_types[row["entity_key"]])
            parts = old.parts()
            purge = {"feature_table_id": row["id"], "name": ft.name}
            for statement in ("prune_rows", "prune_changes"):
                conn.execute(template("entity", statement, **parts), purge)
            # A key that left the registry before the trail came has none.
            if table_exists(conn, old.schema, old.trail):
                conn.execute(template("entity", "prune_trail", **parts), purge)
            conn.execute(template("admin", "prune_latest", **parts), purge)
            conn.execute(db.statement("admin", "prune_file_days"), purge)
            conn.execute(db.statement("schema", "forget_table_ranges"), params)
        conn.execute(db.statement("schema", "retire_outside_prefix"), params)
        conn.execute(db.statement("schema", "recatalogue_table"), params)


def _register_tables(db: IndexDb, conn: psycopg.Connection, registry: Registry) -> dict[str, int]:
    for ft in registry.feature_tables.values():
        conn.execute(
            db.statement("schema", "register_feature_table"),
            {"name": ft.name, "entity_key": ft.entity_key, "spec": json.dumps(ft.spec())},
        )
    conn.execute(
        db.statement("schema", "retire_feature_tables"), {"names": list(registry.feature_tables)}
    )
    return _table_ids(db, conn)


def ensure_layout(db: IndexDb, conn: psycopg.Connection, registry: Registry) -> None:
    """Within a transaction that holds the schema shared: refuse to write when the index has
    taken in another registry since this run began (a table may have moved to another entity
    key or changed its columns); the run fails and the sensor requests what it must again."""
    row = conn.execute(db.statement("schema", "read_meta_value"), {"key": "layout"}).fetchone()
    if row is None or row["value"] != layout_fingerprint(registry):
        raise IndexSchemaError(
            "the registry changed while this run was under way; its remaining days are left "
            "to the runs the sensor requests for the new registry"
        )


def stored_entity_keys(db: IndexDb, conn: psycopg.Connection) -> dict[str, dict[str, str]]:
    """Entity key -> join key -> value type, as the index was built."""
    row = conn.execute(db.statement("schema", "read_meta_value"), {"key": "entity_keys"}).fetchone()
    return row["value"] if row else {}


def write_entity_keys(db: IndexDb, conn: psycopg.Connection, keys: dict) -> None:
    _write_meta(db, conn, "entity_keys", keys)


def forget_layout(db: IndexDb, conn: psycopg.Connection) -> None:
    """Make the next run apply the DDL again."""
    conn.execute(db.statement("schema", "delete_meta"), {"key": "layout"})


def stored_names(db: IndexDb, key: str) -> EntityNames:
    """The identifiers of entity key `key` as the index stores it (whatever the registry
    says now)."""
    with db.connect() as conn:
        types = stored_entity_keys(db, conn).get(key)
    if not types:
        raise IndexSchemaError(f"entity key {key!r} is not in the index")
    return EntityNames.of(db.schema, key, types)

"""Maintenance of the index: counting rows, pruning a feature table that left the registry,
resetting an entity key whose join-key types changed."""

from __future__ import annotations

from psycopg import sql

from ..errors import IndexSchemaError
from ..registry import Registry
from ..sql_templates import template
from .database import IndexDb
from .names import EntityNames
from .schema import forget_layout, stored_entity_keys, stored_names, table_exists, write_entity_keys


def count_rows(db: IndexDb, table: str) -> int:
    return db.execute("admin", "count_rows", table=sql.Identifier(table))[0]["n"]


def removed_tables(db: IndexDb) -> dict[str, str]:
    """Feature tables in the index that left the registry: name -> entity key."""
    return {r["name"]: r["entity_key"] for r in db.execute("admin", "removed_feature_tables")}


def entity_keys_without_tables(db: IndexDb) -> list[str]:
    """Entity keys whose storage no current feature table uses."""
    return [r["entity_key"] for r in db.execute("admin", "entity_keys_without_tables")]


def prune_feature_table(db: IndexDb, registry: Registry, name: str, entity_key: str) -> int:
    """Remove a feature table that left the registry: its rows, latest rows and files.
    Returns the number of entity rows removed."""
    if name in registry.feature_tables:
        raise IndexSchemaError(
            f"feature table {name!r} is still in the registry; remove it there first"
        )
    names = stored_names(db, entity_key)
    parts = names.parts()
    with db.connect() as conn, conn.transaction():
        db.hold_schema(conn)
        db.lock(conn, f"latest:{entity_key}")
        row = conn.execute(
            db.statement("admin", "feature_table_by_name"), {"name": name}
        ).fetchone()
        if row is None:
            raise IndexSchemaError(f"feature table {name!r} is not in the index")
        params = {"feature_table_id": row["id"], "name": name}
        removed = conn.execute(template("entity", "prune_rows", **parts), params).rowcount
        conn.execute(template("entity", "prune_changes", **parts), params)
        # A key that left the registry before the trail came has none.
        if table_exists(conn, names.schema, names.trail):
            conn.execute(template("entity", "prune_trail", **parts), params)
        conn.execute(template("admin", "prune_latest", **parts), params)
        conn.execute(db.statement("admin", "prune_file_days"), params)
        conn.execute(db.statement("admin", "prune_files"), params)
        conn.execute(db.statement("admin", "prune_feature_table"), params)
    return removed


def reset_entity(db: IndexDb, key: str) -> None:
    """Drop an entity key's storage and views, so the next run recreates them with the
    registry's types."""
    names = EntityNames(db.schema, key, [], {})
    with db.connect() as conn, conn.transaction():
        db.lock(conn, "schema")
        forget_layout(db, conn)
        for view in (names.entity_view, names.latest_view):
            conn.execute(db.statement("admin", "drop_view", view=sql.Identifier(view)))
        for table in (names.rows, names.latest_table, names.changes, names.trail):
            conn.execute(db.statement("admin", "drop_table", table=sql.Identifier(table)))
        stored = stored_entity_keys(db, conn)
        if stored:
            stored.pop(key, None)
            write_entity_keys(db, conn, stored)
        conn.execute(db.statement("admin", "forget_entity_file_days"), {"entity_key": key})
        conn.execute(db.statement("admin", "requeue_entity_files"), {"entity_key": key})

"""Costs that follow the work, not the history: query plans checked on real servers."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from fes_assets.core.catalogue import Catalog, prefix_end
from fes_assets.core.registry import parse_registry
from fes_assets.core.storage.database import IndexDb, conninfo
from fes_assets.core.storage.schema import ensure_schema
from fes_assets_tests.conftest import drivers_registry


def test_the_reconcile_key_range_uses_an_index_in_a_non_c_collation(pg_url):
    name = f"fes_cutf8_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo(pg_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' "
                "LC_COLLATE 'C.utf8' LC_CTYPE 'C.utf8'"
            ).format(sql.Identifier(name))
        )
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    db = IndexDb(url, "entity_lookup")
    registry = parse_registry({"bucket": "b", "feature_tables": drivers_registry("d/")})
    ensure_schema(db, registry)
    with db.connect() as conn:
        collation = conn.execute(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()"
        ).fetchone()["datcollate"]
        assert collation == "C.utf8"  # not C: the planner cannot use a plain index on key
        conn.execute(
            "INSERT INTO entity_lookup.files (bucket, key, feature_table, etag) "
            "SELECT b, format('%s/%s.parquet', p, lpad(i::text, 7, '0')), "
            "'driver_hourly_stats', 'e' "
            "FROM unnest(ARRAY['b', 'c']) b, unnest(ARRAY['a', 'd', 'e']) p, "
            "generate_series(1, 20000) i"
        )
        conn.execute("ANALYZE entity_lookup.files")
    params = {
        "bucket": "b",
        "tables": ["driver_hourly_stats"],
        "prefix": "d/",
        "after": "d/0010000.parquet",
        "upto": "d/0011000.parquet",
        "lower": "d/",
        "upper": prefix_end("d/"),
    }
    with db.connect() as conn:
        plan = "\n".join(
            r["QUERY PLAN"]
            for r in conn.execute(
                sql.SQL("EXPLAIN ") + db.statement("catalogue", "known_in_key_range"), params
            )
        )
    assert "files_by_key" in plan and "Seq Scan" not in plan, plan
    found = Catalog(db).known_in_key_range(
        "b", "d/", ["driver_hourly_stats"], params["after"], params["upto"]
    )
    assert len(found) == 1000 and {r.key[:2] for r in found} == {"d/"}
    db.close()
    with psycopg.connect(conninfo(pg_url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))

"""Costs that follow the work, not the history: query plans checked on real servers."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from fes_assets.core.catalogue import Catalog, prefix_end
from fes_assets.core.indexing import EntityIndexer
from fes_assets.core.queries import entity_df
from fes_assets.core.registry import parse_registry
from fes_assets.core.storage.database import IndexDb, conninfo
from fes_assets.core.storage.schema import ensure_schema
from fes_assets.dev.embedded_servers import EmbeddedPostgres
from fes_assets_tests.conftest import Lab, drivers, drivers_registry


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


STOCK_LOCK_SETTINGS = {"max_connections": "100", "max_locks_per_transaction": "64"}


@pytest.fixture(scope="module")
def stock_pg() -> Iterator[EmbeddedPostgres]:
    """A server started with a stock install's lock settings: its shared lock table holds
    64 × 100 locks, what every session's queries share."""
    if os.environ.get("FES_TEST_PG_URL"):
        pytest.skip(
            "FES_TEST_PG_URL names a server whose lock settings this test cannot set; it needs "
            "the embedded server started with max_connections=100, max_locks_per_transaction=64"
        )
    server = EmbeddedPostgres(
        Path(tempfile.mkdtemp(prefix="fes-test-stock-pg-")) / "data", settings=STOCK_LOCK_SETTINGS
    )
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def test_ten_years_of_days_answer_four_unbounded_queries_at_once_on_stock_lock_settings(
    stock_pg, s3_server, instance
):
    suffix = uuid.uuid4().hex[:10]
    lab = Lab(stock_pg.url(), s3_server.endpoint_url, f"feast-{suffix}", f"fes_{suffix}", instance)
    lab.use_registry(drivers_registry(), start="2015-01-01")
    first, last = date(2015, 1, 1), date(2024, 12, 31)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    noon = [datetime.combine(d, time(12), tzinfo=UTC) for d in days]
    lab.put("d/history.parquet", drivers([i % 50 for i in range(len(days))], noon))
    # Through the core: a ranged Dagster run records a materialization per day, which over
    # ten years costs the test more than the indexing (docs/benchmarks-scale.md).
    indexer = EntityIndexer(lab.store, lab.db, lab.registry, "driver_id", log=lambda _: None)
    report = indexer.run(days)
    assert report.rows == len(days) and not report.failed
    indexer.catch_up_latest()

    (partitions,) = lab.sql(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = '_e_driver_id'::regclass"
    )[0]
    assert partitions == 120  # a month each: ten years are 120 relations, not 3,653

    # Four sessions each hold, in an open transaction, the locks of a query over the whole
    # history; the unbounded queries users run must still find room in the lock table.
    holders = [psycopg.connect(conninfo(lab.pg_url)) for _ in range(4)]
    try:
        for conn in holders:
            conn.execute(f'SELECT count(*) FROM "{lab.schema}".entity_driver_id')
            held = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()"
            ).fetchone()[0]
            assert held < 400, held
        query = {"url": lab.pg_url, "schema": lab.schema}
        every = entity_df("driver_hourly_stats", **query)
        assert len(every) == len(days)
        since = entity_df("driver_hourly_stats", "2024-12-01", **query)
        assert len(since) == 31
        newest = entity_df("driver_hourly_stats", latest=True, **query)
        assert len(newest) == 50
        in_2020 = entity_df("driver_hourly_stats", as_of="2020-06-01", **query)
        assert len(in_2020) == 50 and set(in_2020["event_timestamp"]) == {
            datetime(2020, 6, 1, tzinfo=UTC)
        }
        now = entity_df("driver_hourly_stats", as_of=datetime.now(UTC), **query)
        assert sorted(now["driver_id"]) == list(range(50))
    finally:
        for conn in holders:
            conn.close()

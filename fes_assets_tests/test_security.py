"""Names and keys are data, never SQL; secrets stay out of logs, metadata and errors; the
deploy guide's role can write only its own schema."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest
from dagster._serdes import serialize_value
from sqlalchemy.engine import make_url

from fes_assets.core.errors import IndexSchemaError
from fes_assets.core.storage.database import IndexDb, conninfo
from fes_assets.orchestration.assets import build_entity_assets
from fes_assets.orchestration.resources import IndexDatabaseResource, ObjectStoreResource
from fes_assets_tests.conftest import ACCESS_KEY, drivers, drivers_registry

DRIVERS = drivers_registry("d/")


def test_hostile_object_keys_are_stored_as_data(lab):
    lab.use_registry(DRIVERS)
    hostile = [
        "d/x'; DROP TABLE files; --.parquet",
        'd/"); DELETE FROM jobs; --.parquet',
        "d/$1 %s {schema}.parquet",
    ]
    for i, key in enumerate(hostile):
        lab.put(key, drivers([i]))
    assert lab.settle(lab.sensor()) == 1
    assert sorted(p for (p,) in lab.sql("SELECT path FROM entity_driver_id")) == sorted(
        f"s3://{lab.bucket}/{k}" for k in hostile
    )
    assert lab.sql("SELECT count(*) FROM files") == [(3,)]
    assert lab.sql("SELECT count(*) FROM jobs") == [(3,)]


def test_hostile_schema_name_is_refused():
    with pytest.raises(IndexSchemaError):
        IndexDb("postgresql+psycopg://u@h/db", 'x"; DROP SCHEMA public; --')


def test_credentials_never_reach_the_event_log_or_run_config(lab, monkeypatch):
    secret = "s3cr3t-" + lab.schema
    pg_password = "pw-" + lab.schema
    monkeypatch.setenv("FES_TEST_ACCESS", ACCESS_KEY)
    monkeypatch.setenv("FES_TEST_SECRET", secret)  # moto accepts any secret
    lab.use_registry(DRIVERS)
    lab.put("d/a.parquet", drivers([1]))
    lab.put("d/bad.parquet", b"garbage")
    with psycopg.connect(conninfo(lab.pg_url), autocommit=True) as conn:
        conn.execute(
            f'CREATE ROLE "r_{lab.schema}" LOGIN SUPERUSER PASSWORD %s'.replace(
                "%s", "'" + pg_password + "'"
            )
        )
    url = as_role(lab.pg_url, f"r_{lab.schema}", pg_password)
    monkeypatch.setenv("FES_TEST_PG", url)
    resources = {
        "fes_object_store": ObjectStoreResource(
            endpoint_url=lab.endpoint,
            access_key_id=dg.EnvVar("FES_TEST_ACCESS"),
            secret_access_key=dg.EnvVar("FES_TEST_SECRET"),
        ),
        "fes_index_db": IndexDatabaseResource(url=dg.EnvVar("FES_TEST_PG"), schema_name=lab.schema),
    }
    assets = build_entity_assets(lab.registry, "driver_id")
    ok = dg.materialize(
        assets, resources=resources, instance=lab.instance, partition_key="2021-04-01"
    )
    assert ok.success
    # A failing run: its error must not carry the URL's password either.
    unreachable = make_url(url).set(port=1).render_as_string(hide_password=False)
    monkeypatch.setenv("FES_TEST_PG", unreachable)
    failed = dg.materialize(
        assets,
        resources=resources,
        instance=lab.instance,
        partition_key="2021-04-01",
        raise_on_error=False,
    )
    assert not failed.success
    for result in (ok, failed):
        run = lab.instance.get_run_by_id(result.run_id)
        text = serialize_value(run) + "".join(
            serialize_value(e) for e in lab.instance.all_logs(result.run_id)
        )
        assert secret not in text
        assert pg_password not in text
    assert "IndexDb(schema=" in repr(IndexDb(url, lab.schema))
    assert pg_password not in repr(IndexDb(url, lab.schema))


def as_role(url: str, role: str, password: str) -> str:
    """The same server and database as `url`, as another role (whatever the admin's name)."""
    return make_url(url).set(username=role, password=password).render_as_string(hide_password=False)


def test_the_least_privilege_role_writes_only_its_schema(lab, pg_url):
    role = f"idx_{lab.schema}"
    with psycopg.connect(conninfo(pg_url), autocommit=True) as conn:
        # A password, so that servers that ask for one over TCP let the role in.
        conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{role}'")
        conn.execute(f'CREATE SCHEMA "{lab.schema}" AUTHORIZATION "{role}"')
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    lab.use_registry(DRIVERS)
    lab.put("d/a.parquet", drivers([1, 2]))
    url = as_role(pg_url, role, role)
    lab.pg_url = url
    assert lab.materialize("driver_id", "2021-04-01").success
    assert lab.ids("latest_driver_id", "driver_id") == [(1,), (2,)]
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.not_yours (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE SCHEMA elsewhere")

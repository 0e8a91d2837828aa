"""Real servers for the tests: embedded PostgreSQL (or FES_TEST_PG_URL) and moto's S3 server
over HTTP, started once per session and stopped at its end, also when tests fail."""

from __future__ import annotations

import io
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from fes_assets.core.object_store import ObjectStore, ObjectStoreSettings
from fes_assets.core.registry import Registry, parse_registry
from fes_assets.core.scanning import ScanSettings
from fes_assets.core.storage.database import IndexDb, conninfo
from fes_assets.dev.embedded_servers import EmbeddedPostgres, MotoS3Server
from fes_assets.orchestration.assets import EntityRunConfig, build_entity_assets
from fes_assets.orchestration.jobs import build_index_jobs
from fes_assets.orchestration.resources import IndexDatabaseResource, ObjectStoreResource
from fes_assets.orchestration.sensors import RUN_KEY_TAG, build_bucket_sensor

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

ACCESS_KEY, SECRET_KEY = "testing-access-key", "testing-secret-key"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres | None]:
    """The embedded server, or None when FES_TEST_PG_URL names an existing one."""
    if os.environ.get("FES_TEST_PG_URL"):
        yield None
        return
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="fes-test-pg-")) / "data")
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def pg_url(pg_server: EmbeddedPostgres | None) -> str:
    return os.environ["FES_TEST_PG_URL"] if pg_server is None else pg_server.url()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3Server]:
    server = MotoS3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def parquet_bytes(table: pa.Table, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kwargs)
    return buf.getvalue()


@dataclass
class Lab:
    """One test's bucket and index schema on the shared servers."""

    pg_url: str
    endpoint: str
    bucket: str
    schema: str
    instance: dg.DagsterInstance
    registry: Registry | None = None
    cursor: str | None = None
    s3: Any = field(init=False)

    def __post_init__(self) -> None:
        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        self.s3.create_bucket(Bucket=self.bucket)

    # objects
    def put(self, key: str, table: pa.Table | bytes, **kwargs: Any) -> None:
        body = table if isinstance(table, bytes) else parquet_bytes(table, **kwargs)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    # registry
    def use_registry(self, tables: dict[str, dict], start: str = "2021-01-01") -> Registry:
        self.registry = parse_registry(
            {"bucket": self.bucket, "partitions_start": start, "feature_tables": tables}
        )
        return self.registry

    def write_registry(self, folder: Path) -> Path:
        """The current registry as a `fes.yaml` a user would write."""
        assert self.registry is not None
        tables = {}
        for name, t in self.registry.feature_tables.items():
            spec = {
                "prefix": t.prefix,
                "entities": t.entities,
                "timestamp_column": t.timestamp_column,
            }
            if t.created_timestamp_column:
                spec["created_timestamp_column"] = t.created_timestamp_column
            if t.field_mapping:
                spec["field_mapping"] = t.field_mapping
            tables[name] = spec
        path = folder / "fes.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "bucket": self.bucket,
                    "partitions_start": self.registry.partitions_start.isoformat(),
                    "feature_tables": tables,
                }
            )
        )
        return path

    # servers as a user's code sees them
    @property
    def store(self) -> ObjectStore:
        return ObjectStore(
            ObjectStoreSettings(
                endpoint_url=self.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
            )
        )

    @property
    def db(self) -> IndexDb:
        return IndexDb(self.pg_url, self.schema)

    def resources(self) -> dict[str, Any]:
        return {
            "fes_object_store": ObjectStoreResource(
                endpoint_url=self.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
            ),
            "fes_index_db": IndexDatabaseResource(url=self.pg_url, schema_name=self.schema),
        }

    def assets(self, key: str) -> list[dg.AssetsDefinition]:
        assert self.registry is not None
        return build_entity_assets(self.registry, key)

    def materialize(
        self,
        key: str,
        days: str | tuple[str, str],
        *,
        latest: bool = True,
        changes: list[str] | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Materialize entity_<key> for one day or a (first, last) range in one run, with
        latest_<key> in the same run unless `latest` is False."""
        assets = self.assets(key)
        tags = {}
        partition_key = None
        if isinstance(days, tuple):
            tags = {
                "dagster/asset_partition_range_start": days[0],
                "dagster/asset_partition_range_end": days[1],
            }
        else:
            partition_key = days
        config = EntityRunConfig(
            changes=None
            if changes is None
            else [{"bucket": self.bucket, "key": k} for k in changes]
        )
        run_config = {"ops": {assets[0].op.name: {"config": config.model_dump()}}}
        return dg.materialize(
            assets,
            selection=assets if latest else [assets[0]],
            resources=self.resources(),
            instance=self.instance,
            partition_key=partition_key,
            tags=tags,
            run_config=run_config,
            raise_on_error=False,
        )

    # the sensor, as the daemon would drive it
    def sensor(self, max_lag: float = 600.0, **settings: Any) -> dg.SensorDefinition:
        assert self.registry is not None
        settings.setdefault("reconcile_interval", 0)
        return build_bucket_sensor(
            self.registry,
            build_index_jobs(self.registry),
            interval=1,
            settings=ScanSettings(**settings),
            max_lag=max_lag,
        )

    def tick(self, sensor: dg.SensorDefinition) -> dg.SensorResult:
        """One evaluation; the cursor is kept only when it succeeds, as the daemon does."""
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources()
        )
        result = sensor(context)
        if result.cursor is not None:
            self.cursor = result.cursor
        return result

    def execute(self, result: dg.SensorResult) -> list[dg.ExecuteInProcessResult]:
        """Run every requested run in process on the test instance, tagged as the daemon
        tags sensor runs."""
        return [self.run_request(request) for request in result.run_requests or []]

    def run_request(
        self, request: dg.RunRequest, resources: dict[str, Any] | None = None
    ) -> dg.ExecuteInProcessResult:
        """One requested run, as the daemon would launch it (optionally on other resources)."""
        assert self.registry is not None
        assets = [a for k in self.registry.by_entity_key() for a in self.assets(k)]
        return dg.materialize(
            assets,
            selection=request.asset_selection,
            run_config=request.run_config,
            tags={**request.tags, RUN_KEY_TAG: request.run_key},
            partition_key=request.partition_key,
            resources=resources or self.resources(),
            instance=self.instance,
            raise_on_error=False,
        )

    def settle(self, sensor: dg.SensorDefinition, max_ticks: int = 20) -> int:
        """Tick and run until a tick requests nothing; returns the number of runs."""
        runs = 0
        for _ in range(max_ticks):
            result = self.tick(sensor)
            if not result.run_requests:
                return runs
            runs += len(self.execute(result))
        raise AssertionError("the sensor kept requesting runs")

    def sql(self, query: str, *params: Any) -> list[tuple]:
        with psycopg.connect(conninfo(self.pg_url)) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def ids(self, view: str, *columns: str, where: str = "") -> list[tuple]:
        cols = ", ".join(columns)
        return sorted(self.sql(f"SELECT {cols} FROM {view} {where}"))


@pytest.fixture
def lab(pg_url: str, s3_server: MotoS3Server, instance: dg.DagsterInstance) -> Lab:
    suffix = uuid.uuid4().hex[:10]
    return Lab(pg_url, s3_server.endpoint_url, f"feast-{suffix}", f"fes_{suffix}", instance)


T0 = datetime(2021, 4, 1, tzinfo=UTC)


def drivers_registry(prefix: str = "d/") -> dict:
    """One feature table, driver_hourly_stats, keyed by an INT64 driver_id."""
    return {
        "driver_hourly_stats": {
            "prefix": prefix,
            "entities": {"driver_id": "INT64"},
            "timestamp_column": "event_timestamp",
        }
    }


def drivers(ids: list[int], times: list[datetime] | None = None) -> pa.Table:
    """driver_id and event_timestamp columns (at T0 unless `times` says otherwise)."""
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array(
                times if times is not None else [T0] * len(ids), pa.timestamp("us", tz="UTC")
            ),
        }
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """Every error message of the run's failed steps, causes included."""
    texts = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error is not None:
            texts.append(error.message)
            error = error.cause
    return "\n".join(texts)


def day(text: str) -> date:
    return date.fromisoformat(text)


@pytest.fixture
def env(lab, monkeypatch, tmp_path):
    """The environment a user sets, pointing at the lab's servers and registry."""
    lab.use_registry(drivers_registry())
    monkeypatch.setenv("FES_PG_URL", lab.pg_url)
    monkeypatch.setenv("FES_SCHEMA", lab.schema)
    monkeypatch.setenv("FES_CONFIG", str(lab.write_registry(tmp_path)))
    monkeypatch.setenv("FES_S3_ENDPOINT_URL", lab.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    monkeypatch.setenv("FES_DEMO_DIR", str(tmp_path / "no-demo"))
    return lab

"""`fes_assets.EntityIndexComponent`: the entity index as a Dagster Component, for any `dg`
project (`dg scaffold defs fes_assets.EntityIndexComponent <path>`, then `dg check defs`)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import dagster as dg
from dagster.components.component_scaffolding import scaffold_component

from ..core import settings
from ..core.registry import load_registry
from ..core.settings import SensorSettings, sensor_settings
from .factory import build_definitions

EXAMPLE_REGISTRY = Path(__file__).resolve().parents[1] / "example_fes.yaml"


class EntityIndexScaffolder(dg.Scaffolder):
    """Writes a `defs.yaml` naming every attribute with its default, and an example registry
    beside it, so that the component loads as written."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        attributes = EntityIndexComponent().model_dump(exclude_none=False)
        attributes["registry"] = "fes.yaml"
        scaffold_component(request, attributes)
        registry = Path(request.target_path) / "fes.yaml"
        if not registry.exists():
            shutil.copyfile(EXAMPLE_REGISTRY, registry)


@dg.scaffold_with(EntityIndexScaffolder)
class EntityIndexComponent(dg.Component, dg.Model, dg.Resolvable):
    """The entity index of Feast's offline parquet data: `entity_lookup/entity_<key>` and
    `entity_lookup/latest_<key>` assets with their checks, and `bucket_sensor`.

    Secrets never appear here: the attributes name the environment variables that hold them,
    read at run time. Attributes left unset follow the `FES_*` variables, as the code location
    `fes_assets.definitions:defs` does; an attribute that is set wins over its variable.
    """

    registry: str | None = None
    """The registry file (`fes.yaml`), relative to this defs.yaml; unset: `FES_CONFIG`."""
    schema_name: str | None = None
    """The index's SQL schema; unset: `FES_SCHEMA`, else `entity_lookup`."""
    database_url_env: str = settings.INDEX_URL_VARIABLE
    """The variable holding the index database's SQLAlchemy URL."""
    s3_endpoint_url_env: str = settings.STORE_VARIABLES["endpoint_url"]
    """The variable holding the S3 endpoint (MinIO); unset variable: AWS."""
    s3_region_env: str = settings.STORE_VARIABLES["region"]
    s3_access_key_id_env: str = settings.STORE_VARIABLES["access_key_id"]
    s3_secret_access_key_env: str = settings.STORE_VARIABLES["secret_access_key"]
    s3_session_token_env: str = settings.STORE_VARIABLES["session_token"]
    sensor_interval_seconds: int | None = None
    """bucket_sensor's minimum interval; unset: `FES_SENSOR_INTERVAL_SECONDS` (30)."""
    sensor_running: bool | None = None
    """Whether bucket_sensor starts running; unset: `FES_SENSOR_RUNNING` (stopped)."""
    sensor_max_objects_per_tick: int | None = None
    """Objects catalogued per tick; unset: `FES_SENSOR_MAX_OBJECTS_PER_TICK` (1000)."""
    reconcile_interval_seconds: float | None = None
    """Seconds between full reconcile passes; unset: `FES_RECONCILE_INTERVAL_SECONDS` (600)."""
    minio_events_table: str | None = None
    """`schema.table` of MinIO's notification table (event mode); unset: listing, or
    `FES_MINIO_EVENTS_TABLE`."""
    minio_events_url_env: str | None = None
    """The variable holding the URL of the database with that table; unset: the index's."""
    sqs_queue_url: str | None = None
    """The SQS queue receiving the bucket's S3 event notifications (SQS event mode); unset:
    `FES_SQS_QUEUE_URL`."""
    sqs_endpoint_url: str | None = None
    """The SQS endpoint where it is not AWS's for the queue's region; unset:
    `FES_SQS_ENDPOINT_URL`."""
    max_lag_seconds: float | None = None
    """How long a catalogued change may wait before `index_lag` fails; unset:
    `FES_MAX_LAG_SECONDS` (600)."""

    def sensor_settings(self) -> SensorSettings:
        chosen = sensor_settings(
            interval=self.sensor_interval_seconds,
            running=self.sensor_running,
            max_objects=self.sensor_max_objects_per_tick,
            reconcile_interval=self.reconcile_interval_seconds,
            events_table=self.minio_events_table,
            sqs_queue_url=self.sqs_queue_url,
            sqs_endpoint_url=self.sqs_endpoint_url,
            max_lag=self.max_lag_seconds,
        )
        if self.minio_events_url_env is None:
            return chosen
        # The named variable, or (unset) the index's own database: never FES_MINIO_EVENTS_URL.
        return replace(chosen, events_url=settings.env(self.minio_events_url_env))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        # A component declared in Python (`component.py`) has a file for its path.
        here = context.path.parent if context.path.is_file() else context.path
        path = here / self.registry if self.registry else settings.config_path()
        return build_definitions(
            load_registry(path),
            schema=self.schema_name,
            sensor=self.sensor_settings(),
            database_url_env=self.database_url_env,
            s3_env={
                "endpoint_url": self.s3_endpoint_url_env,
                "region": self.s3_region_env,
                "access_key_id": self.s3_access_key_id_env,
                "secret_access_key": self.s3_secret_access_key_env,
                "session_token": self.s3_session_token_env,
            },
        )

"""One factory for everything fes defines in Dagster — assets, checks, the sensor and the
resources they use — shared by the code location, the Component and plain-Python users."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from ..core import settings
from ..core.registry import Registry, load_registry
from ..core.settings import SensorSettings, sensor_settings
from .assets import build_assets, latest_asset_key
from .checks import build_lag_check
from .jobs import build_index_jobs
from .resources import (
    INDEX_DB_KEY,
    OBJECT_STORE_KEY,
    index_database_from_env,
    object_store_from_env,
)
from .sensors import build_bucket_sensor, scan_settings


def build_definitions(
    registry: Registry | str | Path | None = None,
    *,
    schema: str | None = None,
    sensor: SensorSettings | None = None,
    database_url_env: str = settings.INDEX_URL_VARIABLE,
    s3_env: Mapping[str, str] | None = None,
) -> dg.Definitions:
    """fes's Dagster definitions.

    - `registry`: a Registry or the path of a `fes.yaml` (default: the file `FES_CONFIG`
      names);
    - `schema`: the index's SQL schema (default `FES_SCHEMA`, else `entity_lookup`);
    - `sensor`: bucket_sensor's settings (default: the `FES_*` sensor variables);
    - `database_url_env`, `s3_env`: the names of the environment variables holding the
      database URL and the object store's settings (fields `endpoint_url`, `region`,
      `access_key_id`, `secret_access_key`, `session_token`), read at run time as EnvVar.

    Resource keys are `fes_object_store` and `fes_index_db`; nothing project-wide (such as
    an executor) is set, so the result merges into any project.
    """
    if not isinstance(registry, Registry):
        registry = load_registry(registry)
    sensor = sensor or sensor_settings()
    with warnings.catch_warnings():
        # BackfillPolicy and checks on partitioned assets are beta/preview in Dagster 1.13 and
        # what single-run backfills need: quiet here, without touching the host's filters.
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        assets = build_assets(registry)
    jobs = build_index_jobs(registry)
    # Stopped unless asked otherwise (the demo sets FES_SENSOR_RUNNING=1): start it in the UI.
    status = dg.DefaultSensorStatus.RUNNING if sensor.running else dg.DefaultSensorStatus.STOPPED
    lag_checks = [
        build_lag_check(latest_asset_key(key), key, [t.name for t in tables], sensor.max_lag)
        for key, tables in registry.by_entity_key().items()
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=lag_checks,
        jobs=jobs,
        sensors=[
            build_bucket_sensor(
                registry,
                jobs,
                interval=sensor.interval,
                settings=scan_settings(sensor),
                default_status=status,
                max_lag=sensor.max_lag,
            )
        ],
        resources={
            OBJECT_STORE_KEY: object_store_from_env(s3_env),
            INDEX_DB_KEY: index_database_from_env(database_url_env, schema),
        },
    )

"""One factory for everything the code location defines: assets, checks, the sensor and the
resources they use, built from a registry."""

from __future__ import annotations

import warnings

import dagster as dg

from ..core.registry import Registry, load_registry
from ..core.settings import SensorSettings, sensor_settings
from .assets import build_assets
from .resources import index_database_from_env, object_store_from_env
from .sensors import build_bucket_sensor, scan_settings

# BackfillPolicy and checks on partitioned assets are marked beta/preview in Dagster 1.13;
# they are what single-run backfills and per-partition checks need.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def build_definitions(
    registry: Registry | None = None, sensor: SensorSettings | None = None
) -> dg.Definitions:
    """Definitions for `registry` (default: the file `FES_CONFIG` names) with the sensor's
    `FES_*` settings unless `sensor` gives others."""
    registry = registry or load_registry()
    sensor = sensor or sensor_settings()
    assets = build_assets(registry)
    # Stopped unless asked otherwise (the demo sets FES_SENSOR_RUNNING=1): start it in the UI.
    status = dg.DefaultSensorStatus.RUNNING if sensor.running else dg.DefaultSensorStatus.STOPPED
    return dg.Definitions(
        assets=assets,
        sensors=[
            build_bucket_sensor(
                registry,
                assets,
                interval=sensor.interval,
                settings=scan_settings(sensor),
                default_status=status,
            )
        ],
        resources={
            "object_store": object_store_from_env(),
            "index_db": index_database_from_env(),
        },
    )

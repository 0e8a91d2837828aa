"""The code location: `fes_assets.definitions:defs`."""

from __future__ import annotations

import os
import warnings

import dagster as dg

from .assets import build_assets
from .registry import load_registry
from .resources import index_database_from_env, object_store_from_env
from .sensors import build_bucket_sensor

# BackfillPolicy and checks on partitioned assets are marked beta/preview in Dagster 1.13;
# they are what single-run backfills and per-partition checks need.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def build_definitions() -> dg.Definitions:
    registry = load_registry()
    assets = build_assets(registry)
    # Stopped unless FES_SENSOR_RUNNING=1 (the demo sets it); start it in the UI otherwise.
    status = (
        dg.DefaultSensorStatus.RUNNING
        if os.environ.get("FES_SENSOR_RUNNING") == "1"
        else dg.DefaultSensorStatus.STOPPED
    )
    return dg.Definitions(
        assets=assets,
        sensors=[build_bucket_sensor(registry, assets, default_status=status)],
        resources={
            "object_store": object_store_from_env(),
            "index_db": index_database_from_env(),
        },
    )


defs = build_definitions()

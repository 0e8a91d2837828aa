"""The jobs bucket_sensor launches: one per entity key, running both of its assets in the run's
own process. A step process each would cost seconds of start-up per step, more than a small
change takes to index; the executor is set on these jobs only, never on the host project."""

from __future__ import annotations

import dagster as dg

from ..core.registry import Registry
from .assets import entity_asset_key, latest_asset_key
from .checks import INDEX_LAG

INDEX_JOB_PREFIX = "fes_index_"


def index_job_name(entity_key: str) -> str:
    return f"{INDEX_JOB_PREFIX}{entity_key}"


def build_index_jobs(registry: Registry) -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        dg.define_asset_job(
            name=index_job_name(key),
            # Not index_lag: the sensor reports it, and a run would only add a step.
            selection=dg.AssetSelection.assets(entity_asset_key(key), latest_asset_key(key))
            - dg.AssetSelection.checks(dg.AssetCheckKey(latest_asset_key(key), INDEX_LAG)),
            executor_def=dg.in_process_executor,
            description=f"Indexes changed objects of entity key `{key}` and brings its latest "
            "rows up to date, in one process (what bucket_sensor launches).",
        )
        for key in registry.by_entity_key()
    ]

"""The code location: `fes_assets.definitions:defs`."""

from __future__ import annotations

import dagster as dg

from .assets import build_assets
from .registry import load_registry
from .resources import index_database_from_env, object_store_from_env


def build_definitions() -> dg.Definitions:
    registry = load_registry()
    return dg.Definitions(
        assets=build_assets(registry),
        resources={
            "object_store": object_store_from_env(),
            "index_db": index_database_from_env(),
        },
    )


defs = build_definitions()

"""fes_assets: a PostgreSQL index of the entity ids in Feast's offline parquet data on
S3/MinIO, kept up to date by Dagster.

The public API; the query side imports no Dagster::

    from fes_assets import entity_df

Names resolve on first use, so `import fes_assets` stays light: the Dagster layer
(`EntityIndexComponent`, `build_definitions`) is imported only when one of them is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "EntityIndexComponent": "fes_assets.orchestration.component",
    "build_definitions": "fes_assets.orchestration.factory",
    "entity_df": "fes_assets.core.queries",
    "EntityQuery": "fes_assets.core.queries",
    "IndexDb": "fes_assets.core.storage.database",
    "Registry": "fes_assets.core.registry",
    "FeatureTable": "fes_assets.core.registry",
    "load_registry": "fes_assets.core.registry",
    "parse_registry": "fes_assets.core.registry",
    "FesError": "fes_assets.core.errors",
    "SettingsError": "fes_assets.core.errors",
    "RegistryError": "fes_assets.core.errors",
    "IndexSchemaError": "fes_assets.core.errors",
    "QueryError": "fes_assets.core.errors",
    "BadObjectError": "fes_assets.core.errors",
    "ObjectChangedError": "fes_assets.core.errors",
    "CommandError": "fes_assets.core.errors",
}

__all__ = [
    "BadObjectError",
    "EntityIndexComponent",
    "CommandError",
    "EntityQuery",
    "FeatureTable",
    "FesError",
    "IndexDb",
    "IndexSchemaError",
    "ObjectChangedError",
    "QueryError",
    "Registry",
    "RegistryError",
    "SettingsError",
    "build_definitions",
    "entity_df",
    "load_registry",
    "parse_registry",
]

if TYPE_CHECKING:
    from .core.errors import (
        BadObjectError,
        CommandError,
        FesError,
        IndexSchemaError,
        ObjectChangedError,
        QueryError,
        RegistryError,
        SettingsError,
    )
    from .core.queries import EntityQuery, entity_df
    from .core.registry import FeatureTable, Registry, load_registry, parse_registry
    from .core.storage.database import IndexDb
    from .orchestration.component import EntityIndexComponent
    from .orchestration.factory import build_definitions


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fes_assets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

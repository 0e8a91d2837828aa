"""Dagster resources around the object store and the index database."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from ..core import settings
from ..core.object_store import ObjectStore, ObjectStoreSettings
from ..core.settings import DEFAULT_SCHEMA
from ..core.storage.database import IndexDb


class ObjectStoreResource(dg.ConfigurableResource):
    """MinIO, S3 or any S3-compatible endpoint. Without explicit keys, boto3's and pyarrow's
    standard AWS chain applies (profile, session token, instance or pod role)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    def store(self) -> ObjectStore:
        return ObjectStore(
            ObjectStoreSettings(
                endpoint_url=self.endpoint_url or None,
                region=self.region or None,
                access_key_id=self.access_key_id or None,
                secret_access_key=self.secret_access_key or None,
                session_token=self.session_token or None,
            )
        )


class IndexDatabaseResource(dg.ConfigurableResource):
    """The PostgreSQL database holding the index (a SQLAlchemy URL, psycopg 3 driver)."""

    url: str
    schema_name: str = DEFAULT_SCHEMA

    def db(self, lock_timeout: float | None = None) -> IndexDb:
        return IndexDb(self.url, self.schema_name, lock_timeout=lock_timeout)


# Resource keys: prefixed so they cannot clash with a host project's own resources.
OBJECT_STORE_KEY = "fes_object_store"
INDEX_DB_KEY = "fes_index_db"


def object_store_from_env(variables: Mapping[str, str] | None = None) -> ObjectStoreResource:
    """Each setting (field -> variable name; default the FES_*/AWS_* names) whose variable is
    present in the environment, as an EnvVar, so that its value is resolved at run time and
    never stored in run config or metadata. Unset credentials mean the standard AWS chain."""
    variables = {**settings.STORE_VARIABLES, **(variables or {})}
    return ObjectStoreResource(
        **{field: dg.EnvVar(var) for field, var in variables.items() if settings.is_set(var)}
    )


def index_database_from_env(
    url_variable: str = settings.INDEX_URL_VARIABLE, schema: str | None = None
) -> IndexDatabaseResource:
    """The index database from the variable holding its URL (resolved at run time)."""
    return IndexDatabaseResource(
        url=dg.EnvVar(url_variable), schema_name=schema or settings.index_schema()
    )

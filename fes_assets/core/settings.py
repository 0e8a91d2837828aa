"""Settings from the environment: the one place fes_assets reads `os.environ`.

Library calls read only the process environment. The command line (and nothing else) also
falls back to the file the demo writes, `.fes/demo.env`, so `fes …` works in a second
terminal beside `make demo` (see `apply_demo_env`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SettingsError

if TYPE_CHECKING:
    from .object_store import ObjectStoreSettings

DEFAULT_SCHEMA = "entity_lookup"
DEFAULT_CONFIG = "fes.yaml"
# Object-store setting -> the variable that holds it (AWS's own names for credentials).
STORE_VARIABLES: dict[str, str] = {
    "endpoint_url": "FES_S3_ENDPOINT_URL",
    "region": "AWS_REGION",
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
}
INDEX_URL_VARIABLE = "FES_PG_URL"


def env(name: str, default: str | None = None) -> str | None:
    """The variable's value; unset or empty means `default`."""
    return os.environ.get(name) or default


def is_set(name: str) -> bool:
    return bool(os.environ.get(name))


def _number(name: str, default: str, kind: type[int] | type[float]) -> int | float:
    text = env(name, default)
    try:
        return kind(text)
    except ValueError as e:
        raise SettingsError(f"{name}={text!r} is not a number") from e


# --- the index and the registry --------------------------------------------------------------


def index_url() -> str:
    url = env(INDEX_URL_VARIABLE)
    if not url:
        raise SettingsError(
            f"{INDEX_URL_VARIABLE} is not set: a URL such as "
            "postgresql+psycopg://user:pw@host:5432/db (`fes` commands also find a demo "
            "running in this folder)"
        )
    return url


def index_schema() -> str:
    return env("FES_SCHEMA", DEFAULT_SCHEMA)


def config_path() -> Path:
    return Path(env("FES_CONFIG", DEFAULT_CONFIG))


def fixed_now() -> str | None:
    """`FES_NOW`: the instant tests and demos set as "now" (an ISO timestamp)."""
    return env("FES_NOW")


def object_store_settings() -> ObjectStoreSettings:
    """Object-store settings as the environment gives them; unset credentials mean the
    standard AWS chain."""
    from .object_store import ObjectStoreSettings  # boto3 and pyarrow: only when needed

    return ObjectStoreSettings(**{field: env(var) for field, var in STORE_VARIABLES.items()})


# --- the sensor -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensorSettings:
    """`bucket_sensor`'s settings, read when the code location loads."""

    interval: int = 30
    running: bool = False
    max_objects: int = 1000
    reconcile_interval: float = 600.0
    events_table: str | None = None
    events_url: str | None = None
    sqs_queue_url: str | None = None
    sqs_endpoint_url: str | None = None
    max_lag: float = 600.0


_SENSOR_VARIABLES = {
    "interval": lambda: int(_number("FES_SENSOR_INTERVAL_SECONDS", "30", int)),
    "running": lambda: env("FES_SENSOR_RUNNING") == "1",
    "max_objects": lambda: int(_number("FES_SENSOR_MAX_OBJECTS_PER_TICK", "1000", int)),
    "reconcile_interval": lambda: float(_number("FES_RECONCILE_INTERVAL_SECONDS", "600", float)),
    "events_table": lambda: env("FES_MINIO_EVENTS_TABLE"),
    "events_url": lambda: env("FES_MINIO_EVENTS_URL"),
    "sqs_queue_url": lambda: env("FES_SQS_QUEUE_URL"),
    "sqs_endpoint_url": lambda: env("FES_SQS_ENDPOINT_URL"),
    "max_lag": lambda: float(_number("FES_MAX_LAG_SECONDS", "600", float)),
}


def sensor_settings(**chosen: object) -> SensorSettings:
    """The sensor's settings: those `chosen` (not None) as given, the others from their
    `FES_*` variables (a variable is not even read when its setting is chosen)."""
    return SensorSettings(
        **{
            name: chosen[name] if chosen.get(name) is not None else read()
            for name, read in _SENSOR_VARIABLES.items()
        }
    )


# --- Dagster's instance and the demo ---------------------------------------------------------


def dagster_home() -> str | None:
    return env("DAGSTER_HOME")


def demo_dir() -> Path:
    return Path(env("FES_DEMO_DIR", ".fes"))


def demo_env_file() -> Path:
    return demo_dir() / "demo.env"


def read_demo_env() -> dict[str, str]:
    """The settings of a demo running in this folder, or nothing."""
    path = demo_env_file()
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def apply_demo_env() -> None:
    """For the command line only: a running demo's settings fill what the environment lacks."""
    for name, value in read_demo_env().items():
        if not os.environ.get(name):
            os.environ[name] = value


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child process: this one's, with `extra` on top."""
    return {**os.environ, **extra}

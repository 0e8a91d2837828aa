"""Runs of the core alone in a child process (no Dagster import, so starting one is cheap),
killed by SIGKILL at a pause point the test names: a crash between two chosen statements."""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass
from datetime import date
from typing import Any

from fes_assets.core import pause_points
from fes_assets.core.indexing import EntityIndexer
from fes_assets.core.object_store import ObjectStore, ObjectStoreSettings
from fes_assets.core.registry import Registry
from fes_assets.core.storage.database import IndexDb


@dataclass(frozen=True)
class Servers:
    pg_url: str
    schema: str
    endpoint: str
    access_key: str
    secret_key: str


def _run(
    servers: Servers,
    registry: Registry,
    key: str,
    days: list[date],
    changes: list[dict] | None,
    kill_at: tuple[str, int],
) -> None:
    point, nth = kill_at
    seen = {"n": 0}

    def handler(name: str, context: dict[str, Any]) -> None:
        if name == point:
            seen["n"] += 1
            if seen["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    store = ObjectStore(
        ObjectStoreSettings(
            endpoint_url=servers.endpoint,
            access_key_id=servers.access_key,
            secret_access_key=servers.secret_key,
        )
    )
    db = IndexDb(servers.pg_url, servers.schema)
    with pause_points.installed(handler):
        EntityIndexer(store, db, registry, key, log=lambda m: None).run(days, changes)


def run_killed(
    servers: Servers,
    registry: Registry,
    key: str,
    days: list[date],
    *,
    changes: list[dict] | None = None,
    kill_at: tuple[str, int],
) -> int:
    """Run the indexer over `days` in a child killed the `n`th time it reaches the pause
    point (`kill_at` = (point, n)); returns the child's exit code (-9 when it was killed)."""
    child = multiprocessing.get_context("spawn").Process(
        target=_run, args=(servers, registry, key, days, changes, kill_at)
    )
    child.start()
    child.join(120)
    if child.is_alive():
        child.kill()
        raise AssertionError("the indexing child neither finished nor was killed")
    return child.exitcode

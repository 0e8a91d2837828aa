"""Materializing partition ranges from the command line, on the instance the UI reads."""

from __future__ import annotations

import sys
from datetime import date

import dagster as dg
from tqdm import tqdm

from ..core import settings
from ..core.errors import CommandError
from ..core.indexing import PROGRESS_HOOKS
from ..core.registry import load_registry
from ..orchestration.assets import entity_asset_key, latest_asset_key
from ..orchestration.factory import build_definitions


def materialize_range(first: date, last: date, entity_keys: list[str] | None) -> int:
    """One run per entity key over [first, last] (both included), like a UI backfill with a
    single-run policy; a progress bar counts the days committed."""
    if not settings.dagster_home():
        raise CommandError("DAGSTER_HOME is not set: it names the instance the UI reads")
    registry = load_registry()
    known = list(registry.by_entity_key())
    keys = entity_keys or known
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise CommandError(f"unknown entity key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    defs = build_definitions()
    instance = dg.DagsterInstance.get()
    days = (last - first).days + 1
    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
        "fes/launched_by": "fes index",
    }
    failed = []
    with tqdm(total=days * len(keys), unit="day", file=sys.stderr) as bar:
        rows = {"n": 0}

        def progress(key: str, day: date, count: int) -> None:
            rows["n"] += count
            bar.set_postfix_str(f"{key} {day} rows={rows['n']:,}")
            bar.update(1)

        PROGRESS_HOOKS.append(progress)
        try:
            for key in keys:
                assets = [
                    defs.get_assets_def(entity_asset_key(key)),
                    defs.get_assets_def(latest_asset_key(key)),
                ]
                try:
                    result = dg.materialize(
                        assets,
                        instance=instance,
                        resources=defs.resources,
                        tags=tags,
                        raise_on_error=False,
                    )
                except dg.DagsterInvariantViolationError as e:
                    raise CommandError(str(e).splitlines()[0]) from e
                if not result.success:
                    failed.append(f"{key} (run {result.run_id})")
        finally:
            PROGRESS_HOOKS.remove(progress)
    if failed:
        print(f"fes: failed: {', '.join(failed)}; see the runs in the UI", file=sys.stderr)
        return 1
    print(f"indexed {first}...{last} for {', '.join(keys)}", file=sys.stderr)
    return 0

"""Daily UTC partitions from the registry's `partitions_start`, today included."""

from __future__ import annotations

from datetime import date

import dagster as dg

from ..core.registry import Registry


def daily_partitions(registry: Registry) -> dg.DailyPartitionsDefinition:
    # end_offset=1: without it the last partition is yesterday's and today's rows wait a day.
    return dg.DailyPartitionsDefinition(
        start_date=registry.partitions_start.isoformat(), end_offset=1, timezone="UTC"
    )


def keys_to_days(keys: list[str] | tuple[str, ...]) -> list[date]:
    return sorted(date.fromisoformat(k) for k in keys)

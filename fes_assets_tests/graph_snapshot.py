"""A plain-data description of a code location's asset graph (keys, partitions, checks,
kinds, descriptions, the sensor and what it targets), built from Dagster's public API
without touching a database, so a snapshot of it catches any change to what users see."""

from __future__ import annotations

from typing import Any

import dagster as dg


def _partitions(assets: dg.AssetsDefinition) -> dict[str, Any] | None:
    p = assets.partitions_def
    if p is None:
        return None
    assert isinstance(p, dg.DailyPartitionsDefinition)
    return {
        "type": "daily",
        "start": p.start.isoformat(),
        "end_offset": p.end_offset,
        "timezone": p.timezone,
    }


def _target_keys(defs: dg.Definitions, target: Any) -> list[dg.AssetKey]:
    # Definitions merged from a defs folder hold the target as an anonymous asset job.
    if target.assets_defs:
        return [k for definition in target.assets_defs for k in definition.keys]
    return list(defs.resolve_job_def(target.job_name).asset_layer.selected_asset_keys)


def describe_graph(defs: dg.Definitions) -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    assets: dict[str, Any] = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        definition = node.assets_def
        spec = next(s for s in definition.specs if s.key == key)
        checks = sorted(
            (
                {
                    "name": c.name,
                    "blocking": c.blocking,
                    "description": c.description,
                }
                for c in definition.check_specs
                if c.asset_key == key
            ),
            key=lambda c: c["name"],
        )
        policy = definition.backfill_policy
        assets[key.to_user_string()] = {
            "description": spec.description,
            "group": spec.group_name,
            "kinds": sorted(spec.kinds),
            "deps": sorted(d.asset_key.to_user_string() for d in spec.deps),
            "partitions": _partitions(definition),
            "backfill_policy": None if policy is None else policy.policy_type.value,
            "checks": checks,
        }
    # Checks defined apart from their asset (index_lag).
    for check in defs.asset_checks or []:
        for c in check.check_specs:
            assets[c.asset_key.to_user_string()]["checks"].append(
                {"name": c.name, "blocking": c.blocking, "description": c.description}
            )
    for entry in assets.values():
        entry["checks"].sort(key=lambda c: c["name"])
    sensors = {}
    for sensor in defs.sensors or []:
        targets = sorted(
            k.to_user_string() for target in sensor.targets for k in _target_keys(defs, target)
        )
        sensors[sensor.name] = {
            "description": sensor.description,
            "minimum_interval_seconds": sensor.minimum_interval_seconds,
            "default_status": sensor.default_status.value,
            "targets": targets,
        }
    return {
        "assets": assets,
        "sensors": sensors,
        "resources": sorted((defs.resources or {}).keys()),
    }

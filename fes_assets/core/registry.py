"""The feature-table registry (`fes.yaml`): which parquet objects hold which entity ids."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from .errors import RegistryError
from .settings import config_path

VALUE_TYPES: dict[str, str] = {
    "INT32": "integer",
    "INT64": "bigint",
    "STRING": "text",
    "BYTES": "bytea",
    "BOOL": "boolean",
}
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PG_MAX_IDENTIFIER_BYTES = 63


@dataclass(frozen=True)
class FeatureTable:
    name: str
    bucket: str
    prefix: str
    entities: dict[str, str]  # join key -> value type
    timestamp_column: str
    created_timestamp_column: str | None = None
    field_mapping: dict[str, str] = field(default_factory=dict)  # source column -> join key

    @property
    def join_keys(self) -> list[str]:
        return sorted(self.entities)

    @property
    def entity_key(self) -> str:
        return entity_key(self.entities)

    def source_column(self, name: str) -> str:
        """The column in the parquet file that feeds join key or timestamp `name`."""
        for source, target in self.field_mapping.items():
            if target == name:
                return source
        return name

    def spec(self) -> dict[str, Any]:
        """Everything about the table that decides which rows the index holds for it."""
        return {
            "bucket": self.bucket,
            "prefix": self.prefix,
            "entities": dict(sorted(self.entities.items())),
            "timestamp_column": self.timestamp_column,
            "created_timestamp_column": self.created_timestamp_column,
            "field_mapping": dict(sorted(self.field_mapping.items())),
        }

    def matches(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix) and key.endswith(".parquet")


def entity_key(entities: dict[str, str] | list[str]) -> str:
    """Sorted join-key names joined by `__`: the suffix of `entity_<key>` and `latest_<key>`."""
    return "__".join(sorted(entities))


@dataclass(frozen=True)
class Registry:
    bucket: str
    partitions_start: date
    feature_tables: dict[str, FeatureTable]

    def by_entity_key(self) -> dict[str, list[FeatureTable]]:
        groups: dict[str, list[FeatureTable]] = {}
        for ft in self.feature_tables.values():
            groups.setdefault(ft.entity_key, []).append(ft)
        return dict(sorted(groups.items()))

    def entity_types(self, key: str) -> dict[str, str]:
        """Join key -> value type for an entity key (the same in every table that uses it)."""
        return dict(sorted(self.by_entity_key()[key][0].entities.items()))

    def tables_for(self, bucket: str, object_key: str) -> list[FeatureTable]:
        return [ft for ft in self.feature_tables.values() if ft.matches(bucket, object_key)]

    def prefixes(self) -> list[tuple[str, str]]:
        """Distinct (bucket, prefix) pairs to list, without prefixes nested in another."""
        pairs = sorted({(ft.bucket, ft.prefix) for ft in self.feature_tables.values()})
        kept: list[tuple[str, str]] = []
        for bucket, prefix in pairs:
            if not any(b == bucket and prefix.startswith(p) for b, p in kept):
                kept.append((bucket, prefix))
        return kept


def load_registry(path: str | Path | None = None) -> Registry:
    path = Path(path) if path else config_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise RegistryError(f"registry file {path} not found (set FES_CONFIG)") from e
    except yaml.YAMLError as e:
        raise RegistryError(f"registry file {path} is not valid YAML: {e}") from e
    return parse_registry(raw, source=str(path))


def _require(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise RegistryError(f"{where}: {msg}")


def _check_name(value: Any, where: str, what: str) -> str:
    _require(
        isinstance(value, str) and bool(NAME_RE.match(value)),
        where,
        f"{what} {value!r} must match {NAME_RE.pattern}",
    )
    return value


def parse_registry(raw: Any, source: str = "registry") -> Registry:
    _require(isinstance(raw, dict), source, "must be a mapping with bucket and feature_tables")
    default_bucket = raw.get("bucket")
    start = raw.get("partitions_start", "2021-01-01")
    try:
        partitions_start = start if isinstance(start, date) else date.fromisoformat(str(start))
    except ValueError as e:
        raise RegistryError(f"{source}: partitions_start {start!r} is not a YYYY-MM-DD date") from e
    tables_raw = raw.get("feature_tables")
    _require(
        isinstance(tables_raw, dict) and bool(tables_raw),
        source,
        "feature_tables must be a non-empty mapping",
    )
    tables: dict[str, FeatureTable] = {}
    for name, spec in tables_raw.items():
        tables[name] = _parse_table(name, spec, default_bucket, source)
    _check_entity_types_agree(tables, source)
    return Registry(
        bucket=default_bucket or "", partitions_start=partitions_start, feature_tables=tables
    )


def _parse_table(name: Any, spec: Any, default_bucket: Any, source: str) -> FeatureTable:
    where = f"{source}: feature table {name!r}"
    _check_name(name, where, "feature-table name")
    _require(isinstance(spec, dict), where, "must be a mapping")
    known = {
        "bucket",
        "prefix",
        "entities",
        "timestamp_column",
        "created_timestamp_column",
        "field_mapping",
    }
    unknown = sorted(set(spec) - known)
    _require(not unknown, where, f"unknown field(s) {', '.join(map(str, unknown))}")
    bucket = spec.get("bucket", default_bucket)
    _require(
        isinstance(bucket, str) and bool(bucket),
        f"{where}, field bucket",
        "no bucket (set it here or at the top level)",
    )
    prefix = spec.get("prefix")
    _require(isinstance(prefix, str), f"{where}, field prefix", "must be a string")
    entities = spec.get("entities")
    _require(
        isinstance(entities, dict) and bool(entities),
        f"{where}, field entities",
        "must map each join key to a value type",
    )
    for key, vtype in entities.items():
        _check_name(key, f"{where}, field entities", "join key")
        _require("__" not in key, f"{where}, field entities", f"join key {key!r} contains '__'")
        _require(
            vtype in VALUE_TYPES,
            f"{where}, field entities",
            f"join key {key!r} has type {vtype!r}; use one of {', '.join(VALUE_TYPES)}",
        )
    ekey = entity_key(entities)
    # The longest name an entity key produces is its day partition, `_e_<key>_YYYYMMDD`.
    longest = f"_e_{ekey}_20210101"
    _require(
        len(longest.encode()) <= PG_MAX_IDENTIFIER_BYTES,
        f"{where}, field entities",
        f"join keys {ekey!r} make table names longer than "
        f"{PG_MAX_IDENTIFIER_BYTES} bytes; use shorter join-key names",
    )
    ts = spec.get("timestamp_column")
    _require(
        isinstance(ts, str) and bool(ts),
        f"{where}, field timestamp_column",
        "must name the event timestamp column",
    )
    created = spec.get("created_timestamp_column")
    _require(
        created is None or (isinstance(created, str) and bool(created)),
        f"{where}, field created_timestamp_column",
        "must be a column name",
    )
    mapping = spec.get("field_mapping") or {}
    _require(
        isinstance(mapping, dict),
        f"{where}, field field_mapping",
        "must map source columns to join keys",
    )
    for src, dst in mapping.items():
        _require(
            isinstance(src, str) and isinstance(dst, str),
            f"{where}, field field_mapping",
            "keys and values must be column names",
        )
    return FeatureTable(
        name=name,
        bucket=bucket,
        prefix=prefix,
        entities=dict(entities),
        timestamp_column=ts,
        created_timestamp_column=created,
        field_mapping=dict(mapping),
    )


def _check_entity_types_agree(tables: dict[str, FeatureTable], source: str) -> None:
    # One entity table per key set: a join key typed differently by two feature tables
    # would need two column types in one table.
    seen: dict[str, tuple[str, dict[str, str]]] = {}
    for ft in tables.values():
        prev = seen.get(ft.entity_key)
        if prev and prev[1] != ft.entities:
            raise RegistryError(
                f"{source}: feature table {ft.name!r}, field entities: types {ft.entities} "
                f"differ from {prev[1]} in feature table {prev[0]!r}, which shares its join keys"
            )
        seen.setdefault(ft.entity_key, (ft.name, ft.entities))

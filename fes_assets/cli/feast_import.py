"""`fes import-feast`: a registry (`fes.yaml`) from a Feast repository's feature views whose
batch source is a parquet FileSource on s3://."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..core.errors import CommandError
from ..core.registry import VALUE_TYPES, parse_registry


@dataclass
class Imported:
    registry: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)  # feature view -> why


@contextlib.contextmanager
def inside(repo: Path):
    # Feast imports a repo's modules relative to its root, as `feast apply` does.
    cwd, path = os.getcwd(), list(sys.path)
    os.chdir(repo)
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = path


def _value_type(entity: Any, view: Any) -> str | None:
    name = getattr(entity.value_type, "name", str(entity.value_type))
    if name in VALUE_TYPES:
        return name
    for column in getattr(view, "entity_columns", []) or []:
        if column.name == entity.join_key:
            dtype = str(column.dtype).upper()
            for vt in VALUE_TYPES:
                if vt in dtype:
                    return vt
    return None


def import_feast_repo(repo_path: str | Path, partitions_start: str = "2021-01-01") -> Imported:
    """Read the repo's Python definitions (no `feast apply` needed) into a registry mapping."""
    try:
        from feast.data_format import ParquetFormat
        from feast.infra.offline_stores.file_source import FileSource
        from feast.repo_operations import parse_repo
    except ImportError as e:  # the optional extra is not installed
        raise CommandError("fes import-feast needs Feast: install fes_assets[feast]") from e

    repo = Path(repo_path).resolve()
    with inside(repo):
        contents = parse_repo(repo)
    entities = {e.name: e for e in contents.entities}
    result = Imported(registry={"partitions_start": partitions_start, "feature_tables": {}})
    tables = result.registry["feature_tables"]
    buckets: dict[str, int] = {}
    for view in sorted(contents.feature_views, key=lambda v: v.name):
        source = view.batch_source
        if not isinstance(source, FileSource):
            result.skipped[view.name] = f"batch source is {type(source).__name__}, not a FileSource"
            continue
        url = urlparse(source.path)
        if url.scheme != "s3":
            result.skipped[view.name] = f"source path {source.path!r} is not on s3://"
            continue
        if source.file_format is not None and not isinstance(source.file_format, ParquetFormat):
            result.skipped[view.name] = "source format is not parquet"
            continue
        names = [n for n in view.entities if n != "__dummy"]
        if not names:
            result.skipped[view.name] = "has no entities"
            continue
        keys: dict[str, str] = {}
        for name in names:
            entity = entities.get(name)
            vtype = _value_type(entity, view) if entity else None
            if entity is None or vtype is None:
                result.skipped[view.name] = f"entity {name!r} has no value type fes can index"
                break
            keys[entity.join_key] = vtype
        else:
            spec: dict[str, Any] = {
                "bucket": url.netloc,
                "prefix": url.path.lstrip("/"),
                "entities": keys,
                "timestamp_column": source.timestamp_field,
            }
            if source.created_timestamp_column:
                spec["created_timestamp_column"] = source.created_timestamp_column
            if source.field_mapping:
                spec["field_mapping"] = dict(source.field_mapping)
            tables[view.name] = spec
            buckets[url.netloc] = buckets.get(url.netloc, 0) + 1
    if buckets:
        # The most common bucket (ties: the first by name) goes to the top level.
        top = sorted(buckets, key=lambda b: (-buckets[b], b))[0]
        result.registry = {"bucket": top, **result.registry}
        for spec in tables.values():
            if spec["bucket"] == top:
                del spec["bucket"]
    if tables:
        parse_registry(result.registry, source=f"import of {repo}")  # it must load
    return result

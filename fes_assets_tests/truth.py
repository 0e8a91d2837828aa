"""A brute-force recomputation of what the index must hold, read straight from the bucket:
every object under each feature table's prefix, whole, with pyarrow."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pyarrow.parquet as pq

from fes_assets.core.days import day_start, partitions_end
from fes_assets.core.registry import Registry


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    keys, token = [], None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.list_objects_v2(**kwargs)
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


def history(s3, registry: Registry, key: str, now: datetime) -> list[tuple]:
    """(ids..., feature table, event timestamp, created timestamp, path) of every row of
    entity key `key` that falls in a partition, sorted; objects that do not parse count as
    empty."""
    begin, end = day_start(registry.partitions_start), partitions_end(now)
    rows = []
    for ft in registry.by_entity_key()[key]:
        for object_key in _keys(s3, ft.bucket, ft.prefix):
            body = s3.get_object(Bucket=ft.bucket, Key=object_key)["Body"].read()
            try:
                table = pq.read_table(io.BytesIO(body))
            except Exception:
                continue
            times = [_utc(t) for t in _column(table, ft, ft.timestamp_column)]
            created = (
                [_utc(t) for t in _column(table, ft, ft.created_timestamp_column)]
                if ft.created_timestamp_column
                else [None] * len(times)
            )
            ids = [_column(table, ft, k) for k in ft.join_keys]
            path = f"s3://{ft.bucket}/{object_key}"
            for i, t in enumerate(times):
                if begin <= t < end:
                    rows.append((*(column[i] for column in ids), ft.name, t, created[i], path))
    return ordered(rows)


def ordered(rows: list[tuple]) -> list[tuple]:
    """Rows sorted with None before any value (rows from the index compare the same way)."""
    return sorted(rows, key=lambda r: tuple((v is not None, v) for v in r))


def _column(table, ft, name: str) -> list:
    return table.column(ft.source_column(name)).to_pylist()


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def latest(rows: list[tuple]) -> list[tuple]:
    """Each (ids, feature table)'s newest row: the newest event, then the newest created
    timestamp (none is oldest), then the greatest path in byte order."""
    best: dict[tuple, tuple] = {}

    def rank(ts, created, path) -> tuple:
        return ts, created is not None, created or ts, path.encode()

    for *ids, table, ts, created, path in rows:
        ident = (*ids, table)
        if ident not in best or rank(ts, created, path) > rank(*best[ident]):
            best[ident] = (ts, created, path)
    return ordered([(*k, *v) for k, v in best.items()])

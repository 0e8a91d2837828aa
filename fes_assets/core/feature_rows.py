"""Feature rows of one feature table in a set of time ranges, read from the objects the
catalogue says may hold them: only the row groups whose timestamps overlap a range, only the
id, timestamp and requested feature columns, only the ids asked for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
from botocore.exceptions import BotoCoreError, ClientError

from .catalogue import Catalog, IndexedObject
from .errors import BadObjectError, FesError
from .object_store import ObjectStore
from .parquet import ARROW_TYPES, TS_TYPE, canonical_table, columns_for, read_footer
from .point_in_time import micros
from .registry import FeatureTable

READERS = 8  # objects read at once: S3 latency, not CPU, bounds a read
ATTEMPTS = 3  # reads of an object replaced while it was being read
Ranges = Sequence[tuple[datetime, datetime]]  # sorted, disjoint, both ends included


@dataclass(frozen=True)
class FeatureRead:
    """What to read of one feature table: `features` maps output column -> source column,
    `types` output column -> the Arrow type declared for it (None: the objects' own)."""

    table: FeatureTable
    features: dict[str, str]
    types: dict[str, pa.DataType | None]


class IdFilter:
    """The values of one join key asked for, hashed once for every object read."""

    def __init__(self, key: str, ids: pa.Array | pa.ChunkedArray) -> None:
        self.key = key
        self._index = pd.Index(ids.to_pandas()).unique()

    def mask(self, table: pa.Table) -> np.ndarray:
        return self._index.get_indexer(table.column(self.key).to_pandas()) >= 0


def _micros(values: Sequence[datetime] | pa.ChunkedArray) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        return values.cast(TS_TYPE).cast(pa.int64()).to_numpy()
    return np.array([micros(v) for v in values], dtype=np.int64)


class _Ranges:
    def __init__(self, ranges: Ranges) -> None:
        self.los = _micros([lo for lo, _ in ranges])
        self.his = _micros([hi for _, hi in ranges])

    def overlaps(self, lo: datetime | None, hi: datetime | None) -> bool:
        if lo is None or hi is None:
            return True  # no statistics: the row group may hold any time
        at = np.searchsorted(self.los, _micros([hi])[0], side="right") - 1
        return bool(at >= 0 and self.his[at] >= _micros([lo])[0])

    def mask(self, ts: pa.ChunkedArray) -> np.ndarray:
        t = _micros(ts)
        at = np.searchsorted(self.los, t, side="right") - 1
        inside = at >= 0
        inside[inside] = t[inside] <= self.his[at[inside]]
        return inside


def _typed(raw: pa.ChunkedArray, want: pa.DataType | None, where: str) -> pa.ChunkedArray:
    if pa.types.is_dictionary(raw.type):
        raw = raw.cast(raw.type.value_type)
    if want is None or raw.type == want:
        return raw
    if pa.types.is_timestamp(raw.type) and pa.types.is_timestamp(want):
        if raw.type.tz is None and want.tz is not None:
            raw = raw.cast(pa.timestamp(raw.type.unit, tz=want.tz))  # naive means UTC
        return raw.cast(want, safe=False)  # truncated to the unit, as event timestamps are
    try:
        return raw.cast(want, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise BadObjectError(f"{where} is {raw.type}, not the declared {want}: {e}") from e


def _read_once(
    store: ObjectStore, obj: IndexedObject, read: FeatureRead, ranges: _Ranges, ids: IdFilter | None
) -> pa.Table | None:
    ft = read.table
    pf = store.open_parquet(obj.bucket, obj.key, obj.size)
    footer = read_footer(pf, ft)
    names = pf.schema_arrow.names
    missing = [c for c in read.features.values() if c not in names]
    if missing:
        raise BadObjectError(f"missing feature column(s) {', '.join(missing)}")
    id_columns = list(dict.fromkeys(columns_for(ft).values()))
    columns = list(dict.fromkeys([*id_columns, *read.features.values()]))
    parts = []
    for rg in footer.row_groups:
        if not rg.num_rows or not ranges.overlaps(rg.min_ts, rg.max_ts):
            continue
        raw = pf.read_row_group(rg.index, columns=columns)
        table = canonical_table(raw, ft)
        keep = ranges.mask(table.column("event_timestamp"))
        if ids is not None:
            keep &= ids.mask(table)
        if not keep.any():
            continue
        table = table.filter(keep)
        raw = raw.filter(keep)
        for name, column in read.features.items():
            feature = _typed(raw.column(column), read.types.get(name), f"column {column!r}")
            table = table.append_column(name, feature)
        parts.append(table)
    if not parts:
        return None
    return pa.concat_tables(parts)


def _read_object(
    store: ObjectStore, obj: IndexedObject, read: FeatureRead, ranges: _Ranges, ids: IdFilter | None
) -> pa.Table | None:
    """One object's rows, read from a single version of it: an object replaced while it was
    read is read again."""
    try:
        return _read_one_version(store, obj, read, ranges, ids)
    except (BotoCoreError, ClientError) as e:  # credentials, permissions, the network
        raise FesError(f"{obj.path}: the object store refused or failed: {e}") from e


def _read_one_version(
    store: ObjectStore, obj: IndexedObject, read: FeatureRead, ranges: _Ranges, ids: IdFilter | None
) -> pa.Table | None:
    for _ in range(ATTEMPTS):
        before = store.head(obj.bucket, obj.key)
        if before is None:
            return None  # deleted since it was catalogued: the index drops its rows next run
        current = IndexedObject(obj.bucket, obj.key, before.etag, before.size)
        try:
            table = _read_once(store, current, read, ranges, ids)
        except (OSError, pa.ArrowException, BadObjectError) as e:
            now = store.head(obj.bucket, obj.key)
            if now is None:
                return None
            if now.etag != before.etag:
                continue  # replaced while it was read: read the new version
            raise BadObjectError(f"{obj.path}: {e}") from e
        after = store.head(obj.bucket, obj.key)
        if after is None:
            return None
        if after.etag == before.etag:
            return table
    raise BadObjectError(f"{obj.path} changed while it was read, {ATTEMPTS} times")


def read_feature_rows(
    catalog: Catalog,
    store: ObjectStore,
    read: FeatureRead,
    ranges: Ranges,
    ids: IdFilter | None = None,
    progress: Callable[[int, int], None] | None = None,
    outside_only: bool = False,
) -> pa.Table:
    """The rows of `read.table` with times in `ranges` (and ids in `ids`): join keys,
    `event_timestamp`, `created_timestamp` and the feature columns under their output
    names."""
    objects = catalog.files_overlapping(read.table.name, ranges, outside_only) if ranges else []
    spans = _Ranges(ranges)
    tables = []
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        found = pool.map(lambda o: _read_object(store, o, read, spans, ids), objects)
        for done, table in enumerate(found):
            if table is not None and table.num_rows:
                tables.append(table)
            if progress is not None:
                progress(done + 1, len(objects))
    if not tables:
        return _empty(read)
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise BadObjectError(
            f"feature table {read.table.name!r}: objects disagree on a feature's type ({e}); "
            "declare it in the feature view's schema"
        ) from e


def _empty(read: FeatureRead) -> pa.Table:
    fields = [pa.field(k, ARROW_TYPES[read.table.entities[k]]) for k in read.table.join_keys]
    fields += [pa.field("event_timestamp", TS_TYPE), pa.field("created_timestamp", TS_TYPE)]
    fields += [pa.field(name, read.types.get(name) or pa.null()) for name in read.features]
    return pa.schema(fields).empty_table()

"""Feature rows of one feature table for a time range, read from the objects the index holds
rows of for those days: only the row groups whose timestamps overlap the range, only the id,
timestamp and requested feature columns."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from .catalogue import Catalog, IndexedObject
from .errors import BadObjectError, FesError
from .object_store import ObjectStore
from .parquet import ARROW_TYPES, TS_TYPE, canonical_table, columns_for, read_footer
from .registry import FeatureTable

READERS = 8  # objects read at once: S3 latency, not CPU, bounds a read
ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class FeatureRead:
    """What to read of one feature table: `features` maps output column -> source column."""

    table: FeatureTable
    features: dict[str, str]
    start: datetime | None  # inclusive; None: unbounded
    end: datetime  # inclusive, as an entity row's timestamp is
    ids: pa.Array | None = None  # keep only these ids (single join key), when given


def _read_object(store: ObjectStore, obj: IndexedObject, read: FeatureRead) -> pa.Table | None:
    ft = read.table
    try:
        pf = store.open_parquet(obj.bucket, obj.key, obj.size)
        footer = read_footer(pf, ft)
    except OSError:
        if store.head(obj.bucket, obj.key) is None:
            return None  # deleted since it was indexed: the index drops its rows on its next run
        raise
    except (BadObjectError, pa.ArrowInvalid) as e:
        raise BadObjectError(f"{obj.path}: {e}") from e
    names = pf.schema_arrow.names
    missing = [c for c in read.features.values() if c not in names]
    if missing:
        raise BadObjectError(f"{obj.path}: missing feature column(s) {', '.join(missing)}")
    id_columns = list(dict.fromkeys(columns_for(ft).values()))
    columns = list(dict.fromkeys([*id_columns, *read.features.values()]))
    lo = read.start or datetime.min.replace(tzinfo=read.end.tzinfo)
    hi = read.end + ONE_MICROSECOND
    parts = []
    for rg in footer.row_groups:
        if not rg.num_rows or not rg.overlaps(lo, hi):
            continue
        raw = pf.read_row_group(rg.index, columns=columns)
        table = canonical_table(raw, ft)
        for name, column in read.features.items():
            table = table.append_column(name, raw.column(column))
        mask = pc.less(table.column("event_timestamp"), pa.scalar(hi, TS_TYPE))
        if read.start is not None:
            mask = pc.and_(
                mask, pc.greater_equal(table.column("event_timestamp"), pa.scalar(lo, TS_TYPE))
            )
        if read.ids is not None:
            mask = pc.and_(mask, pc.is_in(table.column(ft.join_keys[0]), value_set=read.ids))
        parts.append(table.filter(mask))
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive")


def read_feature_rows(
    catalog: Catalog,
    store: ObjectStore,
    read: FeatureRead,
    progress: Callable[[int, int], None] | None = None,
) -> pa.Table:
    """The rows of `read.table` in [start, end]: join keys, `event_timestamp`,
    `created_timestamp` and the feature columns under their output names."""
    first = read.start.date() if read.start is not None else date.min
    objects = catalog.indexed_files(read.table.name, first, read.end.date())
    tables = []
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        for done, table in enumerate(pool.map(lambda o: _read_object(store, o, read), objects)):
            if table is not None and table.num_rows:
                tables.append(table)
            if progress is not None:
                progress(done + 1, len(objects))
    if not tables:
        return _empty(read)
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid as e:
        raise FesError(f"feature table {read.table.name!r}: objects disagree on types: {e}") from e


def _empty(read: FeatureRead) -> pa.Table:
    fields = [pa.field(k, ARROW_TYPES[read.table.entities[k]]) for k in read.table.join_keys]
    fields += [pa.field("event_timestamp", TS_TYPE), pa.field("created_timestamp", TS_TYPE)]
    fields += [pa.field(name, pa.null()) for name in read.features]
    return pa.schema(fields).empty_table()

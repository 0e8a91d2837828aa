"""Reading a Feast parquet object: its footer, and its id and timestamp columns as a
canonical Arrow table, refusing values the index cannot hold losslessly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import BadObjectError
from .registry import FeatureTable

MAX_ID_BYTES = 1024
TS_TYPE = pa.timestamp("us", tz="UTC")
ARROW_TYPES: dict[str, pa.DataType] = {
    "INT32": pa.int32(),
    "INT64": pa.int64(),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "BOOL": pa.bool_(),
}


@dataclass(frozen=True)
class RowGroupSpan:
    index: int
    num_rows: int
    min_ts: datetime | None  # None: no usable statistics
    max_ts: datetime | None

    def overlaps(self, start: datetime, end: datetime) -> bool:
        if self.min_ts is None or self.max_ts is None:
            return True
        return self.min_ts < end and self.max_ts >= start


@dataclass(frozen=True)
class Footer:
    num_rows: int
    row_groups: list[RowGroupSpan]

    @property
    def has_statistics(self) -> bool:
        return all(rg.min_ts is not None for rg in self.row_groups if rg.num_rows)

    @property
    def min_ts(self) -> datetime | None:
        values = [rg.min_ts for rg in self.row_groups if rg.num_rows and rg.min_ts]
        return min(values) if values and self.has_statistics else None

    @property
    def max_ts(self) -> datetime | None:
        values = [rg.max_ts for rg in self.row_groups if rg.num_rows and rg.max_ts]
        return max(values) if values and self.has_statistics else None


def _as_utc(value) -> datetime | None:
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_id_type(ft: FeatureTable, join_key: str, column: str, arrow_type: pa.DataType) -> None:
    want = ft.entities[join_key]
    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    ok = {
        "INT32": pa.types.is_integer(t),
        "INT64": pa.types.is_integer(t),
        "STRING": pa.types.is_string(t) or pa.types.is_large_string(t),
        "BYTES": pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t),
        "BOOL": pa.types.is_boolean(t),
    }[want]
    if not ok:
        raise BadObjectError(
            f"column {column!r} (join key {join_key}) is {arrow_type}, which cannot be stored "
            f"losslessly as {want}"
        )


def _check_ts_type(column: str, arrow_type: pa.DataType, role: str) -> None:
    if not pa.types.is_timestamp(arrow_type):
        hint = " (a date, not a timestamp)" if pa.types.is_date(arrow_type) else ""
        raise BadObjectError(
            f"{role} column {column!r} is {arrow_type}{hint}; expected a timestamp"
        )


def columns_for(ft: FeatureTable) -> dict[str, str]:
    """Canonical name -> source column to read."""
    cols = {k: ft.source_column(k) for k in ft.join_keys}
    cols["event_timestamp"] = ft.source_column(ft.timestamp_column)
    if ft.created_timestamp_column:
        cols["created_timestamp"] = ft.source_column(ft.created_timestamp_column)
    return cols


def read_footer(pf: pq.ParquetFile, ft: FeatureTable) -> Footer:
    """Check the schema against the registry and collect per-row-group timestamp ranges."""
    schema = pf.schema_arrow
    cols = columns_for(ft)
    for canonical, column in cols.items():
        if schema.get_field_index(column) < 0:
            role = "join key" if canonical in ft.entities else canonical.replace("_", " ")
            raise BadObjectError(f"missing {role} column {column!r}")
        field = schema.field(column)
        if canonical in ft.entities:
            _check_id_type(ft, canonical, column, field.type)
        else:
            _check_ts_type(column, field.type, canonical.replace("_", " "))
    ts_index = schema.get_field_index(cols["event_timestamp"])
    ts_physical = pf.metadata.schema.column(ts_index).physical_type
    spans = []
    for i in range(pf.metadata.num_row_groups):
        rg = pf.metadata.row_group(i)
        stats = rg.column(ts_index).statistics
        lo = hi = None
        # INT96 statistics are unordered bytes: never trust them.
        if ts_physical != "INT96" and stats is not None and stats.has_min_max:
            lo, hi = _as_utc(stats.min), _as_utc(stats.max)
        spans.append(RowGroupSpan(i, rg.num_rows, lo, hi))
    return Footer(num_rows=pf.metadata.num_rows, row_groups=spans)


def to_timestamps(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    if arr.type.tz is None:
        arr = arr.cast(pa.timestamp(arr.type.unit, tz="UTC"))  # naive means UTC, as in Feast
    # Nanoseconds truncate to microseconds (timestamptz resolution).
    return arr.cast(TS_TYPE, safe=False)


def _to_id(arr: pa.ChunkedArray, vtype: str, column: str) -> pa.ChunkedArray:
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if arr.null_count:
        raise BadObjectError(f"join-key column {column!r} has {arr.null_count} null value(s)")
    target = ARROW_TYPES[vtype]
    if vtype in ("INT32", "INT64") and arr.type != target:
        try:
            arr = arr.cast(target, safe=True)
        except (pa.ArrowInvalid, OverflowError) as e:
            raise BadObjectError(f"join-key column {column!r} overflows {vtype}: {e}") from e
    elif vtype in ("STRING", "BYTES"):
        arr = arr.cast(target)
        if len(arr):
            longest = pc.max(pc.binary_length(arr)).as_py() or 0
            if longest > MAX_ID_BYTES:
                raise BadObjectError(
                    f"join-key column {column!r} has a value of {longest} bytes; "
                    f"ids are limited to {MAX_ID_BYTES}"
                )
    return arr


def canonical_table(raw: pa.Table, ft: FeatureTable) -> pa.Table:
    """Rename, type and check the columns read from one object."""
    cols = columns_for(ft)
    arrays: dict[str, pa.ChunkedArray] = {}
    for key in ft.join_keys:
        arrays[key] = _to_id(raw.column(cols[key]), ft.entities[key], cols[key])
    ts = raw.column(cols["event_timestamp"])
    if ts.null_count:
        raise BadObjectError(
            f"timestamp column {cols['event_timestamp']!r} has {ts.null_count} null value(s)"
        )
    arrays["event_timestamp"] = to_timestamps(ts)
    if "created_timestamp" in cols:
        arrays["created_timestamp"] = to_timestamps(raw.column(cols["created_timestamp"]))
    else:
        arrays["created_timestamp"] = pa.nulls(raw.num_rows, TS_TYPE)
    return pa.table(arrays)


def iter_row_groups(
    pf: pq.ParquetFile,
    ft: FeatureTable,
    footer: Footer,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[pa.Table]:
    """Canonical tables, one per row group overlapping [start, end), with only the id and
    timestamp columns read; rows outside the window are dropped."""
    cols = list(dict.fromkeys(columns_for(ft).values()))
    for rg in footer.row_groups:
        if not rg.num_rows:
            continue
        if start is not None and end is not None and not rg.overlaps(start, end):
            continue
        table = canonical_table(pf.read_row_group(rg.index, columns=cols), ft)
        if start is not None and end is not None:
            ts = table.column("event_timestamp")
            mask = pc.and_(
                pc.greater_equal(ts, pa.scalar(start, TS_TYPE)),
                pc.less(ts, pa.scalar(end, TS_TYPE)),
            )
            table = table.filter(mask)
        yield table

"""Arrow → PostgreSQL binary COPY encoding, vectorised with numpy.

Binary COPY skips text formatting on both sides and lets one psycopg transaction replace a
day (no second connection, as an ADBC ingest would need).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
# Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
PG_EPOCH_OFFSET_US = 946_684_800_000_000


def _values(arr: pa.Array) -> tuple[np.ndarray, str]:
    """Native values of a fixed-width column (nulls as zero), and its big-endian wire type."""
    t = arr.type
    if not _is_fixed(t):
        raise TypeError(f"unsupported fixed type {t}")
    if arr.null_count:
        arr = arr.fill_null(pa.scalar(False if pa.types.is_boolean(t) else 0, t))
    if pa.types.is_timestamp(t):
        return arr.cast(pa.int64()).to_numpy() - PG_EPOCH_OFFSET_US, ">i8"
    if pa.types.is_boolean(t):
        return arr.to_numpy(zero_copy_only=False).astype(np.uint8), "u1"
    return arr.to_numpy(), f">i{t.bit_width // 8}"


def _fixed(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, int]:
    """(big-endian bytes as an (n, width) uint8 matrix, validity, width) for fixed types."""
    values, wire = _values(arr)
    width = np.dtype(wire).itemsize
    valid = (
        np.ones(len(arr), dtype=bool)
        if arr.null_count == 0
        else arr.is_valid().to_numpy(zero_copy_only=False)
    )
    data = np.ascontiguousarray(values.astype(wire)).view(np.uint8).reshape(len(arr), width)
    return data, valid, width


def _is_fixed(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) or pa.types.is_boolean(t) or pa.types.is_integer(t)


def _encode_uniform(columns: list[pa.Array], n: int) -> memoryview:
    """Rows of one layout (fixed-width columns, each without nulls or all null): one
    structured array is the whole stream, with no per-byte index arithmetic."""
    fields: list[tuple[str, str]] = [("count", ">i2")]
    values = []
    for i, arr in enumerate(columns):
        fields.append((f"len{i}", ">i4"))
        if arr.null_count < n:
            v, wire = _values(arr)
            fields.append((f"val{i}", wire))
            values.append((i, v, np.dtype(wire).itemsize))
        else:
            values.append((i, None, -1))
    layout = np.dtype(fields)
    out = np.empty(len(HEADER) + n * layout.itemsize + len(TRAILER), dtype=np.uint8)
    out[: len(HEADER)] = np.frombuffer(HEADER, dtype=np.uint8)
    out[-2:] = 0xFF
    rows = out[len(HEADER) : len(out) - len(TRAILER)].view(layout)
    rows["count"] = len(columns)
    for i, v, width in values:
        rows[f"len{i}"] = width
        if v is not None:
            rows[f"val{i}"] = v
    return out.data


def encode(table: pa.Table) -> memoryview:
    """The whole COPY stream (header, tuples, trailer) for `table`'s columns in order, as a
    view of the buffer it was built in (a copy to bytes would double a day's peak memory)."""
    n = table.num_rows
    ncols = table.num_columns
    columns = [table.column(i).combine_chunks() for i in range(ncols)]
    if all(_is_fixed(a.type) and a.null_count in (0, n) for a in columns):
        return _encode_uniform(columns, n)
    # Per-row byte sizes of each field (4-byte length word plus the data, none for NULL).
    plans = []
    row_size = np.full(n, 2, dtype=np.int64)
    for arr in columns:
        if pa.types.is_string(arr.type) or pa.types.is_binary(arr.type):
            arr = arr.cast(pa.large_binary())
        if pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type):
            arr = arr.cast(pa.large_binary())
            lengths = pc.binary_length(arr).fill_null(-1).to_numpy().astype(np.int64)
            plans.append(("var", arr, lengths))
            row_size += 4 + np.maximum(lengths, 0)
        else:
            data, valid, width = _fixed(arr)
            lengths = np.where(valid, width, -1).astype(np.int64)
            plans.append(("fixed", data, lengths))
            row_size += 4 + np.maximum(lengths, 0)
    row_start = np.empty(n, dtype=np.int64)
    if n:
        row_start[0] = len(HEADER)
        np.cumsum(row_size[:-1], out=row_start[1:])
        row_start[1:] += len(HEADER)
    total = len(HEADER) + int(row_size.sum()) + len(TRAILER)
    out = np.zeros(total, dtype=np.uint8)
    out[: len(HEADER)] = np.frombuffer(HEADER, dtype=np.uint8)
    out[-2:] = 0xFF
    field_count = np.frombuffer(ncols.to_bytes(2, "big"), dtype=np.uint8)
    out[row_start[:, None] + np.arange(2)] = field_count
    pos = row_start + 2
    for kind, payload, lengths in plans:
        out[pos[:, None] + np.arange(4)] = lengths.astype(">i4").view(np.uint8).reshape(n, 4)
        body = pos + 4
        if kind == "fixed":
            present = lengths >= 0
            width = payload.shape[1]
            out[body[present, None] + np.arange(width)] = payload[present]
        else:
            _scatter_var(out, body, payload, lengths)
        pos = body + np.maximum(lengths, 0)
    return out.data


def _scatter_var(out: np.ndarray, body: np.ndarray, arr: pa.Array, lengths: np.ndarray) -> None:
    sizes = np.maximum(lengths, 0)
    count = int(sizes.sum())
    if not count:
        return
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    row = np.repeat(np.arange(len(arr)), sizes)
    within = np.arange(count) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    out[body[row] + within] = data[offsets[row] + within]


def iter_encode(table: pa.Table, chunk_rows: int = 65_536) -> Iterator[memoryview]:
    """`encode(table)` in pieces of `chunk_rows` rows: one stream (a header first, a trailer
    last) that never exists whole in memory."""
    n = table.num_rows
    if n <= chunk_rows:
        yield encode(table)
        return
    for start in range(0, n, chunk_rows):
        stream = encode(table.slice(start, chunk_rows))
        first = start == 0
        last = start + chunk_rows >= n
        yield stream[0 if first else len(HEADER) : len(stream) if last else -len(TRAILER)]

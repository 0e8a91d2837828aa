"""Feast features for the entities the index knows, without an entity_df::

    from fes_assets.feast import historical_features
    df = historical_features(store, ["driver_stats:conv_rate"], "2021-04-01", "2021-04-02").to_df()

The entity rows come from the index (as `entity_df` gives them) for every feature view
behind `features`, unioned; each view's values are joined point in time, as Feast documents
it, from the objects the index holds rows of. Feature definitions (features, TTL, field
mapping) come from the Feast registry; a view matches the fes feature table of its name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from .core import settings
from .core.catalogue import Catalog
from .core.errors import QueryError
from .core.feature_rows import FeatureRead, IdFilter, read_feature_rows
from .core.object_store import ObjectStore
from .core.point_in_time import join_looking_back
from .core.queries import EntityQuery, Instant, to_instant
from .core.registry import load_registry, parse_registry
from .core.storage.database import IndexDb

if TYPE_CHECKING:
    import pandas as pd

Progress = Callable[[str, int, int], None]  # (feature view, objects read, objects)


@dataclass
class _View:
    name: str
    timestamp_field: str
    created_column: str | None
    join_keys: list[str]
    ttl: timedelta | None
    features: list[str]  # requested, in order
    mapping: dict[str, str]  # feature -> source column
    types: dict[str, pa.DataType]  # feature -> Arrow type Feast declares
    outputs: list[str] = field(default_factory=list)


def _feature_refs(features: Any) -> list[tuple[str, str]]:
    projections = getattr(features, "feature_view_projections", None)
    if projections is not None:  # a FeatureService
        refs = []
        for p in projections:
            if p.name_alias or p.join_key_map:
                raise QueryError(
                    f"feature service {features.name!r}: projection of {p.name!r} renames it or "
                    "its join keys, which historical_features does not support"
                )
            refs += [(p.name, f.name) for f in p.features]
        if not refs:
            raise QueryError(f"feature service {features.name!r} has no features")
        return refs
    if isinstance(features, str) or not isinstance(features, Sequence) or not features:
        raise QueryError("features must be a non-empty list of 'feature_view:feature' references")
    refs = []
    for ref in features:
        view, sep, name = str(ref).partition(":")
        if not sep or not view or not name or ":" in name:
            raise QueryError(f"feature reference {ref!r} is not 'feature_view:feature'")
        if (view, name) in refs:
            raise QueryError(f"feature reference {ref!r} is given twice")
        refs.append((view, name))
    return refs


def _feast_view(store: Any, name: str, refs: list[str]) -> _View:
    from feast.types import from_feast_to_pyarrow_type

    try:
        view = store.get_feature_view(name)
    except Exception as e:  # Feast raises its own FeatureViewNotFoundException, among others
        raise QueryError(f"feature view {name!r} could not be read from Feast: {e}") from e
    declared = {f.name: f for f in view.features}
    unknown = [f for f in refs if f not in declared]
    if unknown:
        raise QueryError(f"feature view {name!r} has no feature(s) {', '.join(unknown)}")
    to_feature = dict(view.batch_source.field_mapping or {})  # source column -> feature
    to_source = {target: source for source, target in to_feature.items()}
    types = {}
    for f in refs:
        try:
            types[f] = from_feast_to_pyarrow_type(declared[f].dtype)
        except Exception:  # a type Arrow has no single twin for: keep what the files hold
            types[f] = None
    ttl = view.ttl if view.ttl and view.ttl.total_seconds() > 0 else None
    source = view.batch_source
    return _View(
        name=name,
        timestamp_field=source.timestamp_field,
        created_column=source.created_timestamp_column or None,
        join_keys=sorted(view.join_keys),
        ttl=ttl,
        features=refs,
        mapping={f: to_source.get(f, f) for f in refs},
        types=types,
    )


class HistoricalFeatures:
    """The answer of `historical_features`, computed on first use; `to_df()` and `to_arrow()`
    as on a Feast RetrievalJob."""

    def __init__(self, compute: Callable[[], pa.Table]) -> None:
        self._compute = compute
        self._table: pa.Table | None = None

    def to_arrow(self) -> pa.Table:
        if self._table is None:
            self._table = self._compute()
        return self._table

    def to_df(self) -> pd.DataFrame:
        return self.to_arrow().to_pandas()


def _union(tables: list[pa.Table], keys: list[str], latest: bool) -> pa.Table:
    rows = pa.concat_tables([t.select([*keys, "event_timestamp"]) for t in tables])
    if latest:
        # An id's newest event over the views: each view is then joined as of it.
        newest = rows.group_by(keys, use_threads=False).aggregate([("event_timestamp", "max")])
        rows = newest.rename_columns([*keys, "event_timestamp"])
    else:
        rows = rows.group_by(rows.column_names, use_threads=False).aggregate([])
    return rows.sort_by([("event_timestamp", "ascending"), *[(k, "ascending") for k in keys]])


def historical_features(
    store: Any,
    features: Any,
    start: Instant = None,
    end: Instant = None,
    *,
    latest: bool = False,
    as_of: Instant = None,
    full_feature_names: bool = False,
    url: str | None = None,
    schema: str | None = None,
    progress: Progress | None = None,
) -> HistoricalFeatures:
    """Features of every entity row the index holds for the views behind `features`.

    - default: every (join keys, event_timestamp) indexed in [start, end) — training sets;
    - `latest=True`: each id once, at its newest event in the window over all the views;
    - `as_of=T`: each id seen in [start, min(end, T)) once, at T — batch prediction.
    Every entity row comes back exactly once; a view with no row for it at or before its
    timestamp within the view's TTL gives nulls. `store` is a `feast.FeatureStore`;
    `features` a list of 'view:feature' references or a FeatureService. The index comes from
    `url` or FES_PG_URL (schema FES_SCHEMA), the objects from the FES_S3_* settings.
    """
    if latest and as_of is not None:
        raise QueryError("latest and as_of cannot be combined")
    refs = _feature_refs(features)
    by_view: dict[str, list[str]] = {}
    for view, name in refs:
        by_view.setdefault(view, []).append(name)
    views = [_feast_view(store, name, names) for name, names in by_view.items()]
    outputs = [f"{v}__{n}" if full_feature_names else n for v, n in refs]
    clashes = sorted({o for o in outputs if outputs.count(o) > 1})
    if clashes:
        raise QueryError(
            f"feature name(s) {', '.join(clashes)} come from more than one reference; "
            "pass full_feature_names=True"
        )
    keys = views[0].join_keys
    reserved = {*keys, "event_timestamp", "created_timestamp"}
    taken = sorted(reserved.intersection(outputs))
    if taken:
        raise QueryError(
            f"feature(s) {', '.join(taken)} would be named like a join key or timestamp column; "
            "pass full_feature_names=True"
        )
    if any(v.join_keys != keys for v in views):
        described = "; ".join(f"{v.name}: {', '.join(v.join_keys)}" for v in views)
        raise QueryError(f"the feature views must share their join keys ({described})")
    db = IndexDb(url or settings.index_url(), schema or settings.index_schema())
    catalog = Catalog(db)
    tables = {}
    for v in views:
        try:
            spec = catalog.indexed_spec(v.name)
        except psycopg.errors.UndefinedTable as e:
            raise QueryError(f"no index in schema {db.schema!r} yet") from e
        if spec == {}:  # taken in before the index kept specs: the configured registry's
            configured = load_registry().feature_tables.get(v.name)
            spec = configured.spec() if configured else None
        if spec is None:
            raise QueryError(
                f"feature view {v.name!r} is not indexed: the index has no feature table of "
                "that name (`fes import-feast` writes one per feature view)"
            )
        table = parse_registry(
            {"feature_tables": {v.name: spec}}, source=f"index {db.schema}"
        ).feature_tables[v.name]
        if sorted(table.join_keys) != v.join_keys:
            raise QueryError(
                f"feature view {v.name!r} joins on {', '.join(v.join_keys)} but its index has "
                f"{', '.join(table.join_keys)}"
            )
        indexed = (table.timestamp_column, table.created_timestamp_column)
        if indexed != (v.timestamp_field, v.created_column):
            raise QueryError(
                f"feature view {v.name!r} has timestamp {v.timestamp_field!r} and created "
                f"timestamp {v.created_column!r}, but its index has {indexed[0]!r} and "
                f"{indexed[1]!r}: run `fes import-feast` again"
            )
        tables[v.name] = table
    for v in views:
        v.outputs = [f"{v.name}__{n}" if full_feature_names else n for n in v.features]
    lo, hi, at = to_instant(start, "start"), to_instant(end, "end"), to_instant(as_of, "as_of")

    def compute() -> pa.Table:
        query = EntityQuery(db)
        found = [query.arrow(v.name, lo, hi, latest=latest, as_of=at) for v in views]
        entities = _union(found, keys, latest)
        objects = ObjectStore(settings.object_store_settings())
        columns: dict[str, pa.ChunkedArray] = {}
        for v in views:
            columns.update(_view_columns(v, tables[v.name], entities, catalog, objects, progress))
        for name in outputs:
            entities = entities.append_column(name, columns[name])
        return entities

    return HistoricalFeatures(compute)


def _newest_by_row(entities: pa.Table, newest: pa.Table, keys: list[str]) -> np.ndarray:
    """Per entity row, its id's newest indexed event in the view (microseconds), or -1 when
    the index has no row of that id in the view."""
    numbered = entities.select(keys).append_column(
        "__row", pa.array(np.arange(entities.num_rows, dtype=np.int64))
    )
    joined = numbered.join(newest.select([*keys, "event_timestamp"]), keys, join_type="left outer")
    out = np.full(entities.num_rows, -1, dtype=np.int64)
    found = joined.filter(pc.is_valid(joined.column("event_timestamp")))
    ts = found.column("event_timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    out[found.column("__row").to_numpy()] = ts.to_numpy()
    return out


def _view_columns(
    v: _View,
    table: Any,
    entities: pa.Table,
    catalog: Catalog,
    objects: ObjectStore,
    progress: Progress | None,
) -> dict[str, pa.ChunkedArray]:
    outputs = dict(zip(v.features, v.outputs, strict=True))
    if not entities.num_rows:
        return {outputs[f]: pa.chunked_array([], v.types[f] or pa.null()) for f in v.features}
    read = FeatureRead(
        table=table,
        features={outputs[f]: v.mapping[f] for f in v.features},
        types={outputs[f]: v.types[f] for f in v.features},
    )
    report = (lambda d, n: progress(v.name, d, n)) if progress else None

    def reader(outside_only: bool):
        def read_rows(ranges: list, key: str, ids: pa.Array) -> pa.Table:
            return read_feature_rows(
                catalog, objects, read, ranges, IdFilter(key, ids), report, outside_only
            )

        return read_rows

    earliest = catalog.earliest_event(v.name)
    # The view's newest indexed event per id is where most entity rows find their match (read
    # with the first look), and an id the index has no row of can only have rows the index
    # does not hold: before the partitions. Both hold only while latest is caught up with the
    # history; otherwise every row looks back span by span.
    known = EntityQuery(catalog.db).latest_if_caught_up(v.name)
    everyone = np.arange(entities.num_rows, dtype=np.int64)
    newest = None if known is None else _newest_by_row(entities, known, v.join_keys)
    indexed = everyone if newest is None else np.flatnonzero(newest >= 0)
    outside = everyone[:0] if newest is None else np.flatnonzero(newest < 0)
    parts: list[tuple[np.ndarray, dict[str, pa.ChunkedArray]]] = []
    if indexed.size:
        found = join_looking_back(
            entities.take(pa.array(indexed)),
            v.join_keys,
            v.ttl,
            earliest,
            reader(False),
            v.outputs,
            None if newest is None else newest[indexed],
        )
        parts.append((indexed, found))
    if outside.size and catalog.has_rows_outside(v.name):
        found = join_looking_back(
            entities.take(pa.array(outside)), v.join_keys, v.ttl, earliest, reader(True), v.outputs
        )
        parts.append((outside, found))
    columns = {}
    for f in v.features:
        name = outputs[f]
        values = [found[name] for _, found in parts]
        typed = v.types[f] or next((c.type for c in values if not pa.types.is_null(c.type)), None)
        # Rows of no part (ids the view has no row of) stay null.
        column = pa.nulls(entities.num_rows, typed or pa.null())
        if parts:
            positions = np.full(entities.num_rows, -1, dtype=np.int64)
            pieces = pa.concat_arrays(
                [c.combine_chunks().cast(typed) if typed else c.combine_chunks() for c in values]
            )
            offset = 0
            for rows, _ in parts:
                positions[rows] = offset + np.arange(rows.size, dtype=np.int64)
                offset += rows.size
            column = pieces.take(pa.array(positions, mask=positions < 0))
        columns[name] = pa.chunked_array([column])
    return columns

"""Entity ids for Feast: `entity_df(...)` gives the DataFrame `get_historical_features`
expects — the join keys and a UTC-aware `event_timestamp`, distinct rows."""

from __future__ import annotations

import atexit
import contextlib
import json
import threading
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from sqlalchemy.engine import make_url

from . import settings
from .clock import parse_instant
from .days import day_start
from .errors import QueryError
from .sql_templates import template
from .storage.database import IndexDb
from .storage.names import EntityNames

if TYPE_CHECKING:
    import pandas as pd

Instant = date | datetime | str | None


def to_instant(value: Instant, what: str) -> datetime | None:
    """A date (midnight UTC), a datetime or an ISO string (naive means UTC), or None."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return parse_instant(value)
        if isinstance(value, datetime):
            return parse_instant(value.isoformat())
        if isinstance(value, date):
            return day_start(value)
    except ValueError as e:
        raise QueryError(f"{what} {value!r} is not a date or ISO timestamp") from e
    raise QueryError(f"{what} {value!r} is not a date or ISO timestamp")


def adbc_uri(url: str) -> str:
    """A libpq URI for ADBC from a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


_CONNECTIONS: dict[str, object] = {}
_LOCK = threading.Lock()


@atexit.register
def _close_connections() -> None:
    # Closed before interpreter shutdown, when the driver can no longer clean up after itself.
    with _LOCK:
        for conn in _CONNECTIONS.values():
            with contextlib.suppress(Exception):
                conn.close()
        _CONNECTIONS.clear()


def _fetch_arrow(uri: str, query: str, params: list) -> pa.Table:
    """Run `query` over ADBC and return Arrow. Connections are kept per URI: opening one costs
    tens of milliseconds, more than a small query."""
    import adbc_driver_postgresql.dbapi as adbc

    with _LOCK:
        for attempt in (1, 2):
            conn = _CONNECTIONS.get(uri)
            if conn is None:
                conn = _CONNECTIONS[uri] = adbc.connect(uri, autocommit=True)
            try:
                with conn.cursor() as cur:
                    cur.execute(query, params)
                    return cur.fetch_arrow_table()
            except adbc.Error:
                # A dropped connection (server restart): reconnect once.
                _CONNECTIONS.pop(uri, None)
                with contextlib.suppress(Exception):
                    conn.close()
                if attempt == 2:
                    raise
    raise AssertionError("unreachable")


def distinct_rows(table: pa.Table) -> pa.Table:
    """Distinct rows, ordered by time then ids: one sort and a comparison of neighbours, a
    third of a hash group-by's time on a day's rows."""
    if table.num_rows < 2:
        return table
    order = [("event_timestamp", "ascending")]
    order += [(c, "ascending") for c in table.column_names if c != "event_timestamp"]
    table = table.take(pc.sort_indices(table, sort_keys=order))
    same = None
    for name in table.column_names:
        column = table.column(name)
        equal = pc.equal(column.slice(1), column.slice(0, len(column) - 1))
        same = equal if same is None else pc.and_(same, equal)
    differs = pc.fill_null(pc.invert(same), True)  # a null is no proof of a duplicate
    keep = pa.concat_arrays([pa.array([True]), differs.combine_chunks()])
    return table.filter(keep)


@dataclass(frozen=True)
class _Lookup:
    table_id: int
    names: EntityNames
    layout: str | None


# Feature table -> storage, per (URI, schema, name): saves a round trip per query. Queries
# made from it are guarded by the layout they were made for (see `guarded` in query.sql).
_LOOKUPS: dict[tuple[str, str, str], _Lookup] = {}
_STATEMENTS: dict[tuple, sql.SQL] = {}


class EntityQuery:
    def __init__(self, db: IndexDb) -> None:
        self.db = db
        self.uri = adbc_uri(db.url)
        self.last_statement: str | None = None  # which query answered last (for tests)

    def _lookup(self, feature_table: str, *, fresh: bool = False) -> _Lookup:
        cache_key = (self.uri, self.db.schema, feature_table)
        if not fresh and cache_key in _LOOKUPS:
            return _LOOKUPS[cache_key]
        t = template(
            "query",
            "feature_table",
            schema=sql.Identifier(self.db.schema),
            feature_table=sql.Literal(feature_table),
        )
        try:
            found = _fetch_arrow(self.uri, t.as_string(None), [])
        except Exception as e:
            if "does not exist" in str(e):
                raise QueryError(f"no index in schema {self.db.schema!r} yet") from e
            raise
        rows = found.to_pylist()
        if not rows or rows[0]["types"] is None:
            raise QueryError(f"unknown feature table {feature_table!r}")
        types = json.loads(rows[0]["types"])
        key = rows[0]["entity_key"]
        found = _Lookup(
            rows[0]["id"], EntityNames.of(self.db.schema, key, types), rows[0]["layout"]
        )
        _LOOKUPS[cache_key] = found
        return found

    def _statement(self, name: str, lookup: _Lookup) -> sql.SQL:
        """The query with identifiers filled and value slots left open; kept per lookup, since
        composing it costs as much as a small query's planning."""
        names = lookup.names
        cache_key = (
            self.db.schema,
            name,
            lookup.table_id,
            lookup.layout,
            names.key,
            *names.join_keys,
        )
        found = _STATEMENTS.get(cache_key)
        if found is None:
            parts = names.parts()
            parts["ids"] = parts["id_list"]
            # Identifiers match NAME_RE, so the text holds no braces but the slots.
            slots = {k: sql.SQL("{" + k + "}") for k in ("start", "end", "as_of", "layout")}
            query = template("query", name, **parts, table_id=sql.Literal(lookup.table_id), **slots)
            if lookup.layout is not None:
                query = template(
                    "query",
                    "guarded",
                    query=query,
                    schema=sql.Identifier(self.db.schema),
                    layout=slots["layout"],
                )
            found = _STATEMENTS[cache_key] = sql.SQL(query.as_string(None))
        return found

    def _run(self, name: str, lookup: _Lookup, values: dict[str, object]) -> pa.Table:
        bound = {k: sql.Literal(v) for k, v in {**values, "layout": lookup.layout}.items()}
        query = self._statement(name, lookup).format(**bound).as_string(None)
        return _fetch_arrow(self.uri, query, [])

    def _latest_answers(self, lookup: _Lookup, values: dict[str, object]) -> bool:
        """Whether latest answers an unbounded as_of exactly (see `as_of_latest_exact`)."""
        try:
            found = self._run("as_of_latest_exact", lookup, values).to_pylist()
        except Exception as e:
            if "does not exist" in str(e):
                return False  # the storage went since the lookup: the history query looks again
            raise
        return bool(found and found[0]["exact"])

    def latest_if_caught_up(self, feature_table: str) -> pa.Table | None:
        """Each id's newest row, as `latest=True` gives them, when latest is caught up with
        the history; None while changes wait for it (or the storage moved since the lookup)."""
        lookup = self._lookup(feature_table)
        try:
            table = self._run(
                "latest_if_caught_up", lookup, {"start": None, "end": None, "as_of": None}
            )
        except Exception as e:
            if "does not exist" in str(e):
                return None
            raise
        if not table.num_rows or not table.column("caught_up")[0].as_py():
            return None
        found = pc.is_valid(table.column("event_timestamp"))
        return table.filter(found).drop_columns(["caught_up"])

    def arrow(
        self,
        feature_table: str,
        start: Instant = None,
        end: Instant = None,
        *,
        latest: bool = False,
        as_of: Instant = None,
    ) -> pa.Table:
        if latest and as_of is not None:
            raise QueryError("latest and as_of cannot be combined")
        lo, hi = to_instant(start, "start"), to_instant(end, "end")
        at = to_instant(as_of, "as_of")
        if lo is not None and hi is not None and hi <= lo:
            raise QueryError(f"end {hi.isoformat()} is not after start {lo.isoformat()}")
        if at is not None:
            name = "as_of"
        elif latest:
            name = "latest_all" if lo is None and hi is None else "latest_window"
        else:
            name = "window"
        values = {"start": lo, "end": hi, "as_of": at}
        lookup = self._lookup(feature_table)
        if name == "as_of" and lo is None and hi is None and self._latest_answers(lookup, values):
            # Every id once, from latest: no day partition is read (or locked) at all.
            name = "as_of_latest"
        table: pa.Table | None = None
        try:
            table = self._run(name, lookup, values)
        except Exception as e:
            if "does not exist" not in str(e):
                raise  # otherwise the storage went since the lookup: look again below
        if table is None or not table.num_rows:
            # Empty may mean the lookup is stale (the registry changed): look again.
            again = self._lookup(feature_table, fresh=True)
            if table is None or again != lookup:
                name = "as_of" if name == "as_of_latest" else name  # checked for the old one
                table = self._run(name, again, values)
        self.last_statement = name
        if name == "window":
            table = distinct_rows(table)
        ts = table.column("event_timestamp").cast(pa.timestamp("us", tz="UTC"))
        return table.set_column(
            table.schema.get_field_index("event_timestamp"), "event_timestamp", ts
        )


def entity_df(
    feature_table: str,
    start: Instant = None,
    end: Instant = None,
    *,
    latest: bool = False,
    as_of: Instant = None,
    url: str | None = None,
    schema: str | None = None,
) -> pd.DataFrame:
    """Entity ids of `feature_table` as an entity_df for Feast.

    - default: every indexed (ids, event_timestamp) in [start, end) — training sets;
    - `latest=True`: each id's newest event in the window;
    - `as_of=T`: each id seen in [start, min(end, T)) once, with event_timestamp T — batch
      prediction.
    `start` is inclusive, `end` exclusive; dates mean midnight UTC, naive timestamps UTC,
    None is unbounded. The index comes from `url` or FES_PG_URL (schema FES_SCHEMA).
    """
    db = IndexDb(url or settings.index_url(), schema or settings.index_schema())
    table = EntityQuery(db).arrow(feature_table, start, end, latest=latest, as_of=as_of)
    return table.to_pandas()

"""The catalogue of source objects (`files`) and the attempts log (`jobs`): what each object
is, as far as its footer and timestamp column tell, and where its lifecycle stands. The one
owner of `sql/catalogue.sql`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.rows import class_row

from .days import LAST_INSTANT, clamp_range, day_start, days_bounds, partitions_end, span
from .errors import BadObjectError, ObjectChangedError
from .object_store import ObjectInfo, ObjectStore, is_store_error
from .parquet import TS_TYPE, columns_for, read_footer, to_timestamps
from .registry import FeatureTable, Registry
from .storage.database import IndexDb

LIVE = ("pending", "indexed")


@dataclass(kw_only=True)
class FileRow:
    """One (bucket, key, feature table) of `files`, with the columns a query selected."""

    id: int | None = None
    bucket: str = ""
    key: str = ""
    feature_table: str = ""
    feature_table_id: int | None = None
    etag: str | None = None
    size: int | None = None
    status: str | None = None
    error: str | None = None
    generation: int | None = None
    attempt: int | None = None
    validated: bool | None = None
    min_event_timestamp: datetime | None = None
    max_event_timestamp: datetime | None = None
    indexed_min_timestamp: datetime | None = None
    indexed_max_timestamp: datetime | None = None
    applied_generation: int | None = None
    applied_through: datetime | None = None
    recorded_first: date | None = None  # first and last day `file_days` says hold its rows
    recorded_last: date | None = None
    stale_records: bool | None = None  # some day holds rows of another generation
    requested_generation: int | None = None
    requested_attempt: int | None = None
    requested_run_key: str | None = None
    requested_at: datetime | None = None

    @property
    def path(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def is_live(self) -> bool:
        """Its current version is (or is to be) in the index."""
        return self.status in LIVE

    @property
    def current_range(self) -> tuple[datetime | None, datetime | None]:
        """Event timestamps of the current version's rows, if it is live."""
        if not self.is_live:
            return None, None
        return self.min_event_timestamp, self.max_event_timestamp

    @property
    def indexed_range(self) -> tuple[datetime | None, datetime | None]:
        """Event timestamps that rows of any earlier version may still occupy: as the last
        complete run left them, widened by the days recorded since."""
        recorded = (
            (day_start(self.recorded_first), day_start(self.recorded_last) + LAST_INSTANT)
            if self.recorded_first is not None and self.recorded_last is not None
            else (None, None)
        )
        return span((self.indexed_min_timestamp, self.indexed_max_timestamp), recorded) or (
            None,
            None,
        )

    @property
    def is_applied(self) -> bool:
        """The index holds the current generation in every day that was open when it was
        applied, and no other generation's rows anywhere (a failed or deleted one, no rows)."""
        return self.applied_generation == self.generation and self.holds_only_its_rows

    @property
    def holds_only_its_rows(self) -> bool:
        """No day records rows of another generation, nor any row of a version that is not
        live (a file that failed mid-run keeps the rows of the days written before)."""
        return not self.stale_records and (self.is_live or self.recorded_first is None)

    def has_rows_in(self, start: datetime, end: datetime) -> bool:
        """Whether the current version's rows may fall in [start, end)."""
        lo, hi = self.current_range
        return lo is not None and hi is not None and lo < end and hi >= start

    def touches(self, start: datetime, end: datetime) -> bool:
        """Whether rows of this file may fall in [start, end): its current version's (also
        once deleted or failed, as a run may have written them before it ended) or those an
        earlier version left."""
        return any(
            lo is not None and hi is not None and lo < end and hi >= start
            for lo, hi in (
                (self.min_event_timestamp, self.max_event_timestamp),
                self.indexed_range,
            )
        )

    def days_to_apply(self, begin: datetime, end: datetime) -> tuple[date, date] | None:
        """First and last day, within the partitions [begin, end), whose rows change when
        the current version is applied: its current rows' days and those earlier versions
        left; for an applied file, only the days opened since. None when there are none."""
        if self.is_applied:
            lo, hi = self.current_range
            through = self.applied_through
            if lo is None or hi is None or through is None or hi < through:
                return None
            whole = (max(lo, through), hi)
        else:
            whole = span(self.current_range, self.indexed_range)
        clamped = clamp_range(*whole, begin, end) if whole else None
        if clamped is None:
            return None
        return clamped[0].date(), clamped[1].date()


@dataclass
class FileFacts:
    row_count: int | None = None
    min_ts: datetime | None = None
    max_ts: datetime | None = None
    rows_before_start: int = 0
    rows_after_end: int = 0
    has_statistics: bool = True
    error: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "row_count": self.row_count,
            "min_ts": self.min_ts,
            "max_ts": self.max_ts,
            "rows_before_start": self.rows_before_start,
            "rows_after_end": self.rows_after_end,
            "has_statistics": self.has_statistics,
            "status": "failed" if self.error else "pending",
            "error": self.error,
        }


# Above every key: U+10FFFF is the greatest code point, and UTF-8 keeps code-point order.
_ABOVE_ALL = "\U0010ffff" * 4


def prefix_end(prefix: str) -> str:
    """The least string greater, in byte (code point) order, than every key under `prefix`."""
    for i in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[i]) + 1
        if code == 0xD800:
            code = 0xE000  # surrogates are not characters
        if code <= 0x10FFFF:
            return prefix[:i] + chr(code)
    return _ABOVE_ALL


def outside_counts(ts: pa.ChunkedArray, begin: datetime, end: datetime) -> tuple[int, int]:
    """Rows before the first partition and after the last one."""
    before = pc.sum(pc.less(ts, pa.scalar(begin, TS_TYPE))).as_py() or 0
    after = pc.sum(pc.greater_equal(ts, pa.scalar(end, TS_TYPE))).as_py() or 0
    return before, after


def describe(
    store: ObjectStore, obj: ObjectInfo, ft: FeatureTable, begin: datetime, end: datetime
) -> FileFacts:
    """Footer facts of one object version (`obj.etag`) for one feature table: raises
    ObjectChangedError when the object is no longer that version. Reads the timestamp
    column only when statistics are missing or rows fall outside the partitions (to count
    them exactly)."""
    try:
        pf = store.open_parquet(obj.bucket, obj.key, obj.size, etag=obj.etag)
        footer = read_footer(pf, ft)
        facts = FileFacts(row_count=footer.num_rows, has_statistics=footer.has_statistics)
        if footer.num_rows == 0:
            return facts
        if footer.has_statistics:
            facts.min_ts, facts.max_ts = footer.min_ts, footer.max_ts
            if facts.min_ts >= begin and facts.max_ts < end:
                return facts
        column = columns_for(ft)["event_timestamp"]
        ts = to_timestamps(pf.read(columns=[column]).column(0))
        if ts.null_count:
            raise BadObjectError(f"timestamp column {column!r} has {ts.null_count} null value(s)")
        facts.min_ts, facts.max_ts = (v.as_py() for v in pc.min_max(ts).values())
        facts.rows_before_start, facts.rows_after_end = outside_counts(ts, begin, end)
        return facts
    except BadObjectError as e:
        return FileFacts(error=str(e))
    except (pa.ArrowInvalid, OSError) as e:
        if is_store_error(e):
            raise  # an outage or a vanished object is not a fact about the file: retry later
        return FileFacts(error=f"not a readable parquet file: {e}")


def describe_current(
    store: ObjectStore,
    obj: ObjectInfo,
    ft: FeatureTable,
    begin: datetime,
    end: datetime,
    attempts: int = 3,
) -> tuple[ObjectInfo, FileFacts] | None:
    """The object's current version and its facts, read from exactly that version: when it
    changed since it was listed, the version found now. None when it was deleted, or keeps
    changing faster than it can be read: the reconcile pass tries it again, and nothing else
    waits for it."""
    for _ in range(attempts):
        try:
            return obj, describe(store, obj, ft, begin, end)
        except ObjectChangedError:
            found = store.head(obj.bucket, obj.key)
            if found is None:
                return None
            obj = found
    return None


@dataclass(frozen=True)
class IndexLag:
    """Changes catalogued but not yet applied to the index, and the oldest one's wait."""

    seconds: float
    waiting: int
    oldest: datetime | None


@dataclass
class CatalogChanges:
    new: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # path -> reason
    in_flux: list[str] = field(default_factory=list)  # paths deleted or rewritten while read

    @property
    def total(self) -> int:
        return len(self.new) + len(self.changed) + len(self.deleted)


@dataclass(frozen=True)
class IndexedObject:
    bucket: str
    key: str
    etag: str | None
    size: int | None

    @property
    def path(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class Catalog:
    """Reads and writes of `files` and `jobs`; every statement is in `sql/catalogue.sql`."""

    def __init__(self, db: IndexDb, partitions_start: date = date.min) -> None:
        self.db = db
        # Records of days before the partitions (the start moved later) do not count.
        self.partitions_start = partitions_start
        self._fragments = {
            name: db.statement("catalogue", name) for name in ("recorded", "locked_ids")
        }

    def _statement(self, name: str) -> sql.Composed:
        return self.db.statement("catalogue", name, **self._fragments)

    def _rows(self, name: str, params: dict[str, Any] | None = None) -> list[FileRow]:
        with self.db.connect() as conn:
            return self._rows_in(conn, name, params)

    def _rows_in(
        self, conn: psycopg.Connection, name: str, params: dict[str, Any] | None = None
    ) -> list[FileRow]:
        with conn.cursor(row_factory=class_row(FileRow)) as cur:
            return cur.execute(self._statement(name), self._bound(params)).fetchall()

    def _bound(self, params: dict[str, Any] | None) -> dict[str, Any]:
        return {"partitions_begin": self.partitions_start, **(params or {})}

    def _run(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            cur = self._run_in(conn, name, params)
            return cur.fetchall() if cur.description else []

    def _run_in(
        self, conn: psycopg.Connection, name: str, params: dict[str, Any] | None = None
    ) -> psycopg.Cursor:
        return conn.execute(self._statement(name), self._bound(params))

    # --- cataloguing objects --------------------------------------------------------------

    def record_current(
        self,
        store: ObjectStore,
        obj: ObjectInfo,
        ft: FeatureTable,
        partitions: tuple[datetime, datetime],
        changes: CatalogChanges,
        run_id: str | None = None,
    ) -> None:
        """Describe the object as it is now and record that version (a version deleted
        meanwhile is left to the pass that sees it gone)."""
        described = describe_current(store, obj, ft, *partitions)
        if described is None:
            changes.in_flux.append(obj.path)
        else:
            current, facts = described
            self.record(current, ft, facts, changes, run_id)

    def record(
        self,
        obj: ObjectInfo,
        ft: FeatureTable,
        facts: FileFacts,
        changes: CatalogChanges,
        run_id: str | None = None,
    ) -> None:
        params = {
            "bucket": obj.bucket,
            "key": obj.key,
            "feature_table": ft.name,
            "etag": obj.etag,
            "size": obj.size,
            "last_modified": obj.last_modified,
            **facts.params(),
        }
        rows = self._run("insert_file", params)
        if not rows:
            return
        row = rows[0]
        (changes.new if row["generation"] == 1 else changes.changed).append(row["id"])
        if facts.error:
            changes.failed.append(row["id"])
            changes.errors[obj.path] = facts.error
            job = self.start_job(ft, obj.path, run_id, "")
            self.end_job(job, False, facts.error, None)

    def refresh(
        self,
        store: ObjectStore,
        registry: Registry,
        tables: Iterable[FeatureTable],
        now: datetime,
        run_id: str | None = None,
    ) -> CatalogChanges:
        """List every prefix of `tables` and bring the catalogue in line: new and changed
        objects get their footer facts, vanished ones are marked deleted."""
        tables = list(tables)
        names = [t.name for t in tables]
        begin, end = day_start(registry.partitions_start), partitions_end(now)
        known = {
            (r.bucket, r.key, r.feature_table): r
            for r in self._rows("files_of_tables", {"tables": names})
        }
        changes = CatalogChanges()
        seen: set[tuple[str, str, str]] = set()
        sub = Registry(registry.bucket, registry.partitions_start, {t.name: t for t in tables})
        for bucket, prefix in sub.prefixes():
            for page in store.list_objects(bucket, prefix):
                for obj in page:
                    for ft in sub.tables_for(obj.bucket, obj.key):
                        ident = (obj.bucket, obj.key, ft.name)
                        seen.add(ident)
                        row = known.get(ident)
                        if row and row.etag == obj.etag and row.status != "deleted":
                            continue
                        self.record_current(store, obj, ft, (begin, end), changes, run_id)
        self.settle_future_rows(names, end)
        gone = [r.id for ident, r in known.items() if ident not in seen and r.status != "deleted"]
        if gone:
            self.mark_deleted(gone)
            changes.deleted.extend(gone)
        return changes

    def retry_failed(
        self, store: ObjectStore, registry: Registry, keys: list[str], now: datetime
    ) -> CatalogChanges:
        """Catalogue failed files afresh (all, or those with the given object keys)."""
        rows = self._rows("forget_failed_etags", {"keys": keys})
        changes = CatalogChanges()
        begin, end = day_start(registry.partitions_start), partitions_end(now)
        for r in rows:
            ft = registry.feature_tables.get(r.feature_table)
            obj = store.head(r.bucket, r.key)
            if ft is None or obj is None:
                continue  # removed from the registry or the bucket: a later pass settles it
            self.record_current(store, obj, ft, (begin, end), changes)
        return changes

    def known_objects(self, bucket: str, keys: list[str], tables: list[str]) -> list[FileRow]:
        return self._rows("known_objects", {"bucket": bucket, "keys": keys, "tables": tables})

    def known_in_key_range(
        self, bucket: str, prefix: str, tables: list[str], after: str | None, upto: str | None
    ) -> list[FileRow]:
        """Catalogued, undeleted objects under `prefix` with keys in (after, upto]."""
        return self._rows(
            "known_in_key_range",
            {
                "bucket": bucket,
                "tables": tables,
                "prefix": prefix,
                "after": after,
                "upto": upto,
                "lower": prefix,
                "upper": prefix_end(prefix),
            },
        )

    def known_object_rows(self, bucket: str, key: str) -> list[FileRow]:
        return self._rows("known_object_rows", {"bucket": bucket, "key": key})

    def indexed_spec(self, feature_table: str) -> dict[str, Any] | None:
        """The spec the index holds `feature_table` with, or None when it holds no such table."""
        rows = self._run("indexed_spec", {"name": feature_table})
        if not rows:
            return None
        return rows[0]["spec"] or {}

    def files_overlapping(
        self,
        feature_table: str,
        ranges: Sequence[tuple[datetime, datetime]],
        outside_only: bool = False,
    ) -> list[IndexedObject]:
        """Readable files of `feature_table` whose rows may fall in one of `ranges` (both ends
        included); with `outside_only`, only those that may hold rows the index does not."""
        rows = self._run(
            "files_overlapping",
            {
                "table": feature_table,
                "los": [lo for lo, _ in ranges],
                "his": [hi for _, hi in ranges],
                "outside_only": outside_only,
            },
        )
        return [IndexedObject(r["bucket"], r["key"], r["etag"], r["size"]) for r in rows]

    def has_rows_outside(self, feature_table: str) -> bool:
        """Whether files of `feature_table` may hold rows from before the partitions."""
        return bool(self._run("rows_outside", {"table": feature_table})[0]["found"])

    def earliest_event(self, feature_table: str) -> datetime | None:
        rows = self._run("earliest_event", {"table": feature_table})
        return rows[0]["earliest"] if rows else None

    def mark_deleted(self, ids: list[int]) -> None:
        self._run("mark_deleted", {"ids": ids})

    def settle_future_rows(self, tables: list[str], end: datetime) -> None:
        """Rows once dated after the last partition whose days now all exist."""
        self._run("settle_future_rows", {"tables": tables, "partitions_end": end})

    # --- files for runs -------------------------------------------------------------------

    def files_for_day(self, tables: list[str], day: date) -> list[FileRow]:
        start, end = days_bounds(day, day)
        return self._rows("files_for_day", {"tables": tables, "day_start": start, "day_end": end})

    def files_for_objects(self, tables: list[str], objects: Sequence[dict]) -> list[FileRow]:
        """The catalogue rows of `objects` ({bucket, key}) for `tables`."""
        return self._rows(
            "files_for_objects",
            {
                "tables": tables,
                "buckets": [o["bucket"] for o in objects],
                "keys": [o["key"] for o in objects],
            },
        )

    def files_touching(self, tables: list[str], start: datetime, end: datetime) -> dict[int, int]:
        """id -> generation of files whose current or indexed rows may fall in [start, end)."""
        rows = self._run("files_touching", {"tables": tables, "run_start": start, "run_end": end})
        return {r["id"]: r["generation"] for r in rows}

    def mark_failed(self, file: FileRow, error: str) -> None:
        self._run("mark_failed", {"id": file.id, "generation": file.generation, "error": error})

    def mark_validated(self, file: FileRow, facts: FileFacts) -> None:
        self._run(
            "mark_validated",
            {
                "id": file.id,
                "generation": file.generation,
                "row_count": facts.row_count,
                "min_ts": facts.min_ts,
                "max_ts": facts.max_ts,
                "rows_before_start": facts.rows_before_start,
                "rows_after_end": facts.rows_after_end,
            },
        )

    def mark_indexed(self, files: dict[int, int]) -> None:
        """Pending files (id -> generation) whose rows a committed day now holds."""
        ids = sorted(files)
        self._run("mark_indexed", {"ids": ids, "generations": [files[i] for i in ids]})

    # --- within a day's transaction -----------------------------------------------------------

    def lock_files(self, conn: psycopg.Connection, ids: list[int]) -> dict[int, FileRow]:
        """Under a day's lock: the current generation and status of the files `ids`, locked
        (shared) until the day commits, so that none changes meanwhile."""
        return {r.id: r for r in self._rows_in(conn, "lock_files", {"ids": ids})}

    def day_state(
        self, conn: psycopg.Connection, day: date, ids: list[int], tables: list[str]
    ) -> dict[int, FileRow]:
        """Under the day's lock: the current generation and status of the files `ids`, and of
        the files of `tables` whose rows the day holds or whose live rows overlap it."""
        start, end = days_bounds(day, day)
        rows = self._rows_in(
            conn,
            "day_state",
            {"ids": ids, "tables": tables, "day": day, "day_start": start, "day_end": end},
        )
        return {r.id: r for r in rows}

    def forget_day_files(self, conn: psycopg.Connection, day: date, ids: list[int]) -> None:
        """The records of `ids` in `day`: their rows there were just removed."""
        if ids:
            self._run_in(conn, "forget_day_files", {"day": day, "ids": ids})

    def forget_day_tables(
        self, conn: psycopg.Connection, day: date, tables: list[str], kept: list[int]
    ) -> None:
        """The records in `day` of every file of `tables` but `kept` (a rebuild)."""
        self._run_in(conn, "forget_day_tables", {"day": day, "tables": tables, "kept": kept})

    def record_day_files(
        self, conn: psycopg.Connection, day: date, counts: dict[int, tuple[int, int]]
    ) -> None:
        """`day` holds rows of these files: file id -> (generation, rows)."""
        if counts:
            ids = list(counts)
            self._run_in(
                conn,
                "record_day_files",
                {
                    "day": day,
                    "ids": ids,
                    "generations": [counts[i][0] for i in ids],
                    "counts": [counts[i][1] for i in ids],
                },
            )

    def record_applied(
        self,
        seen: dict[int, int],
        run_days: tuple[date, date],
        begin: datetime,
        end: datetime,
    ) -> int:
        """After a run over `run_days` (both included) that handled the files `seen`
        (id -> generation it read): a file whose every affected day lay in the run now has its
        generation applied; the others widen their indexed range. Returns files applied."""
        if not seen:
            return 0
        run_start, run_end = days_bounds(*run_days)
        ids, gens, covered, los, his = [], [], [], [], []
        for r in self._rows("applied_state", {"ids": list(seen)}):
            if r.generation != seen[r.id]:
                continue  # superseded while the run read it: the newer version needs a run
            days = r.days_to_apply(begin, end)
            in_run = days is None or (days[0] >= run_days[0] and days[1] <= run_days[1])
            # Rows of another generation still recorded somewhere (a run racing this one
            # wrote them after its days): not applied, so the planner asks for them again.
            whole = in_run and r.holds_only_its_rows
            current = r.current_range
            if whole:
                lo, hi = current
            else:
                in_run = clamp_range(*current, run_start, run_end) if current[0] else None
                lo, hi = span(r.indexed_range, in_run or (None, None)) or (None, None)
            ids.append(r.id)
            gens.append(r.generation)
            covered.append(whole)
            los.append(lo)
            his.append(hi)
        self._run(
            "set_applied",
            {
                "ids": ids,
                "generations": gens,
                "covered": covered,
                "lo": los,
                "hi": his,
                "partitions_end": end,
            },
        )
        return sum(covered)

    def failed_files(self, tables: list[str]) -> list[FileRow]:
        return self._rows("failed_files", {"tables": tables})

    # --- the sensor's requests --------------------------------------------------------------

    def unapplied(self, tables: list[str], limit: int, end: datetime) -> list[FileRow]:
        """Files whose current generation the index does not hold yet, and applied files
        with rows in days opened since (the partitions now end at `end`), oldest rows first."""
        return self._rows("unapplied", {"tables": tables, "limit": limit, "partitions_end": end})

    def settle_without_rows(self, files: Sequence[FileRow], end: datetime) -> None:
        """Files with nothing to add or remove in any partition: applied as they are."""
        self._run(
            "settle_without_rows",
            {
                "ids": [f.id for f in files],
                "generations": [f.generation for f in files],
                "partitions_end": end,
            },
        )

    def mark_requested(self, files: Sequence[tuple[int, int]], run_key: str) -> None:
        """(id, generation) of the files a run was requested for, under `run_key`."""
        self._run(
            "mark_requested",
            {
                "ids": [f[0] for f in files],
                "generations": [f[1] for f in files],
                "run_key": run_key,
            },
        )

    def next_attempt(self, ids: list[int]) -> None:
        self._run("next_attempt", {"ids": ids})

    # --- status -----------------------------------------------------------------------------

    def status_by_table(self) -> list[dict[str, Any]]:
        return self._run("status_by_table")

    def lagging_files(self, limit: int) -> list[FileRow]:
        return self._rows("lagging_files", {"limit": limit})

    def lag_by_table(self, now: datetime) -> dict[str, IndexLag]:
        """Feature tables with changes catalogued but not applied (or rows in a day opened
        since): how many, and how long the oldest has waited."""
        rows = self._run("oldest_unapplied", {"partitions_end": partitions_end(now), "now": now})
        return {
            r["feature_table"]: IndexLag(max(0.0, r["waited"]), r["waiting"], r["oldest"])
            for r in rows
        }

    def lag_by_key(self, tables_by_key: dict[str, list[str]], now: datetime) -> dict[str, IndexLag]:
        """`lag_by_table` per entity key (-> its feature tables)."""
        by_table = self.lag_by_table(now)
        lags = {}
        for key, tables in tables_by_key.items():
            mine = [by_table[t] for t in tables if t in by_table]
            lags[key] = IndexLag(
                seconds=max((lag.seconds for lag in mine), default=0.0),
                waiting=sum(lag.waiting for lag in mine),
                oldest=min((lag.oldest for lag in mine if lag.oldest), default=None),
            )
        return lags

    # --- jobs -------------------------------------------------------------------------------

    def start_job(self, ft: FeatureTable, path: str, run_id: str | None, partition: str) -> int:
        rows = self._run(
            "start_job",
            {
                "entity_names": ft.join_keys,
                "feature_table": ft.name,
                "path": path,
                "run_id": run_id,
                "partition": partition,
            },
        )
        return rows[0]["id"]

    def end_job(self, job_id: int, ok: bool, msg: str, row_count: int | None) -> None:
        self._run(
            "end_job",
            {
                "id": job_id,
                "status": "success" if ok else "failed",
                "status_msg": msg,
                "row_count": row_count,
            },
        )

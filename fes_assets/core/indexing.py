"""Indexing runs: bring days of one entity key in line with the catalogue, one transaction
per day, reading each object's id and timestamp columns once per run where memory allows."""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime

import pyarrow as pa
import pyarrow.compute as pc

from . import clock, pause_points
from .catalogue import Catalog, CatalogChanges, FileFacts, FileRow, outside_counts
from .clock import FUTURE_TOLERANCE
from .days import day_bounds, day_number, day_numbers, day_start, days_bounds, partitions_end
from .errors import BadObjectError, FesError, ObjectChangedError
from .latest_candidates import NewestRows, path_ranks
from .object_store import ObjectStore, is_store_error
from .parquet import ARROW_TYPES, TS_TYPE, iter_row_groups, read_footer
from .registry import FeatureTable, Registry
from .storage.database import IndexDb
from .storage.day_writes import (
    DayRows,
    day_transaction,
    ensure_partition,
    order_day,
    replace_day,
    rows_per_file,
    summarize_day,
    without_files,
    write_markers,
)
from .storage.latest import catch_up_latest
from .storage.names import EntityNames
from .storage.schema import ensure_schema
from .storage.trail import TrailMemory, trail_epoch

CACHE_BYTES = 128 * 2**20
# Called after each day a run commits, with (entity key, day, rows): a command line's progress
# bar listens here when it runs materializations in its own process.
PROGRESS_HOOKS: list[Callable[[str, date, int], None]] = []


@dataclass
class FileRead:
    """What a run saw in one object: the checks' evidence."""

    path: str
    feature_table: str
    rows: int = 0
    max_event: datetime | None = None
    max_created: datetime | None = None
    null_created: int = 0
    created_expected: bool = False


@dataclass
class RunReport:
    rows_per_day: dict[date, int] = field(default_factory=dict)
    files: dict[int, FileRead] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why (object in flux)
    skipped_ids: set[int] = field(default_factory=set)
    applied: int = 0  # files whose current version is now fully in the index
    catalog: CatalogChanges = field(default_factory=CatalogChanges)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.rows_per_day.values())

    def future_files(self, now: datetime) -> dict[str, str]:
        """Files with an event or created timestamp beyond now + tolerance, or missing
        created timestamps where the registry names a created column."""
        limit = now + FUTURE_TOLERANCE
        bad = {}
        for f in self.files.values():
            reasons = []
            if f.max_event and f.max_event > limit:
                reasons.append(f"event_timestamp up to {f.max_event.isoformat()}")
            if f.max_created and f.max_created > limit:
                reasons.append(f"created_timestamp up to {f.max_created.isoformat()}")
            if f.created_expected and f.null_created:
                reasons.append(f"{f.null_created} row(s) without created_timestamp")
            if reasons:
                bad[f.path] = "; ".join(reasons)
        return bad


@dataclass
class _Prepared:
    day: date
    day_rows: DayRows
    read: dict[int, int]  # id -> generation of the files whose rows for the day were read
    touched: list[FileRow]  # change lists: files whose rows in the day are replaced


def _unchanged(row: FileRow, generation: int) -> bool:
    return row.generation == generation and row.is_live


class _Unreadable(FesError):
    """This file cannot be read in this run; the reason is already recorded."""


# A line per day flooded the run's event log over years of days: a line at most this often.
PROGRESS_SECONDS = 2.0


class _Every:
    """Says when `seconds` have passed since it last said so (and the first time)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: float | None = None

    def due(self, force: bool = False) -> bool:
        now = _time.monotonic()
        if force or self._last is None or now - self._last >= self.seconds:
            self._last = now
            return True
        return False


class EntityIndexer:
    """Indexes days of one entity key. No Dagster here: callers pass a logger."""

    def __init__(
        self,
        store: ObjectStore,
        db: IndexDb,
        registry: Registry,
        key: str,
        *,
        run_id: str | None = None,
        log: Callable[[str], None] = print,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.store, self.db, self.registry, self.key = store, db, registry, key
        self.tables: list[FeatureTable] = registry.by_entity_key()[key]
        self.names: EntityNames = db.names(registry, key)
        self.catalog = Catalog(db, registry.partitions_start)
        self.run_id = run_id
        self.log = log
        self.cache_bytes = cache_bytes
        self._cache: dict[int, dict] = {}  # file id -> {days, covered, complete}
        self._cached_bytes = 0
        self._jobs: dict[int, int] = {}
        self._table_ids: dict[str, int] = {}

    # --- entry points -----------------------------------------------------------------------

    def run(self, days: list[date], changes: list[dict] | None = None) -> RunReport:
        """Rebuild `days` from the catalogue (after refreshing it), or, with `changes`
        (objects as {bucket, key}), apply just those objects' current state to `days`."""
        started = _time.perf_counter()
        report = RunReport()
        self._cache.clear()
        self._cached_bytes = 0
        days = sorted(set(days))
        self._table_ids = ensure_schema(self.db, self.registry)
        now = clock.now()
        label = days[0].isoformat() if len(days) == 1 else f"{days[0]}...{days[-1]}"
        self._days = days
        self._day_numbers = {day_number(d) for d in days}
        self._label = label
        if changes is None:
            report.catalog = self.catalog.refresh(
                self.store, self.registry, self.tables, now, self.run_id
            )
            report.failed.update(report.catalog.errors)
            self.log(
                f"catalogue: {len(report.catalog.new)} new, {len(report.catalog.changed)} "
                f"changed, {len(report.catalog.deleted)} deleted, "
                f"{len(report.catalog.failed)} failed"
            )
            listed = None
            seen = self.catalog.files_touching(
                [t.name for t in self.tables], *days_bounds(days[0], days[-1])
            )
        else:
            listed = self.catalog.files_for_objects([t.name for t in self.tables], changes)
            seen = {f.id: f.generation for f in listed}
        # Newest day first: each id's newest row of the run is then the first one met, and is
        # the only one handed to latest (see `NewestRows`).
        order = self._order = days[::-1]
        self._newest = NewestRows(self.names.join_keys)
        self._trail = TrailMemory(self.names)
        self._markers: list[pa.Table] = []
        progress = _Every(PROGRESS_SECONDS)
        try:
            # One day is read and sorted ahead while the previous one is written.
            with ThreadPoolExecutor(1, thread_name_prefix="fes-read") as reader:
                ahead = reader.submit(self._prepare_day, order[0], listed, report, now)
                for i, day in enumerate(order, 1):
                    t0 = _time.perf_counter()
                    prepared = ahead.result()
                    if i < len(order):
                        ahead = reader.submit(self._prepare_day, order[i], listed, report, now)
                    rows = self._write_day(prepared, listed)
                    report.rows_per_day[day] = rows
                    for hook in PROGRESS_HOOKS:
                        hook(self.key, day, rows)
                    dt = _time.perf_counter() - t0
                    if progress.due(i == len(order)):
                        self.log(
                            f"{self.names.entity_view} {day}: {rows} rows in {dt:.2f}s "
                            f"({rows / dt if dt else 0:,.0f} rows/s) [{i}/{len(days)} days, "
                            f"{sum(report.rows_per_day.values()):,} rows so far]"
                        )
        except BaseException as e:
            self._end_jobs(False, f"run failed: {e}", report)
            raise
        pause_points.pause("run_days_done", key=self.key)
        if self._markers:
            write_markers(self.db, self.names, pa.concat_tables(self._markers))
        self._end_jobs(True, "indexed", report)
        for file_id in report.skipped_ids:
            seen.pop(file_id, None)
        report.applied = self.catalog.record_applied(
            seen,
            (days[0], days[-1]),
            day_start(self.registry.partitions_start),
            partitions_end(now),
        )
        report.seconds = _time.perf_counter() - started
        self.log(
            f"{self.names.entity_view}: {report.rows} rows over {len(days)} day(s) in "
            f"{report.seconds:.1f}s; {len(report.failed)} file(s) failed"
        )
        return report

    def catch_up_latest(self) -> dict[str, int]:
        ensure_schema(self.db, self.registry)
        return catch_up_latest(self.db, self.names, clock.now())

    # --- one day ----------------------------------------------------------------------------

    def _prepare_day(
        self, day: date, listed: list[FileRow] | None, report: RunReport, now: datetime
    ) -> _Prepared | None:
        """Read and encode a day's rows (no writes): runs ahead of the previous day's
        transaction, so reading overlaps writing."""
        start, end = day_bounds(day)
        if listed is None:
            files = self.catalog.files_for_day([t.name for t in self.tables], day)
            touched: list[FileRow] = []
        else:
            touched = [f for f in listed if f.touches(start, end)]
            if not touched:
                return None  # none of the listed objects has or had rows on this day
            files = [f for f in touched if f.has_rows_in(start, end)]
        pieces: list[pa.Table] = []
        read: dict[int, int] = {}
        paths = {f.id: f.path for f in files}
        for f in files:
            try:
                table = self._rows_for_day(f, day, report, now)
            except _Unreadable:
                continue
            read[f.id] = f.generation
            if table.num_rows:
                pieces.append(table)
        rows = pa.concat_tables(pieces) if pieces else self._empty()
        rows = rows.append_column("path_rank", path_ranks(rows.column("file_id"), paths))
        day_rows = order_day(self.names, day, rows, self._newest)
        return _Prepared(day, day_rows, read, touched)

    def _write_day(self, prepared: _Prepared | None, listed: list[FileRow] | None) -> int:
        if prepared is None:
            return 0
        day = prepared.day
        pause_points.pause("day_ready", key=self.key, day=day)
        ensure_partition(self.db, self.names, day)
        with day_transaction(self.db, self.names, day, self.registry) as conn:
            pause_points.pause("day_locked", key=self.key, day=day)
            # All the rows read (a superset of those the day keeps): a trail may name more.
            epoch = trail_epoch(conn, self.names)
            trail_ids = self._trail.new_ids(day, prepared.day_rows.ordered, epoch)
            if listed is None:
                written, day_rows = self._rebuild_day(conn, prepared, trail_ids)
            else:
                written, day_rows = self._apply_changes(conn, prepared, trail_ids)
            counts = rows_per_file(day_rows)
            if day_rows.markers is not None:
                self._markers.append(day_rows.markers)
            self.catalog.record_day_files(
                conn, day, {i: (prepared.read[i], n) for i, n in counts.items()}
            )
            pause_points.pause("day_written", key=self.key, day=day)
        pause_points.pause("day_committed", key=self.key, day=day)
        self._trail.committed(day, trail_ids)
        if day_rows.rows:
            summarize_day(self.db, self.names, day)
        if written:
            self.catalog.mark_indexed({i: prepared.read[i] for i in written})
        return day_rows.rows

    def _rebuild_day(
        self, conn, prepared: _Prepared, trail_ids: pa.Table | None
    ) -> tuple[list[int], DayRows]:
        """Under the day's lock: replace the day's rows of the entity key's feature tables
        with those read, but leave alone the live files this run did not read at their
        current generation (a sensor run indexed or will index them): a rebuild that listed
        the day's files before another run finished cannot remove that run's rows."""
        tables = [t.name for t in self.tables]
        state = self.catalog.day_state(conn, prepared.day, list(prepared.read), tables)
        current = [i for i, g in prepared.read.items() if i in state and _unchanged(state[i], g)]
        # Only what the day writes is locked: a file left alone may change meanwhile (its
        # own run sees to it), and the sensor's cataloguing need not wait on the others.
        locked = self.catalog.lock_files(conn, current)
        state.update(locked)
        written = [i for i in current if i in locked and _unchanged(locked[i], prepared.read[i])]
        kept = sorted(i for i, r in state.items() if r.is_live and i not in written)
        day_rows = without_files(prepared.day_rows, set(prepared.read) - set(written))
        replace_day(
            conn,
            self.names,
            prepared.day,
            day_rows,
            feature_table_ids=[self._table_ids[t] for t in tables],
            keep_file_ids=kept,
            trail_ids=trail_ids,
        )
        self.catalog.forget_day_tables(conn, prepared.day, tables, kept)
        return written, day_rows

    def _apply_changes(
        self, conn, prepared: _Prepared, trail_ids: pa.Table | None
    ) -> tuple[list[int], DayRows]:
        """Under the day's lock: replace the day's rows of the listed files that are still at
        the generation this run read; a file that changed since is left to the run of its new
        generation, which the planner requests."""
        listed = {f.id: f.generation for f in prepared.touched}
        state = self.catalog.lock_files(conn, list(listed))
        current = [i for i, g in listed.items() if i in state and state[i].generation == g]
        written = [i for i in current if i in prepared.read and state[i].is_live]
        day_rows = without_files(prepared.day_rows, set(prepared.read) - set(written))
        replace_day(conn, self.names, prepared.day, day_rows, file_ids=current, trail_ids=trail_ids)
        self.catalog.forget_day_files(conn, prepared.day, current)
        return written, day_rows

    def _empty(self) -> pa.Table:
        fields = [pa.field(k, ARROW_TYPES[self.names.types[k]]) for k in self.names.join_keys]
        fields += [
            pa.field("event_timestamp", TS_TYPE),
            pa.field("created_timestamp", TS_TYPE),
            pa.field("feature_table_id", pa.int16()),
            pa.field("file_id", pa.int64()),
        ]
        return pa.schema(fields).empty_table()

    # --- reading objects --------------------------------------------------------------------

    def _ft(self, name: str) -> FeatureTable:
        return next(t for t in self.tables if t.name == name)

    def _rows_for_day(self, f: FileRow, day: date, report: RunReport, now: datetime) -> pa.Table:
        day_no = day_number(day)
        cached = self._cache.get(f.id)
        if cached is None or not (cached["complete"] or day_no in cached["covered"]):
            self._load(f, day, report, now)
            cached = self._cache[f.id]
        table = cached["days"].pop(day_no, None)
        if table is None:
            return self._empty()
        self._cached_bytes -= table.nbytes
        return self._tag(table, f)  # tagged only now: the cache holds ids and times alone

    def _open(self, f: FileRow):
        ft = self._ft(f.feature_table)
        pf = self.store.open_parquet(f.bucket, f.key, f.size)
        return ft, pf, read_footer(pf, ft)

    def _fail(self, f: FileRow, reason: str, report: RunReport) -> None:
        report.failed[f.path] = reason
        self.catalog.mark_failed(f, reason)
        self._end_job(f, False, reason, None)
        self.log(f"failed: {f.path} ({f.feature_table}): {reason}")

    def _start_job(self, f: FileRow) -> None:
        if f.id not in self._jobs:
            self._jobs[f.id] = self.catalog.start_job(
                self._ft(f.feature_table), f.path, self.run_id, self._label
            )

    def _end_job(self, f: FileRow, ok: bool, msg: str, rows: int | None) -> None:
        job = self._jobs.pop(f.id, None)
        if job is not None:
            self.catalog.end_job(job, ok, msg, rows)

    def _end_jobs(self, ok: bool, msg: str, report: RunReport) -> None:
        for file_id, job in list(self._jobs.items()):
            read = report.files.get(file_id)
            try:
                self.catalog.end_job(job, ok, msg, read.rows if read else None)
            except Exception:  # the database may be the reason the run failed
                if ok:
                    raise
        self._jobs.clear()

    def _window(self, day: date, per_day_bytes: float) -> list[date]:
        """The run's days from `day` on, in processing order, whose rows (as estimated from
        the footer) fit the cache's free room: one read serves them all."""
        free = max(self.cache_bytes - self._cached_bytes, 0)
        k = max(1, int(free // max(per_day_bytes, 1.0)))
        i = self._order.index(day)
        return self._order[i : i + k]

    def _load(self, f: FileRow, day: date, report: RunReport, now: datetime) -> None:
        """Read the object's rows for as many of the run's days as the cache holds, from
        `day` on (validating the whole object once per generation), kept per day. An object
        larger than the cache is read once per window of days, not once per day."""
        self._start_job(f)
        ft = self._ft(f.feature_table)
        path = f.path
        read = report.files.setdefault(
            f.id,
            FileRead(
                path=path, feature_table=ft.name, created_expected=bool(ft.created_timestamp_column)
            ),
        )
        run_start, run_end = days_bounds(self._days[0], self._days[-1])
        try:
            _, pf, footer = self._open(f)
            overlapping = sum(
                rg.num_rows for rg in footer.row_groups if rg.overlaps(run_start, run_end)
            )
            row_bytes = 24 + 8 * len(ft.join_keys)
            complete = overlapping * row_bytes + self._cached_bytes <= self.cache_bytes
            window = (
                self._order
                if complete
                else self._window(day, overlapping * row_bytes / len(self._days))
            )
            start, end = days_bounds(min(window), max(window))
            pieces: dict[int, list[pa.Table]] = {}
            if not f.validated:
                facts = FileFacts(row_count=footer.num_rows)
                begin = day_start(self.registry.partitions_start)
                last = partitions_end(now)
                for table in iter_row_groups(pf, ft, footer):
                    ts = table.column("event_timestamp")
                    if table.num_rows:
                        lo, hi = (v.as_py() for v in pc.min_max(ts).values())
                        facts.min_ts = lo if facts.min_ts is None else min(facts.min_ts, lo)
                        facts.max_ts = hi if facts.max_ts is None else max(facts.max_ts, hi)
                        b, a = outside_counts(ts, begin, last)
                        facts.rows_before_start += b
                        facts.rows_after_end += a
                    self._split(table, pieces, start, end)
                self.store.ensure_unchanged(f.bucket, f.key, f.etag)
                self.catalog.mark_validated(f, facts)
                f.validated = True
                read.max_event = facts.max_ts
            else:
                for table in iter_row_groups(pf, ft, footer, start, end):
                    self._split(table, pieces, start, end)
                self.store.ensure_unchanged(f.bucket, f.key, f.etag)
                read.max_event = read.max_event or footer.max_ts
            if read.max_event is None:
                read.max_event = f.max_event_timestamp
        except BadObjectError as e:
            self._fail(f, str(e), report)
            raise _Unreadable from e
        except ObjectChangedError as e:
            report.skipped[path] = str(e)
            report.skipped_ids.add(f.id)
            self._end_job(f, False, f"{e}; the next run applies the new version", None)
            self.log(f"skipped: {e}")
            raise _Unreadable from e
        except (pa.ArrowInvalid, OSError) as e:
            if "NoSuchKey" in str(e) or "Path does not exist" in str(e):
                report.skipped[path] = "deleted while being read"
                report.skipped_ids.add(f.id)
                self._end_job(f, False, "deleted while being read", None)
                raise _Unreadable from e
            if is_store_error(e):
                raise  # the store is failing, not the file: the run fails and is retried
            self._fail(f, f"not a readable parquet file: {e}", report)
            raise _Unreadable from e
        # The window is a run of consecutive days of the run, so its bounds say which days it
        # covers: a set of day numbers per file grew with the run's length (years of days).
        covered = range(day_number(min(window)), day_number(max(window)) + 1)
        days: dict[int, pa.Table] = {}
        for day_no, day_pieces in pieces.items():
            if day_no not in covered or day_no not in self._day_numbers:
                continue  # inside the window's span but not a day of this run
            t = pa.concat_tables(day_pieces)
            self._note(read, t)
            days[day_no] = t
            self._cached_bytes += t.nbytes
        self._cache[f.id] = {"days": days, "covered": covered, "complete": complete}

    def _split(self, table: pa.Table, cached: dict, start: datetime, end: datetime) -> None:
        ts = table.column("event_timestamp")
        inside = pc.and_(
            pc.greater_equal(ts, pa.scalar(start, TS_TYPE)), pc.less(ts, pa.scalar(end, TS_TYPE))
        )
        table = table.filter(inside)
        if not table.num_rows:
            return
        day_no = day_numbers(table.column("event_timestamp"))
        for d in pc.unique(day_no).to_pylist():
            cached.setdefault(d, []).append(table.filter(pc.equal(day_no, d)))

    def _tag(self, table: pa.Table, f: FileRow) -> pa.Table:
        n = table.num_rows
        return table.append_column(
            "feature_table_id", pa.repeat(pa.scalar(f.feature_table_id, pa.int16()), n)
        ).append_column("file_id", pa.repeat(pa.scalar(f.id, pa.int64()), n))

    @staticmethod
    def _note(read: FileRead, table: pa.Table) -> None:
        read.rows += table.num_rows
        if not table.num_rows:
            return
        created = table.column("created_timestamp")
        read.null_created += created.null_count
        hi = pc.max(created).as_py()
        if hi is not None:
            read.max_created = hi if read.max_created is None else max(read.max_created, hi)

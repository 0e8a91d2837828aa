"""Finding bucket changes and cataloguing them, with a cursor that keeps a tick's cost in line
with what is new: a steady listing after the last key seen per prefix, a full reconcile pass
(overwrites, deletes, out-of-order keys) spread over ticks, MinIO's notification table, or S3
event notifications in an SQS queue."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from urllib.parse import unquote_plus

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql
from psycopg.rows import dict_row

from . import pause_points
from .catalogue import Catalog, CatalogChanges
from .days import day_start, partitions_end
from .errors import FesError
from .event_queue import EventQueue, QueueMessage
from .object_store import ObjectInfo, ObjectStore, is_store_error
from .registry import FeatureTable, Registry
from .sql_templates import template
from .storage.database import IndexDb, conninfo
from .storage.schema import ensure_schema

# Pages of the newest Hive-style folder listed again each tick.
HIVE_PAGES = 5


def hive_folder(prefix: str, key: str | None) -> str | None:
    """The folder of `key` up to its last Hive-style segment (`name=value/`) below
    `prefix`, or None when its path has none."""
    if not key or not key.startswith(prefix):
        return None
    segments = key[len(prefix) :].split("/")[:-1]
    last = max((i for i, part in enumerate(segments) if "=" in part), default=None)
    if last is None:
        return None
    return prefix + "".join(f"{part}/" for part in segments[: last + 1])


# Events of the look-back window remembered in the cursor; beyond this (a burst), the oldest
# are read again, which is harmless (each event only says where to look).
MAX_SEEN_EVENTS = 5000


@dataclass
class ScanCursor:
    after: dict[str, str] = field(default_factory=dict)  # "bucket/prefix" -> last key seen
    reconcile: dict | None = None  # {"prefix": i, "after": key | None} while a pass runs
    last_reconcile: float = 0.0  # epoch seconds when the last pass started
    today: str | None = None  # the UTC day of the last tick
    events: list | None = None  # [event_time, sequencer] of the newest event read
    events_seen: list = field(default_factory=list)  # [time, sequencer] read in the window
    tables: dict[str, str] = field(default_factory=dict)  # feature table -> digest of spec
    lag_reported: dict[str, list] = field(default_factory=dict)  # key -> [passed, epoch s]

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> ScanCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ScanSettings:
    max_objects: int = 1000  # objects catalogued (footers read) per tick
    reconcile_interval: float = 600.0  # seconds between full passes; 0 = every tick
    page_size: int = 1000
    time_budget: float = 40.0  # seconds of a tick; Dagster stops a tick at 60
    events_table: str | None = None  # MinIO's `schema.table` (format access) = event mode
    events_url: str | None = None
    events_lookback: float = 600.0  # seconds of events read again for late commits
    sqs_queue_url: str | None = None  # S3 event notifications in this queue = SQS event mode
    sqs_endpoint_url: str | None = None
    sqs_wait_seconds: int = 1  # the first receive of a tick long-polls this long


@dataclass
class ScanResult:
    cursor: ScanCursor
    changes: CatalogChanges
    listed: int = 0
    catalogued: int = 0
    events: int = 0
    new_day: bool = False
    reconcile: str = "idle"  # idle | running | finished
    backlog: bool = False  # the budget ran out: more waits in the cursor


class _Budget(FesError):
    """The tick's object or time budget is spent."""


class BucketScanner:
    def __init__(
        self, store: ObjectStore, db: IndexDb, registry: Registry, settings: ScanSettings
    ) -> None:
        self.store, self.db, self.registry, self.settings = store, db, registry, settings
        self.catalog = Catalog(db, registry.partitions_start)

    def scan(self, cursor: ScanCursor, now: datetime) -> ScanResult:
        """One tick. Raises on infrastructure errors, leaving the caller's cursor untouched;
        objects catalogued before the error stay catalogued, so nothing is lost or doubled."""
        ensure_schema(self.db, self.registry)
        cursor = ScanCursor.loads(cursor.dumps())  # work on a copy
        result = ScanResult(cursor=cursor, changes=CatalogChanges())
        self._begin = day_start(self.registry.partitions_start)
        self._end = partitions_end(now)
        self._deadline = time.monotonic() + self.settings.time_budget
        self._left = self.settings.max_objects
        self._progress = 0
        today = now.date().isoformat()
        if cursor.today is not None and cursor.today != today:
            result.new_day = True
            # Files with rows in the day that opened are found by the planner (each file knows
            # the partition end it was applied through); only the counts are settled here.
            self.catalog.settle_future_rows(self._all_tables(), self._end)
        cursor.today = today
        self._relist_changed_tables(cursor)
        due = time.time() - cursor.last_reconcile >= self.settings.reconcile_interval
        reconciling = cursor.reconcile is not None or due
        try:
            if self.settings.sqs_queue_url:
                # A queue that never empties must not starve the reconcile pass, which heals
                # what notifications missed and lists new tables: it keeps half the tick.
                share, now_mono = (0.5 if reconciling else 1.0), time.monotonic()
                self._read_queue(
                    result,
                    now_mono + share * max(0.0, self._deadline - now_mono),
                    keep_objects=int(self.settings.max_objects * (1 - share)),
                )
            elif self.settings.events_table:
                self._read_events(cursor, result)
            else:
                self._steady(cursor, result)
        except _Budget:
            result.backlog = True
        try:
            if reconciling and not (result.backlog and not self.settings.sqs_queue_url):
                self._reconcile(cursor, result)
        except _Budget:
            result.backlog = True
        return result

    # --- helpers ----------------------------------------------------------------------------

    def _relist_changed_tables(self, cursor: ScanCursor) -> None:
        """A table added to the registry or changed in it is listed from the start of its
        prefix: another table may share the prefix, so the steady cursor is already past
        its objects (the schema has made a changed table's files due for describing)."""
        digests = {
            name: hashlib.sha1(json.dumps(ft.spec(), sort_keys=True).encode()).hexdigest()[:16]
            for name, ft in self.registry.feature_tables.items()
        }
        changed = [
            ft
            for name, ft in self.registry.feature_tables.items()
            if cursor.tables and cursor.tables.get(name) != digests[name]
        ]
        for bucket, prefix in self.registry.prefixes():
            if any(ft.bucket == bucket and ft.prefix.startswith(prefix) for ft in changed):
                cursor.after.pop(f"{bucket}/{prefix}", None)
        if changed:
            # Event mode never lists: a reconcile pass (due at once) describes their files.
            cursor.last_reconcile = 0.0
        cursor.tables = digests

    def _all_tables(self) -> list[str]:
        return list(self.registry.feature_tables)

    def _tables_under(self, bucket: str, prefix: str) -> list[FeatureTable]:
        return [
            t
            for t in self.registry.feature_tables.values()
            if t.bucket == bucket and t.prefix.startswith(prefix)
        ]

    def _spend(self) -> None:
        if self._left <= 0 or self._out_of_time():
            raise _Budget

    def _out_of_time(self) -> bool:
        # Past the deadline, but never before the tick did something: every tick progresses.
        return self._progress > 0 and time.monotonic() > self._deadline

    def _catalogue(
        self,
        objs: list[ObjectInfo],
        result: ScanResult,
        done: Callable[[ObjectInfo], None] | None = None,
    ) -> None:
        """Footer facts for the objects that are new or whose ETag changed; `done` hears of
        each object once it is catalogued, in order."""
        if not objs:
            return
        bucket = objs[0].bucket
        tables = [t.name for t in self.registry.feature_tables.values() if t.bucket == bucket]
        known = {
            (r.key, r.feature_table): r
            for r in self.catalog.known_objects(bucket, [o.key for o in objs], tables)
        }
        for obj in objs:
            for ft in self.registry.tables_for(obj.bucket, obj.key):
                row = known.get((obj.key, ft.name))
                if row and row.etag == obj.etag and row.status != "deleted":
                    continue
                self._spend()
                pause_points.pause("object_listed", key=obj.key)
                self.catalog.record_current(
                    self.store, obj, ft, (self._begin, self._end), result.changes
                )
                self._left -= 1
                result.catalogued += 1
            if done is not None:
                done(obj)
            self._progress += 1

    # --- steady listing ---------------------------------------------------------------------

    def _steady(self, cursor: ScanCursor, result: ScanResult) -> None:
        for bucket, prefix in self.registry.prefixes():
            ident = f"{bucket}/{prefix}"
            pages = self.store.list_objects(
                bucket,
                prefix,
                start_after=cursor.after.get(ident),
                page_size=min(self.settings.page_size, max(self._left, 1)),
            )
            for page in pages:
                result.listed += len(page)

                def advance(obj: ObjectInfo, ident: str = ident) -> None:
                    # Per object, so the cursor never passes an uncatalogued key.
                    cursor.after[ident] = obj.key

                self._catalogue(page, result, advance)
                if self._left <= 0 or self._out_of_time():
                    raise _Budget  # the cursor keeps the place: the next tick goes on
            self._recent_folder(cursor, bucket, prefix, result)

    def _recent_folder(
        self, cursor: ScanCursor, bucket: str, prefix: str, result: ScanResult
    ) -> None:
        """Objects of the Hive-style folder the listing reached last (`date=…/`, or
        `event_date=…/hour=…/`): files written there with names that sort before the cursor
        (Spark's `part-<uuid>`, a late hour) are found by this tick, not by the next
        reconcile pass. Its first `HIVE_PAGES` pages, each a LIST and a catalogue lookup."""
        folder = hive_folder(prefix, cursor.after.get(f"{bucket}/{prefix}"))
        if folder is None:
            return
        for n, page in enumerate(self.store.list_objects(bucket, folder), 1):
            result.listed += len(page)
            self._catalogue(page, result)
            if n >= HIVE_PAGES or self._left <= 0 or self._out_of_time():
                return

    # --- reconcile pass ---------------------------------------------------------------------

    def _reconcile(self, cursor: ScanCursor, result: ScanResult) -> None:
        if cursor.reconcile is None:
            cursor.reconcile = {"prefix": 0, "after": None, "started": time.time()}
        result.reconcile = "running"
        prefixes = self.registry.prefixes()
        state = cursor.reconcile
        while state["prefix"] < len(prefixes):
            bucket, prefix = prefixes[state["prefix"]]
            tables = [t.name for t in self._tables_under(bucket, prefix)]
            for page in self.store.list_objects(
                bucket, prefix, start_after=state["after"], page_size=self.settings.page_size
            ):
                result.listed += len(page)
                self._catalogue(page, result)
                last = page[-1].key if page else None
                self._mark_gone(bucket, prefix, tables, state["after"], last, page, result)
                if last is not None:
                    state["after"] = last
                self._progress += 1
                if self._out_of_time():
                    raise _Budget
            # The listing ended: whatever the catalogue holds beyond it is gone too.
            self._mark_gone(bucket, prefix, tables, state["after"], None, [], result)
            state["prefix"] += 1
            state["after"] = None
        cursor.last_reconcile = state["started"]
        cursor.reconcile = None
        result.reconcile = "finished"

    def _mark_gone(
        self,
        bucket: str,
        prefix: str,
        tables: list[str],
        after: str | None,
        upto: str | None,
        page: list[ObjectInfo],
        result: ScanResult,
    ) -> None:
        if upto is None and page:
            return
        present = {o.key for o in page}
        known = self.catalog.known_in_key_range(bucket, prefix, tables, after, upto)
        gone = [r.id for r in known if r.key not in present]
        if gone:
            self.catalog.mark_deleted(gone)
        result.changes.deleted.extend(gone)

    # --- S3 event notifications in SQS ------------------------------------------------------

    def _read_queue(self, result: ScanResult, until: float, keep_objects: int = 0) -> None:
        """Apply the queue's messages until it is empty, the clock reaches `until` or the
        objects left to catalogue this tick are down to `keep_objects`. A message is deleted
        once its records are catalogued (a corrupt object is catalogued as failed); messages
        the budget left untouched are made visible again at once. An object-store error on
        one message leaves it to reappear after the visibility timeout while the others go on;
        any other error (the database's) ends the tick, leaving the rest likewise."""
        queue = EventQueue(
            self.store.settings, self.settings.sqs_queue_url, self.settings.sqs_endpoint_url
        )
        wait = self.settings.sqs_wait_seconds
        while True:
            # Checked before receiving too: a message received and released at once counts
            # a receive against it (toward a dead-letter queue's limit) for nothing.
            spent = time.monotonic() > until or self._left <= keep_objects
            if self._progress and (spent or self._out_of_time()):
                raise _Budget
            waiting = queue.receive(wait_seconds=wait)
            wait = 0
            if not waiting:
                return
            done: list[QueueMessage] = []
            try:
                while waiting:
                    spent = time.monotonic() > until or self._left <= keep_objects
                    if self._out_of_time() or (self._progress and spent):
                        raise _Budget
                    message = waiting[0]
                    self._progress += 1
                    if message.unreadable:
                        result.changes.errors[f"SQS message {message.receipt[:16]}…"] = (
                            f"not an S3 event notification: {message.unreadable}; deleted"
                        )
                    try:
                        for record in message.records:
                            self._apply_event(record, result)
                    except (BotoCoreError, ClientError, OSError) as error:
                        if isinstance(error, OSError) and not is_store_error(error):
                            raise
                        result.changes.errors[f"SQS message {message.receipt[:16]}…"] = (
                            f"left in the queue for a later tick: {error}"
                        )
                        waiting.pop(0)
                        continue
                    done.append(waiting.pop(0))
                    result.events += 1
            except _Budget:
                queue.release(waiting)
                raise
            finally:
                queue.delete(done)

    # --- MinIO notification table -----------------------------------------------------------

    def _read_events(self, cursor: ScanCursor, result: ScanResult) -> None:
        schema, _, table = self.settings.events_table.partition(".")
        if not table:
            schema, table = "public", schema
        query = template(
            "events",
            "events_after",
            events_schema=sql.Identifier(schema),
            events_table=sql.Identifier(table),
        )
        lookback = timedelta(seconds=self.settings.events_lookback)
        newest = datetime.fromisoformat(cursor.events[0]) if cursor.events else None
        since = newest - lookback if newest is not None else None
        seen = [(datetime.fromisoformat(t), s) for t, s in cursor.events_seen]
        url = self.settings.events_url or self.db.url
        with psycopg.connect(conninfo(url), row_factory=dict_row, connect_timeout=10) as conn:
            rows = list(
                conn.execute(
                    query,
                    {
                        "since": since,
                        "seen_times": [t for t, _ in seen],
                        "seen_seqs": [s for _, s in seen],
                        "n": self.settings.max_objects,
                    },
                )
            )
        try:
            for row in rows:
                if self._out_of_time():
                    raise _Budget
                for record in row["event_data"].get("Records", []):
                    self._apply_event(record, result)
                # Acknowledged only now that what it reported is catalogued.
                result.events += 1
                self._progress += 1
                seen.append((row["event_time"], row["seq"]))
                if newest is None or row["event_time"] > newest:
                    newest = row["event_time"]
                    cursor.events = [newest.isoformat(), row["seq"]]
        finally:
            if newest is not None:
                horizon = newest - lookback
                recent = sorted((t, s) for t, s in seen if t > horizon)[-MAX_SEEN_EVENTS:]
                cursor.events_seen = [[t.isoformat(), s] for t, s in recent]

    def _apply_event(self, record: dict, result: ScanResult) -> None:
        s3 = record.get("s3")
        s3 = s3 if isinstance(s3, dict) else {}
        bucket = s3.get("bucket") if isinstance(s3.get("bucket"), dict) else {}
        obj = s3.get("object") if isinstance(s3.get("object"), dict) else {}
        bucket, raw_key = bucket.get("name"), obj.get("key")
        if not isinstance(bucket, str) or not bucket or not isinstance(raw_key, str):
            return  # not an object's event: nothing to look at
        key = unquote_plus(raw_key)  # S3 and MinIO escape keys as form values ('+': space)
        if not self.registry.tables_for(bucket, key):
            return
        # The event says where to look; the object's current state is what counts, so a
        # late or repeated event cannot bring an old version back.
        current = self.store.head(bucket, key)
        if current is not None:
            self._catalogue([current], result)
            return
        ids = [r.id for r in self.catalog.known_object_rows(bucket, key)]
        if ids:
            self.catalog.mark_deleted(ids)
        result.changes.deleted.extend(ids)

"""The catalogue of source objects (`files`): what each object is, as far as its footer and
timestamp column tell, and where its lifecycle stands."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from .index import IndexDb
from .objects import ObjectInfo, ObjectStore, is_store_error
from .readers import TS_TYPE, BadObjectError, columns_for, read_footer, to_timestamps
from .registry import FeatureTable, Registry
from .sqlfiles import template


def partitions_end(now: datetime) -> datetime:
    """End of the last daily partition: with end_offset=1, today's partition exists."""
    return datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(), tzinfo=UTC)


def partitions_begin(start: date) -> datetime:
    return datetime.combine(start, time(), tzinfo=UTC)


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


def outside_counts(ts: pa.ChunkedArray, begin: datetime, end: datetime) -> tuple[int, int]:
    """Rows before the first partition and after the last one."""
    before = pc.sum(pc.less(ts, pa.scalar(begin, TS_TYPE))).as_py() or 0
    after = pc.sum(pc.greater_equal(ts, pa.scalar(end, TS_TYPE))).as_py() or 0
    return before, after


def describe(
    store: ObjectStore, obj: ObjectInfo, ft: FeatureTable, begin: datetime, end: datetime
) -> FileFacts:
    """Footer facts of one object for one feature table. Reads the timestamp column only when
    statistics are missing or rows fall outside the partitions (to count them exactly)."""
    try:
        pf = store.open_parquet(obj.bucket, obj.key, obj.size)
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


@dataclass
class CatalogChanges:
    new: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # path -> reason

    @property
    def total(self) -> int:
        return len(self.new) + len(self.changed) + len(self.deleted)


class Catalog:
    def __init__(self, db: IndexDb) -> None:
        self.db = db

    def _t(self, name: str) -> sql.Composed:
        return template("catalog", name, schema=sql.Identifier(self.db.schema))

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
        with self.db.connect() as conn:
            row = conn.execute(self._t("insert_file"), params).fetchone()
        if row is None:
            return
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
        begin, end = partitions_begin(registry.partitions_start), partitions_end(now)
        with self.db.connect() as conn:
            known = {
                (r["bucket"], r["key"], r["feature_table"]): r
                for r in conn.execute(
                    self._t("files_of_tables"), {"tables": [t.name for t in tables]}
                )
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
                        if row and row["etag"] == obj.etag and row["status"] != "deleted":
                            continue
                        self.record(obj, ft, describe(store, obj, ft, begin, end), changes, run_id)
        with self.db.connect() as conn:
            conn.execute(
                self._t("settle_future_rows"),
                {"tables": [t.name for t in tables], "partitions_end": end},
            )
        gone = [
            r["id"] for ident, r in known.items() if ident not in seen and r["status"] != "deleted"
        ]
        if gone:
            with self.db.connect() as conn:
                conn.execute(self._t("mark_deleted"), {"ids": gone})
            changes.deleted.extend(gone)
        return changes

    def files_for_day(self, tables: list[str], day: date) -> list[dict]:
        start = datetime.combine(day, time(), tzinfo=UTC)
        with self.db.connect() as conn:
            return list(
                conn.execute(
                    self._t("files_for_day"),
                    {"tables": tables, "day_start": start, "day_end": start + timedelta(days=1)},
                )
            )

    def files_by_id(self, ids: list[int]) -> list[dict]:
        with self.db.connect() as conn:
            return list(conn.execute(self._t("files_by_id"), {"ids": ids}))

    def mark_failed(self, file: dict, error: str) -> None:
        with self.db.connect() as conn:
            conn.execute(
                self._t("mark_failed"),
                {"id": file["id"], "generation": file["generation"], "error": error},
            )

    def mark_validated(self, file: dict, facts: FileFacts) -> None:
        with self.db.connect() as conn:
            conn.execute(
                self._t("mark_validated"),
                {
                    "id": file["id"],
                    "generation": file["generation"],
                    "row_count": facts.row_count,
                    "min_ts": facts.min_ts,
                    "max_ts": facts.max_ts,
                    "rows_before_start": facts.rows_before_start,
                    "rows_after_end": facts.rows_after_end,
                },
            )

    def mark_indexed(self, conn, ids: list[int]) -> None:
        conn.execute(self._t("mark_indexed"), {"ids": ids})

    def files_touching(self, tables: list[str], start: datetime, end: datetime) -> dict[int, int]:
        """id -> generation of files whose current or indexed rows may fall in [start, end)."""
        with self.db.connect() as conn:
            rows = conn.execute(
                self._t("files_touching"), {"tables": tables, "run_start": start, "run_end": end}
            )
            return {r["id"]: r["generation"] for r in rows}

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
        run_start = datetime.combine(run_days[0], time(), tzinfo=UTC)
        run_end = datetime.combine(run_days[1], time(), tzinfo=UTC) + timedelta(days=1)
        with self.db.connect() as conn:
            rows = list(conn.execute(self._t("applied_state"), {"ids": list(seen)}))
        ids, gens, covered, los, his = [], [], [], [], []
        for r in rows:
            if r["generation"] != seen[r["id"]]:
                continue  # superseded while the run read it: the newer version needs a run
            days = days_to_apply(r, begin, end)
            whole = days is None or (days[0] >= run_days[0] and days[1] <= run_days[1])
            live = r["status"] in ("pending", "indexed")
            current = (r["min_event_timestamp"], r["max_event_timestamp"]) if live else (None, None)
            if whole:
                lo, hi = current
            else:
                in_run = clamp_range(*current, run_start, run_end) if current[0] else None
                lo, hi = span(
                    (r["indexed_min_timestamp"], r["indexed_max_timestamp"]),
                    in_run or (None, None),
                ) or (None, None)
            ids.append(r["id"])
            gens.append(r["generation"])
            covered.append(whole)
            los.append(lo)
            his.append(hi)
        with self.db.connect() as conn:
            conn.execute(
                self._t("set_applied"),
                {"ids": ids, "generations": gens, "covered": covered, "lo": los, "hi": his},
            )
        return sum(covered)

    def retry_failed(
        self, store: ObjectStore, registry: Registry, keys: list[str], now: datetime
    ) -> CatalogChanges:
        """Catalogue failed files afresh (all, or those with the given object keys)."""
        with self.db.connect() as conn:
            rows = list(conn.execute(self._t("forget_failed_etags"), {"keys": keys}))
        changes = CatalogChanges()
        begin, end = partitions_begin(registry.partitions_start), partitions_end(now)
        for r in rows:
            ft = registry.feature_tables.get(r["feature_table"])
            obj = store.head(r["bucket"], r["key"])
            if ft is None or obj is None:
                continue  # removed from the registry or the bucket: a later pass settles it
            self.record(obj, ft, describe(store, obj, ft, begin, end), changes)
        return changes

    def failed_files(self, tables: list[str]) -> list[dict]:
        with self.db.connect() as conn:
            return list(conn.execute(self._t("failed_files"), {"tables": tables}))

    def start_job(self, ft: FeatureTable, path: str, run_id: str | None, partition: str) -> int:
        with self.db.connect() as conn:
            return conn.execute(
                self._t("start_job"),
                {
                    "entity_names": ft.join_keys,
                    "feature_table": ft.name,
                    "path": path,
                    "run_id": run_id,
                    "partition": partition,
                },
            ).fetchone()["id"]

    def end_job(self, job_id: int, ok: bool, msg: str, row_count: int | None) -> None:
        with self.db.connect() as conn:
            conn.execute(
                self._t("end_job"),
                {
                    "id": job_id,
                    "status": "success" if ok else "failed",
                    "status_msg": msg,
                    "row_count": row_count,
                },
            )


def clamp_range(
    lo: datetime | None, hi: datetime | None, begin: datetime, end: datetime
) -> tuple[datetime, datetime] | None:
    """[lo, hi] within the partitions [begin, end), or None when nothing is left."""
    if lo is None or hi is None:
        return None
    lo, hi = max(lo, begin), min(hi, end - timedelta(microseconds=1))
    return (lo, hi) if lo <= hi else None


def span(*ranges: tuple[datetime | None, datetime | None]) -> tuple[datetime, datetime] | None:
    """The smallest range holding every given (lo, hi) that is set."""
    los = [lo for lo, hi in ranges if lo is not None and hi is not None]
    his = [hi for lo, hi in ranges if lo is not None and hi is not None]
    return (min(los), max(his)) if los else None


def days_to_apply(row: dict, begin: datetime, end: datetime) -> tuple[date, date] | None:
    """First and last day whose rows change when a file's current version is applied: the
    days of its current rows (if it is live) and of rows any earlier version left."""
    live = row["status"] in ("pending", "indexed")
    current = (row["min_event_timestamp"], row["max_event_timestamp"]) if live else (None, None)
    whole = span(current, (row["indexed_min_timestamp"], row["indexed_max_timestamp"]))
    clamped = clamp_range(*whole, begin, end) if whole else None
    if clamped is None:
        return None
    return clamped[0].date(), clamped[1].date()

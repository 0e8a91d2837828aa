"""Turning catalogued changes into batches of work: which objects, which days, which run key.

A file needs a run while its current generation is not applied, or while it has rows in days
that opened after it was applied (only those days are requested). It is in flight while the
sensor's request for that generation and attempt stands; a request whose run failed, or
succeeded without applying it, or never started, is followed by the next attempt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from .catalogue import Catalog, FileRow
from .days import day_start, partitions_end
from .registry import Registry
from .storage.database import IndexDb

STALE_REQUEST = timedelta(minutes=10)
MAX_DAY_GAP = 7  # days without changes that one ranged run may step over
RunState = Callable[[str], str | None]  # run key -> "running" | "failed" | "succeeded" | None


@dataclass
class Batch:
    entity_key: str
    first_day: date
    last_day: date
    objects: list[dict]  # {"bucket", "key"}
    files: list[tuple[int, int, int]]  # (file id, generation, attempt)
    run_key: str = ""

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1


@dataclass
class Plan:
    batches: list[Batch] = field(default_factory=list)
    waiting: int = 0  # files whose requested run has not finished
    retried: int = 0  # files requested again with the next attempt
    settled: int = 0  # files that needed no run (nothing of theirs in the index)


class Planner:
    def __init__(self, db: IndexDb, registry: Registry, batch_size: int = 200) -> None:
        self.db, self.registry, self.batch_size = db, registry, batch_size
        self.catalog = Catalog(db, registry.partitions_start)

    def plan(self, now: datetime, run_state: RunState, limit: int = 20_000) -> Plan:
        plan = Plan()
        begin = day_start(self.registry.partitions_start)
        end = partitions_end(now)
        for key, tables in self.registry.by_entity_key().items():
            rows = self.catalog.unapplied([t.name for t in tables], limit, end)
            free = self._free(rows, now, run_state, plan)
            work, settle = [], []
            for r in free:
                days = r.days_to_apply(begin, end)
                (settle if days is None else work).append((days, r))
            if settle:
                self.catalog.settle_without_rows([r for _, r in settle], end)
                plan.settled += len(settle)
            plan.batches.extend(self._batches(key, work))
        for batch in plan.batches:
            self.catalog.mark_requested([f[:2] for f in batch.files], batch.run_key)
        return plan

    def _free(
        self, rows: list[FileRow], now: datetime, run_state: RunState, plan: Plan
    ) -> list[FileRow]:
        """Rows not waiting on a run; finished or lost requests move to their next attempt."""
        free, retry = [], []
        states: dict[str, str | None] = {}
        for r in rows:
            in_flight = (
                r.requested_generation == r.generation
                and r.requested_attempt == r.attempt
                and r.requested_run_key
            )
            if not in_flight:
                free.append(r)
                continue
            run_key = r.requested_run_key
            if run_key not in states:
                states[run_key] = run_state(run_key)
            state = states[run_key]
            stale = state is None and (now - r.requested_at.astimezone(UTC)) > STALE_REQUEST
            if state in ("failed", "succeeded") or stale:
                retry.append(r)
            else:
                plan.waiting += 1
        if retry:
            self.catalog.next_attempt([r.id for r in retry])
            for r in retry:
                r.attempt += 1
            plan.retried += len(retry)
            free.extend(retry)
        return free

    def _batches(self, key: str, work: list[tuple[tuple[date, date], FileRow]]) -> list[Batch]:
        # Objects together (one object can feed several tables), in day order, so that a
        # backlog over many days becomes a few ranged runs rather than one run per day.
        by_object: dict[tuple[str, str], list[tuple[tuple[date, date], FileRow]]] = {}
        for days, r in sorted(work, key=lambda w: (w[0][0], w[1].bucket, w[1].key)):
            by_object.setdefault((r.bucket, r.key), []).append((days, r))
        batches: list[Batch] = []
        current: Batch | None = None
        for (bucket, obj_key), items in by_object.items():
            first = min(d[0] for d, _ in items)
            last = max(d[1] for d, _ in items)
            if (
                current is None
                or len(current.files) + len(items) > self.batch_size
                or (first - current.last_day).days > MAX_DAY_GAP
            ):
                current = Batch(key, first, last, [], [])
                batches.append(current)
            current.first_day = min(current.first_day, first)
            current.last_day = max(current.last_day, last)
            current.objects.append({"bucket": bucket, "key": obj_key})
            current.files.extend((r.id, r.generation, r.attempt) for _, r in items)
        for b in batches:
            digest = hashlib.sha1(
                ",".join(f"{i}:{g}:{a}" for i, g, a in sorted(b.files)).encode()
            ).hexdigest()[:16]
            b.run_key = f"{key}:{b.first_day}...{b.last_day}:{digest}"
        return batches

"""The index equals the bucket when runs die, race or outlive a midnight: each scenario is
forced between two chosen statements through the core's pause points, then compared with a
brute-force recomputation from the bucket."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from fes_assets.core import clock, pause_points
from fes_assets.core.errors import IndexSchemaError
from fes_assets.core.indexing import EntityIndexer
from fes_assets_tests import truth
from fes_assets_tests.conftest import ACCESS_KEY, SECRET_KEY, T0, Lab, drivers, drivers_registry
from fes_assets_tests.core_child import Servers, run_killed

DAY = timedelta(days=1)


def servers(lab: Lab) -> Servers:
    return Servers(lab.pg_url, lab.schema, lab.endpoint, ACCESS_KEY, SECRET_KEY)


def indexer(lab: Lab) -> EntityIndexer:
    return EntityIndexer(lab.store, lab.db, lab.registry, "driver_id", log=lambda m: None)


def changes_of(request) -> list[dict]:
    (op,) = request.run_config["ops"].values()
    return op["config"]["changes"]


def days_of(request) -> list[date]:
    if request.partition_key:
        return [date.fromisoformat(request.partition_key)]
    first = date.fromisoformat(request.tags["dagster/asset_partition_range_start"])
    last = date.fromisoformat(request.tags["dagster/asset_partition_range_end"])
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def assert_index_equals_bucket(lab: Lab) -> None:
    indexer(lab).catch_up_latest()
    rows = truth.history(lab.s3, lab.registry, "driver_id", clock.now())
    cols = ("driver_id", "feature_table", "event_timestamp", "created_timestamp", "path")
    assert truth.ordered(lab.sql(f"SELECT {', '.join(cols)} FROM entity_driver_id")) == rows
    assert truth.ordered(lab.sql(f"SELECT {', '.join(cols)} FROM latest_driver_id")) == (
        truth.latest(rows)
    )


class Pause:
    """Blocks one thread at a pause point until the test lets it go on."""

    def __init__(self, point: str, when: Callable[[dict[str, Any]], bool] = lambda c: True):
        self.point, self.when = point, when
        self.reached, self.go_on = threading.Event(), threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def handler(self, name: str, context: dict[str, Any]) -> None:
        if (
            name == self.point
            and threading.current_thread() is self.thread
            and not self.reached.is_set()
            and self.when(context)
        ):
            self.reached.set()
            assert self.go_on.wait(120), "the test never let the paused run go on"

    def start(self, target: Callable[[], object]) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as e:  # reported by join()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.reached.wait(120), f"the run never reached {self.point}"

    def finish(self) -> None:
        self.go_on.set()
        assert self.thread is not None
        self.thread.join(120)
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize("mode", ["changes", "rebuild"])
def test_a_run_killed_after_some_days_then_its_file_deleted_leaves_no_rows(lab, mode):
    lab.use_registry(drivers_registry())
    times = [T0 + timedelta(days=d, hours=h) for d in range(5) for h in range(3)]
    lab.put("d/big.parquet", drivers(list(range(15)), times))
    sensor = lab.sensor()
    (request,) = lab.tick(sensor).run_requests
    changes = changes_of(request) if mode == "changes" else None
    # Days go newest first: the child dies right after committing its second day.
    code = run_killed(
        servers(lab),
        lab.registry,
        "driver_id",
        days_of(request),
        changes=changes,
        kill_at=("day_committed", 2),
    )
    assert code == -9
    assert lab.sql("SELECT count(*) FROM entity_driver_id") == [(6,)]
    lab.delete("d/big.parquet")
    lab.settle(sensor)
    assert lab.ids("entity_driver_id", "driver_id") == []
    assert_index_equals_bucket(lab)


def test_a_run_killed_mid_way_is_completed_by_the_next_attempt(lab):
    lab.use_registry(drivers_registry())
    times = [T0 + timedelta(days=d) for d in range(4)]
    lab.put("d/a.parquet", drivers([1, 2, 3, 4], times))
    sensor = lab.sensor()
    (request,) = lab.tick(sensor).run_requests
    code = run_killed(
        servers(lab),
        lab.registry,
        "driver_id",
        days_of(request),
        changes=changes_of(request),
        kill_at=("day_written", 3),  # the third day dies before its commit
    )
    assert code == -9
    assert lab.sql("SELECT count(*) FROM entity_driver_id") == [(2,)]
    # The requested run never ran as a Dagster run: a later overwrite must still clean up.
    lab.put("d/a.parquet", drivers([9], [T0 + timedelta(hours=1)]))
    lab.settle(sensor)
    assert_index_equals_bucket(lab)


def test_a_file_deleted_while_a_run_is_between_days_gets_no_rows_back(lab):
    lab.use_registry(drivers_registry())
    times = [T0, T0 + DAY, T0 + 2 * DAY]
    lab.put("d/a.parquet", drivers([1, 2, 3], times))
    lab.put("d/b.parquet", drivers([4, 5, 6], times))
    sensor = lab.sensor()
    (request,) = lab.tick(sensor).run_requests
    pause = Pause("day_committed", lambda c: c["day"] == date(2021, 4, 3))
    with pause_points.installed(pause.handler):
        # The run has read both files and committed the newest day; the rest waits.
        pause.start(lambda: indexer(lab).run(days_of(request), changes_of(request)))
        lab.delete("d/a.parquet")
        assert lab.settle(sensor) == 1  # the deletion's run, while the first is paused
        pause.finish()
    lab.settle(sensor)
    assert lab.ids("entity_driver_id", "driver_id") == [(4,), (5,), (6,)]
    assert_index_equals_bucket(lab)


def test_an_overwrite_that_moves_rows_while_a_run_is_paused(lab):
    lab.use_registry(drivers_registry())
    lab.put("d/a.parquet", drivers([1, 2, 3], [T0, T0 + DAY, T0 + 2 * DAY]))
    sensor = lab.sensor()
    (request,) = lab.tick(sensor).run_requests
    pause = Pause("day_ready", lambda c: c["day"] == date(2021, 4, 2))
    with pause_points.installed(pause.handler):
        pause.start(lambda: indexer(lab).run(days_of(request), changes_of(request)))
        # Version 2 has its rows on other days (and one on a day the first run still writes).
        lab.put("d/a.parquet", drivers([7, 8], [T0 + 4 * DAY, T0 + DAY]))
        lab.settle(sensor)
        pause.finish()
    lab.settle(sensor)
    assert lab.ids("entity_driver_id", "driver_id") == [(7,), (8,)]
    assert_index_equals_bucket(lab)


def test_a_rebuild_that_listed_its_files_first_keeps_a_newer_runs_rows(lab):
    lab.use_registry(drivers_registry())
    lab.put("d/a.parquet", drivers([1], [T0]))
    sensor = lab.sensor()
    lab.settle(sensor)
    pause = Pause("day_ready")
    with pause_points.installed(pause.handler):
        pause.start(lambda: indexer(lab).run([date(2021, 4, 1)]))
        # A new file on the same day, catalogued and indexed by the sensor meanwhile.
        lab.put("d/n.parquet", drivers([2], [T0 + timedelta(hours=1)]))
        assert lab.settle(sensor) == 1
        pause.finish()
    assert lab.ids("entity_driver_id", "driver_id") == [(1,), (2,)]
    assert lab.settle(sensor) == 0
    assert_index_equals_bucket(lab)


def test_after_midnight_a_backfill_of_yesterday_before_the_sensor_loses_nothing(lab, monkeypatch):
    lab.use_registry(drivers_registry(), start="2021-04-01")
    today = datetime(2021, 4, 10, tzinfo=UTC)
    monkeypatch.setenv("FES_NOW", (today + timedelta(hours=23, minutes=50)).isoformat())
    tonight = [today + timedelta(hours=22)] * 10
    tomorrow = [today + DAY + timedelta(minutes=5)] * 20
    lab.put("d/a.parquet", drivers(list(range(30)), tonight + tomorrow))
    sensor = lab.sensor()
    lab.settle(sensor)
    assert lab.sql("SELECT count(*) FROM entity_driver_id") == [(10,)]
    monkeypatch.setenv("FES_NOW", (today + DAY + timedelta(minutes=10)).isoformat())
    assert lab.materialize("driver_id", "2021-04-10").success  # a nightly backfill runs first
    lab.settle(sensor)
    assert lab.sql("SELECT count(*) FROM entity_driver_id") == [(30,)]
    assert_index_equals_bucket(lab)


def test_a_run_that_started_before_midnight_and_ends_after_it(lab, monkeypatch):
    lab.use_registry(drivers_registry(), start="2021-04-01")
    today = datetime(2021, 4, 10, tzinfo=UTC)
    monkeypatch.setenv("FES_NOW", (today + timedelta(hours=23, minutes=50)).isoformat())
    lab.put(
        "d/a.parquet",
        drivers([1, 2], [today + timedelta(hours=22), today + DAY + timedelta(minutes=5)]),
    )
    sensor = lab.sensor()
    first = lab.tick(sensor)
    pause = Pause("run_days_done")
    with pause_points.installed(pause.handler):
        # The sensor's run, as the daemon would launch it (the planner looks up its status).
        pause.start(lambda: lab.execute(first))
        monkeypatch.setenv("FES_NOW", (today + DAY + timedelta(minutes=10)).isoformat())
        lab.tick(sensor)  # the new day's first tick, while the old day's run is finishing
        pause.finish()
    lab.settle(sensor)
    assert lab.ids("entity_driver_id", "driver_id") == [(1,), (2,)]
    assert_index_equals_bucket(lab)


def test_a_row_far_in_the_future_costs_each_new_day_one_day(lab, monkeypatch):
    lab.use_registry(drivers_registry(), start="2021-04-01")
    now = datetime(2021, 4, 5, 12, tzinfo=UTC)
    monkeypatch.setenv("FES_NOW", now.isoformat())
    times = [T0, T0 + DAY, T0 + 2 * DAY, datetime(2300, 1, 1, tzinfo=UTC)]
    lab.put("d/a.parquet", drivers([1, 2, 3, 4], times))
    sensor = lab.sensor()
    lab.settle(sensor)
    for k in (1, 2, 3):
        monkeypatch.setenv("FES_NOW", (now + k * DAY).isoformat())
        result = lab.tick(sensor)
        assert [days_of(r) for r in result.run_requests] == [[(now + k * DAY).date()]]
        lab.execute(result)
        assert lab.settle(sensor) == 0
    assert_index_equals_bucket(lab)


def test_rows_dated_in_the_future_reach_latest_only_when_their_time_comes(lab, monkeypatch):
    lab.use_registry(drivers_registry(), start="2021-04-01")
    monkeypatch.setenv("FES_NOW", "2021-04-02T12:00:00+00:00")
    sensor = lab.sensor()
    lab.put("d/future.parquet", drivers([2], [T0 + DAY + timedelta(hours=20)]))
    lab.settle(sensor)  # its run fails timestamps_valid: latest is blocked
    assert lab.ids("latest_driver_id", "driver_id") == []
    lab.put("d/other.parquet", drivers([5], [T0 + DAY + timedelta(hours=1)]))
    lab.settle(sensor)  # a passing run must not carry the future row into latest
    assert lab.ids("latest_driver_id", "driver_id") == [(5,)]
    monkeypatch.setenv("FES_NOW", "2021-04-02T21:00:00+00:00")
    lab.put("d/third.parquet", drivers([6], [T0 + DAY + timedelta(hours=2)]))
    lab.settle(sensor)
    assert lab.ids("latest_driver_id", "driver_id") == [(2,), (5,), (6,)]
    assert_index_equals_bucket(lab)


def test_a_run_of_the_old_registry_writes_nothing_once_a_table_moved_key(lab):
    composite = {"driver_id": "INT64", "trip_id": "INT64"}
    lab.use_registry(drivers_registry())
    table = drivers([1, 2, 3], [T0, T0 + DAY, T0 + 2 * DAY]).append_column(
        "trip_id", pa.array([7, 8, 9], pa.int64())
    )
    lab.put("d/a.parquet", table)
    sensor = lab.sensor()
    (request,) = lab.tick(sensor).run_requests
    old = indexer(lab)  # the run of the registry as it was
    pause = Pause("day_ready", lambda c: c["day"] == date(2021, 4, 2))
    with pause_points.installed(pause.handler):
        pause.start(lambda: old.run(days_of(request), changes_of(request)))
        moved = drivers_registry()
        moved["driver_hourly_stats"]["entities"] = composite
        lab.use_registry(moved)  # the code location reloads; the sensor takes it in
        lab.settle(lab.sensor())
        with pytest.raises(IndexSchemaError, match="registry changed"):
            pause.finish()
    lab.settle(lab.sensor())
    assert lab.ids("entity_driver_id", "driver_id") == []
    assert lab.ids("entity_driver_id__trip_id", "driver_id", "trip_id") == [
        (1, 7),
        (2, 8),
        (3, 9),
    ]


def test_a_catch_up_between_two_days_of_a_run_does_not_lose_an_ids_latest_row(lab):
    lab.use_registry(drivers_registry())
    lab.put("d/f.parquet", drivers([1], [T0 + DAY]))  # id 1's newest row, on day 2
    lab.put("d/g.parquet", drivers([1], [T0]))  # an older row of id 1, on day 1
    sensor = lab.sensor()
    (request,) = lab.tick(sensor).run_requests
    steps = {"overwrite": threading.Event(), "between": threading.Event()}
    go_on = {"overwrite": threading.Event(), "between": threading.Event()}
    runner: list[threading.Thread] = []

    def handler(name: str, context: dict[str, Any]) -> None:
        if threading.current_thread() is not runner[0]:
            return
        step = {
            ("day_ready", date(2021, 4, 2)): "overwrite",
            ("day_committed", date(2021, 4, 2)): "between",
        }.get((name, context.get("day")))
        if step:
            steps[step].set()
            assert go_on[step].wait(120)

    with pause_points.installed(handler):
        runner.append(
            threading.Thread(target=lambda: indexer(lab).run(days_of(request), changes_of(request)))
        )
        runner[0].start()
        assert steps["overwrite"].wait(120)
        lab.put("d/f.parquet", drivers([2], [T0 + DAY]))  # f no longer has id 1
        lab.execute(lab.tick(sensor))  # the paused run's version of f is superseded
        go_on["overwrite"].set()
        assert steps["between"].wait(120)
        indexer(lab).catch_up_latest()  # another run's latest step, between the two days
        go_on["between"].set()
        runner[0].join(120)
    lab.settle(sensor)
    assert_index_equals_bucket(lab)
    assert lab.ids("latest_driver_id", "driver_id", "path") == [
        (1, f"s3://{lab.bucket}/d/g.parquet"),
        (2, f"s3://{lab.bucket}/d/f.parquet"),
    ]


def test_an_object_overwritten_between_listing_and_reading_is_catalogued_as_read(lab):
    lab.use_registry(drivers_registry())
    sensor = lab.sensor(reconcile_interval=3600)
    lab.tick(sensor)  # the first reconcile pass: the next ones are an hour away
    lab.put("d/a.parquet", drivers([1]))
    overwritten = threading.Event()

    def handler(name: str, context: dict[str, Any]) -> None:
        if name == "object_listed" and not overwritten.is_set():
            overwritten.set()
            lab.put("d/a.parquet", drivers([2, 3]))

    with pause_points.installed(handler):
        first = lab.tick(sensor)
    head = lab.s3.head_object(Bucket=lab.bucket, Key="d/a.parquet")
    assert lab.sql("SELECT etag, row_count FROM files") == [(head["ETag"].strip('"'), 2)]
    lab.execute(first)
    lab.settle(sensor)
    assert_index_equals_bucket(lab)


def test_a_trail_pruned_while_a_backfill_remembers_it_is_written_again(lab):
    """A catch-up prunes an id's year from the trail while a run that committed that id for
    the year is between days: the run's later days of the year must add it again, or a later
    recompute would skip the year."""
    lab.use_registry(drivers_registry(), start="2020-01-01")
    x, june, march = 7, datetime(2021, 6, 10, 6, tzinfo=UTC), datetime(2021, 3, 5, 6, tzinfo=UTC)
    lab.put("d/march.parquet", drivers([x], [march]))
    lab.put("d/june.parquet", drivers([x, 8], [june, june]))
    sensor = lab.sensor()
    lab.tick(sensor)  # catalogued; the runs it asks for come later
    # A rebuild of March 5 and June 10, newest day first, paused once June 10 committed.
    pause = Pause("day_committed", lambda c: c["day"] == june.date())
    with pause_points.installed(pause.handler):
        pause.start(lambda: indexer(lab).run([march.date(), june.date()]))
        lab.put("d/june.parquet", drivers([8], [june]))  # x leaves June
        (request,) = lab.tick(sensor).run_requests
        indexer(lab).run(days_of(request), changes_of(request))
        # x has no row left in 2021 (March is not written yet): its year leaves the trail.
        indexer(lab).catch_up_latest()
        assert (x, 2021) not in lab.sql("SELECT driver_id, year FROM _t_driver_id")
        pause.finish()
    assert (x, 2021) in lab.sql("SELECT driver_id, year FROM _t_driver_id")
    lab.put("d/2020.parquet", drivers([x], [datetime(2020, 6, 1, 6, tzinfo=UTC)]))
    lab.settle(sensor)
    # x's newest row moves to 2022 and goes again: its latest is March 2021's, not 2020's.
    lab.put("d/2022.parquet", drivers([x], [datetime(2022, 1, 3, 6, tzinfo=UTC)]))
    lab.settle(sensor)
    lab.delete("d/2022.parquet")
    lab.settle(sensor)
    assert lab.sql("SELECT event_timestamp FROM latest_driver_id WHERE driver_id = 7") == [(march,)]
    assert_index_equals_bucket(lab)

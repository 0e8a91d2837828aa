"""A randomized test against a brute-force recomputation: puts, overwrites, deletes and bad
objects, registry edits, new days, sensor ticks with their runs, a rebuild racing them, and
runs killed at random pause points; after the sensor settles (retrying what failed), history
and latest equal what the bucket says. FES_RANDOM_EXAMPLES runs it longer."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from sqlalchemy.engine import make_url

from fes_assets.core import clock
from fes_assets.core.indexing import EntityIndexer
from fes_assets.orchestration.resources import IndexDatabaseResource
from fes_assets_tests import truth
from fes_assets_tests.conftest import ACCESS_KEY, SECRET_KEY, Lab
from fes_assets_tests.core_child import Servers, run_killed
from fes_assets_tests.test_integrity import changes_of, days_of

T0 = datetime(2021, 4, 1, tzinfo=UTC)
KEYS = ["a/1.parquet", "a/2.parquet", "a/x/3.parquet", "b/1.parquet"]
POINTS = ["day_ready", "day_locked", "day_written", "day_committed", "run_days_done"]
COLS = ("driver_id", "feature_table", "event_timestamp", "created_timestamp", "path")
EXAMPLES = int(os.environ.get("FES_RANDOM_EXAMPLES", "5"))
STATS = {"examples": 0, "killed": 0, "rows": 0}


def tables(ts_a: str) -> dict:
    return {
        "a": {
            "prefix": "a/",
            "entities": {"driver_id": "INT64"},
            "timestamp_column": ts_a,
        },
        "b": {
            "prefix": "b/",
            "entities": {"driver_id": "INT64"},
            "timestamp_column": "event_timestamp",
        },
    }


def content(ids: list[int], day: int, other_day: int) -> pa.Table:
    """Rows early in their day (never ahead of the test's noon clock within today)."""
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array([T0 + timedelta(days=day, minutes=i) for i in ids], ts),
            "ts2": pa.array([T0 + timedelta(days=other_day, minutes=i) for i in ids], ts),
        }
    )


class IndexMachine(RuleBasedStateMachine):
    servers: tuple = ()

    @initialize(
        files=st.lists(
            st.tuples(
                st.sampled_from(KEYS),
                st.lists(st.integers(0, 9), min_size=1, max_size=4),
                st.integers(0, 4),
                st.integers(0, 4),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def start(self, files) -> None:
        pg_url, endpoint, instance = self.servers
        suffix = uuid.uuid4().hex[:10]
        self.lab = Lab(pg_url, endpoint, f"rand-{suffix}", f"rand_{suffix}", instance)
        self.now = T0 + timedelta(days=2, hours=12)
        os.environ["FES_NOW"] = self.now.isoformat()
        self.ts_a = "event_timestamp"
        self.lab.use_registry(tables(self.ts_a), start="2021-04-01")
        self.killed = 0
        for key, ids, day, other_day in files:
            self.put(key, ids, day, other_day)

    def teardown(self) -> None:
        if hasattr(self, "lab"):
            self.settle_and_compare()
            STATS["examples"] += 1
            STATS["killed"] += self.killed
            STATS["rows"] += self.compared
        os.environ.pop("FES_NOW", None)

    # --- the bucket ---------------------------------------------------------------------

    @rule(
        key=st.sampled_from(KEYS),
        ids=st.lists(st.integers(0, 9), max_size=4),
        day=st.integers(0, 4),
        other_day=st.integers(0, 4),
    )
    def put(self, key, ids, day, other_day) -> None:
        self.lab.put(key, content(ids, day, other_day))

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key) -> None:
        self.lab.delete(key)

    @rule(key=st.sampled_from(KEYS))
    def bad(self, key) -> None:
        self.lab.put(key, b"not parquet " + uuid.uuid4().bytes)

    # --- the world around it ---------------------------------------------------------------

    @rule()
    def edit_registry(self) -> None:
        self.ts_a = "ts2" if self.ts_a == "event_timestamp" else "event_timestamp"
        self.lab.use_registry(tables(self.ts_a), start="2021-04-01")

    @rule()
    def new_day(self) -> None:
        self.now += timedelta(days=1)
        os.environ["FES_NOW"] = self.now.isoformat()

    # --- the sensor and its runs -------------------------------------------------------------

    def sensor(self) -> dg.SensorDefinition:
        return self.lab.sensor()

    @rule()
    def tick_and_run(self) -> None:
        self.lab.execute(self.lab.tick(self.sensor()))

    @rule()
    def runs_racing_a_rebuild(self) -> None:
        result = self.lab.tick(self.sensor())
        days = sorted({d for r in result.run_requests or [] for d in days_of(r)})
        if not days:
            return
        rebuild = threading.Thread(
            target=lambda: EntityIndexer(
                self.lab.store, self.lab.db, self.lab.registry, "driver_id", log=lambda m: None
            ).run(days)
        )
        rebuild.start()
        self.lab.execute(result)
        rebuild.join(120)

    @rule(point=st.sampled_from(POINTS), nth=st.integers(1, 2))
    def run_killed(self, point, nth) -> None:
        result = self.lab.tick(self.sensor())
        if not result.run_requests:
            return
        request, *others = result.run_requests
        lab = self.lab
        servers = Servers(lab.pg_url, lab.schema, lab.endpoint, ACCESS_KEY, SECRET_KEY)
        code = run_killed(
            servers,
            lab.registry,
            "driver_id",
            days_of(request),
            changes=changes_of(request),
            kill_at=(point, nth),
        )
        self.killed += code == -9
        # The daemon would see the killed run fail: a run with its key that fails at once.
        down = make_url(lab.pg_url).set(port=1).render_as_string(hide_password=False)
        lab.run_request(
            request, {**lab.resources(), "fes_index_db": IndexDatabaseResource(url=down)}
        )
        for other in others:
            lab.run_request(other)

    # --- the invariant -------------------------------------------------------------------------

    def settle_and_compare(self) -> None:
        lab = self.lab
        lab.settle(self.sensor(), max_ticks=40)
        indexer = EntityIndexer(lab.store, lab.db, lab.registry, "driver_id", log=lambda m: None)
        indexer.catch_up_latest()
        rows = truth.history(lab.s3, lab.registry, "driver_id", clock.now())
        select = ", ".join(COLS)
        assert truth.ordered(lab.sql(f"SELECT {select} FROM entity_driver_id")) == rows
        self.compared = len(rows)
        assert truth.ordered(lab.sql(f"SELECT {select} FROM latest_driver_id")) == truth.latest(
            rows
        )


def test_the_index_equals_the_bucket_after_random_crashes_and_races(pg_url, s3_server, instance):
    class Machine(IndexMachine):
        servers = (pg_url, s3_server.endpoint_url, instance)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    print(f"random crashes: {STATS}")

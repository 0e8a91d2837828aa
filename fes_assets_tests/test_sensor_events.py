"""Event mode: MinIO's PostgreSQL notification table (format `access`) drives the sensor."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus

import psycopg

from fes_assets.core.storage.database import conninfo
from fes_assets_tests.conftest import drivers, drivers_registry

DRIVERS = drivers_registry("driver_hourly_stats/")


class MinioTable:
    """A table as MinIO's PostgreSQL target creates and fills it in format `access`."""

    def __init__(self, lab):
        self.lab, self.name, self.seq = lab, f"{lab.schema}_events.minio_events", 0
        with psycopg.connect(conninfo(lab.pg_url)) as conn:
            conn.execute(f"CREATE SCHEMA {lab.schema}_events")
            conn.execute(
                f"CREATE TABLE {self.name} (event_time timestamptz NOT NULL, event_data jsonb)"
            )

    def emit(self, name: str, key: str, when: datetime | None = None) -> None:
        self.seq += 1
        head = {}
        if name.startswith("s3:ObjectCreated"):
            h = self.lab.s3.head_object(Bucket=self.lab.bucket, Key=key)
            head = {"size": h["ContentLength"], "eTag": h["ETag"].strip('"')}
        when = when or datetime.now(UTC)
        event = {
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "awsRegion": "",
            "eventTime": when.isoformat(),
            "eventName": name,
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": self.lab.bucket},
                "object": {
                    "key": quote_plus(key, safe=""),
                    "sequencer": f"{self.seq:016X}",
                    **head,
                },
            },
        }
        with psycopg.connect(conninfo(self.lab.pg_url)) as conn:
            conn.execute(
                f"INSERT INTO {self.name} VALUES (%s, %s)", (when, json.dumps({"Records": [event]}))
            )


def test_events_drive_puts_overwrites_and_deletes(lab):
    lab.use_registry(DRIVERS)
    events = MinioTable(lab)
    sensor = lab.sensor(events_table=events.name, reconcile_interval=3600)
    assert not lab.tick(sensor).run_requests  # first tick: the initial reconcile, empty

    key = "driver_hourly_stats/date=2021-04-01/part 1.parquet"
    lab.put(key, drivers([1, 2]))
    events.emit("s3:ObjectCreated:Put", key)
    lab.put("driver_hourly_stats/b.parquet", drivers([3]))
    events.emit("s3:ObjectCreated:Put", "driver_hourly_stats/b.parquet")
    assert lab.settle(sensor) == 1
    assert lab.ids("entity_driver_id", "driver_id") == [(1,), (2,), (3,)]
    assert lab.ids("entity_driver_id", "path", where="WHERE driver_id = 1") == [
        (f"s3://{lab.bucket}/{key}",)
    ]

    events.emit("s3:ObjectCreated:Put", key)  # re-delivered: nothing starts twice
    assert lab.settle(sensor) == 0

    lab.put(key, drivers([10]))
    events.emit("s3:ObjectCreated:Put", key)
    lab.delete("driver_hourly_stats/b.parquet")
    events.emit("s3:ObjectRemoved:Delete", "driver_hourly_stats/b.parquet")
    assert lab.settle(sensor) >= 1
    assert lab.ids("entity_driver_id", "driver_id") == [(10,)]
    assert lab.ids("latest_driver_id", "driver_id") == [(10,)]
    cursor = json.loads(lab.cursor)
    assert cursor["events"][1] == f"{events.seq:016X}"


def test_reconcile_heals_a_missed_event(lab):
    lab.use_registry(DRIVERS)
    events = MinioTable(lab)
    sensor = lab.sensor(events_table=events.name, reconcile_interval=3600)
    assert not lab.tick(sensor).run_requests
    lab.put("driver_hourly_stats/missed.parquet", drivers([5]))  # no event
    assert lab.settle(sensor) == 0
    healing = lab.sensor(events_table=events.name, reconcile_interval=0)
    assert lab.settle(healing) == 1
    assert lab.ids("entity_driver_id", "driver_id") == [(5,)]


def test_an_event_committed_after_a_newer_one_is_still_read(lab):
    lab.use_registry(DRIVERS)
    events = MinioTable(lab)
    sensor = lab.sensor(events_table=events.name, reconcile_interval=3600)
    assert not lab.tick(sensor).run_requests
    now = datetime.now(UTC)
    lab.put("driver_hourly_stats/b.parquet", drivers([2]))
    events.emit("s3:ObjectCreated:Put", "driver_hourly_stats/b.parquet", now)
    assert lab.settle(sensor) == 1
    # A concurrent PUT whose event lands later, stamped a minute earlier than b's.
    lab.put("driver_hourly_stats/a.parquet", drivers([1]))
    events.emit("s3:ObjectCreated:Put", "driver_hourly_stats/a.parquet", now - timedelta(minutes=1))
    assert lab.settle(sensor) == 1
    assert lab.ids("entity_driver_id", "driver_id") == [(1,), (2,)]
    # Read once: the look-back window does not read it again.
    assert lab.tick(sensor).run_requests == []
    assert json.loads(lab.cursor)["events_seen"]


def test_a_tick_out_of_time_still_progresses_and_keeps_its_place(lab):
    lab.use_registry(DRIVERS)
    for i in range(7):
        lab.put(f"driver_hourly_stats/{i}.parquet", drivers([i]))
    sensor = lab.sensor(time_budget=0, page_size=3, reconcile_interval=3600)
    ticks = 0
    while ticks == 0 or lab.sql("SELECT count(*) FROM files") < [(7,)]:
        ticks += 1
        lab.execute(lab.tick(sensor))
        assert ticks < 30, "ticks stopped making progress"
    assert ticks > 1  # each tick stopped at its (zero) budget after doing something
    lab.settle(sensor)
    assert lab.ids("entity_driver_id", "driver_id") == [(i,) for i in range(7)]

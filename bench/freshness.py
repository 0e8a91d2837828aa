"""Item 6, freshness: from a put to the rows in the index, through `dagster dev` as shipped
(the daemon, the default run launcher, queued runs dequeued every second), for each way the
sensor finds changes. Each put is timed to its rows in `entity_<key>` and `latest_<key>` by
polling the index, and broken down from Dagster's own records (the tick, the run's queue and
launch, each step)."""

from __future__ import annotations

import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from bench.measures import KEY, Result, Servers
from fes_assets.core.storage.database import conninfo
from fes_assets.dev.demo import write_dagster_home
from fes_assets.dev.embedded_servers import free_port

ROOT = Path(__file__).resolve().parents[1]
ITEM = "6. freshness, put to queryable"
INTERVAL = 5  # the sensor's interval in the goals
RECONCILE = 30  # seconds between reconcile passes in the out-of-order mode
PREFIX = "driver_stats/"
GOAL_P50, GOAL_MAX, GOAL_LATEST = 7.0, 10.0, 2.0
TS = pa.timestamp("us", tz="UTC")


@dataclass
class Sample:
    history: float  # seconds from the put to its rows in entity_<key>
    latest: float  # ... in latest_<key>
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class Mode:
    name: str
    out_of_order: bool = False
    minio_events: bool = False
    sqs: bool = False


MODES = [
    Mode("listing, in-order keys"),
    Mode("MinIO events table", minio_events=True),
    Mode("S3 → SQS notifications", sqs=True),
    Mode("listing, out-of-order keys", out_of_order=True),
]


def _object(ident: int) -> bytes:
    at = datetime.now(UTC) - timedelta(minutes=30)
    table = pa.table(
        {
            "driver_id": pa.array([ident], pa.int64()),
            "event_timestamp": pa.array([at], TS),
            "created": pa.array([at], TS),
            "conv_rate": pa.array([0.5], pa.float32()),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


class Deployment:
    """A bucket, an index schema and `dagster dev` with bucket_sensor running, for one mode."""

    def __init__(self, servers: Servers, mode: Mode, folder: Path) -> None:
        self.servers, self.mode, self.folder = servers, mode, folder
        suffix = uuid.uuid4().hex[:8]
        self.bucket, self.schema = f"fresh-{suffix}", f"fresh_{suffix}"
        self.dagster_db = f"dagster_{suffix}"
        self.events_table = f"{self.schema}_events.minio_events"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Deployment:
        s = self.servers
        s.s3.create_bucket(Bucket=self.bucket)
        s.psql(f'CREATE DATABASE "{self.dagster_db}"')
        env = {
            "FES_PG_URL": s.url,
            "FES_SCHEMA": self.schema,
            "DAGSTER_PG_URL": s.pg.url("psycopg2", self.dagster_db),
            "DAGSTER_HOME": str(self.folder / "dagster_home"),
            "FES_S3_ENDPOINT_URL": s.s3_server.endpoint_url,
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": KEY,
            "AWS_REGION": "us-east-1",
            "FES_CONFIG": str(self.folder / "fes.yaml"),
            "FES_SENSOR_RUNNING": "1",
            "FES_SENSOR_INTERVAL_SECONDS": str(INTERVAL),
            "FES_RECONCILE_INTERVAL_SECONDS": str(RECONCILE if self.mode.out_of_order else 3600),
        }
        if self.mode.minio_events:
            s.psql(f'CREATE SCHEMA "{self.schema}_events"')
            s.psql(
                f"CREATE TABLE {self.events_table} (event_time timestamptz NOT NULL, "
                "event_data jsonb)"
            )
            s.psql(f"CREATE INDEX ON {self.events_table} (event_time)")
            env["FES_MINIO_EVENTS_TABLE"] = self.events_table
        if self.mode.sqs:
            env |= self._queue()
        registry = {
            "bucket": self.bucket,
            "partitions_start": (datetime.now(UTC).date() - timedelta(days=3)).isoformat(),
            "feature_tables": {
                "driver_hourly_stats": {
                    "prefix": PREFIX,
                    "entities": {"driver_id": "INT64"},
                    "timestamp_column": "event_timestamp",
                    "created_timestamp_column": "created",
                }
            },
        }
        (self.folder / "fes.yaml").write_text(yaml.safe_dump(registry))
        write_dagster_home(self.folder / "dagster_home")
        self.env = env
        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=(self.folder / "dagster.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait(lambda: _answers(f"http://127.0.0.1:{port}/server_info"), 180, "the Dagster UI")
        return self

    def _queue(self) -> dict[str, str]:
        import boto3

        sqs = boto3.client(
            "sqs",
            endpoint_url=self.servers.s3_server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=KEY,
            aws_secret_access_key=KEY,
        )
        url = sqs.create_queue(QueueName=self.bucket, Attributes={"VisibilityTimeout": "60"})[
            "QueueUrl"
        ]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.servers.s3.put_bucket_notification_configuration(
            Bucket=self.bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
                ]
            },
        )
        return {
            "FES_SQS_QUEUE_URL": url,
            "FES_SQS_ENDPOINT_URL": self.servers.s3_server.endpoint_url,
        }

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def put(self, key: str, ident: int) -> float:
        """Put an object of one new id; returns the wall-clock time of the put."""
        body = _object(ident)
        self.servers.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        at = time.time()
        if self.mode.minio_events:
            self._minio_event(key)
        return at

    def _minio_event(self, key: str) -> None:
        """The row MinIO's PostgreSQL target writes for a put (format `access`)."""
        head = self.servers.s3.head_object(Bucket=self.bucket, Key=key)
        record = {
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "eventTime": datetime.now(UTC).isoformat(),
            "eventName": "s3:ObjectCreated:Put",
            "s3": {
                "bucket": {"name": self.bucket},
                "object": {
                    "key": quote_plus(key, safe=""),
                    "size": head["ContentLength"],
                    "eTag": head["ETag"].strip('"'),
                    "sequencer": f"{time.time_ns():016X}",
                },
            },
        }
        self.servers.psql(
            f"INSERT INTO {self.events_table} VALUES (now(), %s)",
            json.dumps({"Records": [record]}),
        )

    def wait_indexed(self, ident: int, put_at: float, timeout: float) -> tuple[float, float]:
        """Seconds from the put until the id is in entity_<key>, then in latest_<key>."""
        history = latest = None
        with psycopg.connect(conninfo(self.servers.url), autocommit=True) as conn:
            deadline = time.monotonic() + timeout
            while (history is None or latest is None) and time.monotonic() < deadline:
                for view in ("entity", "latest"):
                    if (view == "entity" and history is not None) or (
                        view == "latest" and latest is not None
                    ):
                        continue
                    found = conn.execute(
                        f'SELECT 1 FROM "{self.schema}".{view}_driver_id WHERE driver_id = %s',
                        (ident,),
                    ).fetchone()
                    if found:
                        if view == "entity":
                            history = time.time() - put_at
                        else:
                            latest = time.time() - put_at
                time.sleep(0.05)
        if history is None or latest is None:
            raise TimeoutError(f"{self.mode.name}: id {ident} not indexed within {timeout:.0f}s")
        return history, latest

    def breakdown(self, put_at: float, key: str) -> dict[str, float]:
        """Where the time went, from the Dagster instance's records of the run that indexed
        `key` and the tick that requested it."""
        import dagster as dg
        from dagster._core.events import DagsterEventType
        from dagster._core.scheduler.instigation import InstigatorType

        previous = dict(os.environ)
        os.environ.update(self.env)
        try:
            with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
                records = instance.get_run_records(
                    dg.RunsFilter(created_after=datetime.fromtimestamp(put_at - 1, UTC))
                )
                run = next(
                    (r for r in records if key in json.dumps(r.dagster_run.run_config)), None
                )
                if run is None:
                    return {}
                ticks = []
                for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
                    ticks += instance.get_ticks(
                        state.instigator_origin_id, state.selector_id, after=put_at - 60
                    )
                tick = next((t for t in ticks if run.dagster_run.run_id in t.run_ids), None)
                steps: dict[str, dict[str, float]] = {}
                for entry in instance.all_logs(
                    run.dagster_run.run_id,
                    of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS},
                ):
                    kind = entry.dagster_event.event_type_value
                    steps.setdefault(entry.step_key, {})[kind] = entry.timestamp
        finally:
            os.environ.clear()
            os.environ.update(previous)
        entity = next((v for k, v in steps.items() if "entity_" in k), {})
        latest = next((v for k, v in steps.items() if "latest_" in k), {})
        created = run.create_timestamp.timestamp()
        parts = {}
        if tick is not None:
            parts["wait for the tick"] = max(0.0, tick.timestamp - put_at)
            parts["tick, to the run's creation"] = created - max(tick.timestamp, put_at)
        if run.start_time:
            parts["queue and launch (process start)"] = run.start_time - created
            if entity.get("STEP_START"):
                parts["run start to the entity step"] = entity["STEP_START"] - run.start_time
        if entity.get("STEP_SUCCESS") and entity.get("STEP_START"):
            parts["entity step"] = entity["STEP_SUCCESS"] - entity["STEP_START"]
        if latest.get("STEP_SUCCESS") and entity.get("STEP_SUCCESS"):
            parts["latest step, after the entity step"] = (
                latest["STEP_SUCCESS"] - entity["STEP_SUCCESS"]
            )
        return parts


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)  # noqa: S310
        return True
    except Exception:
        return False


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready within {timeout:.0f}s")


def measure_mode(servers: Servers, mode: Mode, puts: int, rng: np.random.Generator) -> list[Sample]:
    folder = Path(tempfile.mkdtemp(prefix="fes-bench-fresh-"))
    samples = []
    with Deployment(servers, mode, folder) as deployment:
        # A first object, indexed before any timing: the code location loads, the schema is
        # made, and the listing cursor passes it.
        first = deployment.put(f"{PREFIX}m/{time.time_ns()}.parquet", 1)
        deployment.wait_indexed(1, first, 240)
        for n in range(puts):
            # Puts land at random points of the sensor's interval, as uploads do.
            time.sleep(float(rng.uniform(0, INTERVAL)))
            ident = 1_000 + n
            folder_key = "a" if mode.out_of_order else "m"  # "a/…" sorts before the cursor
            key = f"{PREFIX}{folder_key}/{time.time_ns()}.parquet"
            at = deployment.put(key, ident)
            timeout = 4 * RECONCILE if mode.out_of_order else 120
            history, latest = deployment.wait_indexed(ident, at, timeout)
            samples.append(Sample(history, latest, deployment.breakdown(at, key)))
    return samples


def freshness(servers: Servers, puts: int, seed: int = 6) -> list[Result]:
    rng = np.random.default_rng(seed)
    results = []
    for mode in MODES:
        samples = measure_mode(servers, mode, max(2, puts // 3) if mode.out_of_order else puts, rng)
        history = [s.history for s in samples]
        behind = [s.latest - s.history for s in samples]
        parts: dict[str, list[float]] = {}
        for s in samples:
            for name, seconds in s.parts.items():
                parts.setdefault(name, []).append(seconds)
        detail = {
            "puts": len(samples),
            "history p50/max s": f"{statistics.median(history):.1f} / {max(history):.1f}",
            "latest p50/max s": (
                f"{statistics.median([s.latest for s in samples]):.1f} / "
                f"{max(s.latest for s in samples):.1f}"
            ),
            **{f"{name} p50 s": round(statistics.median(v), 2) for name, v in parts.items()},
        }
        if mode.out_of_order:
            results.append(
                Result(
                    ITEM,
                    f"put → history, max: {mode.name}",
                    max(history),
                    RECONCILE,
                    f"one reconcile interval ({RECONCILE} s here)",
                    "s",
                    f"<= {RECONCILE} s + a tick",
                    max(history) <= RECONCILE + 2 * INTERVAL,
                    detail,
                )
            )
            continue
        results += [
            Result(
                ITEM,
                f"put → history, p50: {mode.name}",
                statistics.median(history),
                GOAL_P50,
                "the goal",
                "s",
                f"<= {GOAL_P50:g} s",
                statistics.median(history) <= GOAL_P50,
                detail,
            ),
            Result(
                ITEM,
                f"put → history, max: {mode.name}",
                max(history),
                GOAL_MAX,
                "the goal",
                "s",
                f"<= {GOAL_MAX:g} s",
                max(history) <= GOAL_MAX,
            ),
            Result(
                ITEM,
                f"latest behind history, max: {mode.name}",
                max(behind),
                GOAL_LATEST,
                "the goal",
                "s",
                f"<= {GOAL_LATEST:g} s",
                max(behind) <= GOAL_LATEST,
            ),
        ]
    return results

"""`fes demo`: embedded PostgreSQL and S3, sample Feast data, and the Dagster UI with
`bucket_sensor` running. Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import boto3
import numpy as np
import psycopg
from psycopg import sql

from ..core import clock, settings
from ..core.settings import DEFAULT_SCHEMA
from ..core.sql_templates import template
from ..core.storage.database import conninfo
from .embedded_servers import EmbeddedPostgres, MotoS3Server, free_port
from .sample_data import driver_hourly_stats, parquet_bytes, sample_objects

BUCKET = "feast-offline"
DEMO_KEY = "demo"  # moto accepts any credentials; these are not secrets


def _say(text: str) -> None:
    print(text, flush=True)


def _port_of(folder: Path) -> int:
    """The port the demo's PostgreSQL used last time, so URLs stay stable between runs."""
    saved = folder / "pg.port"
    if saved.exists():
        return int(saved.read_text())
    port = free_port()
    saved.write_text(str(port))
    return port


def _fresh_state(url: str, dagster_database: str) -> None:
    """An empty index and Dagster instance: the sample data is written anew (relative to now)
    at every start, so what an earlier start indexed, days ago perhaps, must not linger."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(template("server", "drop_schema", schema=sql.Identifier(DEFAULT_SCHEMA)))
        database = sql.Identifier(dagster_database)
        conn.execute(template("server", "drop_database", database=database))
        conn.execute(template("server", "create_database", database=database))


def write_dagster_home(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\n"
        # The daemon looks for queued runs every 5 s by default: each sensor run waited half
        # of that on average before it was launched.
        "run_queue:\n  dequeue_interval_seconds: 1\n"
        "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
    )


def _wait_for_ui(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("dagster dev exited during start-up")
        try:
            urllib.request.urlopen(f"{url}/server_info", timeout=2)  # noqa: S310
            return
        except Exception:
            time.sleep(1)
    raise TimeoutError(f"the Dagster UI did not answer at {url} within {timeout:.0f}s")


class _Live:
    """Every driver's current row now and then (put, overwritten, deleted in turn), so the
    sensor is seen at work and latest keeps up."""

    def __init__(self, s3) -> None:
        self.s3, self.step, self.rng = s3, 0, np.random.default_rng()
        self.key = ""

    def tick(self) -> None:
        now = clock.now()
        action = ("put", "overwrite", "delete")[self.step % 3]
        if action == "put":  # one key a cycle, even across midnight
            self.key = f"driver_hourly_stats/date={now.date().isoformat()}/live.parquet"
        key = self.key
        if action == "delete":
            self.s3.delete_object(Bucket=BUCKET, Key=key)
        else:
            body = parquet_bytes(driver_hourly_stats([now], now, self.rng))
            self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        _say(f"[live] {now:%H:%M:%S} {action} s3://{BUCKET}/{key}")
        self.step += 1


def _fes_command(root: Path) -> str:
    """How to run `fes` from another terminal here: with uv from PATH, or the one `make`
    bootstrapped into .tools/ when PATH has none."""
    if shutil.which("uv"):
        return "uv run fes"
    if (root / ".tools" / "bin" / "uv").exists():
        return ".tools/bin/uv run fes"
    return f"{Path(sys.executable).parent / 'fes'}"


def run_demo(live: bool = False, port: int = 3000) -> int:
    root = Path.cwd()
    folder = settings.demo_dir().resolve()
    demo_env = settings.demo_env_file()
    folder.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(folder / "pg", port=_port_of(folder))
    s3_server = MotoS3Server()
    dagster: subprocess.Popen | None = None

    def stop_on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)
    # A shell starts background jobs with SIGINT ignored; Ctrl-C must still stop the demo.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _say(f"starting PostgreSQL (data in {folder / 'pg'}) and an S3 server ...")
        pg.start()
        s3_server.start()
        _fresh_state(pg.url(), "dagster")
        env = {
            "FES_PG_URL": pg.url(),
            "DAGSTER_PG_URL": pg.url("psycopg2", "dagster"),
            "FES_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "AWS_ACCESS_KEY_ID": DEMO_KEY,
            "AWS_SECRET_ACCESS_KEY": DEMO_KEY,
            "AWS_REGION": "us-east-1",
            "FES_CONFIG": str(folder / "fes.yaml"),
            "DAGSTER_HOME": str(folder / "dagster_home"),
        }
        demo_env.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=DEMO_KEY,
            aws_secret_access_key=DEMO_KEY,
        )
        s3.create_bucket(Bucket=BUCKET)
        sample = sample_objects(clock.now())
        (folder / "fes.yaml").write_text(sample.registry_yaml())
        for key, body in sample.objects.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        _say(
            f"wrote {len(sample.objects)} sample parquet files to s3://{BUCKET}/ "
            f"({sample.first_day} to {sample.now:%Y-%m-%d %H:%M} UTC) and their registry "
            f"{folder / 'fes.yaml'}"
        )
        write_dagster_home(folder / "dagster_home")
        ui = f"http://127.0.0.1:{port}"
        log = open(folder / "dagster.log", "ab")  # noqa: SIM115 - open while dagster runs
        dagster = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=root,
            env=settings.child_environment(
                {
                    **env,
                    "FES_SENSOR_RUNNING": "1",
                    "FES_SENSOR_INTERVAL_SECONDS": settings.env("FES_SENSOR_INTERVAL_SECONDS", "5"),
                    "FES_RECONCILE_INTERVAL_SECONDS": "60",
                }
            ),
            start_new_session=True,  # so the whole tree stops with one signal
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _say(f"starting the Dagster UI (its log: {folder / 'dagster.log'}) ...")
        _wait_for_ui(ui, dagster)
        fes = _fes_command(root)
        _say(
            f"\nThe Dagster UI is at {ui} — bucket_sensor is running and indexes the sample "
            "data within a minute or two.\n"
            "In another terminal, in this folder, try:\n\n"
            f"  {fes} entities driver_hourly_stats --start {sample.first_day} "
            f"--end {sample.first_day + timedelta(days=1)}\n"
            f"  {fes} entities driver_hourly_stats --latest\n"
            f"  {fes} status\n\n"
            "Press Ctrl-C to stop everything."
        )
        feeder = _Live(s3) if live else None
        next_live = time.monotonic() + 30
        while dagster.poll() is None:
            time.sleep(1)
            if feeder and time.monotonic() >= next_live:
                feeder.tick()
                next_live = time.monotonic() + 30
        _say("dagster dev exited")
        return 1
    except KeyboardInterrupt:
        _say("\nstopping ...")
        return 0
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short and orphan servers.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if dagster is not None and dagster.poll() is None:
            os.killpg(dagster.pid, signal.SIGTERM)
            try:
                dagster.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(dagster.pid, signal.SIGKILL)
                dagster.wait(10)
        s3_server.stop()
        pg.stop()
        demo_env.unlink(missing_ok=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _say("stopped.")

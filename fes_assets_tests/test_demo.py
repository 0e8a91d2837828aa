"""`fes demo` as a newcomer runs it: the UI answers, the sensor indexes the sample data, and
Ctrl-C leaves nothing running; a second start is clean."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import boto3
import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from fes_assets.core.queries import entity_df
from fes_assets.dev.embedded_servers import free_port

ROOT = Path(__file__).resolve().parents[1]
RUNS = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"


def graphql(ui: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{ui}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.load(response)["data"]


def run_events(ui: str, run_id: str) -> tuple[set[str], list[str]]:
    """The step keys and the messages of one run's event log."""
    query = (
        f'{{ logsForRun(runId: "{run_id}") {{ ... on EventConnection {{ events {{ '
        "... on MessageEvent { message } ... on StepEvent { stepKey } } } } }"
    )
    events = graphql(ui, query)["logsForRun"]["events"]
    steps = {e["stepKey"] for e in events if e.get("stepKey")}
    return steps, [e["message"] for e in events if e.get("message")]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def start_demo(folder: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "FES_DEMO_DIR": str(folder), "FES_SENSOR_INTERVAL_SECONDS": "2"}
    for name in ("FES_PG_URL", "DAGSTER_HOME", "FES_CONFIG", "FES_SCHEMA"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "fes_assets.cli", "demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_demo(demo: subprocess.Popen) -> None:
    if demo.poll() is None:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            demo.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)


def leftovers(folder: Path) -> list[str]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if str(folder) in line or ("dagster" in line and "FES_DEMO_DIR" in line):
            found.append(line[:120])
    return found


def sample_rows(settings: dict[str, str], prefix: str) -> list[datetime]:
    """The event timestamps of the demo's sample files under `prefix`, read from its bucket."""
    s3 = boto3.client(
        "s3",
        endpoint_url=settings["FES_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=settings["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"],
    )
    times = []
    for obj in s3.list_objects_v2(Bucket="feast-offline", Prefix=prefix).get("Contents", []):
        body = s3.get_object(Bucket="feast-offline", Key=obj["Key"])["Body"].read()
        times += pq.read_table(io.BytesIO(body)).column("event_timestamp").to_pylist()
    return times


def demo_settings(folder: Path) -> dict[str, str]:
    text = (folder / "demo.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.mark.timeout(600)
def test_demo_indexes_the_sample_data_and_stops_cleanly(tmp_path):
    folder = tmp_path / "demo"
    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    started = datetime.now(UTC).date()
    demo = start_demo(folder, port, tmp_path / "demo.log")
    try:
        wait_for(
            lambda: (tmp_path / "demo.log").read_text().count("Press Ctrl-C"),
            240,
            "the demo's banner",
        )
        printed = (tmp_path / "demo.log").read_text()
        assert f"The Dagster UI is at {ui}" in printed
        assert "uv run fes entities driver_hourly_stats" in printed

        def all_runs_done():
            runs = graphql(ui, RUNS)["runsOrError"]["results"]
            return runs if len(runs) >= 3 and all(r["status"] == "SUCCESS" for r in runs) else None

        runs = wait_for(all_runs_done, 240, "the sensor's runs")
        assert len(runs) <= 6  # a handful of ranged runs, not one per day
        for run in runs:
            # The daemon launched it as users' deployments do: both steps in the run's process.
            steps, messages = run_events(ui, run["runId"])
            assert len(steps) == 2, steps
            assert any(m.startswith("Executing steps in process") for m in messages), messages
            assert not any(m.startswith("Launching subprocess") for m in messages)
        assert any(
            t["key"] == "dagster/asset_partition_range_start" for r in runs for t in r["tags"]
        )
        settings = demo_settings(folder)
        registry = yaml.safe_load((folder / "fes.yaml").read_text())
        assert settings["FES_CONFIG"] == str(folder / "fes.yaml")
        first_day = date.fromisoformat(registry["partitions_start"])
        # The last 14 days (the demo may have started on either side of a midnight).
        assert first_day in {d - timedelta(days=13) for d in (started, datetime.now(UTC).date())}
        written = sample_rows(settings, "driver_hourly_stats/")
        assert len(written) > 50 * 24 * 13  # hourly rows for 50 drivers, today's up to now
        assert max(written) <= datetime.now(UTC)  # nothing dated after now
        df = entity_df("driver_hourly_stats", first_day, url=settings["FES_PG_URL"])
        assert len(df) == len(written)
        assert len(entity_df("driver_customer_trips", latest=True, url=settings["FES_PG_URL"])) > 0
        # The printed command works as printed, from another terminal.
        out = subprocess.run(
            [sys.executable, "-m", "fes_assets.cli", "entities", "driver_hourly_stats", "--latest"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={
                k: v
                for k, v in {**os.environ, "FES_DEMO_DIR": str(folder)}.items()
                if k != "FES_PG_URL"
            },
        )
        assert out.returncode == 0, out.stderr
        assert len(out.stdout.splitlines()) == 51  # header and 50 drivers
    finally:
        stop_demo(demo)
    assert demo.returncode == 0
    wait_for(lambda: not leftovers(folder), 60, "every demo process to end")

    # A second start (its data written anew, up to its own now) indexes it from a clean state.
    demo = start_demo(folder, port, tmp_path / "demo2.log")
    try:
        wait_for(
            lambda: (tmp_path / "demo2.log").read_text().count("Press Ctrl-C"),
            240,
            "the second banner",
        )
        wait_for(all_runs_done, 240, "the second start's runs")
        settings = demo_settings(folder)
        written = sample_rows(settings, "driver_hourly_stats/")
        df = entity_df("driver_hourly_stats", url=settings["FES_PG_URL"])
        assert len(df) == len(written)
    finally:
        stop_demo(demo)
    assert demo.returncode == 0
    wait_for(lambda: not leftovers(folder), 60, "every process of the second start to end")

"""Faults: the run process killed mid-COPY, and an object store that errs, resets and stalls."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fes_assets.core.indexing import EntityIndexer
from fes_assets.core.object_store import ObjectStore, ObjectStoreSettings
from fes_assets.core.storage.database import IndexDb
from fes_assets_tests.conftest import ACCESS_KEY, SECRET_KEY

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2021, 4, 1, tzinfo=UTC)
DAY = date(2021, 4, 1)
DRIVERS = {
    "driver_hourly_stats": {
        "prefix": "d/",
        "entities": {"driver_id": "INT64"},
        "timestamp_column": "event_timestamp",
    }
}
CHILD = r"""
import json, sys
from datetime import date
from fes_assets.core.storage.database import IndexDb
from fes_assets.core.indexing import EntityIndexer
from fes_assets.core.storage.database import IndexDb
from fes_assets.core.object_store import ObjectStore, ObjectStoreSettings
from fes_assets.core.registry import parse_registry
a = json.loads(sys.argv[1])
store = ObjectStore(ObjectStoreSettings(endpoint_url=a["endpoint"], access_key_id=a["key"],
                                        secret_access_key=a["secret"]))
EntityIndexer(store, IndexDb(a["url"], a["schema"]), parse_registry(a["registry"]),
              "driver_id", log=lambda m: None).run([date(2021, 4, 1)])
"""


def many(n: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    us = int(T0.timestamp() * 1e6) + rng.integers(0, 86_400_000_000, n)
    return pa.table(
        {
            "driver_id": pa.array(rng.integers(0, 10**9, n), pa.int64()),
            "event_timestamp": pa.array(us, pa.timestamp("us", tz="UTC")),
        }
    )


@pytest.mark.timeout(300)
def test_sigkill_mid_copy_leaves_the_day_as_before_and_a_retry_completes(lab):
    lab.use_registry(DRIVERS)
    lab.put("d/a.parquet", many(10))
    assert lab.materialize("driver_id", "2021-04-01").success
    before = lab.ids("entity_driver_id", "driver_id", "event_timestamp")
    lab.put("d/a.parquet", many(3_000_000, seed=2))
    args = {
        "endpoint": lab.endpoint,
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "url": lab.pg_url,
        "schema": lab.schema,
        "registry": {
            "bucket": lab.bucket,
            "partitions_start": "2021-01-01",
            "feature_tables": DRIVERS,
        },
    }
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], cwd=ROOT)

    def copying() -> bool:
        return bool(
            lab.sql(
                "SELECT 1 FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE 'COPY %%_e_driver_id_202104%%'"
            )
        )

    deadline = time.monotonic() + 120
    while not copying():
        assert child.poll() is None, "the run ended before its COPY was seen"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    while lab.sql(
        "SELECT 1 FROM pg_stat_activity WHERE state <> 'idle' "
        "AND query LIKE 'COPY %%_e_driver_id_202104%%'"
    ):
        time.sleep(0.1)  # the server notices the lost client and rolls its transaction back
    assert lab.ids("entity_driver_id", "driver_id", "event_timestamp") == before
    report = EntityIndexer(lab.store, lab.db, lab.registry, "driver_id", log=lambda m: None).run(
        [DAY]
    )
    assert report.rows == 3_000_000
    assert lab.sql("SELECT count(*) FROM entity_driver_id") == [(3_000_000,)]


class FaultyProxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """An HTTP proxy in front of the S3 server that answers some requests with 500 or 503
    SlowDown, resets some connections and delays others, in a fixed, repeating pattern."""

    daemon_threads = True

    def __init__(self, upstream: str, pattern: list[str]):
        self.upstream = upstream.removeprefix("http://")
        self.pattern, self.count, self.lock = pattern, 0, threading.Lock()
        self.seen: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) as forwarded
        super().__init__(("127.0.0.1", 0), _Handler)

    def next_fault(self) -> str:
        with self.lock:
            fault = self.pattern[self.count % len(self.pattern)]
            self.count += 1
            self.seen[fault] = self.seen.get(fault, 0) + 1
            return fault


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self.server.next_fault()
        if fault == "reset":
            self.connection.shutdown(2)
            return
        if fault in ("500", "503"):
            code = "SlowDown" if fault == "503" else "InternalError"
            payload = (f"<Error><Code>{code}</Code><Message>injected</Message></Error>").encode()
            self.send_response(int(fault))
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if fault == "slow":
            time.sleep(0.5)
        self.server.requests.append((self.command, self.path))
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        upstream.request(self.command, self.path, body, dict(self.headers))
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status)
        for k, v in response.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        # A HEAD answer has no body but announces the object's length.
        length = response.getheader("Content-Length") if self.command == "HEAD" else len(data)
        self.send_header("Content-Length", str(length or 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward


def proxied(lab, pattern: list[str]):
    proxy = FaultyProxy(lab.endpoint, pattern)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    store = ObjectStore(
        ObjectStoreSettings(
            endpoint_url=f"http://127.0.0.1:{proxy.server_port}",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )
    )
    return proxy, store


def test_transient_s3_faults_are_retried(lab):
    lab.use_registry(DRIVERS)
    for i in range(4):
        lab.put(f"d/{i}.parquet", many(1000, seed=i))
    proxy, store = proxied(lab, ["ok", "503", "ok", "500", "ok", "reset", "slow", "ok"])
    try:
        report = EntityIndexer(store, lab.db, lab.registry, "driver_id", log=lambda m: None).run(
            [DAY]
        )
    finally:
        proxy.shutdown()
    assert report.rows == 4000 and not report.failed
    assert lab.sql("SELECT count(*) FROM files WHERE status = 'indexed'") == [(4,)]
    assert proxy.seen.get("503") and proxy.seen.get("500") and proxy.seen.get("reset")


def test_a_persistent_s3_outage_fails_the_run_clearly_and_marks_no_file(lab):
    lab.use_registry(DRIVERS)
    lab.put("d/a.parquet", many(100))
    proxy, store = proxied(lab, ["500"])
    try:
        with pytest.raises(Exception, match="500|InternalError|injected") as err:
            EntityIndexer(store, lab.db, lab.registry, "driver_id", log=lambda m: None).run([DAY])
    finally:
        proxy.shutdown()
    assert "not a readable parquet" not in str(err.value)
    assert lab.sql("SELECT count(*) FROM files WHERE status = 'failed'") == [(0,)]
    report = EntityIndexer(lab.store, lab.db, lab.registry, "driver_id", log=lambda m: None).run(
        [DAY]
    )
    assert report.rows == 100


def test_an_object_larger_than_the_cache_is_read_once_per_window_of_days(lab):
    """Rows of six days in every row group; with room for two days at a time the object is
    read three times, not six, and the index is the same whatever the room."""
    lab.use_registry(DRIVERS)
    days = [date(2021, 4, d) for d in range(1, 7)]
    table = many(6000)
    spread = pa.array(
        table.column("event_timestamp").cast(pa.int64()).to_numpy()
        + np.arange(6000) % 6 * 86_400_000_000,
        pa.int64(),
    ).cast(pa.timestamp("us", tz="UTC"))
    lab.put("d/big.parquet", table.set_column(1, "event_timestamp", spread), row_group_size=1000)
    seen = {}
    per_day_estimate = 6000 * 32 // 6
    for label, cache in (("one day", per_day_estimate), ("two days", 2 * per_day_estimate)):
        proxy, store = proxied(lab, ["ok"])
        db = IndexDb(lab.pg_url, f"{lab.schema}_{cache}")
        try:
            EntityIndexer(
                store, db, lab.registry, "driver_id", log=lambda m: None, cache_bytes=cache
            ).run(days)
        finally:
            proxy.shutdown()
        gets = sum(1 for method, path in proxy.requests if method == "GET" and "big" in path)
        rows = lab.sql(f"SELECT driver_id, event_timestamp FROM {db.schema}.entity_driver_id")
        seen[label] = (gets, sorted(rows))
    assert len(seen["one day"][1]) == 6000
    assert seen["one day"][1] == seen["two days"][1]
    # Each pass reads the footer and the row groups: half the passes, about half the reads.
    assert seen["two days"][0] * 3 <= seen["one day"][0] * 2

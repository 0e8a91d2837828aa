"""Item 7: Feast's own entity-less `get_historical_features(start_date=, end_date=)` on its file
store against `fes_assets.feast.historical_features`, on the same data: two feature views
sharing driver_id over 30 days. Each call runs in its own process (peak RSS); both answers are
checked against a brute-force point-in-time join computed here."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench import data
from bench.measures import KEY, Result, Servers, materialize
from fes_assets.cli.feast_import import inside
from fes_assets.core.registry import parse_registry
from fes_assets.core.storage.database import IndexDb
from fes_assets.core.storage.schema import ensure_schema
from fes_assets.dev.feast_repo import write_feature_store_yaml

START = data.START
END = START + timedelta(days=data.DAYS)
TTL = {"driver_stats": timedelta(days=1), "driver_trips": timedelta(days=2)}
FEATURES = {"driver_stats": ["conv_rate", "acc_rate"], "driver_trips": ["trips"]}
REFS = [f"{view}:{f}" for view, names in FEATURES.items() for f in names]
VALUES = [f for names in FEATURES.values() for f in names]
TIMEOUT = 1800  # seconds a call may take before it counts as failed


REPO = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
driver_stats = FeatureView(
    name="driver_stats", entities=[driver], ttl=timedelta(days=1),
    schema=[Field(name="conv_rate", dtype=Float32), Field(name="acc_rate", dtype=Float32)],
    source=FileSource(path="{local}/stats", timestamp_field="event_timestamp",
                      created_timestamp_column="created"),
)
driver_trips = FeatureView(
    name="driver_trips", entities=[driver], ttl=timedelta(days=2),
    schema=[Field(name="trips", dtype=Int64)],
    source=FileSource(path="{local}/trips", timestamp_field="event_timestamp"),
)
"""

# One call in a fresh interpreter: idle RSS after the imports, peak RSS while it runs.
CHILD = r"""
import json, sys, threading, time
import psutil
args = json.loads(sys.argv[1])
import pyarrow as pa, pyarrow.parquet as pq
from feast import FeatureStore
from fes_assets.feast import historical_features
proc = psutil.Process()
store = FeatureStore(repo_path=args["repo"])
idle = proc.memory_info().rss
peak = [idle]; stop = False
def sample():
    while not stop:
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.02)
t = threading.Thread(target=sample, daemon=True); t.start()
when = {k: (None if v is None else __import__("datetime").datetime.fromisoformat(v))
        for k, v in args["when"].items()}
t0 = time.perf_counter()
if args["side"] == "feast":
    df = store.get_historical_features(
        features=args["refs"], start_date=when["start"], end_date=when["end"]).to_df()
    table = pa.Table.from_pandas(df, preserve_index=False)
else:
    table = historical_features(store, args["refs"], when["start"], when["end"],
                                latest=args["latest"], as_of=when["as_of"]).to_arrow()
seconds = time.perf_counter() - t0
stop = True; t.join()
pq.write_table(table, args["out"])
print(json.dumps({"seconds": seconds, "idle": idle, "peak": peak[0], "rows": table.num_rows}))
"""


@dataclass(frozen=True)
class Question:
    name: str
    by_time: bool  # rows are (id, event time); else one row per id
    ours: dict  # start, end, as_of, latest
    native: dict  # start_date, end_date


def questions() -> list[Question]:
    day = START + timedelta(days=14)
    as_of = END - timedelta(hours=12)
    return [
        Question(
            "1-day window",
            True,
            {"start": day, "end": day + timedelta(days=1), "as_of": None, "latest": False},
            {"start": day, "end": day + timedelta(days=1)},
        ),
        Question(
            "latest",
            False,
            {"start": START, "end": END, "as_of": None, "latest": True},
            {"start": START, "end": END},
        ),
        Question(
            "as_of",
            False,
            {"start": None, "end": None, "as_of": as_of, "latest": False},
            {"start": START, "end": as_of},
        ),
    ]


def make_data(rows: int, drivers: int, seed: int = 7) -> dict[str, dict[str, pa.Table]]:
    """Per view, one table a day: stats `rows` in all, trips about one row per driver a day."""
    rng = np.random.default_rng(seed)
    stats, trips = {}, {}
    for d in range(data.DAYS):
        n = rows // data.DAYS
        ts = data.START_US + d * data.DAY_US + rng.integers(0, data.DAY_US, n)
        stats[f"day={d:02d}.parquet"] = pa.table(
            {
                "driver_id": pa.array(rng.integers(0, drivers, n), pa.int64()),
                "event_timestamp": pa.array(ts, data.TS),
                "created": pa.array(ts + 60_000_000, data.TS),
                "conv_rate": pa.array(rng.random(n).astype("float32")),
                "acc_rate": pa.array(rng.random(n).astype("float32")),
            }
        )
        active = np.flatnonzero(rng.random(drivers) < 0.5)
        ts = data.START_US + d * data.DAY_US + rng.integers(0, data.DAY_US, len(active))
        trips[f"day={d:02d}.parquet"] = pa.table(
            {
                "driver_id": pa.array(active, pa.int64()),
                "event_timestamp": pa.array(ts, data.TS),
                "trips": pa.array(rng.integers(0, 100, len(active)), pa.int64()),
            }
        )
    return {"driver_stats": stats, "driver_trips": trips}


def _frames(tables: dict[str, dict[str, pa.Table]]) -> dict[str, pd.DataFrame]:
    return {view: pa.concat_tables(t.values()).to_pandas() for view, t in tables.items()}


def truth(q: Question, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Brute force: every candidate row of the same id within the TTL, the newest kept."""
    both = pd.concat([f[["driver_id", "event_timestamp"]] for f in frames.values()])
    if q.ours["as_of"] is not None:
        seen = both[both["event_timestamp"] < q.ours["as_of"]]["driver_id"].unique()
        entities = pd.DataFrame({"driver_id": seen, "event_timestamp": q.ours["as_of"]})
    else:
        lo, hi = q.ours["start"], q.ours["end"]
        window = both[(both["event_timestamp"] >= lo) & (both["event_timestamp"] < hi)]
        if q.ours["latest"]:
            entities = window.groupby("driver_id", as_index=False)["event_timestamp"].max()
        else:
            entities = window.drop_duplicates()
    entities = entities.astype({"event_timestamp": "datetime64[us, UTC]"})
    out = entities.reset_index(drop=True)
    for view, frame in frames.items():
        ttl, names = TTL[view], FEATURES[view]
        order = ["event_timestamp", "created"] if "created" in frame else ["event_timestamp"]
        lo, hi = out["event_timestamp"].min() - ttl, out["event_timestamp"].max()
        rows = frame[(frame["event_timestamp"] >= lo) & (frame["event_timestamp"] <= hi)]
        found = []
        # Fifty ids at a time keeps the id-equijoin's product small.
        ids = out["driver_id"].unique()
        for part in np.array_split(ids, max(1, len(ids) // 50)):
            e = out[out["driver_id"].isin(part)].rename(columns={"event_timestamp": "at"})
            m = e.merge(rows[rows["driver_id"].isin(part)], on="driver_id")
            m = m[(m["event_timestamp"] <= m["at"]) & (m["event_timestamp"] >= m["at"] - ttl)]
            m = m.sort_values(order).groupby(["driver_id", "at"], as_index=False).last()
            found.append(m[["driver_id", "at", *names]])
        matched = pd.concat(found).rename(columns={"at": "event_timestamp"})
        out = out.merge(matched, on=["driver_id", "event_timestamp"], how="left")
    return out


def wrong_rows(answer: pd.DataFrame, right: pd.DataFrame, by_time: bool) -> tuple[int, int]:
    """(rows of the answer that are not right, right rows the answer lacks). Without by_time,
    rows are matched per id only: Feast stamps its rows with end_date."""
    keys = ["driver_id", "event_timestamp"] if by_time else ["driver_id"]
    answer = answer.astype({"event_timestamp": "datetime64[us, UTC]"})
    m = answer.merge(right, on=keys, how="left", suffixes=("", "_truth"), indicator=True)
    bad = m["_merge"] != "both"
    for name in VALUES:
        got, want = m[name].astype("float64"), m[f"{name}_truth"].astype("float64")
        same = (got == want) | (got.isna() & want.isna())
        bad |= ~same
    bad |= m.duplicated(keys, keep=False)
    missing = len(right) - right.merge(answer[keys].drop_duplicates(), on=keys).shape[0]
    return int(bad.sum()), int(missing)


def _run(side: str, q: Question, repo: Path, env: dict[str, str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="fes-bench-feast-")) / "answer.parquet"
    when = q.native if side == "feast" else q.ours
    args = {
        "side": side,
        "repo": str(repo),
        "refs": REFS,
        "out": str(out),
        "latest": bool(q.ours["latest"]),
        "when": {
            k: (when.get(k).isoformat() if when.get(k) is not None else None)
            for k in ("start", "end", "as_of")
        },
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"no answer within {TIMEOUT} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return {"failed": lines[-1]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["answer"] = pq.read_table(out).to_pandas()
    return result


def feast_retrieval(servers: Servers, rows: int, drivers: int, instance) -> list[Result]:
    import os

    from feast import FeatureStore
    from feast.repo_operations import parse_repo

    tables = make_data(rows, drivers)
    local = Path(tempfile.mkdtemp(prefix="fes-bench-feast-data-"))
    suffix = uuid.uuid4().hex[:8]
    bucket = f"bench-{suffix}"
    servers.s3.create_bucket(Bucket=bucket)
    prefixes = {"driver_stats": "stats", "driver_trips": "trips"}
    for view, files in tables.items():
        folder = local / prefixes[view]
        folder.mkdir()
        objects = {}
        for name, table in files.items():
            pq.write_table(table, folder / name)  # Feast's copy: it reads through s3fs
            objects[f"{prefixes[view]}/{name}"] = (folder / name).read_bytes()
        data.upload(servers.s3, bucket, objects)
    registry = parse_registry(
        {
            "bucket": bucket,
            "partitions_start": START.date().isoformat(),
            "feature_tables": {
                "driver_stats": {
                    "prefix": "stats/",
                    "entities": {"driver_id": "INT64"},
                    "timestamp_column": "event_timestamp",
                    "created_timestamp_column": "created",
                },
                "driver_trips": {
                    "prefix": "trips/",
                    "entities": {"driver_id": "INT64"},
                    "timestamp_column": "event_timestamp",
                },
            },
        }
    )
    db = IndexDb(servers.url, f"bench_{suffix}")
    ensure_schema(db, registry)
    index_seconds = materialize(
        servers, db, registry, START.date(), (END - timedelta(days=1)).date(), instance
    )

    repo = local / "repo"
    repo.mkdir()
    write_feature_store_yaml(repo, "fes_bench")
    (repo / "definitions.py").write_text(REPO.format(local=local))
    with inside(repo):  # Feast imports a repository's modules relative to its root
        store = FeatureStore(repo_path=str(repo))
        contents = parse_repo(repo)
        store.apply([*contents.entities, *contents.feature_views])
    env = {
        **os.environ,
        "FES_PG_URL": servers.url,
        "FES_SCHEMA": db.schema,
        "FES_S3_ENDPOINT_URL": servers.s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": KEY,
    }
    frames = _frames(tables)
    results = []
    item = "7. Feast retrieval"
    for q in questions():
        right = truth(q, frames)
        sides = {side: _run(side, q, repo, env) for side in ("feast", "fes")}
        detail: dict = {"right rows": len(right)}
        for side, r in sides.items():
            name = "Feast" if side == "feast" else "fes"
            if "failed" in r:
                detail[name] = {"failed": r["failed"]}
                continue
            wrong, missing = wrong_rows(r.pop("answer"), right, q.by_time)
            r.update(wrong=wrong, missing=missing, mib=(r["peak"] - r["idle"]) / 2**20)
            detail[name] = {
                "rows": r["rows"],
                "wrong": wrong,
                "missing": missing,
                "seconds": r["seconds"],
                "MiB above idle": r["mib"],
            }
        ours, native = sides["fes"], sides["feast"]
        if "failed" in ours:
            raise RuntimeError(f"historical_features failed on {q.name}: {ours['failed']}")
        native_ok = "failed" not in native
        results += [
            Result(
                item,
                f"{q.name}: wrong or missing rows",
                ours["wrong"] + ours["missing"],
                native["wrong"] + native["missing"] if native_ok else float("nan"),
                "Feast's entity-less call",
                "rows",
                "0",
                ours["wrong"] + ours["missing"] == 0,
                detail,
            ),
            Result(
                item,
                f"{q.name}: wall time",
                ours["seconds"],
                native["seconds"] if native_ok else float("nan"),
                "Feast's entity-less call",
                "s",
                "<= Feast's",
                native_ok and ours["seconds"] <= native["seconds"],
            ),
            Result(
                item,
                f"{q.name}: peak memory",
                ours["mib"],
                native["mib"] if native_ok else float("nan"),
                "Feast's entity-less call",
                "MiB above idle",
                "<= Feast's",
                native_ok and ours["mib"] <= native["mib"],
            ),
        ]
    results[0].detail["data"] = (
        f"{sum(t.num_rows for t in tables['driver_stats'].values()):,} stats rows and "
        f"{sum(t.num_rows for t in tables['driver_trips'].values()):,} trips rows, "
        f"{drivers:,} drivers, 30 daily objects a view; indexed in {index_seconds:.1f} s"
    )
    return results

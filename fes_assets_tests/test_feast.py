"""The hand-off to Feast, for real: entity_df from the index into get_historical_features, and
`fes import-feast` on a small Feast repository."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from fes_assets.cli import main as fes
from fes_assets.core.queries import entity_df
from fes_assets.dev.sample_data import driver_hourly_stats

feast = pytest.importorskip("feast")
from feast.types import Float32, Int64  # noqa: E402

REPO = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)

driver_stats_source = FileSource(
    path="{driver_path}",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=2),
    schema=[Field(name="conv_rate", dtype=Float32), Field(name="avg_daily_trips", dtype=Int64)],
    source=driver_stats_source,
)
customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=30),
    schema=[Field(name="current_balance", dtype=Float32)],
    source=FileSource(path="{customer_path}", timestamp_field="event_timestamp",
                      field_mapping={{"cust": "customer_id"}}),
)
"""
STORE = """
project: fes_test
registry: {registry}
provider: local
offline_store:
  type: file
online_store:
  type: sqlite
  path: {online}
entity_key_serialization_version: 3
"""


def write_repo(folder: Path, driver_path: str, customer_path: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "definitions.py").write_text(
        REPO.format(driver_path=driver_path, customer_path=customer_path)
    )
    (folder / "feature_store.yaml").write_text(
        STORE.format(registry=folder / "registry.db", online=folder / "online.db")
    )
    return folder


def test_entity_df_feeds_get_historical_features(lab, tmp_path):
    lab.use_registry(
        {
            "driver_hourly_stats": {
                "prefix": "driver_hourly_stats/",
                "entities": {"driver_id": "INT64"},
                "timestamp_column": "event_timestamp",
                "created_timestamp_column": "created",
            }
        }
    )
    rng = np.random.default_rng(3)
    local = tmp_path / "data"
    local.mkdir()
    first = datetime(2021, 4, 1, tzinfo=UTC)
    later = first + timedelta(days=30)  # "now" for the sample: every created time is earlier
    days = [
        driver_hourly_stats([first + timedelta(days=d, hours=h) for h in range(24)], later, rng)
        for d in range(3)
    ]
    for d, table in enumerate(days):
        lab.put(f"driver_hourly_stats/day={d}.parquet", table)
        pq.write_table(table, local / f"day={d}.parquet")
    assert lab.materialize("driver_id", ("2021-04-01", "2021-04-03")).success

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        STORE.format(registry=repo / "registry.db", online=repo / "online.db")
    )
    store = feast.FeatureStore(repo_path=str(repo))
    driver = feast.Entity(name="driver", join_keys=["driver_id"], value_type=feast.ValueType.INT64)
    view = feast.FeatureView(
        name="driver_hourly_stats",
        entities=[driver],
        ttl=timedelta(days=2),
        schema=[
            feast.Field(name="conv_rate", dtype=Float32),
            feast.Field(name="avg_daily_trips", dtype=Int64),
        ],
        source=feast.FileSource(
            path=str(local), timestamp_field="event_timestamp", created_timestamp_column="created"
        ),
    )
    store.apply([driver, view])

    truth = pd.concat([t.to_pandas() for t in days])
    # Training: every indexed row of April 2nd, features joined point in time.
    ids = entity_df(
        "driver_hourly_stats", "2021-04-02", "2021-04-03", url=lab.pg_url, schema=lab.schema
    )
    assert len(ids) == 50 * 24
    joined = store.get_historical_features(
        entity_df=ids,
        features=["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
    ).to_df()
    merged = joined.merge(truth, on=["driver_id", "event_timestamp"], suffixes=("", "_src"))
    assert len(merged) == len(ids)
    assert np.allclose(merged["conv_rate"], merged["conv_rate_src"])
    assert (merged["avg_daily_trips"] == merged["avg_daily_trips_src"]).all()

    # Batch prediction: every driver once, scored as of a moment, with its latest features.
    as_of = datetime(2021, 4, 3, 12, 30, tzinfo=UTC)
    scored = entity_df("driver_hourly_stats", as_of=as_of, url=lab.pg_url, schema=lab.schema)
    assert len(scored) == 50 and (scored["event_timestamp"] == pd.Timestamp(as_of)).all()
    features = store.get_historical_features(
        entity_df=scored, features=["driver_hourly_stats:conv_rate"]
    ).to_df()
    newest = truth[truth["event_timestamp"] <= as_of].sort_values("event_timestamp")
    newest = newest.groupby("driver_id").tail(1).set_index("driver_id")["conv_rate"]
    got = features.set_index("driver_id")["conv_rate"]
    assert np.allclose(got.sort_index(), newest.sort_index())


def test_import_feast_writes_the_hand_written_registry(tmp_path, capsys):
    repo = write_repo(
        tmp_path / "repo", "s3://feast-offline/driver_hourly_stats/", "s3://other-bucket/customers/"
    )
    (repo / "local_only.py").write_text(
        textwrap.dedent("""
        from datetime import timedelta
        from feast import FeatureView, Field, FileSource
        from feast.types import Float32
        from definitions import driver
        local_stats = FeatureView(
            name="local_stats", entities=[driver], ttl=timedelta(days=1),
            schema=[Field(name="x", dtype=Float32)],
            source=FileSource(path="/data/local.parquet", timestamp_field="ts"))
    """)
    )
    out = tmp_path / "fes.yaml"
    assert fes(["import-feast", str(repo), "-o", str(out), "--partitions-start", "2021-01-01"]) == 0
    assert (
        "skipped feature view local_stats: source path '/data/local.parquet' is not on s3://"
        in capsys.readouterr().err
    )
    assert yaml.safe_load(out.read_text()) == {
        "bucket": "feast-offline",
        "partitions_start": "2021-01-01",
        "feature_tables": {
            "customer_profile": {
                "bucket": "other-bucket",
                "prefix": "customers/",
                "entities": {"customer_id": "STRING"},
                "timestamp_column": "event_timestamp",
                "field_mapping": {"cust": "customer_id"},
            },
            "driver_hourly_stats": {
                "prefix": "driver_hourly_stats/",
                "entities": {"driver_id": "INT64"},
                "timestamp_column": "event_timestamp",
                "created_timestamp_column": "created",
            },
        },
    }

"""Loading and validating `fes.yaml`."""

from __future__ import annotations

from datetime import date

import pytest

from fes_assets.core.errors import RegistryError
from fes_assets.core.registry import load_registry, parse_registry

VALID = """
bucket: feast-offline
partitions_start: "2021-01-01"
feature_tables:
  driver_hourly_stats:
    prefix: driver_hourly_stats/
    entities: {driver_id: INT64}
    timestamp_column: event_timestamp
    created_timestamp_column: created
  driver_customer_trips:
    bucket: other-bucket
    prefix: trips/
    entities: {driver_id: INT64, customer_id: STRING}
    timestamp_column: ts
    field_mapping: {drv: driver_id}
  driver_overlap:
    prefix: driver_hourly_stats/2021/
    entities: {driver_id: INT64}
    timestamp_column: event_timestamp
"""


def test_the_design_example_loads(tmp_path, monkeypatch):
    (tmp_path / "fes.yaml").write_text(VALID)
    monkeypatch.chdir(tmp_path)
    reg = load_registry()
    assert reg.partitions_start == date(2021, 1, 1)
    trips = reg.feature_tables["driver_customer_trips"]
    assert trips.bucket == "other-bucket" and trips.entity_key == "customer_id__driver_id"
    assert trips.source_column("driver_id") == "drv"
    assert sorted(reg.by_entity_key()) == ["customer_id__driver_id", "driver_id"]
    # Overlapping prefixes: one object feeds both tables; only the outer prefix is listed.
    assert {
        t.name for t in reg.tables_for("feast-offline", "driver_hourly_stats/2021/a.parquet")
    } == {"driver_hourly_stats", "driver_overlap"}
    assert ("feast-offline", "driver_hourly_stats/2021/") not in reg.prefixes()


def test_fes_config_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.yaml"
    path.write_text(VALID)
    monkeypatch.setenv("FES_CONFIG", str(path))
    assert "driver_overlap" in load_registry().feature_tables


def table(**overrides):
    spec = {"prefix": "p/", "entities": {"driver_id": "INT64"}, "timestamp_column": "ts"}
    spec.update(overrides)
    return spec


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"bad-name": table()}, "feature table 'bad-name'"),
        ({"t": table(entities={"driver id": "INT64"})}, "join key 'driver id'"),
        ({"t": table(entities={"a__b": "INT64"})}, "contains '__'"),
        ({"t": table(entities={"x": "FLOAT"})}, "has type 'FLOAT'"),
        ({"t": table(entities={"x'; DROP TABLE files; --": "INT64"})}, "join key"),
        ({"t": table(entities={})}, "field entities"),
        ({"t": table(timestamp_column=None)}, "field timestamp_column"),
        ({"t": table(prefix=None)}, "field prefix"),
        ({"t": table(bogus=1)}, "unknown field(s) bogus"),
        ({"t": table(entities={"k" * 52: "INT64"})}, "longer than 63 bytes"),
        ({"a": table(), "b": table(entities={"driver_id": "STRING"})}, "feature table 'b'"),
    ],
)
def test_bad_registries_name_the_table_and_field(tables, message):
    with pytest.raises(RegistryError) as err:
        parse_registry({"bucket": "b", "feature_tables": tables})
    assert message in str(err.value)


def test_bad_start_and_missing_bucket():
    with pytest.raises(RegistryError, match="partitions_start"):
        parse_registry(
            {"bucket": "b", "partitions_start": "April", "feature_tables": {"t": table()}}
        )
    with pytest.raises(RegistryError, match="feature table 't', field bucket"):
        parse_registry({"feature_tables": {"t": table()}})


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RegistryError, match="not found"):
        load_registry(tmp_path / "nope.yaml")

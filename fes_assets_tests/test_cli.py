"""The `fes` command as a user types it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fes_assets.cli import main as fes

T0 = datetime(2021, 4, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
DRIVERS = {
    "driver_hourly_stats": {
        "prefix": "d/",
        "entities": {"driver_id": "INT64"},
        "timestamp_column": "event_timestamp",
    }
}


def drivers(ids, times) -> pa.Table:
    return pa.table(
        {"driver_id": pa.array(ids, pa.int64()), "event_timestamp": pa.array(times, TS)}
    )


def test_entities_csv_parquet_and_options(env, capsys, tmp_path):
    env.put(
        "d/a.parquet", drivers([1, 2, 1], [T0, T0 + timedelta(hours=1), T0 + timedelta(days=1)])
    )
    assert env.materialize("driver_id", ("2021-04-01", "2021-04-02")).success
    assert (
        fes(["entities", "driver_hourly_stats", "--start", "2021-04-01", "--end", "2021-04-02"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == '"driver_id","event_timestamp"'
    assert sorted(lines[1:]) == ["1,2021-04-01 00:00:00.000000Z", "2,2021-04-01 01:00:00.000000Z"]
    out = tmp_path / "latest.parquet"
    assert fes(["entities", "driver_hourly_stats", "--latest", "-o", str(out)]) == 0
    table = pq.read_table(out)
    assert sorted(table.column("driver_id").to_pylist()) == [1, 2]
    assert fes(["entities", "driver_hourly_stats", "--as-of", "2021-04-01T12:00:00"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["entities", "nope"],
        ["entities", "driver_hourly_stats", "--start", "2021-04-02", "--end", "2021-04-01"],
        ["entities", "driver_hourly_stats", "--start", "first of april"],
        ["entities", "driver_hourly_stats", "--latest", "--as-of", "2021-04-01"],
        ["entities", "driver_hourly_stats", "--format", "parquet"],
        ["entities"],
        ["index", "--partition-range", "2021-04-02...2021-04-01"],
        ["index", "--partition-range", "April"],
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(env, capsys, argv):
    env.put("d/a.parquet", drivers([1], [T0]))
    assert env.materialize("driver_id", "2021-04-01").success
    capsys.readouterr()
    assert fes(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fes: ") and len(err.splitlines()) == 1, err


def test_status_and_retry_of_a_file_fixed_in_place(env, capsys, monkeypatch, tmp_path):
    spec = {**DRIVERS["driver_hourly_stats"], "created_timestamp_column": "created"}
    env.use_registry({"driver_hourly_stats": spec})
    monkeypatch.setenv("FES_CONFIG", str(env.write_registry(tmp_path)))
    env.put("d/good.parquet", drivers([1], [T0]).append_column("created", pa.array([T0], TS)))
    env.put("d/bad.parquet", drivers([5], [T0]))  # no created column
    assert env.materialize("driver_id", "2021-04-01").success
    assert fes(["status"]) == 0
    out = capsys.readouterr().out
    assert "bad.parquet" in out and "missing created timestamp column 'created'" in out
    assert fes(["retry"]) == 0
    assert "re-queued 0 file(s); 1 still failing" in capsys.readouterr().out
    # The fix is in the registry, so the object's ETag stays the same: only a retry re-reads it.
    env.use_registry(DRIVERS)
    monkeypatch.setenv("FES_CONFIG", str(env.write_registry(tmp_path)))
    assert fes(["retry", "d/bad.parquet"]) == 0
    assert "re-queued 1 file(s)" in capsys.readouterr().out
    assert env.settle(env.sensor()) == 1
    assert env.ids("entity_driver_id", "driver_id") == [(1,), (5,)]
    assert fes(["status"]) == 0
    assert "failed:" not in capsys.readouterr().out


def test_index_materializes_a_range_on_the_instance(env, capsys):
    env.put("d/a.parquet", drivers([1, 2, 3], [T0, T0 + timedelta(days=1), T0 + timedelta(days=2)]))
    assert fes(["index", "--partition-range", "2021-04-01...2021-04-02"]) == 0
    assert env.ids("entity_driver_id", "driver_id") == [(1,), (2,)]
    assert env.ids("latest_driver_id", "driver_id") == [(1,), (2,)]
    err = capsys.readouterr().err
    assert "2/2" in err and "indexed 2021-04-01...2021-04-02" in err  # the progress bar
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
    assert len(runs) == 1
    assert runs[0].tags["dagster/asset_partition_range_end"] == "2021-04-02"
    assert fes(["index", "--partition-range", "2021-04-01...2021-04-03", "--entity", "x"]) == 2


def test_every_subcommand_has_help(capsys):
    for sub in (
        "entities",
        "status",
        "retry",
        "index",
        "prune",
        "reset-entity",
        "import-feast",
        "demo",
    ):
        with pytest.raises(SystemExit) as done:
            fes([sub, "--help"])
        assert done.value.code == 0
        assert "usage: fes " + sub in capsys.readouterr().out

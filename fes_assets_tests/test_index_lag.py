"""`index_lag`: the UI and `fes status` show an index that has fallen behind its bucket, and
an idle, complete index passes however long ago it last ran."""

from __future__ import annotations

import dagster as dg

from fes_assets.cli import main as fes
from fes_assets.orchestration.assets import latest_asset_key
from fes_assets.orchestration.checks import INDEX_LAG, build_lag_check
from fes_assets.orchestration.resources import IndexDatabaseResource
from fes_assets_tests.conftest import drivers, drivers_registry


def _lag_events(result: dg.SensorResult) -> list[dg.AssetCheckEvaluation]:
    return [
        e
        for e in result.asset_events or []
        if isinstance(e, dg.AssetCheckEvaluation) and e.check_name == INDEX_LAG
    ]


def _check(lab) -> dg.AssetCheckResult:
    """The check as the UI's "Execute" runs it."""
    check = build_lag_check(
        latest_asset_key("driver_id"), "driver_id", ["driver_hourly_stats"], max_lag=600
    )
    return check(fes_index_db=IndexDatabaseResource(url=lab.pg_url, schema_name=lab.schema))


def test_lag_fails_while_a_change_waits_too_long_and_passes_once_applied(env, capsys):
    lab = env
    lab.use_registry(drivers_registry())
    sensor = lab.sensor(max_lag=600)
    lab.put("d/a.parquet", drivers([1, 2]))
    first = lab.tick(sensor)
    assert first.run_requests
    (report,) = _lag_events(first)
    assert report.asset_key == latest_asset_key("driver_id") and report.passed

    # The run does not happen (the daemon is down, say) and the change grows old: instead of
    # waiting an hour, the catalogue is told it was catalogued an hour ago.
    lab.sql("UPDATE files SET catalogued_at = now() - interval '1 hour'")
    (late,) = _lag_events(lab.tick(sensor))
    assert not late.passed and late.severity == dg.AssetCheckSeverity.WARN
    assert late.metadata["waiting_changes"].value == 1
    assert late.metadata["lag_seconds"].value >= 3600
    assert not _check(lab).passed
    assert fes(["status"]) == 0
    out = capsys.readouterr().out
    assert "driver_hourly_stats: the oldest of 1 catalogued change(s) has waited 1h00m" in out
    # Unchanged and recent: not reported again on every tick.
    assert _lag_events(lab.tick(sensor)) == []

    lab.execute(first)
    (caught_up,) = _lag_events(lab.tick(sensor))
    assert caught_up.passed and caught_up.metadata["waiting_changes"].value == 0

    # Idle for a long time, complete: still passes.
    lab.sql(
        "UPDATE files SET catalogued_at = now() - interval '30 days', "
        "indexed_at = now() - interval '30 days'"
    )
    assert _check(lab).passed
    assert fes(["status"]) == 0
    assert "has waited" not in capsys.readouterr().out

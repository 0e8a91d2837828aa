"""Asset checks: `timestamps_valid` and `source_files_valid` from each entity run, and
`index_lag` on each latest asset, from the sensor's ticks or run on demand."""

from datetime import datetime

import dagster as dg

from ..core import clock
from ..core.catalogue import Catalog, FileRow, IndexLag
from ..core.clock import FUTURE_TOLERANCE
from ..core.indexing import RunReport
from .resources import IndexDatabaseResource

TIMESTAMPS_VALID = "timestamps_valid"
SOURCE_FILES_VALID = "source_files_valid"
INDEX_LAG = "index_lag"
_LISTED = 50  # files named in a result; the count covers the rest


def check_specs(asset_key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            TIMESTAMPS_VALID,
            asset=asset_key,
            blocking=True,
            description=(
                "In the files the run read: no event or created timestamp later than now + "
                f"{int(FUTURE_TOLERANCE.total_seconds() // 60)} minutes, and created timestamps "
                "present where the registry names a created column. Blocks latest."
            ),
        ),
        dg.AssetCheckSpec(
            SOURCE_FILES_VALID,
            asset=asset_key,
            description="Files of this entity's feature tables that could not be indexed.",
        ),
    ]


def _result(
    name: str,
    severity: dg.AssetCheckSeverity,
    problems: dict[str, str],
    passed_text: str,
    failed_text: str,
    **metadata: object,
) -> dg.AssetCheckResult:
    """A check result naming the first problems (file -> reason); the count covers all."""
    listed = dict(sorted(problems.items())[:_LISTED])
    return dg.AssetCheckResult(
        check_name=name,
        passed=not problems,
        severity=severity,
        description=(
            passed_text
            if not problems
            else f"{len(problems)} {failed_text}: "
            + "; ".join(f"{k}: {v}" for k, v in listed.items())
        ),
        metadata={**metadata, "reasons": dg.MetadataValue.json(listed)},
    )


def timestamps_valid(report: RunReport, now: datetime) -> dg.AssetCheckResult:
    bad = report.future_files(now)
    return _result(
        TIMESTAMPS_VALID,
        dg.AssetCheckSeverity.ERROR,
        bad,
        "all timestamps valid",
        "file(s) with invalid timestamps",
        files_checked=len(report.files),
        invalid_files=len(bad),
        now=now.isoformat(),
    )


def source_files_valid(failed: list[FileRow]) -> dg.AssetCheckResult:
    return _result(
        SOURCE_FILES_VALID,
        dg.AssetCheckSeverity.WARN,
        {f"{f.path} ({f.feature_table})": f.error or "" for f in failed},
        "no failed files",
        "file(s) failed",
        failed_files=len(failed),
    )


def lag_description(max_lag: float) -> str:
    return (
        "Fails (warning) when a change catalogued from the bucket has waited more than "
        f"{max_lag:g} s (FES_MAX_LAG_SECONDS) to reach the index; an idle, complete index "
        "passes however long ago it last ran. Reported by bucket_sensor's ticks."
    )


def lag_evaluation(asset_key: dg.AssetKey, lag: IndexLag, max_lag: float) -> dict:
    """The fields of an `index_lag` result (an AssetCheckResult from the check, an
    AssetCheckEvaluation from the sensor)."""
    passed = lag.seconds <= max_lag
    if not lag.waiting:
        text = "up to date: no catalogued change waits"
    else:
        text = (
            f"{lag.waiting} catalogued change(s) wait; the oldest for {lag.seconds:.0f} s "
            f"(limit {max_lag:g} s)"
        )
    return {
        "asset_key": asset_key,
        "check_name": INDEX_LAG,
        "passed": passed,
        "severity": dg.AssetCheckSeverity.WARN,
        "description": text,
        "metadata": {
            "lag_seconds": round(lag.seconds, 1),
            "waiting_changes": lag.waiting,
            "max_lag_seconds": max_lag,
        },
    }


def build_lag_check(
    asset_key: dg.AssetKey, key: str, tables: list[str], max_lag: float
) -> dg.AssetChecksDefinition:
    """`index_lag` on `asset_key`, for running from the UI; the sensor reports it each tick.
    Dagster reads the resource from the parameter's annotation, which must not be a string
    (no postponed annotations in this module)."""

    @dg.asset_check(
        asset=asset_key, name=INDEX_LAG, description=lag_description(max_lag), blocking=False
    )
    def index_lag(fes_index_db: IndexDatabaseResource) -> dg.AssetCheckResult:
        lag = Catalog(fes_index_db.db()).lag_by_key({key: tables}, clock.now())[key]
        fields = lag_evaluation(asset_key, lag, max_lag)
        fields.pop("check_name")
        return dg.AssetCheckResult(**fields)

    return index_lag

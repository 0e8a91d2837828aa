"""Asset-check results of an entity run: `timestamps_valid` and `source_files_valid`."""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from ..core.catalogue import FileRow
from ..core.clock import FUTURE_TOLERANCE
from ..core.indexing import RunReport

TIMESTAMPS_VALID = "timestamps_valid"
SOURCE_FILES_VALID = "source_files_valid"
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

"""Asset-check results of an entity run: `timestamps_valid` and `source_files_valid`."""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from ..core.catalogue import FileRow
from ..core.indexing import FUTURE_TOLERANCE, RunReport

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


def timestamps_valid(report: RunReport, now: datetime) -> dg.AssetCheckResult:
    bad = report.future_files(now)
    listed = dict(sorted(bad.items())[:_LISTED])
    return dg.AssetCheckResult(
        check_name=TIMESTAMPS_VALID,
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            "all timestamps valid"
            if not bad
            else f"{len(bad)} file(s) with invalid timestamps: " + ", ".join(listed)
        ),
        metadata={
            "files_checked": len(report.files),
            "invalid_files": len(bad),
            "now": now.isoformat(),
            "reasons": dg.MetadataValue.json(listed),
        },
    )


def source_files_valid(failed: list[FileRow]) -> dg.AssetCheckResult:
    reasons = {f"{f.path} ({f.feature_table})": f.error for f in failed}
    listed = dict(list(reasons.items())[:_LISTED])
    return dg.AssetCheckResult(
        check_name=SOURCE_FILES_VALID,
        passed=not failed,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            "no failed files"
            if not failed
            else f"{len(failed)} file(s) failed: "
            + "; ".join(f"{k}: {v}" for k, v in listed.items())
        ),
        metadata={"failed_files": len(failed), "reasons": dg.MetadataValue.json(listed)},
    )

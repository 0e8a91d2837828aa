"""`bucket_sensor`: bucket changes become runs on the daily partitions they touch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import dagster as dg

from ..core import clock
from ..core.catalogue import Catalog
from ..core.planning import Batch, Planner
from ..core.registry import Registry
from ..core.scanning import BucketScanner, ScanCursor, ScanSettings
from ..core.settings import SensorSettings, sensor_settings
from ..core.storage.database import IndexDb
from . import checks
from .assets import entity_asset_key, latest_asset_key
from .jobs import index_job_name
from .resources import IndexDatabaseResource, ObjectStoreResource

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
RUN_KEY_TAG = "dagster/run_key"
TICK_LOCK_TIMEOUT = 10.0
LAG_REPORT_SECONDS = 300.0


def scan_settings(sensor: SensorSettings) -> ScanSettings:
    """What a tick may do, from the sensor's settings."""
    return ScanSettings(
        max_objects=sensor.max_objects,
        reconcile_interval=sensor.reconcile_interval,
        events_table=sensor.events_table,
        events_url=sensor.events_url,
        sqs_queue_url=sensor.sqs_queue_url,
        sqs_endpoint_url=sensor.sqs_endpoint_url,
    )


def run_request(batch: Batch) -> dg.RunRequest:
    ekey = entity_asset_key(batch.entity_key)
    op_name = "__".join(ekey.path)
    config = {"ops": {op_name: {"config": {"changes": batch.objects}}}}
    tags = {"fes/files": str(len(batch.files)), "fes/objects": str(len(batch.objects))}
    if batch.first_day == batch.last_day:
        partition_key = batch.first_day.isoformat()
    else:
        partition_key = None
        tags |= {RANGE_START: batch.first_day.isoformat(), RANGE_END: batch.last_day.isoformat()}
    return dg.RunRequest(
        run_key=batch.run_key,
        job_name=index_job_name(batch.entity_key),
        asset_selection=[ekey, latest_asset_key(batch.entity_key)],
        # The entity step's own checks; not index_lag, which the ticks report (a run would
        # add a step, and a process's worth of checks, for it).
        asset_check_keys=[
            dg.AssetCheckKey(ekey, name)
            for name in (checks.TIMESTAMPS_VALID, checks.SOURCE_FILES_VALID)
        ],
        partition_key=partition_key,
        run_config=config,
        tags=tags,
    )


def _run_state(instance: dg.DagsterInstance):
    def state(run_key: str) -> str | None:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
        if not runs:
            return None
        status = runs[0].status
        if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            return "failed"
        if status == dg.DagsterRunStatus.SUCCESS:
            return "succeeded"
        return "running"

    return state


# The daemon's sensor loop wakes every 5 s and measures a sensor's interval from its last
# tick's start, which comes a little after the loop's: a tick due 5 s later is found 4.9 s
# later and waits a whole loop, so an interval of 5 s ticked every 10 s. One second short,
# the ticks come at the interval asked for (measured: put to history p50 fell by ~2.5 s).
DAEMON_LOOP_SLACK = 1


def daemon_interval(interval: int) -> int:
    """The minimum interval to register for ticks every `interval` seconds."""
    return max(1, interval - DAEMON_LOOP_SLACK)


def build_bucket_sensor(
    registry: Registry,
    jobs: Sequence[dg.UnresolvedAssetJobDefinition],
    *,
    interval: int | None = None,
    settings: ScanSettings | None = None,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    max_lag: float | None = None,
) -> dg.SensorDefinition:
    if settings is None or interval is None or max_lag is None:
        # Variables only for what the caller left unset.
        from_env = sensor_settings(interval=interval, max_lag=max_lag)
        settings = settings or scan_settings(from_env)
        interval, max_lag = from_env.interval, from_env.max_lag
    if settings.sqs_queue_url:
        mode = f"S3 event notifications from {settings.sqs_queue_url}"
    elif settings.events_table:
        mode = f"MinIO events from {settings.events_table}"
    else:
        mode = "listing"
    events_mode = bool(settings.sqs_queue_url or settings.events_table)

    @dg.sensor(
        name="bucket_sensor",
        minimum_interval_seconds=daemon_interval(interval),
        default_status=default_status,
        jobs=list(jobs),
        description=f"Indexes new, changed and deleted parquet objects ({mode}).",
    )
    def bucket_sensor(
        context: dg.SensorEvaluationContext,
        fes_object_store: ObjectStoreResource,
        fes_index_db: IndexDatabaseResource,
    ) -> dg.SensorResult:
        # A tick waits at most this long for a lock (a day's transaction holds the rows of the
        # files it writes): it fails and the next tick retries, within Dagster's 60 s.
        db = fes_index_db.db(lock_timeout=TICK_LOCK_TIMEOUT)
        store = fes_object_store.store()
        now = clock.now()
        scan = BucketScanner(store, db, registry, settings).scan(
            ScanCursor.loads(context.cursor), now
        )
        plan = Planner(db, registry).plan(now, _run_state(context.instance))
        ch = scan.changes
        summary = (
            f"{scan.listed} listed, {scan.catalogued} catalogued: {len(ch.new)} new, "
            f"{len(ch.changed)} changed, {len(ch.deleted)} deleted, {len(ch.failed)} failed"
            + (f"; {scan.events} event(s)" if events_mode else "")
            + f"; reconcile {scan.reconcile}"
            + ("; more waits in the cursor" if scan.backlog else "")
            + (f"; {len(ch.in_flux)} in flux, left to reconcile" if ch.in_flux else "")
            + (f"; {plan.waiting} file(s) wait on runs" if plan.waiting else "")
            + (f", {plan.retried} requested again" if plan.retried else "")
            + f"; {store.requests.get('ListObjectsV2', 0)} list request(s)"
        )
        context.log.info(summary)
        for path, reason in ch.errors.items():
            context.log.warning(f"failed: {path}: {reason}")
        requests = [run_request(b) for b in plan.batches]
        lag_events = _lag_reports(db, registry, scan.cursor, now, max_lag)
        if not requests:
            return dg.SensorResult(
                cursor=scan.cursor.dumps(),
                skip_reason=f"nothing to index: {summary}",
                asset_events=lag_events,
            )
        return dg.SensorResult(
            run_requests=requests, cursor=scan.cursor.dumps(), asset_events=lag_events
        )

    return bucket_sensor


def _lag_reports(
    db: IndexDb, registry: Registry, cursor: ScanCursor, now: datetime, max_lag: float
) -> list[dg.AssetCheckEvaluation]:
    """`index_lag` for each entity key whose result changed since the last report, or whose
    last report is older than `LAG_REPORT_SECONDS`: the UI shows a lagging index while no run
    happens, without an evaluation every tick."""
    tables = {k: [t.name for t in fts] for k, fts in registry.by_entity_key().items()}
    reports = []
    for key, lag in Catalog(db).lag_by_key(tables, now).items():
        fields = checks.lag_evaluation(latest_asset_key(key), lag, max_lag)
        last = cursor.lag_reported.get(key)
        stamp = now.timestamp()
        if last is None or last[0] != fields["passed"] or stamp - last[1] >= LAG_REPORT_SECONDS:
            reports.append(dg.AssetCheckEvaluation(**fields))
            cursor.lag_reported[key] = [fields["passed"], stamp]
    return reports

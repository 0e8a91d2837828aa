"""Soak: `python -m bench.soak [--files N] [--rows N]` (`make soak`: 10,000 files, 10M rows).

Fills a bucket, then drives bucket_sensor and the runs it requests (in process, on an
ephemeral Dagster instance) until nothing is left, sampling memory after every tick. Checks
that every row arrived exactly once and prints a summary for docs/reliability.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import warnings

import psutil

from bench import data, measures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--max-minutes", type=float, default=55)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    # Stop the embedded servers on SIGTERM too (the default would skip the clean-up).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import dagster as dg

    from fes_assets.core.scanning import ScanSettings
    from fes_assets.orchestration.assets import build_entity_assets
    from fes_assets.orchestration.jobs import build_index_jobs
    from fes_assets.orchestration.resources import IndexDatabaseResource, ObjectStoreResource
    from fes_assets.orchestration.sensors import RUN_KEY_TAG, build_bucket_sensor

    proc = psutil.Process()
    started = time.perf_counter()
    with measures.Servers() as servers, dg.DagsterInstance.ephemeral() as instance:
        print(f"generating {args.files:,} files, {args.rows:,} rows", file=sys.stderr)
        tables = data.files_over_days(
            9, args.rows, args.files, days_per_file=1, ids=max(args.rows // 10, 10)
        )
        objects = {k: data.to_parquet(t) for k, t in tables.items()}
        bucket, db, registry = servers.fresh(objects)
        del objects
        assets = build_entity_assets(registry, "driver_id")
        resources = {
            "fes_object_store": ObjectStoreResource(
                endpoint_url=servers.s3_server.endpoint_url,
                access_key_id=measures.KEY,
                secret_access_key=measures.KEY,
            ),
            "fes_index_db": IndexDatabaseResource(url=db.url, schema_name=db.schema),
        }
        sensor = build_bucket_sensor(
            registry,
            build_index_jobs(registry),
            interval=1,
            settings=ScanSettings(reconcile_interval=3600),
        )
        cursor, ticks, runs, rss = None, 0, 0, []
        quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
        idle_ticks = 0
        while idle_ticks < 2 and time.perf_counter() - started < args.max_minutes * 60:
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            t0 = time.perf_counter()
            result = sensor(ctx)
            tick_seconds = time.perf_counter() - t0
            cursor = result.cursor or cursor
            ticks += 1
            requests = result.run_requests or []
            idle_ticks = 0 if requests else idle_ticks + 1
            for request in requests:
                config = dict(request.run_config)
                config.update(quiet)
                done = dg.materialize(
                    assets,
                    selection=request.asset_selection,
                    run_config=config,
                    tags={**request.tags, RUN_KEY_TAG: request.run_key},
                    partition_key=request.partition_key,
                    resources=resources,
                    instance=instance,
                    raise_on_error=False,
                )
                runs += 1
                if not done.success:
                    print(f"run {done.run_id} failed", file=sys.stderr)
            rss.append(proc.memory_info().rss / 2**20)
            print(
                f"[{time.perf_counter() - started:7.1f}s] tick {ticks}: {len(requests)} "
                f"run(s) in {tick_seconds:.1f}s tick, RSS {rss[-1]:.0f} MiB",
                file=sys.stderr,
            )
        rows_in = servers.psql(f'SELECT count(*) FROM "{db.schema}"._e_driver_id')[0][0]
        distinct = servers.psql(
            f"SELECT count(*) FROM (SELECT DISTINCT driver_id, event_timestamp, file_id "
            f'FROM "{db.schema}"._e_driver_id) x'
        )[0][0]
        latest = servers.psql(f'SELECT count(*) FROM "{db.schema}"._l_driver_id')[0][0]
        ids = servers.psql(f'SELECT count(DISTINCT driver_id) FROM "{db.schema}"._e_driver_id')[0][
            0
        ]
        statuses = dict(
            servers.psql(f'SELECT status, count(*) FROM "{db.schema}".files GROUP BY status')
        )
        expected = sum(t.num_rows for t in tables.values())
        expected_distinct = sum(
            t.select(["driver_id", "event_timestamp"])
            .group_by(["driver_id", "event_timestamp"])
            .aggregate([])
            .num_rows
            for t in tables.values()
        )
    minutes = (time.perf_counter() - started) / 60
    half = len(rss) // 2
    summary = {
        "files": args.files,
        "rows expected": expected,
        "rows indexed": rows_in,
        "lost rows": expected - rows_in,
        "distinct (id, time, file) indexed": distinct,
        "distinct expected": expected_distinct,
        "latest rows": latest,
        "distinct ids": ids,
        "file statuses": statuses,
        "ticks": ticks,
        "runs": runs,
        "minutes": round(minutes, 1),
        "RSS MiB first half max": round(max(rss[:half] or rss), 0),
        "RSS MiB second half max": round(max(rss[half:] or rss), 0),
    }
    for k, v in summary.items():
        print(f"{k}: {v}")
    ok = (
        rows_in == expected
        and latest == ids
        and statuses == {"indexed": args.files}
        and distinct == expected_distinct
    )
    print("soak: OK" if ok else "soak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

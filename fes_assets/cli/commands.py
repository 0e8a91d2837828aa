"""The `fes` command: entity ids for Feast, index status and maintenance, the demo."""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import yaml

from ..core import settings
from ..core.errors import CommandError, FesError
from ..core.queries import EntityQuery
from ..core.registry import load_registry
from ..core.storage.database import IndexDb


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise CommandError(f"{message} (see fes {self.prog.split(' ', 1)[-1]} --help)")


def _db() -> IndexDb:
    return IndexDb(settings.index_url(), settings.index_schema())


# --- entities --------------------------------------------------------------------------------


def cmd_entities(args: argparse.Namespace) -> int:
    table = EntityQuery(_db()).arrow(
        args.feature_table, args.start, args.end, latest=args.latest, as_of=args.as_of
    )
    write_table(table, args.output, args.format)
    return 0


def output_format(output: str | None, fmt: str | None) -> str:
    """csv or parquet, from --format or the output's suffix; checked before any work."""
    fmt = fmt or (Path(output).suffix.lstrip(".") if output else "csv")
    if fmt not in ("csv", "parquet"):
        raise CommandError(f"unknown format {fmt!r}: use csv or parquet")
    if fmt == "parquet" and not output:
        raise CommandError("--format parquet needs -o FILE")
    if output and not Path(output).resolve().parent.is_dir():
        raise CommandError(f"no folder for {output}")
    return fmt


def write_table(table: pa.Table, output: str | None, fmt: str | None) -> None:
    """CSV or parquet to `output` (format from its suffix unless given), or CSV to stdout."""
    fmt = output_format(output, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, output)
    else:
        import pyarrow.csv as pacsv

        try:
            pacsv.write_csv(table, output or sys.stdout.buffer)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise CommandError(f"cannot write CSV ({e}): use --format parquet") from e
        if not output:
            sys.stdout.flush()
    if output:
        print(f"{table.num_rows} row(s) written to {output}", file=sys.stderr)


def cmd_features(args: argparse.Namespace) -> int:
    from .features import features_table

    output_format(args.output, args.format)  # a bad -o fails before the answer is computed
    write_table(features_table(args), args.output, args.format)
    return 0


# --- status and retry ------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from ..core import clock
    from ..core.catalogue import Catalog
    from ..core.storage.admin import entity_keys_without_tables

    catalog = Catalog(_db())
    tables = catalog.status_by_table()
    files = catalog.lagging_files(args.limit)
    for key in entity_keys_without_tables(catalog.db):
        print(
            f"entity key {key} has no feature table in the registry; its storage stays "
            f"until `fes reset-entity {key}`"
        )
    if not tables:
        print("no files catalogued yet")
        return 0
    lags = catalog.lag_by_table(clock.now())
    head = f"{'feature table':28} {'indexed':>8} {'pending':>8} {'failed':>7} {'deleted':>8} "
    print(head + f"{'lagging':>8} {'lag':>8}  last indexed")
    for t in tables:
        last = t["last_indexed"].strftime("%Y-%m-%d %H:%M:%S UTC") if t["last_indexed"] else "-"
        lag = lags.get(t["feature_table"])
        print(
            f"{t['feature_table']:28} {t['indexed']:>8} {t['pending']:>8} {t['failed']:>7} "
            f"{t['deleted']:>8} {t['lagging']:>8} {_seconds(lag.seconds) if lag else '-':>8}  "
            f"{last}"
        )
    limit = settings.sensor_settings().max_lag
    late = {name: lag for name, lag in lags.items() if lag.seconds > limit}
    for name, lag in sorted(late.items()):
        print(
            f"{name}: the oldest of {lag.waiting} catalogued change(s) has waited "
            f"{_seconds(lag.seconds)}, more than FES_MAX_LAG_SECONDS ({limit:g} s)"
        )
    if files:
        print("\nfiles waiting or failed:")
        for f in files:
            what = (
                f"failed: {f.error}"
                if f.status == "failed"
                else f"{f.status}, generation {f.generation} not yet applied (attempt {f.attempt})"
            )
            print(f"  {f.path} [{f.feature_table}] {what}")
    return 0


def _seconds(seconds: float) -> str:
    """A wait, short: 42s, 3m05s, 2h07m."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def cmd_retry(args: argparse.Namespace) -> int:
    from ..core import clock
    from ..core.catalogue import Catalog
    from ..core.object_store import ObjectStore
    from ..core.storage.schema import ensure_schema

    store = ObjectStore(settings.object_store_settings())
    db = _db()
    registry = load_registry()
    ensure_schema(db, registry)
    changes = Catalog(db).retry_failed(store, registry, args.keys, clock.now())
    requeued = len(changes.changed) - len(changes.failed)
    print(f"re-queued {requeued} file(s); {len(changes.failed)} still failing")
    for path, reason in changes.errors.items():
        print(f"  {path}: {reason}")
    if requeued:
        print("bucket_sensor indexes them on its next tick (or run `fes index`)")
    return 0


# --- registry maintenance --------------------------------------------------------------------


def cmd_prune(args: argparse.Namespace) -> int:
    from ..core.storage.admin import prune_feature_table, removed_tables

    db = _db()
    registry = load_registry()
    removed = removed_tables(db)
    if args.feature_table not in removed:
        if args.feature_table in registry.feature_tables:
            raise CommandError(
                f"{args.feature_table!r} is still in the registry; remove it from "
                f"{settings.config_path()} first"
            )
        raise CommandError(f"no removed feature table {args.feature_table!r} in the index")
    rows = prune_feature_table(db, registry, args.feature_table, removed[args.feature_table])
    print(
        f"pruned {args.feature_table}: {rows} row(s) removed; materialize "
        f"latest_{removed[args.feature_table]} to refresh its latest view"
    )
    return 0


def cmd_reset_entity(args: argparse.Namespace) -> int:
    from ..core.storage.admin import reset_entity

    reset_entity(_db(), args.entity_key)
    print(
        f"dropped the index of entity key {args.entity_key}; backfill "
        f"entity_lookup/entity_{args.entity_key} to rebuild it"
    )
    return 0


def cmd_import_feast(args: argparse.Namespace) -> int:
    from .feast_import import import_feast_repo

    result = import_feast_repo(args.repo_path, args.partitions_start)
    for view, why in result.skipped.items():
        print(f"skipped feature view {view}: {why}", file=sys.stderr)
    if not result.registry["feature_tables"]:
        raise CommandError("no feature view with a parquet FileSource on s3:// found")
    text = yaml.safe_dump(result.registry, sort_keys=False)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(
            f"wrote {args.output} with {len(result.registry['feature_tables'])} feature table(s)",
            file=sys.stderr,
        )
    return 0


# --- indexing through Dagster ----------------------------------------------------------------


def _partition_range(text: str) -> tuple[date, date]:
    first, sep, last = text.partition("...")
    try:
        lo, hi = date.fromisoformat(first), date.fromisoformat(last if sep else first)
    except ValueError as e:
        raise CommandError(f"--partition-range {text!r}: use YYYY-MM-DD...YYYY-MM-DD") from e
    if hi < lo:
        raise CommandError(f"--partition-range {text!r}: the last day is before the first")
    return lo, hi


def cmd_index(args: argparse.Namespace) -> int:
    lo, hi = _partition_range(args.partition_range)
    from .materialize import materialize_range

    return materialize_range(lo, hi, args.entity)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..dev.demo import run_demo

    return run_demo(live=args.live, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fes",
        description="Entity ids of Feast parquet data, indexed in PostgreSQL by Dagster.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "entities",
        help="print or write the entity ids of a feature table",
        description="Entity ids of FEATURE_TABLE as an entity_df for Feast: "
        "the join keys and event_timestamp, distinct rows. START is inclusive, "
        "END exclusive; a date means midnight UTC, a naive timestamp UTC.",
    )
    p.add_argument("feature_table")
    p.add_argument("--start", help="first instant (date or ISO timestamp)")
    p.add_argument("--end", help="end instant, excluded")
    p.add_argument("--latest", action="store_true", help="each id's newest event only")
    p.add_argument("--as-of", help="each id seen before this instant once, stamped with it")
    p.add_argument("--format", choices=["csv", "parquet"], help="default: from -o, else csv")
    p.add_argument("-o", "--output", help="file to write (default: CSV on standard output)")
    p.set_defaults(func=cmd_entities)

    p = sub.add_parser(
        "features",
        help="Feast features of every indexed entity row, written to a file",
        description="The entity rows the index holds for the feature views behind REFS "
        "(view:feature), joined point in time with their features as Feast documents it. "
        "Needs the feast extra and a Feast repository applied with `feast apply`.",
    )
    p.add_argument("refs", nargs="+", metavar="REF", help="view:feature")
    p.add_argument("--repo", required=True, metavar="PATH", help="the Feast repository")
    p.add_argument("--start", help="first instant (date or ISO timestamp)")
    p.add_argument("--end", help="end instant, excluded")
    p.add_argument("--latest", action="store_true", help="each id once, at its newest event")
    p.add_argument("--as-of", help="each id seen before this instant once, stamped with it")
    p.add_argument("--full-feature-names", action="store_true", help="columns named view__feature")
    p.add_argument("--format", choices=["csv", "parquet"], help="default: from -o, else csv")
    p.add_argument("-o", "--output", help="file to write (default: CSV on standard output)")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser(
        "status",
        help="pending, failed and lagging files per feature table, and how long changes wait",
    )
    p.add_argument("--limit", type=int, default=50, help="files listed at most")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "retry",
        help="catalogue failed files afresh so they are indexed again",
        description="Re-read failed files without waiting for a new ETag; the "
        "sensor (or `fes index`) then indexes the ones that are fixed.",
    )
    p.add_argument("keys", nargs="*", metavar="KEY", help="object keys (default: all failed)")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser(
        "index",
        help="materialize a range of daily partitions, with progress",
        description="Materialize entity_<key> (and latest_<key>) for the "
        "partitions in the range, both ends included, as one run per entity "
        "key, on the Dagster instance the UI reads (DAGSTER_HOME).",
    )
    p.add_argument(
        "--partition-range",
        required=True,
        metavar="FIRST...LAST",
        help="e.g. 2021-04-01...2021-04-30",
    )
    p.add_argument(
        "--entity", action="append", metavar="KEY", help="entity key(s) to index (default: all)"
    )
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("prune", help="remove a feature table that left the registry")
    p.add_argument("feature_table")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "reset-entity", help="drop an entity key's tables (after its join-key types changed)"
    )
    p.add_argument("entity_key")
    p.set_defaults(func=cmd_reset_entity)

    p = sub.add_parser(
        "import-feast",
        help="write fes.yaml from a Feast repository",
        description="Feature views whose batch source is a parquet FileSource "
        "on s3:// become feature tables; the others are named with the reason.",
    )
    p.add_argument("repo_path")
    p.add_argument("-o", "--output", default="fes.yaml", help="'-' for standard output")
    p.add_argument(
        "--partitions-start",
        default=str(date.today() - timedelta(days=365)),
        help="first daily partition (default: a year ago)",
    )
    p.set_defaults(func=cmd_import_feast)

    p = sub.add_parser("demo", help="embedded PostgreSQL and S3, sample data, the Dagster UI")
    p.add_argument(
        "--live",
        action="store_true",
        help="keep adding, overwriting and deleting a file now and then",
    )
    p.add_argument("--port", type=int, default=3000, help="UI port (default 3000)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        # A demo running in this folder supplies what the environment lacks (`fes` in a
        # second terminal); library calls never look there.
        settings.apply_demo_env()
        return args.func(args)
    except FesError as e:
        print(f"fes: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

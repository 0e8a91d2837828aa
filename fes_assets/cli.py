"""The `fes` command: index maintenance from a terminal."""

from __future__ import annotations

import argparse
import os
import sys

from .index import DEFAULT_SCHEMA, IndexDb, IndexSchemaError
from .registry import RegistryError, load_registry


def _db() -> IndexDb:
    url = os.environ.get("FES_PG_URL")
    if not url:
        raise SystemExit(
            "fes: FES_PG_URL is not set (a URL such as "
            "postgresql+psycopg://user:password@host:5432/db)"
        )
    return IndexDb(url, os.environ.get("FES_SCHEMA", DEFAULT_SCHEMA))


def cmd_prune(args: argparse.Namespace) -> int:
    db = _db()
    registry = load_registry()
    removed = db.removed_tables()
    if args.feature_table not in removed:
        if args.feature_table in registry.feature_tables:
            print(
                f"fes: {args.feature_table!r} is still in the registry; remove it from "
                f"{os.environ.get('FES_CONFIG', 'fes.yaml')} first",
                file=sys.stderr,
            )
        else:
            print(
                f"fes: no removed feature table {args.feature_table!r} in the index",
                file=sys.stderr,
            )
        return 2
    rows = db.prune_feature_table(registry, args.feature_table, removed[args.feature_table])
    print(
        f"pruned {args.feature_table}: {rows} row(s) removed; materialize "
        f"latest_{removed[args.feature_table]} to refresh its latest view"
    )
    return 0


def cmd_reset_entity(args: argparse.Namespace) -> int:
    _db().reset_entity(args.entity_key)
    print(
        f"dropped the index of entity key {args.entity_key}; backfill "
        f"entity_lookup/entity_{args.entity_key} to rebuild it"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fes", description="Maintain the entity-id index of Feast parquet data."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="remove a feature table that left the registry")
    p.add_argument("feature_table")
    p.set_defaults(func=cmd_prune)
    p = sub.add_parser(
        "reset-entity", help="drop an entity key's tables (after its join-key types changed)"
    )
    p.add_argument("entity_key")
    p.set_defaults(func=cmd_reset_entity)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RegistryError, IndexSchemaError) as e:
        print(f"fes: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`entity_lookup/entity_<key>` and `entity_lookup/latest_<key>`, one pair per entity key."""

from datetime import date

import dagster as dg

from ..core import clock
from ..core.catalogue import Catalog
from ..core.indexing import EntityIndexer
from ..core.registry import VALUE_TYPES, Registry
from ..core.storage.admin import count_rows
from ..core.storage.latest import catch_up_latest
from ..core.storage.names import EntityNames
from ..core.storage.schema import ensure_schema
from . import checks
from .partitions import daily_partitions, keys_to_days
from .resources import IndexDatabaseResource, ObjectStoreResource

ASSET_PREFIX = "entity_lookup"  # fixed, whatever FES_SCHEMA says
KINDS = {"postgres", "s3"}


class ObjectRef(dg.Config):
    bucket: str
    key: str


class EntityRunConfig(dg.Config):
    """Without `changes`, a partition is rebuilt from every catalogued object overlapping it;
    with `changes` (the sensor's), only those objects are re-applied within the partitions."""

    changes: list[ObjectRef] | None = None


def entity_asset_key(key: str) -> dg.AssetKey:
    return dg.AssetKey([ASSET_PREFIX, f"entity_{key}"])


def latest_asset_key(key: str) -> dg.AssetKey:
    return dg.AssetKey([ASSET_PREFIX, f"latest_{key}"])


def _column_schema(names: EntityNames) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            *(dg.TableColumn(k, VALUE_TYPES[names.types[k]]) for k in names.join_keys),
            dg.TableColumn("feature_table", "text"),
            dg.TableColumn("event_timestamp", "timestamptz"),
            dg.TableColumn("created_timestamp", "timestamptz"),
            dg.TableColumn("path", "text"),
        ]
    )


def build_entity_assets(registry: Registry, key: str) -> list[dg.AssetsDefinition]:
    tables = registry.by_entity_key()[key]
    table_names = [t.name for t in tables]
    ekey, lkey = entity_asset_key(key), latest_asset_key(key)
    described = ", ".join(table_names)

    @dg.asset(
        key=ekey,
        partitions_def=daily_partitions(registry),
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=checks.check_specs(ekey),
        kinds=KINDS,
        group_name=ASSET_PREFIX,
        description=f"Every id of entity key `{key}` in the parquet files of {described}, "
        "by day of event_timestamp.",
    )
    def entity_asset(
        context: dg.AssetExecutionContext,
        config: EntityRunConfig,
        fes_object_store: ObjectStoreResource,
        fes_index_db: IndexDatabaseResource,
    ) -> dg.MaterializeResult:
        db = fes_index_db.db()
        days = keys_to_days(context.partition_keys)
        changes = [c.model_dump() for c in config.changes] if config.changes is not None else None
        indexer = EntityIndexer(
            fes_object_store.store(),
            db,
            registry,
            key,
            run_id=context.run.run_id,
            log=context.log.info,
        )
        report = indexer.run(days, changes)
        names = indexer.names
        failed = Catalog(db).failed_files(table_names)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": report.rows,
                "dagster/table_name": f"{db.schema}.{names.entity_view}",
                "dagster/column_schema": _column_schema(names),
                **_per_day(report.rows_per_day),
                "mode": "changes" if changes is not None else "rebuild",
                "files_read": len(report.files),
                "files_failed": len(report.failed),
                "files_skipped": len(report.skipped),
                "seconds": round(report.seconds, 3),
                "rows_per_second": round(report.rows / report.seconds) if report.seconds else 0,
            },
            check_results=[
                checks.timestamps_valid(report, clock.now()),
                checks.source_files_valid(failed),
            ],
        )

    @dg.asset(
        key=lkey,
        deps=[ekey],
        kinds=KINDS,
        group_name=ASSET_PREFIX,
        description=f"Each id's newest row per feature table ({described}); caught up from the "
        "newest rows indexed since its last run, recomputing only ids whose rows were removed.",
    )
    def latest_asset(
        context: dg.AssetExecutionContext, fes_index_db: IndexDatabaseResource
    ) -> dg.MaterializeResult:
        db = fes_index_db.db()
        ensure_schema(db, registry)
        names = db.names(registry, key)
        stats = catch_up_latest(db, names, clock.now())
        context.log.info(
            f"{names.latest_view}: {stats['latest_rows_written']} latest row(s) written, "
            f"{stats['recomputed_ids']} id(s) recomputed from history"
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": count_rows(db, names.latest_table),
                "dagster/table_name": f"{db.schema}.{names.latest_view}",
                "dagster/column_schema": _column_schema(names),
                **stats,
            }
        )

    return [entity_asset, latest_asset]


# Dagster copies a ranged run's metadata onto every partition it materialized: a per-day table
# over years of days would be stored days × days times.
PER_DAY_METADATA_DAYS = 31


def _per_day(rows_per_day: dict[date, int]) -> dict[str, dg.MetadataValue | int]:
    """Rows per day for a short run; the day counts for a long one."""
    if len(rows_per_day) <= PER_DAY_METADATA_DAYS:
        return {
            "rows_per_day": dg.MetadataValue.json(
                {d.isoformat(): n for d, n in rows_per_day.items()}
            )
        }
    return {"days": len(rows_per_day), "days_with_rows": sum(1 for n in rows_per_day.values() if n)}


def build_assets(registry: Registry) -> list[dg.AssetsDefinition]:
    return [a for key in registry.by_entity_key() for a in build_entity_assets(registry, key)]

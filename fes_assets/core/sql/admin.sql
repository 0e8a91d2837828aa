-- Maintenance: counting, pruning a feature table that left the registry, resetting an
-- entity key whose types changed.

-- name: count_rows
SELECT count(*) AS n FROM {schema}.{table};

-- name: removed_feature_tables
SELECT name, entity_key FROM {schema}.feature_tables WHERE removed_at IS NOT NULL;

-- name: feature_table_by_name
SELECT id FROM {schema}.feature_tables WHERE name = %(name)s;

-- name: prune_latest
DELETE FROM {schema}.{latest_table} WHERE feature_table_id = %(feature_table_id)s;

-- name: prune_file_days
DELETE FROM {schema}.file_days
WHERE file_id IN (SELECT id FROM {schema}.files WHERE feature_table = %(name)s);

-- name: prune_files
DELETE FROM {schema}.files WHERE feature_table = %(name)s;

-- name: prune_feature_table
DELETE FROM {schema}.feature_tables WHERE id = %(feature_table_id)s;

-- name: drop_view
DROP VIEW IF EXISTS {schema}.{view};

-- name: drop_table
DROP TABLE IF EXISTS {schema}.{table} CASCADE;

-- name: forget_entity_file_days
-- After a reset, no day holds rows of the entity key's files.
DELETE FROM {schema}.file_days
WHERE file_id IN (
    SELECT f.id FROM {schema}.files f JOIN {schema}.feature_tables t ON t.name = f.feature_table
    WHERE t.entity_key = %(entity_key)s
);

-- name: requeue_entity_files
-- After a reset, the entity key's indexed files are indexed afresh by the next runs.
UPDATE {schema}.files SET status = 'pending', validated = false
WHERE id IN (
    SELECT id FROM {schema}.files
    WHERE feature_table IN (
        SELECT name FROM {schema}.feature_tables WHERE entity_key = %(entity_key)s
    ) AND status = 'indexed'
    ORDER BY id FOR UPDATE
);

-- name: entity_keys_without_tables
-- Entity keys the index stores that no current feature table uses (every table left the
-- registry or moved to another key): their storage stays until `fes reset-entity`.
SELECT k AS entity_key
FROM {schema}.meta m, jsonb_object_keys(m.value) AS k
WHERE m.key = 'entity_keys'
  AND NOT EXISTS (
      SELECT 1 FROM {schema}.feature_tables t WHERE t.entity_key = k AND t.removed_at IS NULL
  )
ORDER BY 1;

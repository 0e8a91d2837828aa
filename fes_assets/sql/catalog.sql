-- The catalogue (files) and the attempts log (jobs).

-- name: files_of_tables
SELECT id, bucket, key, feature_table, etag, status, generation
FROM {schema}.files WHERE feature_table = ANY(%(tables)s);

-- name: insert_file
INSERT INTO {schema}.files AS f (
    bucket, key, feature_table, etag, size, last_modified, row_count,
    min_event_timestamp, max_event_timestamp, rows_before_start, rows_after_end,
    has_statistics, status, error)
VALUES (%(bucket)s, %(key)s, %(feature_table)s, %(etag)s, %(size)s, %(last_modified)s,
    %(row_count)s, %(min_ts)s, %(max_ts)s, %(rows_before_start)s, %(rows_after_end)s,
    %(has_statistics)s, %(status)s, %(error)s)
ON CONFLICT (bucket, key, feature_table) DO UPDATE SET
    etag = excluded.etag, size = excluded.size, last_modified = excluded.last_modified,
    row_count = excluded.row_count,
    min_event_timestamp = excluded.min_event_timestamp,
    max_event_timestamp = excluded.max_event_timestamp,
    rows_before_start = excluded.rows_before_start, rows_after_end = excluded.rows_after_end,
    has_statistics = excluded.has_statistics, status = excluded.status, error = excluded.error,
    generation = f.generation + 1, attempt = 0, validated = false, catalogued_at = now()
WHERE f.etag IS DISTINCT FROM excluded.etag OR f.status = 'deleted'
RETURNING id, generation;

-- name: mark_deleted
UPDATE {schema}.files
SET status = 'deleted', error = NULL, generation = generation + 1, attempt = 0,
    validated = false, catalogued_at = now()
WHERE id = ANY(%(ids)s) AND status <> 'deleted';

-- name: files_for_day
SELECT f.id, f.bucket, f.key, f.feature_table, f.etag, f.size, f.generation, f.validated,
       f.status, f.min_event_timestamp, f.max_event_timestamp, t.id AS feature_table_id
FROM {schema}.files f JOIN {schema}.feature_tables t ON t.name = f.feature_table
WHERE f.feature_table = ANY(%(tables)s)
  AND f.status IN ('pending', 'indexed')
  AND f.min_event_timestamp < %(day_end)s AND f.max_event_timestamp >= %(day_start)s
ORDER BY f.id;

-- name: files_by_id
SELECT f.id, f.bucket, f.key, f.feature_table, f.etag, f.size, f.generation, f.validated,
       f.status, f.min_event_timestamp, f.max_event_timestamp, t.id AS feature_table_id
FROM {schema}.files f JOIN {schema}.feature_tables t ON t.name = f.feature_table
WHERE f.id = ANY(%(ids)s) ORDER BY f.id;

-- name: mark_failed
UPDATE {schema}.files SET status = 'failed', error = %(error)s, validated = false
WHERE id = %(id)s AND generation = %(generation)s;

-- name: mark_validated
UPDATE {schema}.files
SET validated = true, row_count = %(row_count)s,
    min_event_timestamp = %(min_ts)s, max_event_timestamp = %(max_ts)s,
    rows_before_start = %(rows_before_start)s, rows_after_end = %(rows_after_end)s
WHERE id = %(id)s AND generation = %(generation)s;

-- name: mark_indexed
UPDATE {schema}.files SET status = 'indexed', error = NULL, indexed_at = now()
WHERE id = ANY(%(ids)s) AND status = 'pending';

-- name: failed_files
SELECT bucket, key, feature_table, error, generation
FROM {schema}.files WHERE feature_table = ANY(%(tables)s) AND status = 'failed'
ORDER BY bucket, key, feature_table;

-- name: start_job
INSERT INTO {schema}.jobs (status, entity_names, feature_table, path, run_id, partition)
VALUES ('running', %(entity_names)s, %(feature_table)s, %(path)s, %(run_id)s, %(partition)s)
RETURNING id;

-- name: end_job
UPDATE {schema}.jobs
SET ended = now(), status = %(status)s, status_msg = %(status_msg)s, row_count = %(row_count)s
WHERE id = %(id)s;

-- name: files_for_objects
SELECT f.id, f.bucket, f.key, f.feature_table, f.etag, f.size, f.generation, f.validated,
       f.status, f.min_event_timestamp, f.max_event_timestamp, t.id AS feature_table_id
FROM {schema}.files f JOIN {schema}.feature_tables t ON t.name = f.feature_table
JOIN unnest(%(buckets)s::text[], %(keys)s::text[]) AS o(bucket, key)
  ON o.bucket = f.bucket AND o.key = f.key
WHERE f.feature_table = ANY(%(tables)s)
ORDER BY f.id;

-- name: settle_future_rows
-- Rows once dated after the last partition whose days now all exist.
UPDATE {schema}.files SET rows_after_end = 0
WHERE feature_table = ANY(%(tables)s) AND rows_after_end > 0
  AND max_event_timestamp < %(partitions_end)s;

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
       f.status, f.min_event_timestamp, f.max_event_timestamp,
       f.indexed_min_timestamp, f.indexed_max_timestamp, t.id AS feature_table_id
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

-- name: files_touching
-- Files of the tables whose current or indexed rows may fall in [run_start, run_end).
SELECT id, generation FROM {schema}.files
WHERE feature_table = ANY(%(tables)s)
  AND ((min_event_timestamp < %(run_end)s AND max_event_timestamp >= %(run_start)s)
    OR (indexed_min_timestamp < %(run_end)s AND indexed_max_timestamp >= %(run_start)s));

-- name: applied_state
SELECT id, generation, status, min_event_timestamp, max_event_timestamp,
       indexed_min_timestamp, indexed_max_timestamp
FROM {schema}.files WHERE id = ANY(%(ids)s);

-- name: set_applied
UPDATE {schema}.files AS f
SET applied_generation = CASE WHEN u.covered THEN u.generation ELSE f.applied_generation END,
    indexed_min_timestamp = u.lo, indexed_max_timestamp = u.hi,
    status = CASE WHEN u.covered AND f.status = 'pending' THEN 'indexed' ELSE f.status END,
    indexed_at = CASE WHEN u.covered AND f.status = 'pending' THEN now() ELSE f.indexed_at END
FROM unnest(%(ids)s::bigint[], %(generations)s::int[], %(covered)s::boolean[],
            %(lo)s::timestamptz[], %(hi)s::timestamptz[]) AS u(id, generation, covered, lo, hi)
WHERE f.id = u.id AND f.generation = u.generation;

-- name: unapplied
SELECT f.id, f.bucket, f.key, f.feature_table, f.generation, f.attempt, f.status,
       f.min_event_timestamp, f.max_event_timestamp,
       f.indexed_min_timestamp, f.indexed_max_timestamp,
       f.requested_generation, f.requested_attempt, f.requested_run_key, f.requested_at
FROM {schema}.files f
WHERE f.feature_table = ANY(%(tables)s) AND f.applied_generation < f.generation
ORDER BY f.min_event_timestamp NULLS FIRST, f.id
LIMIT %(limit)s;

-- name: mark_requested
UPDATE {schema}.files AS f
SET requested_generation = u.generation, requested_attempt = f.attempt,
    requested_run_key = %(run_key)s, requested_at = now()
FROM unnest(%(ids)s::bigint[], %(generations)s::int[]) AS u(id, generation)
WHERE f.id = u.id AND f.generation = u.generation;

-- name: next_attempt
UPDATE {schema}.files SET attempt = attempt + 1
WHERE id = ANY(%(ids)s) AND applied_generation < generation;

-- name: forget_failed_etags
-- `fes retry`: failed files are catalogued afresh, as if their objects had changed.
UPDATE {schema}.files SET etag = NULL
WHERE status = 'failed' AND (cardinality(%(keys)s::text[]) = 0 OR key = ANY(%(keys)s))
RETURNING bucket, key, feature_table;

-- name: known_objects
SELECT id, key, feature_table, etag, status
FROM {schema}.files
WHERE bucket = %(bucket)s AND key = ANY(%(keys)s) AND feature_table = ANY(%(tables)s);

-- name: known_in_key_range
-- Catalogued objects in (after, upto] in S3's key order (bytewise, hence COLLATE "C").
SELECT id, key, feature_table FROM {schema}.files
WHERE bucket = %(bucket)s AND feature_table = ANY(%(tables)s) AND status <> 'deleted'
  AND starts_with(key, %(prefix)s)
  AND (%(after)s::text IS NULL OR key COLLATE "C" > %(after)s::text COLLATE "C")
  AND (%(upto)s::text IS NULL OR key COLLATE "C" <= %(upto)s::text COLLATE "C");

-- name: known_object_rows
SELECT id, feature_table, status FROM {schema}.files
WHERE bucket = %(bucket)s AND key = %(key)s AND status <> 'deleted';

-- name: reopen_future_files
-- A new day began: files with rows dated after the last partition need a run again.
UPDATE {schema}.files
SET applied_generation = LEAST(applied_generation, generation - 1)
WHERE feature_table = ANY(%(tables)s) AND status = 'indexed' AND rows_after_end > 0;

-- name: settle_without_rows
-- Unapplied files that leave no row to add or remove (failed or deleted before any of their
-- rows reached the index): nothing for a run to do.
-- A pending file without rows in any partition (zero rows, or all outside) is indexed as is.
UPDATE {schema}.files SET applied_generation = generation,
    indexed_min_timestamp = NULL, indexed_max_timestamp = NULL,
    status = CASE WHEN status = 'pending' THEN 'indexed' ELSE status END,
    indexed_at = CASE WHEN status = 'pending' THEN now() ELSE indexed_at END
WHERE id = ANY(%(ids)s);

-- name: status_by_table
SELECT feature_table,
       count(*) FILTER (WHERE status = 'indexed') AS indexed,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'deleted') AS deleted,
       count(*) FILTER (WHERE applied_generation < generation) AS lagging,
       max(indexed_at) AS last_indexed
FROM {schema}.files GROUP BY feature_table ORDER BY feature_table;

-- name: lagging_files
SELECT bucket, key, feature_table, status, generation, applied_generation, attempt, error
FROM {schema}.files
WHERE applied_generation < generation OR status IN ('pending', 'failed')
ORDER BY feature_table, bucket, key LIMIT %(limit)s;

-- The catalogue (files) and the attempts log (jobs).

-- name: recorded
-- A fragment: the days in the partitions (from the date bound as `partitions_begin`) that
-- `file_days` says hold rows of the file `f`, and whether any of them holds another
-- generation's rows. Joined LATERAL so each file is one index lookup.
LEFT JOIN LATERAL (
    SELECT min(d.day) AS recorded_first, max(d.day) AS recorded_last,
           coalesce(bool_or(d.generation <> f.generation), false) AS stale_records
    FROM {schema}.file_days d
    WHERE d.file_id = f.id AND d.day >= %(partitions_begin)s
) rec ON true

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

-- name: locked_ids
-- A fragment: the rows of the ids bound as `ids`, locked in id order. Statements that update several files
-- lock them this way, as a day's transaction does (FOR SHARE, in id order), so that two of
-- them never wait on each other in a cycle.
SELECT id FROM {schema}.files WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE

-- name: mark_deleted
UPDATE {schema}.files
SET status = 'deleted', error = NULL, generation = generation + 1, attempt = 0,
    validated = false, catalogued_at = now()
WHERE id IN ({locked_ids}) AND status <> 'deleted';

-- name: files_for_day
SELECT f.id, f.bucket, f.key, f.feature_table, f.etag, f.size, f.generation, f.validated,
       f.status, f.min_event_timestamp, f.max_event_timestamp, t.id AS feature_table_id
FROM {schema}.files f JOIN {schema}.feature_tables t ON t.name = f.feature_table
WHERE f.feature_table = ANY(%(tables)s)
  AND f.status IN ('pending', 'indexed')
  AND f.min_event_timestamp < %(day_end)s AND f.max_event_timestamp >= %(day_start)s
ORDER BY f.id;

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
UPDATE {schema}.files AS f SET status = 'indexed', error = NULL, indexed_at = now()
FROM unnest(%(ids)s::bigint[], %(generations)s::int[]) AS u(id, generation)
WHERE f.id = u.id AND f.generation = u.generation AND f.id IN ({locked_ids})
  AND f.status = 'pending';

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
       f.indexed_min_timestamp, f.indexed_max_timestamp, t.id AS feature_table_id,
       rec.recorded_first, rec.recorded_last, rec.stale_records
FROM {schema}.files f JOIN {schema}.feature_tables t ON t.name = f.feature_table
JOIN unnest(%(buckets)s::text[], %(keys)s::text[]) AS o(bucket, key)
  ON o.bucket = f.bucket AND o.key = f.key
{recorded}
WHERE f.feature_table = ANY(%(tables)s)
ORDER BY f.id;

-- name: day_state
-- Under a day's lock: the files a run read for the day, the files whose rows the day holds
-- and the live files whose rows overlap it.
SELECT f.id, f.generation, f.status
FROM {schema}.files f
WHERE f.id = ANY(%(ids)s)
   OR (f.feature_table = ANY(%(tables)s)
       AND (f.id IN (SELECT d.file_id FROM {schema}.file_days d WHERE d.day = %(day)s)
            OR (f.status IN ('pending', 'indexed')
                AND f.min_event_timestamp < %(day_end)s
                AND f.max_event_timestamp >= %(day_start)s)));

-- name: lock_files
-- Under a day's lock: the files the day writes, locked FOR SHARE (in id order, as every
-- statement that locks several files does) so that none changes generation before the day
-- commits.
SELECT id, generation, status FROM {schema}.files
WHERE id = ANY(%(ids)s)
ORDER BY id
FOR SHARE;

-- name: forget_day_files
-- Within a day's transaction: files whose rows in the day were just removed.
DELETE FROM {schema}.file_days WHERE day = %(day)s AND file_id = ANY(%(ids)s);

-- name: forget_day_tables
-- Within a rebuild's day transaction: every file of the tables but those left alone.
DELETE FROM {schema}.file_days d USING {schema}.files f
WHERE d.day = %(day)s AND f.id = d.file_id AND f.feature_table = ANY(%(tables)s)
  AND NOT (d.file_id = ANY(%(kept)s));

-- name: record_day_files
INSERT INTO {schema}.file_days (file_id, day, generation, row_count)
SELECT u.file_id, %(day)s, u.generation, u.row_count
FROM unnest(%(ids)s::bigint[], %(generations)s::int[], %(counts)s::bigint[])
    AS u(file_id, generation, row_count);

-- name: settle_future_rows
-- Rows once dated after the last partition whose days now all exist.
UPDATE {schema}.files SET rows_after_end = 0
WHERE id IN (
    SELECT id FROM {schema}.files
    WHERE feature_table = ANY(%(tables)s) AND rows_after_end > 0
      AND max_event_timestamp < %(partitions_end)s
    ORDER BY id FOR UPDATE
);

-- name: files_touching
-- Files of the tables whose current, indexed or recorded rows may fall in [run_start,
-- run_end).
SELECT id, generation FROM {schema}.files
WHERE feature_table = ANY(%(tables)s)
  AND ((min_event_timestamp < %(run_end)s AND max_event_timestamp >= %(run_start)s)
    OR (indexed_min_timestamp < %(run_end)s AND indexed_max_timestamp >= %(run_start)s)
    OR id IN (SELECT file_id FROM {schema}.file_days
              WHERE day >= %(run_start)s::date AND day < %(run_end)s::date));

-- name: applied_state
SELECT f.id, f.generation, f.status, f.min_event_timestamp, f.max_event_timestamp,
       f.indexed_min_timestamp, f.indexed_max_timestamp, f.applied_generation,
       f.applied_through, rec.recorded_first, rec.recorded_last, rec.stale_records
FROM {schema}.files f
{recorded}
WHERE f.id = ANY(%(ids)s);

-- name: set_applied
UPDATE {schema}.files AS f
SET applied_generation = CASE WHEN u.covered THEN u.generation ELSE f.applied_generation END,
    applied_through = CASE WHEN u.covered THEN %(partitions_end)s ELSE f.applied_through END,
    indexed_min_timestamp = u.lo, indexed_max_timestamp = u.hi,
    status = CASE WHEN u.covered AND f.status = 'pending' THEN 'indexed' ELSE f.status END,
    indexed_at = CASE WHEN u.covered AND f.status = 'pending' THEN now() ELSE f.indexed_at END
FROM unnest(%(ids)s::bigint[], %(generations)s::int[], %(covered)s::boolean[],
            %(lo)s::timestamptz[], %(hi)s::timestamptz[]) AS u(id, generation, covered, lo, hi)
WHERE f.id = u.id AND f.generation = u.generation AND f.id IN ({locked_ids});

-- name: unapplied
-- Files whose current generation the index does not hold yet, and applied files with rows in
-- days that opened since they were applied (each found through its own partial index); the
-- limit applies before each file's records are looked up.
SELECT f.id, f.bucket, f.key, f.feature_table, f.generation, f.attempt, f.status,
       f.min_event_timestamp, f.max_event_timestamp,
       f.indexed_min_timestamp, f.indexed_max_timestamp,
       f.applied_generation, f.applied_through,
       rec.recorded_first, rec.recorded_last, rec.stale_records,
       f.requested_generation, f.requested_attempt, f.requested_run_key, f.requested_at
FROM (
SELECT * FROM {schema}.files f
WHERE f.id IN (
    -- A file waiting to be described afresh (a registry change forgot its ETag) waits for
    -- that: its timestamps may be those of the old definition.
    SELECT id FROM {schema}.files
    WHERE feature_table = ANY(%(tables)s) AND applied_generation < generation
      AND (etag IS NOT NULL OR status <> 'pending')
    UNION
    SELECT id FROM {schema}.files
    WHERE feature_table = ANY(%(tables)s) AND status IN ('pending', 'indexed')
      AND max_event_timestamp >= applied_through AND applied_through < %(partitions_end)s
)
ORDER BY f.min_event_timestamp NULLS FIRST, f.id
LIMIT %(limit)s
) f
{recorded}
ORDER BY f.min_event_timestamp NULLS FIRST, f.id;

-- name: mark_requested
UPDATE {schema}.files AS f
SET requested_generation = u.generation, requested_attempt = f.attempt,
    requested_run_key = %(run_key)s, requested_at = now()
FROM unnest(%(ids)s::bigint[], %(generations)s::int[]) AS u(id, generation)
WHERE f.id = u.id AND f.generation = u.generation AND f.id IN ({locked_ids});

-- name: next_attempt
UPDATE {schema}.files SET attempt = attempt + 1 WHERE id IN ({locked_ids});

-- name: forget_failed_etags
-- `fes retry`: failed files are catalogued afresh, as if their objects had changed.
UPDATE {schema}.files SET etag = NULL
WHERE id IN (
    SELECT id FROM {schema}.files
    WHERE status = 'failed' AND (cardinality(%(keys)s::text[]) = 0 OR key = ANY(%(keys)s))
    ORDER BY id FOR UPDATE
)
RETURNING bucket, key, feature_table;

-- name: known_objects
SELECT id, key, feature_table, etag, status
FROM {schema}.files
WHERE bucket = %(bucket)s AND key = ANY(%(keys)s) AND feature_table = ANY(%(tables)s);

-- name: known_in_key_range
-- Catalogued objects under a prefix with keys in (after, upto] in S3's key order (bytewise,
-- hence COLLATE "C"): the caller derives both bounds from the prefix too, so the range is an
-- index range (files_by_key) whatever the database's collation.
SELECT id, key, feature_table FROM {schema}.files
WHERE bucket = %(bucket)s
  AND (key COLLATE "C") >= %(lower)s::text COLLATE "C"
  AND (key COLLATE "C") < %(upper)s::text COLLATE "C"
  AND (%(after)s::text IS NULL OR (key COLLATE "C") > %(after)s::text COLLATE "C")
  AND (%(upto)s::text IS NULL OR (key COLLATE "C") <= %(upto)s::text COLLATE "C")
  AND starts_with(key, %(prefix)s)
  AND feature_table = ANY(%(tables)s) AND status <> 'deleted';

-- name: known_object_rows
SELECT id, feature_table, status FROM {schema}.files
WHERE bucket = %(bucket)s AND key = %(key)s AND status <> 'deleted';

-- name: settle_without_rows
-- Unapplied files that leave no row to add or remove (failed or deleted before any of their
-- rows reached the index): nothing for a run to do.
-- A pending file without rows in any partition (zero rows, or all outside) is indexed as is.
-- Guarded by generation: a file that changed since the planner looked needs its new look.
UPDATE {schema}.files AS f SET applied_generation = f.generation,
    applied_through = %(partitions_end)s,
    indexed_min_timestamp = NULL, indexed_max_timestamp = NULL,
    status = CASE WHEN f.status = 'pending' THEN 'indexed' ELSE f.status END,
    indexed_at = CASE WHEN f.status = 'pending' THEN now() ELSE f.indexed_at END
FROM unnest(%(ids)s::bigint[], %(generations)s::int[]) AS u(id, generation)
WHERE f.id = u.id AND f.generation = u.generation AND f.id IN ({locked_ids})
  AND NOT EXISTS (
      SELECT 1 FROM {schema}.file_days d
      WHERE d.file_id = f.id AND d.day >= %(partitions_begin)s
  );

-- name: status_by_table
SELECT feature_table,
       count(*) FILTER (WHERE status = 'indexed') AS indexed,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'deleted') AS deleted,
       count(*) FILTER (WHERE applied_generation < generation) AS lagging,
       max(indexed_at) AS last_indexed
FROM {schema}.files GROUP BY feature_table ORDER BY feature_table;

-- name: oldest_unapplied
-- Changes catalogued but not applied yet, and since when each has waited: how far the index is
-- behind the bucket, by the server's clock (the one `catalogued_at` is written with). A file
-- whose rows reach into a day that has opened since it was applied waits since that day began.
-- Tables that left the registry do not count.
SELECT w.feature_table, min(w.since) AS oldest, count(*) AS waiting,
       max(w.waited)::float8 AS waited
FROM (
    SELECT feature_table, catalogued_at AS since,
           extract(epoch FROM now() - catalogued_at) AS waited
    FROM {schema}.files
    WHERE applied_generation < generation
    UNION ALL
    -- The day opened by the run's clock (`now`), which the planner follows too.
    SELECT feature_table, applied_through AS since,
           extract(epoch FROM %(now)s::timestamptz - applied_through) AS waited
    FROM {schema}.files
    WHERE applied_generation = generation AND status IN ('pending', 'indexed')
      AND max_event_timestamp >= applied_through AND applied_through < %(partitions_end)s
) w
JOIN {schema}.feature_tables t ON t.name = w.feature_table AND t.removed_at IS NULL
GROUP BY w.feature_table;

-- name: lagging_files
SELECT bucket, key, feature_table, status, generation, applied_generation, attempt, error
FROM {schema}.files
WHERE applied_generation < generation OR status IN ('pending', 'failed')
ORDER BY feature_table, bucket, key LIMIT %(limit)s;

-- name: indexed_spec
-- What the index holds a feature table as (NULL spec: taken in before specs were kept).
SELECT spec FROM {schema}.feature_tables WHERE name = %(name)s AND removed_at IS NULL;

-- name: files_overlapping
-- The readable files of a table (failed ones are not) whose catalogued rows may fall in one
-- of the ranges [los[i], his[i]]: where the rows of an answer are. A file without timestamp
-- statistics may hold any. With `outside_only`, only the files holding rows the index does not
-- (before the partitions) or that may (no statistics).
SELECT f.bucket, f.key, f.etag, f.size
FROM {schema}.files f
WHERE f.feature_table = %(table)s AND f.status IN ('pending', 'indexed')
  AND (NOT %(outside_only)s OR f.rows_before_start > 0 OR f.min_event_timestamp IS NULL)
  AND (f.min_event_timestamp IS NULL OR EXISTS (
      SELECT 1 FROM unnest(%(los)s::timestamptz[], %(his)s::timestamptz[]) AS r(lo, hi)
      WHERE f.min_event_timestamp <= r.hi AND f.max_event_timestamp >= r.lo))
ORDER BY f.key;

-- name: earliest_event
-- The oldest catalogued event of a table's readable files (NULL when one has no statistics:
-- its rows may be of any time).
SELECT CASE WHEN bool_and(min_event_timestamp IS NOT NULL OR coalesce(row_count = 0, false))
            THEN min(min_event_timestamp) END AS earliest
FROM {schema}.files
WHERE feature_table = %(table)s AND status IN ('pending', 'indexed');

-- name: rows_outside
-- Whether a table's readable files may hold rows from before the partitions.
SELECT coalesce(bool_or(rows_before_start > 0 OR min_event_timestamp IS NULL), false) AS found
FROM {schema}.files
WHERE feature_table = %(table)s AND status IN ('pending', 'indexed');

-- Storage and views of one entity key. {rows}: day-partitioned history; {latest_table}: each
-- id's newest row, maintained; {changes}: what latest has not taken in yet — candidates (an
-- id's newest new row) and removal markers (event_timestamp NULL: recompute from history).

-- name: create_rows
CREATE TABLE IF NOT EXISTS {schema}.{rows} (
    {id_columns},
    feature_table_id smallint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    created_timestamp timestamptz,
    file_id bigint NOT NULL
) PARTITION BY RANGE (event_timestamp);
-- Rows are loaded sorted by (feature_table_id, event_timestamp), so a BRIN index finds a
-- window's pages at a fraction of a btree's upkeep during bulk loads.
CREATE INDEX IF NOT EXISTS {rows_time_index} ON {schema}.{rows}
    USING brin (feature_table_id, event_timestamp) WITH (pages_per_range = 8);
-- No btree on the ids: it cost more than half of every load's time, and latest no longer needs
-- it (appends reach latest as candidates; only removals recompute, by one scan). Indexes made
-- by earlier releases are dropped.
DROP INDEX IF EXISTS {schema}.{rows_id_index};

-- name: create_latest
CREATE TABLE IF NOT EXISTS {schema}.{latest_table} (
    {id_columns},
    feature_table_id smallint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    created_timestamp timestamptz,
    file_id bigint NOT NULL,
    PRIMARY KEY (feature_table_id, {id_list})
);

-- name: create_changes
-- No index: a catch-up reads every change up to a sequence number anyway.
CREATE TABLE IF NOT EXISTS {schema}.{changes} (
    seq bigserial NOT NULL,
    {id_columns},
    feature_table_id smallint NOT NULL
);
-- Candidate columns, added to change logs of earlier releases (their rows become markers).
ALTER TABLE {schema}.{changes}
    ADD COLUMN IF NOT EXISTS event_timestamp timestamptz,
    ADD COLUMN IF NOT EXISTS created_timestamp timestamptz,
    ADD COLUMN IF NOT EXISTS file_id bigint;

-- name: create_view
-- What users select: `entity_<key>` over the history, `latest_<key>` over latest rows.
CREATE OR REPLACE VIEW {schema}.{view} AS
SELECT {r_ids}, t.name AS feature_table, r.event_timestamp, r.created_timestamp,
       's3://' || f.bucket || '/' || f.key AS path
FROM {schema}.{source} r
JOIN {schema}.feature_tables t ON t.id = r.feature_table_id
JOIN {schema}.files f ON f.id = r.file_id;

-- name: create_day_partition
CREATE TABLE IF NOT EXISTS {schema}.{partition} PARTITION OF {schema}.{rows}
    FOR VALUES FROM ({day_start}) TO ({day_end});

-- name: has_removed
-- The day's rows about to be removed match the filter filled in as `removed`: of some
-- feature tables (a rebuild) or of some files (a change list), ids bound as `removed`.
SELECT EXISTS (SELECT 1 FROM {schema}.{partition} WHERE {removed}) AS found;

-- name: keeps_others
SELECT EXISTS (SELECT 1 FROM {schema}.{partition} WHERE NOT ({removed})) AS found;

-- name: mark_removed
-- Latest changes only for ids whose latest row, or a candidate not yet taken in, is among
-- the removed rows: those recompute from history.
INSERT INTO {schema}.{changes} ({id_list}, feature_table_id)
SELECT {id_list}, feature_table_id FROM {schema}.{latest_table}
WHERE {removed} AND event_timestamp >= %(day_start)s AND event_timestamp < %(day_end)s
UNION
SELECT {id_list}, feature_table_id FROM {schema}.{changes}
WHERE {removed} AND event_timestamp >= %(day_start)s AND event_timestamp < %(day_end)s;

-- name: delete_removed
DELETE FROM {schema}.{partition} WHERE {removed};

-- name: truncate_day
TRUNCATE {schema}.{partition};

-- name: copy_changes
COPY {schema}.{changes} ({id_list}, feature_table_id, event_timestamp, created_timestamp, file_id)
FROM STDIN (FORMAT binary);

-- name: summarize_day
-- Pages a COPY adds are not summarized by the BRIN index until this runs (or a vacuum):
-- until then every query scans the whole day.
SELECT brin_summarize_new_values(i.indexrelid) AS ranges
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am a ON a.oid = c.relam
WHERE i.indrelid = %(partition)s::regclass AND a.amname = 'brin';

-- name: copy_day
COPY {schema}.{partition} ({id_list}, feature_table_id, event_timestamp, created_timestamp, file_id)
FROM STDIN (FORMAT binary);

-- name: latest_work_mem
-- Candidates and marked ids' history are sorted: with the default 4 MB a sort spills to disk
-- (seconds per million rows) where memory sorts in a fraction.
SET LOCAL work_mem = '256MB';

-- name: latest_max_seq
SELECT max(seq) AS m FROM {schema}.{changes};

-- name: latest_collect
-- Candidates dated in the future (past now + tolerance: what timestamps_valid fails on) wait
-- in the change log until they are not; markers are always taken.
CREATE TEMP TABLE fes_changes ON COMMIT DROP AS
SELECT * FROM {schema}.{changes}
WHERE seq <= %(max_seq)s AND (event_timestamp IS NULL OR event_timestamp <= %(not_after)s);

-- name: latest_marked
CREATE TEMP TABLE fes_marked ON COMMIT DROP AS
SELECT DISTINCT {id_list}, feature_table_id FROM fes_changes WHERE event_timestamp IS NULL;
ANALYZE fes_marked;

-- name: latest_count_marked
SELECT count(*) AS n FROM fes_marked;

-- name: latest_delete_marked
DELETE FROM {schema}.{latest_table} l USING fes_marked c
WHERE l.feature_table_id = c.feature_table_id AND {l_eq_c};

-- name: latest_unresolved
CREATE TEMP TABLE fes_unresolved ON COMMIT DROP AS SELECT * FROM fes_marked;

-- name: latest_day_partitions
-- Newest day first: a marked id's latest row is in the newest day that has rows of it.
SELECT c.relname AS name
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE n.nspname = %(schema)s AND p.relname = %(rows)s
ORDER BY c.relname DESC;

-- name: latest_recompute_marked
-- One day's rows of the ids still unresolved. Ties: the newest created_timestamp, then the
-- greatest path (byte order, as everywhere).
INSERT INTO {schema}.{latest_table} ({id_list}, feature_table_id, event_timestamp, created_timestamp, file_id)
SELECT DISTINCT ON (r.feature_table_id, {r_ids})
       {r_ids}, r.feature_table_id, r.event_timestamp, r.created_timestamp, r.file_id
FROM {schema}.{partition} r
JOIN fes_unresolved c ON c.feature_table_id = r.feature_table_id AND {r_eq_c}
JOIN {schema}.files f ON f.id = r.file_id
ORDER BY r.feature_table_id, {r_ids}, r.event_timestamp DESC,
         r.created_timestamp DESC NULLS LAST, ('s3://' || f.bucket || '/' || f.key) COLLATE "C" DESC;

-- name: latest_resolved
DELETE FROM fes_unresolved c USING {schema}.{latest_table} l
WHERE l.feature_table_id = c.feature_table_id AND {l_eq_c};

-- name: latest_merge_candidates
-- The other ids' candidates: the best per id, kept where it beats the row latest holds.
INSERT INTO {schema}.{latest_table} AS l ({id_list}, feature_table_id, event_timestamp, created_timestamp, file_id)
SELECT DISTINCT ON (r.feature_table_id, {r_ids})
       {r_ids}, r.feature_table_id, r.event_timestamp, r.created_timestamp, r.file_id
FROM fes_changes r
JOIN {schema}.files f ON f.id = r.file_id
WHERE r.event_timestamp IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM fes_marked c WHERE c.feature_table_id = r.feature_table_id AND {r_eq_c}
  )
ORDER BY r.feature_table_id, {r_ids}, r.event_timestamp DESC,
         r.created_timestamp DESC NULLS LAST, ('s3://' || f.bucket || '/' || f.key) COLLATE "C" DESC
ON CONFLICT (feature_table_id, {id_list}) DO UPDATE
SET event_timestamp = excluded.event_timestamp,
    created_timestamp = excluded.created_timestamp,
    file_id = excluded.file_id
WHERE excluded.event_timestamp > l.event_timestamp
   OR (excluded.event_timestamp = l.event_timestamp
       AND (coalesce(excluded.created_timestamp, '-infinity') > coalesce(l.created_timestamp, '-infinity')
            OR (coalesce(excluded.created_timestamp, '-infinity') = coalesce(l.created_timestamp, '-infinity')
                AND excluded.file_id <> l.file_id
                AND (SELECT ('s3://' || bucket || '/' || key) COLLATE "C" FROM {schema}.files WHERE id = excluded.file_id)
                  > (SELECT 's3://' || bucket || '/' || key FROM {schema}.files WHERE id = l.file_id))));

-- name: latest_forget
DELETE FROM {schema}.{changes}
WHERE seq <= %(max_seq)s AND (event_timestamp IS NULL OR event_timestamp <= %(not_after)s);

-- name: prune_rows
DELETE FROM {schema}.{rows} WHERE feature_table_id = %(feature_table_id)s;

-- name: prune_changes
DELETE FROM {schema}.{changes} WHERE feature_table_id = %(feature_table_id)s;

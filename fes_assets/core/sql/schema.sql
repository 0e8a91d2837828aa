-- Shared tables of the index. Identifiers in braces are composed with psycopg.sql.

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: create_meta
CREATE TABLE IF NOT EXISTS {schema}.meta (
    key text PRIMARY KEY,
    value jsonb NOT NULL
);

-- name: create_feature_tables
CREATE TABLE IF NOT EXISTS {schema}.feature_tables (
    id smallserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    entity_key text NOT NULL,
    removed_at timestamptz
);
-- What the registry said of the table when the index last took it in: a change (columns,
-- entity key, prefix) makes its files catalogued afresh.
ALTER TABLE {schema}.feature_tables ADD COLUMN IF NOT EXISTS spec jsonb;

-- name: create_files
CREATE TABLE IF NOT EXISTS {schema}.files (
    id bigserial PRIMARY KEY,
    bucket text NOT NULL,
    key text NOT NULL,
    feature_table text NOT NULL,
    etag text,
    size bigint,
    last_modified timestamptz,
    row_count bigint,
    min_event_timestamp timestamptz,
    max_event_timestamp timestamptz,
    rows_before_start bigint NOT NULL DEFAULT 0,
    rows_after_end bigint NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'indexed', 'failed', 'deleted')),
    error text,
    generation integer NOT NULL DEFAULT 1,
    attempt integer NOT NULL DEFAULT 0,
    validated boolean NOT NULL DEFAULT false,
    has_statistics boolean NOT NULL DEFAULT true,
    catalogued_at timestamptz NOT NULL DEFAULT now(),
    indexed_at timestamptz,
    -- The generation whose rows the index holds in every day it touches, and the range of
    -- event timestamps those rows (of any generation) may still occupy.
    applied_generation integer NOT NULL DEFAULT 0,
    indexed_min_timestamp timestamptz,
    indexed_max_timestamp timestamptz,
    -- The sensor's last request for this file: which version, which attempt, which run.
    requested_generation integer,
    requested_attempt integer,
    requested_run_key text,
    requested_at timestamptz,
    UNIQUE (bucket, key, feature_table)
);
CREATE INDEX IF NOT EXISTS files_by_table_time
    ON {schema}.files (feature_table, min_event_timestamp, max_event_timestamp);
-- Keys in S3's (bytewise) order, for the reconcile pass's key ranges in any collation.
CREATE INDEX IF NOT EXISTS files_by_key ON {schema}.files (bucket, (key COLLATE "C"));
CREATE INDEX IF NOT EXISTS files_unapplied
    ON {schema}.files (feature_table) WHERE applied_generation < generation;
-- The partition end (a UTC midnight) through which the applied generation's rows are indexed:
-- rows dated at or after it wait for their day to open. Set only with applied_generation, so
-- a run that ends after midnight cannot undo the new day's work.
ALTER TABLE {schema}.files ADD COLUMN IF NOT EXISTS applied_through timestamptz;
-- Indexes of earlier releases: applied files with rows after the last partition were applied
-- through the end of the day they were indexed on.
UPDATE {schema}.files
SET applied_through = date_trunc('day', coalesce(indexed_at, catalogued_at), 'UTC') + interval '1 day'
WHERE applied_through IS NULL AND applied_generation = generation AND rows_after_end > 0;
CREATE INDEX IF NOT EXISTS files_new_days
    ON {schema}.files (feature_table)
    WHERE status IN ('pending', 'indexed') AND max_event_timestamp >= applied_through;

-- name: create_file_days
-- Which days hold rows of which file, of which generation: written in each day's own
-- transaction, so every committed day says where its rows came from, whatever happens to the
-- run after it. A file is applied when no day holds rows of another generation of it.
CREATE TABLE IF NOT EXISTS {schema}.file_days (
    file_id bigint NOT NULL,
    day date NOT NULL,
    generation integer NOT NULL,
    row_count bigint NOT NULL,
    PRIMARY KEY (file_id, day)
);
CREATE INDEX IF NOT EXISTS file_days_by_day ON {schema}.file_days (day);

-- name: create_jobs
CREATE TABLE IF NOT EXISTS {schema}.jobs (
    id bigserial PRIMARY KEY,
    started timestamptz NOT NULL DEFAULT now(),
    ended timestamptz,
    status text NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    status_msg text,
    entity_names text[] NOT NULL,
    feature_table text NOT NULL,
    path text NOT NULL,
    run_id text,
    partition text,
    row_count bigint
);

-- name: namespace_exists
SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s;

-- name: read_meta
SELECT key, value FROM {schema}.meta;

-- name: read_meta_value
SELECT value FROM {schema}.meta WHERE key = %(key)s;

-- name: write_meta
INSERT INTO {schema}.meta (key, value) VALUES (%(key)s, %(value)s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: delete_meta
DELETE FROM {schema}.meta WHERE key = %(key)s;

-- name: register_feature_table
INSERT INTO {schema}.feature_tables (name, entity_key, spec)
VALUES (%(name)s, %(entity_key)s, %(spec)s)
ON CONFLICT (name) DO UPDATE
SET removed_at = NULL, entity_key = excluded.entity_key, spec = excluded.spec;

-- name: feature_table_specs
SELECT id, name, entity_key, spec FROM {schema}.feature_tables;

-- name: recatalogue_table
-- A table whose definition changed: its files are described afresh when next listed (a NULL
-- ETag differs from every listing's), which makes each a new generation for the runs.
UPDATE {schema}.files SET etag = NULL
WHERE id IN (
    SELECT id FROM {schema}.files WHERE feature_table = %(name)s AND status <> 'deleted'
    ORDER BY id FOR UPDATE
);

-- name: retire_outside_prefix
-- A table whose bucket or prefix changed: its files outside the new prefix left it.
UPDATE {schema}.files
SET status = 'deleted', error = NULL, generation = generation + 1, attempt = 0,
    validated = false, catalogued_at = now()
WHERE id IN (
    SELECT id FROM {schema}.files
    WHERE feature_table = %(name)s AND status <> 'deleted'
      AND NOT (bucket = %(bucket)s AND starts_with(key, %(prefix)s))
    ORDER BY id FOR UPDATE
);

-- name: forget_table_ranges
-- A table that moved to another entity key: none of its rows is indexed any more.
UPDATE {schema}.files SET indexed_min_timestamp = NULL, indexed_max_timestamp = NULL
WHERE id IN (
    SELECT id FROM {schema}.files WHERE feature_table = %(name)s ORDER BY id FOR UPDATE
);

-- name: retire_feature_tables
-- Feature tables that left the registry: kept (with their rows) until `fes prune`.
UPDATE {schema}.feature_tables SET removed_at = now()
WHERE removed_at IS NULL AND NOT (name = ANY(%(names)s));

-- name: feature_table_ids
SELECT id, name FROM {schema}.feature_tables;

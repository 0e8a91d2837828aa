-- Storage and views of one entity key. {rows}: day-partitioned history; {latest_table}: each
-- id's newest row, maintained; {changes}: ids changed since latest last caught up.

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
CREATE INDEX IF NOT EXISTS {rows_id_index} ON {schema}.{rows} ({id_list}, feature_table_id);

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

-- name: create_views
CREATE OR REPLACE VIEW {schema}.{entity_view} AS
SELECT {r_ids}, t.name AS feature_table, r.event_timestamp, r.created_timestamp,
       's3://' || f.bucket || '/' || f.key AS path
FROM {schema}.{rows} r
JOIN {schema}.feature_tables t ON t.id = r.feature_table_id
JOIN {schema}.files f ON f.id = r.file_id;
CREATE OR REPLACE VIEW {schema}.{latest_view} AS
SELECT {r_ids}, t.name AS feature_table, r.event_timestamp, r.created_timestamp,
       's3://' || f.bucket || '/' || f.key AS path
FROM {schema}.{latest_table} r
JOIN {schema}.feature_tables t ON t.id = r.feature_table_id
JOIN {schema}.files f ON f.id = r.file_id;

-- name: create_day_partition
CREATE TABLE IF NOT EXISTS {schema}.{partition} PARTITION OF {schema}.{rows}
    FOR VALUES FROM ({day_start}) TO ({day_end});

-- name: record_day_changes
INSERT INTO {schema}.{changes} ({id_list}, feature_table_id)
SELECT DISTINCT {id_list}, feature_table_id FROM {schema}.{partition}
WHERE feature_table_id = ANY(%(feature_table_ids)s);

-- name: record_file_changes
INSERT INTO {schema}.{changes} ({id_list}, feature_table_id)
SELECT DISTINCT {id_list}, feature_table_id FROM {schema}.{partition}
WHERE file_id = ANY(%(file_ids)s);

-- name: truncate_day
TRUNCATE {schema}.{partition};

-- name: delete_day_tables
DELETE FROM {schema}.{partition} WHERE feature_table_id = ANY(%(feature_table_ids)s);

-- name: delete_day_files
DELETE FROM {schema}.{partition} WHERE file_id = ANY(%(file_ids)s);

-- name: count_other_tables
SELECT EXISTS (
    SELECT 1 FROM {schema}.{partition} WHERE NOT (feature_table_id = ANY(%(feature_table_ids)s))
);

-- name: copy_changes
COPY {schema}.{changes} ({id_list}, feature_table_id) FROM STDIN (FORMAT binary);

-- name: copy_day
COPY {schema}.{partition} ({id_list}, feature_table_id, event_timestamp, created_timestamp, file_id)
FROM STDIN (FORMAT binary);

-- name: latest_collect
CREATE TEMP TABLE fes_changed ON COMMIT DROP AS
SELECT DISTINCT {id_list}, feature_table_id FROM {schema}.{changes} WHERE seq <= %(max_seq)s;

-- name: latest_delete
DELETE FROM {schema}.{latest_table} l USING fes_changed c
WHERE l.feature_table_id = c.feature_table_id AND {l_eq_c};

-- name: latest_insert
INSERT INTO {schema}.{latest_table} ({id_list}, feature_table_id, event_timestamp, created_timestamp, file_id)
SELECT DISTINCT ON (r.feature_table_id, {r_ids})
       {r_ids}, r.feature_table_id, r.event_timestamp, r.created_timestamp, r.file_id
FROM {schema}.{rows} r
JOIN fes_changed c ON c.feature_table_id = r.feature_table_id AND {r_eq_c}
JOIN {schema}.files f ON f.id = r.file_id
ORDER BY r.feature_table_id, {r_ids}, r.event_timestamp DESC,
         r.created_timestamp DESC NULLS LAST, 's3://' || f.bucket || '/' || f.key DESC;

-- name: latest_forget
DELETE FROM {schema}.{changes} WHERE seq <= %(max_seq)s;

-- name: prune_rows
WITH gone AS (
    DELETE FROM {schema}.{rows} WHERE feature_table_id = %(feature_table_id)s
    RETURNING {id_list}, feature_table_id
)
INSERT INTO {schema}.{changes} ({id_list}, feature_table_id)
SELECT DISTINCT {id_list}, feature_table_id FROM gone;

-- Storage and views of one entity key. {rows}: day-partitioned history; {latest_table}: each
-- id's newest row, maintained; {changes}: what latest has not taken in yet — candidates (an
-- id's newest new row) and removal markers (event_timestamp NULL: recompute from history).

-- name: create_rows
-- Partitioned by month (see `create_month_table`); Dagster's partitions stay daily, and a day
-- is replaced inside its month.
CREATE TABLE IF NOT EXISTS {schema}.{rows} (
    {id_columns},
    feature_table_id smallint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    created_timestamp timestamptz,
    file_id bigint NOT NULL
) PARTITION BY RANGE (event_timestamp);
-- Rows are loaded sorted by (feature_table_id, event_timestamp), so a BRIN index finds a
-- window's pages at a fraction of a btree's upkeep during bulk loads. The file id rides along:
-- a file's rows in a day sit together when files split the day by time (hourly or daily
-- files), so removing one finds its pages without an index to maintain per row.
CREATE INDEX IF NOT EXISTS {rows_time_index} ON {schema}.{rows}
    USING brin (feature_table_id, event_timestamp, file_id) WITH (pages_per_range = 8);
DROP INDEX IF EXISTS {schema}.{old_rows_time_index};
-- No btree on the ids: it cost more than half of every load's time, and latest no longer needs
-- it (appends reach latest as candidates; only removals recompute, from the years the trail
-- names). Indexes made by earlier releases are dropped.
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

-- name: create_trail
-- The years each id has rows in: written with every day's rows, pruned by the recompute when
-- it reads a year without the id's rows any more. An id whose latest row went is then read
-- from its own years, not from the whole history. Years, not months: a run adds an id once a
-- year it writes (not once a month), which keeps the trail's upkeep a small share of a load
-- even when most ids appear once a day or less.
CREATE TABLE IF NOT EXISTS {schema}.{trail} (
    {id_columns},
    feature_table_id smallint NOT NULL,
    year smallint NOT NULL,
    PRIMARY KEY (feature_table_id, {id_list}, year)
);

-- name: trail_of_partition
-- An index of an earlier release gets its trail from what it holds, a partition at a time.
INSERT INTO {schema}.{trail} ({id_list}, feature_table_id, year)
SELECT DISTINCT {id_list}, feature_table_id, %(year)s::smallint FROM {schema}.{partition}
ON CONFLICT DO NOTHING;

-- name: trail_add
-- A day's ids the run has not yet given this year ({arrays}: one array per join key, then the
-- feature table ids); an id and year already known cost one index probe.
-- In the key's order, so that two days of a year adding the same new ids wait for each other
-- rather than deadlock.
INSERT INTO {schema}.{trail} ({id_list}, feature_table_id, year)
SELECT {id_list}, feature_table_id, %(year)s::smallint
FROM unnest({arrays}) AS u ({id_list}, feature_table_id)
ORDER BY feature_table_id, {id_list}
ON CONFLICT DO NOTHING;

-- name: create_view
-- What users select: `entity_<key>` over the history, `latest_<key>` over latest rows.
CREATE OR REPLACE VIEW {schema}.{view} AS
SELECT {r_ids}, t.name AS feature_table, r.event_timestamp, r.created_timestamp,
       's3://' || f.bucket || '/' || f.key AS path
FROM {schema}.{source} r
JOIN {schema}.feature_tables t ON t.id = r.feature_table_id
JOIN {schema}.files f ON f.id = r.file_id;

-- name: legacy_days_of_month
-- Day partitions of the month (made by a run of an earlier release during the upgrade).
SELECT EXISTS (
    SELECT 1 FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = to_regclass(%(rows)s) AND c.relname LIKE %(pattern)s
) AS found;

-- name: attached_partition
SELECT EXISTS (
    SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%(partition)s)
) AS found;

-- name: create_month_table
-- Made apart and then attached: CREATE TABLE ... PARTITION OF would take an ACCESS EXCLUSIVE
-- lock on the whole history, queue behind any long query and stall every query behind it.
CREATE TABLE IF NOT EXISTS {schema}.{partition} (LIKE {schema}.{rows});

-- name: attach_lock_timeout
-- ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE on the history (readers and writers go on);
-- a wait past this fails the run, which is retried, rather than holding the lock queue.
SET LOCAL lock_timeout = '10s';

-- name: attach_month
ALTER TABLE {schema}.{rows} ATTACH PARTITION {schema}.{partition}
    FOR VALUES FROM ({month_start}) TO ({month_end});

-- name: prefer_brin
-- A month partition just loaded has no statistics until autovacuum reaches it, and the planner
-- then scans the whole month to remove one day's or one file's rows. The BRIN ranges are never
-- the worse path for a day's rows, whatever the statistics say.
SET LOCAL enable_seqscan = off;

-- name: planner_defaults
SET LOCAL enable_seqscan TO DEFAULT;

-- name: remove_rows
-- The day's rows matching `removed` (some feature tables' for a rebuild, some files' for a
-- change list) go; ids whose latest row, or a candidate not yet taken in, was among them get a
-- marker (recompute from history). Latest is reached by its key from the removed rows, and the
-- change log (no index) is joined once: the cost follows the rows removed and the changes
-- waiting, not latest's size.
WITH gone AS (
    DELETE FROM {schema}.{partition}
    WHERE event_timestamp >= %(day_start)s AND event_timestamp < %(day_end)s AND {removed}
    RETURNING {id_list}, feature_table_id, event_timestamp, file_id
)
INSERT INTO {schema}.{changes} ({id_list}, feature_table_id)
SELECT {g_ids}, g.feature_table_id
FROM gone g
WHERE EXISTS (
    SELECT 1 FROM {schema}.{latest_table} l
    WHERE l.feature_table_id = g.feature_table_id AND {l_eq_g}
      AND l.event_timestamp = g.event_timestamp AND l.file_id = g.file_id
)
UNION
SELECT {g_ids}, g.feature_table_id
FROM gone g
WHERE EXISTS (
    SELECT 1 FROM {schema}.{changes} c
    WHERE c.feature_table_id = g.feature_table_id AND {c_eq_g}
      AND c.event_timestamp = g.event_timestamp AND c.file_id = g.file_id
);

-- name: copy_changes
COPY {schema}.{changes} ({id_list}, feature_table_id, event_timestamp, created_timestamp, file_id)
FROM STDIN (FORMAT binary);

-- name: summarize_lock_timeout
-- Summarizing takes SHARE UPDATE EXCLUSIVE on the month: after the day's commit and briefly,
-- so days of one month are not queued behind each other; a vacuum holding it summarizes too.
SET LOCAL lock_timeout = '2s';

-- name: summarize_day
-- Pages a COPY adds are not summarized by the BRIN index until this runs (or a vacuum):
-- until then every query scans the pages it added.
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
ANALYZE fes_unresolved;

-- name: latest_next_year
-- The newest year before %(before)s that the trail gives any unresolved id.
SELECT max(t.year) AS year
FROM {schema}.{trail} t
JOIN fes_unresolved c ON t.feature_table_id = c.feature_table_id AND {t_eq_c}
WHERE t.year < %(before)s;

-- name: trail_epoch
-- How many times a catch-up has pruned the key's trail: a run's memory of ids it committed to
-- the trail holds only while this stays the same (meta key `trail_epoch:<entity key>`).
SELECT coalesce((SELECT (value #>> '{{}}')::bigint FROM {schema}.meta WHERE key = %(key)s), 0)
    AS epoch;

-- name: bump_trail_epoch
INSERT INTO {schema}.meta (key, value) VALUES (%(key)s, '1'::jsonb)
ON CONFLICT (key) DO UPDATE SET value = to_jsonb((meta.value #>> '{{}}')::bigint + 1);

-- name: latest_prune_trail
-- Ids still unresolved once every month of their year was read have no rows in it any more.
DELETE FROM {schema}.{trail} t USING fes_unresolved c
WHERE t.year = %(year)s AND t.feature_table_id = c.feature_table_id AND {t_eq_c};

-- name: latest_partitions
-- Each storage partition (a month, or a day of a release before months); the caller reads
-- those of the years the trail names.
SELECT c.relname AS name
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE n.nspname = %(schema)s AND p.relname = %(rows)s;

-- name: latest_recompute_marked
-- One month's rows of the ids still unresolved ({month_rows}: its partition, or with the day
-- partitions of a release before months, all of them). Ties: the newest created_timestamp,
-- then the greatest path (byte order, as everywhere).
INSERT INTO {schema}.{latest_table} ({id_list}, feature_table_id, event_timestamp, created_timestamp, file_id)
SELECT DISTINCT ON (r.feature_table_id, {r_ids})
       {r_ids}, r.feature_table_id, r.event_timestamp, r.created_timestamp, r.file_id
FROM {month_rows} r
JOIN fes_unresolved c ON c.feature_table_id = r.feature_table_id AND {r_eq_c}
JOIN {schema}.files f ON f.id = r.file_id
ORDER BY r.feature_table_id, {r_ids}, r.event_timestamp DESC,
         r.created_timestamp DESC NULLS LAST, ('s3://' || f.bucket || '/' || f.key) COLLATE "C" DESC;

-- name: month_part
-- One partition of a month read by a recompute, joined with UNION ALL to the month's others.
SELECT * FROM {schema}.{partition}

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
-- A recomputed id's candidates dated in the future go too: the recompute read every row of it
-- in history, and a candidate left behind may be of a row removed since.
DELETE FROM {schema}.{changes} c
WHERE seq <= %(max_seq)s
  AND (event_timestamp IS NULL OR event_timestamp <= %(not_after)s
       OR EXISTS (SELECT 1 FROM fes_marked m
                  WHERE m.feature_table_id = c.feature_table_id AND {m_eq_c}));

-- name: prune_rows
DELETE FROM {schema}.{rows} WHERE feature_table_id = %(feature_table_id)s;

-- name: prune_changes
DELETE FROM {schema}.{changes} WHERE feature_table_id = %(feature_table_id)s;

-- name: prune_trail
DELETE FROM {schema}.{trail} WHERE feature_table_id = %(feature_table_id)s;

-- name: legacy_day_partitions
-- Day-sized partitions of releases before monthly storage, oldest first.
SELECT c.relname AS name
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE n.nspname = %(schema)s AND p.relname = %(rows)s
  AND c.relname ~ '_[0-9]{{8}}$'
ORDER BY c.relname COLLATE "C";

-- name: detach_partition
ALTER TABLE {schema}.{rows} DETACH PARTITION {schema}.{partition};

-- name: move_day_rows
-- In storage order, so the month's BRIN ranges stay narrow.
INSERT INTO {schema}.{month} SELECT * FROM {schema}.{partition}
ORDER BY feature_table_id, event_timestamp;

-- name: storage_exists
SELECT to_regclass(%(rows)s) IS NOT NULL AS found;

-- name: create_brin
CREATE INDEX IF NOT EXISTS {rows_time_index} ON {schema}.{rows}
    USING brin (feature_table_id, event_timestamp, file_id) WITH (pages_per_range = 8);
DROP INDEX IF EXISTS {schema}.{old_rows_time_index};

-- name: drop_partition
DROP TABLE {schema}.{partition};

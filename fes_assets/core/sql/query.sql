-- entity_df queries on one entity key's storage. Values ({table_id}, {start}, {end} (NULL =
-- unbounded), {as_of}, {layout}, {feature_table}) are adapted by psycopg, as a client-side bind: a
-- query without server-side parameters is fetched by ADBC through binary COPY, in half the
-- time of a prepared statement.

-- name: window
-- Distinct rows are made client-side in Arrow: cheaper than a server-side aggregate.
SELECT {ids}, event_timestamp
FROM {schema}.{rows}
WHERE feature_table_id = {table_id}
  AND event_timestamp >= coalesce({start}::timestamptz, '-infinity')
  AND event_timestamp < coalesce({end}::timestamptz, 'infinity');

-- name: latest_window
SELECT {ids}, max(event_timestamp) AS event_timestamp
FROM {schema}.{rows}
WHERE feature_table_id = {table_id}
  AND event_timestamp >= coalesce({start}::timestamptz, '-infinity')
  AND event_timestamp < coalesce({end}::timestamptz, 'infinity')
GROUP BY {ids};

-- name: latest_all
SELECT {ids}, event_timestamp FROM {schema}.{latest_table} WHERE feature_table_id = {table_id};

-- name: latest_if_caught_up
-- Latest's rows of the table and, in the same snapshot, whether latest is caught up (nothing
-- of the table waits in the change log); when it is not, one row of nulls, caught_up false.
SELECT c.caught_up, {ids}, event_timestamp
FROM (SELECT NOT EXISTS (SELECT 1 FROM {schema}.{changes} WHERE feature_table_id = {table_id})
          AS caught_up) c
LEFT JOIN {schema}.{latest_table} l ON c.caught_up AND l.feature_table_id = {table_id};

-- name: as_of
SELECT DISTINCT {ids}, {as_of}::timestamptz AS event_timestamp
FROM {schema}.{rows}
WHERE feature_table_id = {table_id}
  AND event_timestamp >= coalesce({start}::timestamptz, '-infinity')
  AND event_timestamp < least(coalesce({end}::timestamptz, 'infinity'), {as_of}::timestamptz);

-- name: as_of_latest_exact
-- Whether latest answers an unbounded as_of exactly: nothing waits in the change log for the
-- table (latest is caught up), and no id's newest row is at or after the instant (so every id
-- latest holds has a row before it, and every id with such a row is in latest).
SELECT NOT EXISTS (SELECT 1 FROM {schema}.{changes} WHERE feature_table_id = {table_id})
   AND NOT EXISTS (
       SELECT 1 FROM {schema}.{latest_table}
       WHERE feature_table_id = {table_id} AND event_timestamp >= {as_of}::timestamptz
   ) AS exact;

-- name: as_of_latest
SELECT {ids}, {as_of}::timestamptz AS event_timestamp
FROM {schema}.{latest_table}
WHERE feature_table_id = {table_id};

-- name: feature_table
SELECT t.id, t.entity_key, (m.value -> t.entity_key)::text AS types,
       (SELECT value::text FROM {schema}.meta WHERE key = 'layout') AS layout
FROM {schema}.feature_tables t, {schema}.meta m
WHERE t.name = {feature_table} AND m.key = 'entity_keys';

-- name: guarded
-- A query made from a cached lookup answers only while the index layout it was made for
-- holds (checked once, before any row is read); an empty answer sends the caller to look
-- again.
SELECT * FROM ({query}) q
WHERE (SELECT value::text FROM {schema}.meta WHERE key = 'layout') = {layout}::text;

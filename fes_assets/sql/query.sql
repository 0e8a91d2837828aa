-- entity_df queries on one entity key's storage. $1 feature_table_id, $2 start, $3 end
-- (NULL = unbounded), $4 as_of.

-- name: window
-- Distinct rows are made client-side in Arrow: cheaper than a server-side aggregate.
SELECT {ids}, event_timestamp
FROM {schema}.{rows}
WHERE feature_table_id = $1
  AND event_timestamp >= coalesce($2::timestamptz, '-infinity')
  AND event_timestamp < coalesce($3::timestamptz, 'infinity');

-- name: latest_window
SELECT {ids}, max(event_timestamp) AS event_timestamp
FROM {schema}.{rows}
WHERE feature_table_id = $1
  AND event_timestamp >= coalesce($2::timestamptz, '-infinity')
  AND event_timestamp < coalesce($3::timestamptz, 'infinity')
GROUP BY {ids};

-- name: latest_all
SELECT {ids}, event_timestamp FROM {schema}.{latest_table} WHERE feature_table_id = $1;

-- name: as_of
SELECT DISTINCT {ids}, $4::timestamptz AS event_timestamp
FROM {schema}.{rows}
WHERE feature_table_id = $1
  AND event_timestamp >= coalesce($2::timestamptz, '-infinity')
  AND event_timestamp < least(coalesce($3::timestamptz, 'infinity'), $4::timestamptz);

-- name: feature_table
SELECT t.id, t.entity_key, (m.value -> t.entity_key)::text AS types,
       (SELECT value::text FROM {schema}.meta WHERE key = 'layout') AS layout
FROM {schema}.feature_tables t, {schema}.meta m
WHERE t.name = $1 AND m.key = 'entity_keys';

-- name: guarded
-- A query made from a cached lookup answers only while the index layout it was made for
-- holds (checked once, before any row is read); an empty answer sends the caller to look
-- again.
SELECT * FROM ({query}) q
WHERE (SELECT value::text FROM {schema}.meta WHERE key = 'layout') = {layout};

-- MinIO's bucket-notification table (format `access`: event_time, event_data). It has no id
-- column: events are ordered by (event_time, the object's sequencer).

-- name: events_after
-- Events since `since` (the newest event read, less a look-back window, so that an event
-- committed after a newer one is still read), but those already read. With an index on
-- (event_time) this reads the window only.
SELECT e.event_time, e.seq, e.event_data
FROM (
    SELECT event_time, coalesce(event_data #>> '{{Records,0,s3,object,sequencer}}', '') AS seq,
           event_data
    FROM {events_schema}.{events_table}
    WHERE %(since)s::timestamptz IS NULL OR event_time > %(since)s::timestamptz
) e
WHERE NOT ((e.event_time, e.seq) IN (
    SELECT * FROM unnest(%(seen_times)s::timestamptz[], %(seen_seqs)s::text[])
))
ORDER BY 1, 2
LIMIT %(n)s;

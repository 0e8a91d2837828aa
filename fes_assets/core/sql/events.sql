-- MinIO's bucket-notification table (format `access`: event_time, event_data). It has no id
-- column: events are ordered by (event_time, the object's sequencer).

-- name: events_after
SELECT event_time, coalesce(event_data #>> '{{Records,0,s3,object,sequencer}}', '') AS seq,
       event_data
FROM {events_schema}.{events_table}
WHERE %(t)s::timestamptz IS NULL
   OR (event_time, coalesce(event_data #>> '{{Records,0,s3,object,sequencer}}', ''))
      > (%(t)s::timestamptz, %(s)s::text)
ORDER BY 1, 2
LIMIT %(n)s;

-- Advisory locks, held until the transaction ends. Keys are (schema, purpose) hashes; day
-- locks add the day's ordinal as a second key.

-- name: lock
SELECT pg_advisory_xact_lock(%(key)s);

-- name: lock_shared
SELECT pg_advisory_xact_lock_shared(%(key)s);

-- name: set_lock_timeout
SELECT set_config('lock_timeout', %(timeout)s, false);

-- name: lock_day
SELECT pg_advisory_xact_lock(%(key)s, %(day)s);

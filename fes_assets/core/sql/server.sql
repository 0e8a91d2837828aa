-- Statements about the server rather than one index: databases for the demo and the tests.

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = %(name)s;

-- name: create_database
CREATE DATABASE {database};

-- Statements about the server rather than one index: databases for the demo and the tests.

-- name: create_database
CREATE DATABASE {database};

-- name: drop_database
DROP DATABASE IF EXISTS {database} WITH (FORCE);

-- name: drop_schema
DROP SCHEMA IF EXISTS {schema} CASCADE;

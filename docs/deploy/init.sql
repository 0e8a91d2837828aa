-- Databases and least-privilege roles for compose.yaml (passwords: change them).
CREATE ROLE dagster LOGIN PASSWORD 'change-me-dagster';
CREATE DATABASE dagster OWNER dagster;
CREATE DATABASE feast;
\connect feast
CREATE ROLE fes_indexer LOGIN PASSWORD 'change-me-indexer';
CREATE SCHEMA entity_lookup AUTHORIZATION fes_indexer;
REVOKE ALL ON DATABASE feast FROM PUBLIC;
GRANT CONNECT ON DATABASE feast TO fes_indexer;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

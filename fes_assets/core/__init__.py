"""The core: registry, object store, parquet reading, catalogue, storage, latest, indexing,
scanning, planning and queries. No Dagster here, so it can be tested and reused alone."""

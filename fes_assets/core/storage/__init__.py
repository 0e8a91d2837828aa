"""The index's PostgreSQL storage: connections and locks (`database`), identifiers
(`names`), schema and meta (`schema`), day writes (`day_writes`), latest catch-up
(`latest`) and maintenance (`admin`)."""

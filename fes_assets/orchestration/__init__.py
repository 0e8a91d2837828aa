"""The Dagster layer: resources, partitions, assets, checks and the sensor, built from the
registry by one factory (`factory.build_definitions`). Thin by design: the work is in
`fes_assets.core`."""

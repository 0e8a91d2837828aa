"""Local tooling: the demo, embedded PostgreSQL and S3 servers, and sample Feast data."""

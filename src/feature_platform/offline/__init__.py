"""The offline tables: parquet or Postgres, COPY reads, and the exact parquet mirror."""

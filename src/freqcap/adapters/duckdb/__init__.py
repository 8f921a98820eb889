"""DuckDB, the embedded engine: aggregation and point-in-time logic as SQL over Parquet (Spark fits beside it)."""

"""Airflow glue shared by the DAG files: assets and callbacks (importable, as Airflow 3 requires)."""

"""Airflow: the assets that connect the DAGs, a run's as-of time, and a real local Airflow (in-process
`dag.test()` runs, or api-server + scheduler + dag-processor) for the demo and the tests."""

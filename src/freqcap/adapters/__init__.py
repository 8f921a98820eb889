"""Adapters: everything that talks to an engine, a store, a service or a file format.

    airflow/   assets, run context, the local Airflow used by the demo and tests
    duckdb/    the embedded engine: feature aggregation, training sets, curve inputs, monitoring rows
    feast/     the feature store: runtime repo, snapshots, online format, bulk writes, readers, stream push
    gx/        Great Expectations gates and the Data Docs site
    mlflow/    tracking, the registry and the champion model
    stream/    the streaming transport (Redis Streams), worker state and status, the producer
    reports/   plots and report files
    evidently, decision_log, events_files, simulation_files, serving_client: one external format or service each

Adapters may use the domain (`freqcap.domain`) and the kernel (config, layout, resources), never jobs or entry
points.
"""

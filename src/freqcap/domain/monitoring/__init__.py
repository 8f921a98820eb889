"""Monitoring: what serving decided and how the world moved, every hour, with alarms that fire once per incident.

Pure computations (no I/O beyond what their docstrings say):

    metrics     cap hit rates per cohort / format / level / hour, their move against a baseline window,
                fail-open and degraded rates with reasons, "degraded since" — all from the decision log
    frequency   realized vs configured frequency: share of impressions beyond the policy's cap, the tail of
                per-(user, entity) frequency relative to the cap (events + the live policy)
    alarms      alarm rules over the metric table and the incident state machine (fire, stay quiet, resolve)
    page        the on-call page: one self-contained HTML file

    rules       alerts.yaml / dashboard.yaml loaded into frozen models (the packaged ones by default)

Elsewhere: the decision log's reader (`freqcap.adapters.decision_log`), current-window rows and the training
reference (`freqcap.adapters.duckdb.current_rows`), realized counts from events (`adapters.duckdb.impressions`),
drift reports and the workspace (`freqcap.adapters.evidently`), the champion model (`adapters.mlflow.champion`),
the stream's status (`adapters.stream.monitoring`), the incident store (`adapters.incident_store`), and the DAG's
task functions and `freqcap monitor` (`freqcap.jobs.monitoring`).

Every number lands in one long table of `{name, segment, value, support}` rows (`metrics.MetricRow`): alarm rules
select rows from it, the Evidently snapshot records each row as a `FreqcapValue` metric, the page reads it.
"""

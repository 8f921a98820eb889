"""Airflow Assets that connect freqcap's DAGs (producer -> consumer scheduling)."""

from airflow.sdk import Asset

# Updated when fresh batch features are in Feast's online store; the training DAG schedules on it.
ONLINE_FEATURES = Asset(name="freqcap_online_features", uri="freqcap://features/online")

# Updated when training proposes a new policy (logged on the model's MLflow run); the publish step consumes it.
PROPOSED_POLICY = Asset(name="freqcap_proposed_policy", uri="freqcap://policy/proposed")

# Updated when the monitoring DAG opens a drift incident (a rule with `retrain: true` in resources/monitoring/alerts.yaml);
# the training DAG schedules on it too, so drift triggers retraining once per incident.
DRIFT_ALARM = Asset(name="freqcap_drift_alarm", uri="freqcap://monitoring/drift-alarm")

"""Airflow Assets that connect freqcap's DAGs (producer -> consumer scheduling)."""

from airflow.sdk import Asset

# Updated when fresh batch features are in Feast's online store; the training DAG schedules on it.
ONLINE_FEATURES = Asset(name="freqcap_online_features", uri="freqcap://features/online")

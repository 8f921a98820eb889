"""Job functions: one per DAG task, runnable and tested without Airflow. Inputs/outputs are plain JSON values."""

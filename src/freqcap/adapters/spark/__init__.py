"""Spark: the feature tables and the point-in-time training join on PySpark (`features.engine: spark`).

Needs the `spark` extra and Java 17. Nothing here imports pyspark at import time: the session starts inside
`runtime.spark_session`, and the modules import pyspark inside their functions.
"""

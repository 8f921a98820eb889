"""The streaming path: rolling 1 h / 24 h counters from a live event stream, deduplicated, pushed to Feast.

Layers (pure core, adapters at the edges):
* `buckets` — time buckets and window sums (pure).
* `messages` — stream message -> event, or a dead-letter reason (pure).
* `seam` — how serving combines batch and stream counts without a gap or a double count (pure).
* `transport` — where events come from (Redis Streams consumer group, an event directory); Kafka fits the same
  interface.
* `state` — the worker's idempotent state (Redis: dedup marks + bucket counters + dirty set; or in memory).
* `push` — changed pairs -> Feast stream feature views (Feast's own serialization, or `FeatureStore.push`).
* `worker` — the loop: read, validate, apply, ack, push, report status and metrics.
* `status` — the worker's watermark, lag and coverage, as serving and monitoring read them.
* `produce` — replay simulator events into the stream at a given rate.
"""

"""The streaming path's adapters: where events come from, the worker's state, its status, the producer.

* `transport` — where events come from (Redis Streams consumer group, an event directory); Kafka fits the same
  interface.
* `state` — the worker's idempotent state (Redis: dedup marks + bucket counters + dirty set; or in memory).
* `status` — the worker's watermark, lag and coverage, as serving and monitoring read them (`monitoring`: the
  same, for a monitoring run that may have no stream).
* `resp` — pre-packed Redis pipelines.
* `produce` — replay simulator events into the stream at a given rate.

The pure rules (buckets, message parsing, the batch/stream seam) are in `freqcap.domain.stream`; the push of
changed pairs to Feast's stream views is `freqcap.adapters.feast.stream_push`; the worker loop and its wiring are
`freqcap.jobs.stream_worker` and `freqcap.jobs.stream`.
"""

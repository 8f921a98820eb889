"""Typed, frozen configuration for every freqcap job, loaded from YAML and environment.

Resolution order (later wins): the packaged defaults (`freqcap/defaults.yaml`), the YAML file named by
`FREQCAP_CONFIG` (or passed explicitly), then `FREQCAP__SECTION__KEY=value` environment variables.
Nothing here touches the filesystem at import time.
"""

from __future__ import annotations

import math
import os
import re
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

# The advertiser -> campaign -> ad hierarchy, broadest first (the event contract's LEVELS; a test keeps them equal).
Level = Literal["advertiser", "campaign", "ad"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def parse_duration(text: str | int | float) -> timedelta:
    """Parse `90s`, `15m`, `1h`, `24h`, `7d`, `4w` (or a number of seconds) into a timedelta."""
    if isinstance(text, int | float):
        return timedelta(seconds=float(text))
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    value, unit = text.strip()[:-1], text.strip()[-1:]
    if unit not in units:
        raise ValueError(f"duration {text!r} must end in one of {sorted(units)}")
    seconds = float(value) * units[unit]
    if not math.isfinite(seconds):
        raise ValueError(f"duration {text!r} is not a finite number")
    try:
        return timedelta(seconds=seconds)
    except OverflowError as exc:
        raise ValueError(f"duration {text!r} is out of range") from exc


class TierConfig(_Frozen):
    """One aggregation tier: the entity paired with the user, its windows and its decay half-life."""

    level: Level
    windows: tuple[str, ...] = ("1h", "24h", "7d", "28d")
    half_life: str = Field(description="half-life of the decayed impression count, e.g. 7d")

    @field_validator("windows")
    @classmethod
    def _windows_valid(cls, windows: tuple[str, ...]) -> tuple[str, ...]:
        if not windows:
            raise ValueError("at least one window is required")
        seconds = [parse_duration(w).total_seconds() for w in windows]
        if any(s <= 0 for s in seconds):
            raise ValueError("windows must be positive")
        if seconds != sorted(seconds) or len(set(seconds)) != len(seconds):
            raise ValueError("windows must be distinct and listed shortest first")
        return windows

    @field_validator("half_life")
    @classmethod
    def _half_life_valid(cls, half_life: str) -> str:
        if parse_duration(half_life).total_seconds() <= 0:
            raise ValueError("half_life must be positive")
        return half_life

    @property
    def window_seconds(self) -> dict[str, int]:
        return {w: int(parse_duration(w).total_seconds()) for w in self.windows}

    @property
    def longest_window(self) -> str:
        return self.windows[-1]

    @property
    def half_life_seconds(self) -> float:
        return parse_duration(self.half_life).total_seconds()


class SparkConfig(_Frozen):
    """The Spark session of `features.engine: spark` (feature tables and the point-in-time training join).

    `master` is `local[N]` on one machine or a cluster URL (`spark://host:7077`, `yarn`, `k8s://...`). The driver
    needs `driver_memory` of 2g for 10 M events (measured: 1g with 8 shuffle partitions lost task results)."""

    master: str = "local[2]"
    driver_memory: str = "2g"
    # Partitions after a shuffle (GROUP BY, join). Spark's 200 is for clusters: on local[2] each costs a task.
    shuffle_partitions: int = Field(8, gt=0)
    app_name: str = "freqcap"
    # Scratch space for shuffle files and spills; None: Spark's default (/tmp).
    local_dir: Path | None = None
    # Any further Spark settings (`spark.executor.memory`, `spark.executor.instances`, ...), applied last.
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("driver_memory")
    @classmethod
    def _memory_valid(cls, value: str) -> str:
        if not re.fullmatch(r"\d+[kmgt]?", value.strip().lower()):
            raise ValueError(f"driver_memory {value!r} must be a JVM size such as 2g or 2048m")
        return value.strip().lower()


class FeaturesConfig(_Frozen):
    """Batch aggregation settings: the three tiers and the user-level signal tiers, and the engine that computes
    them (DuckDB in process, or Spark on `spark.master`)."""

    tiers: tuple[TierConfig, ...]
    # Signal tier lookback: a user with a click (conversion) in this span is `engaged` (`converter`).
    signal_lookback: str = "28d"
    memory_limit: str = "4GB"
    threads: int = 2
    # Both engines write the same tables (tests hold them equal); Spark needs the `spark` extra and Java 17.
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark: SparkConfig = SparkConfig()
    # The IANA time zone of the calendar windows (this day, week, month) the tier tables count beside the rolling
    # ones; a policy's calendar caps must use the same zone (`time_zone`).
    calendar_time_zone: str = "UTC"

    @field_validator("calendar_time_zone")
    @classmethod
    def _zone_known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _one_tier_per_level(self) -> FeaturesConfig:
        levels = [t.level for t in self.tiers]
        if sorted(levels) != sorted(get_args(Level)):
            raise ValueError(f"tiers must define each level exactly once: {list(get_args(Level))}, got {levels}")
        halves = {t.level: t.half_life_seconds for t in self.tiers}
        if not halves["advertiser"] >= halves["campaign"] >= halves["ad"]:
            raise ValueError("half_life must be longest for advertiser and shortest for ad")
        return self

    def tier(self, level: str) -> TierConfig:
        return next(t for t in self.tiers if t.level == level)


class ValidationConfig(_Frozen):
    """Validation gates: how much bad data the event gate tolerates, and the knobs of the later hand-off gates."""

    max_bad_share: float = Field(0.05, ge=0.0, le=1.0)
    # Events stamped later than `as_of + future_tolerance` are invalid (clock skew allowance).
    future_tolerance: str = "5m"
    allowed_formats: tuple[str, ...] = ("feed", "stories", "reels", "search", "video")
    # The newest event must be at most this much older than as_of (`events_fresh`): a stalled feed stops the run.
    max_event_staleness: str = "1d"
    # A feature table's rows may change by at most this factor either way vs the previous published run.
    max_row_count_ratio: float = Field(2.0, ge=1.0)
    # Publish every gate run to the local Data Docs site under <data_dir>/gx (`make data-docs` opens it).
    data_docs: bool = True
    # A directory with your own expectation suites (events.json, features.json, decision_log.json); None: the
    # suites shipped in the package (`freqcap.resources`).
    suites_dir: str | None = None

    @field_validator("max_event_staleness")
    @classmethod
    def _staleness_valid(cls, value: str) -> str:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError("max_event_staleness must be positive")
        return value


class OnlineStoreConfig(_Frozen):
    """Which Feast online store to use; selected by configuration, never by editing feature_store.yaml.

    `redis`: one Redis server, `redis_connection_string` "host:port" (Feast options may follow: ",password=...").
    `redis_cluster`: a Redis Cluster (Feast's `redis_type: redis_cluster`), `redis_connection_string` lists start-up
    nodes "h1:p1,h2:p2,h3:p3" (any reachable master gives the whole slot map: list several).
    """

    kind: Literal["sqlite", "redis", "redis_cluster"] = "sqlite"
    redis_connection_string: str = "127.0.0.1:6379"
    online_write_batch_size: int = Field(50_000, gt=0)

    @field_validator("redis_connection_string")
    @classmethod
    def _connection_string_valid(cls, value: str, info: Any) -> str:
        kind = info.data.get("kind")
        if kind not in ("redis", "redis_cluster"):
            return value
        nodes = [n.strip() for n in value.split(",") if n.strip() and "=" not in n]
        if "://" in value:
            raise ValueError(f"{value!r}: use Feast's form host:port[,host:port...][,option=value...], not a URL")
        if not nodes:
            raise ValueError(f"{value!r} names no host:port")
        for node in nodes:
            host, sep, port = node.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{node!r} in {value!r} is not host:port (port 1-65535)")
        if kind == "redis" and len(nodes) > 1:
            raise ValueError(
                f"{value!r} lists {len(nodes)} nodes but kind is redis (one server): set kind: redis_cluster"
            )
        return value

    @property
    def is_redis(self) -> bool:
        """A Redis online store, single node or cluster (same key layout: Feast's `RedisOnlineStore`)."""
        return self.kind in ("redis", "redis_cluster")


class FeastConfig(_Frozen):
    project: str = "freqcap"
    # "file" (registry.db in the runtime repo) or a SQLAlchemy URL for a shared SQL registry (PostgreSQL).
    registry: str = "file"
    online: OnlineStoreConfig = OnlineStoreConfig()
    # Point-in-time lookups accept a snapshot at most this old (snapshots are written every features run).
    snapshot_ttl: str = "2d"
    # Online keys (one Redis hash per entity key) expire this long after their last write; SQLite entities quiet
    # for longer are deleted. None (the default): the longest window the online store serves plus
    # `retention.online_key_margin` (`Settings.online_key_ttl`). An explicit value is used as is (tests set seconds).
    online_key_ttl: str | None = None
    # How snapshots reach the online store: `bulk` (freqcap.adapters.feast.bulk: Feast's serialization, changed rows only)
    # or `feast` (FeatureStore.materialize).
    materialization: Literal["bulk", "feast"] = "bulk"
    # Which features the bulk writer stores online: `all` (every feature of every view: Feast's feature server and
    # get_online_features see everything) or `serving` (only what `decide` reads: ~23 % less Redis memory on the
    # default world, benchmarks/results/memory.md; the other features read back as None online).
    online_features: Literal["all", "serving"] = "all"


class SimulationConfig(_Frozen):
    """Size of the simulated world; the behavioural parameters live in the simulator's own model."""

    users: int = Field(20_000, gt=0)
    days: int = Field(14, gt=0)
    seed: int = 7
    start: str = "2026-10-01T00:00:00+00:00"


class DemoConfig(_Frozen):
    """Size of the demo's world: small, because Feast's standard SQLite materialization writes ~2-5 k rows/s."""

    users: int = Field(2_500, gt=0)
    days: int = Field(14, gt=0)
    seed: int = 7


class OrchestrationConfig(_Frozen):
    """How the Airflow DAGs retry and when they run."""

    retries: int = Field(2, ge=0)
    retry_delay: str = "2m"
    features_schedule: str | None = "@daily"

    @property
    def retry_delay_td(self) -> timedelta:
        return parse_duration(self.retry_delay)


class TrainingSettings(_Frozen):
    """Which model config the training DAG uses (None: the packaged models/conversion.yaml, `freqcap.resources`)."""

    model_config_path: str | None = None
    # Default relative floor R of the proposed caps (a DAG param can override it per run).
    floor: float = Field(0.5, gt=0.0, le=1.0)
    # Curve fits count an impression once its observed window covers this share of the learned conversion delay
    # mass (freqcap.domain.curves.maturity); 1.0: only impressions older than the whole attribution window.
    maturity_share: float = Field(0.99, gt=0.0, le=1.0)
    # Shape of the proposed policy's soft penalty: `curve` writes each cohort's fitted curve as the cap's multiplier
    # table (freqcap.domain.curves.shape); `generic` leaves it to policy.penalty (onset, at_cap, floor).
    penalty_shape: Literal["generic", "curve"] = "curve"


class TrackingConfig(_Frozen):
    """Where MLflow keeps runs, models and artifacts. Empty URIs mean the embedded defaults under the data dir
    (`sqlite:////<data_dir>/mlflow/mlflow.db`, `file:///<data_dir>/mlflow/artifacts`); production names an MLflow
    server (`http://...`) or a PostgreSQL URL, and an object-store artifact root."""

    # MLflow tracking URI; None: SQLite at <data_dir>/mlflow/mlflow.db.
    tracking_uri: str | None = None
    # Model registry URI; None: the tracking URI.
    registry_uri: str | None = None
    # Artifact root for experiments this code creates; None: <data_dir>/mlflow/artifacts (or the server's default
    # when the tracking URI is a server).
    artifact_location: str | None = None


# An admin token shorter than this is refused at start: a guessable token opens the policy admin endpoint.
MIN_ADMIN_TOKEN_CHARS = 24


def _positive_duration(value: str) -> str:
    """A duration setting's validator body: refused (without echoing the value) unless positive."""
    if parse_duration(value).total_seconds() <= 0:
        raise ValueError("must be a positive duration")
    return value


def admin_token_problem(token: str) -> str | None:
    """What is wrong with an admin token, in words that do not repeat it (None: fine; empty counts as unset)."""
    if token and len(token) < MIN_ADMIN_TOKEN_CHARS:
        return f"is too short: {len(token)} characters, at least {MIN_ADMIN_TOKEN_CHARS} are required"
    if token != token.strip():
        return "has leading or trailing whitespace"
    return None


class ServingConfig(_Frozen):
    """The decision API: bind address, lookup time budget and the admin token (from the environment only)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    budget_ms: float = Field(10.0, gt=0)
    lookup_workers: int = Field(8, gt=0)
    # Admission (the overload contract): a request whose lookup cannot start within `admission_ms` of its arrival
    # in the process (waiting for the event loop, then for a free lookup slot) is answered at once, fail-open with
    # reason `overload`; nothing queues beyond that. Lookup slots: the `lookup_workers` threads (thread-pool
    # readers), or `max_in_flight` concurrent lookups on the event loop. Also shed at once: every request while the
    # event loop runs more than `admission_ms` late, sustained (the CPU is saturated).
    admission_ms: float = Field(5.0, gt=0)
    max_in_flight: int = Field(32, gt=0)
    # `fast`: read Feast's online store directly (Redis / SQLite), same values as `feast` (get_online_features).
    reader: Literal["fast", "feast"] = "fast"
    policy_path: str | None = None
    # Bearer token of the policy admin endpoint, a secret: set it from the environment
    # (FREQCAP__SERVING__ADMIN_TOKEN), never in a committed file; at least MIN_ADMIN_TOKEN_CHARS characters.
    # Empty: serving refuses to start unless --dev. `admin_token_next` is accepted as well, during a rotation
    # (docs: operations/security.md): serving takes both, publishers move to the new one, then it becomes
    # `admin_token` and `admin_token_next` is emptied.
    admin_token: SecretStr = SecretStr("")
    admin_token_next: SecretStr = SecretStr("")
    # Share of decision requests written to the decision log (0 turns it off); default directory data_dir/decision_log.
    decision_log_sample_rate: float = Field(0.1, ge=0.0, le=1.0)
    decision_log_dir: str | None = None
    decision_log_flush_seconds: float = Field(1.0, gt=0)
    # Where the live policy is kept so that a restart and every replica serve the last pushed one
    # (freqcap.adapters.policy_store): `none` (memory only: a push reaches one process and is lost on restart),
    # `file` (<data_dir>/serving/live_policy.json: replicas on one host) or `redis` (a hash: production).
    policy_store: Literal["none", "file", "redis"] = "none"
    # Redis of the `redis` store (`host:port` or a redis:// URL); None: feast.online.redis_connection_string.
    policy_redis_url: str | None = None
    policy_redis_key: str = "freqcap:serving:policy"
    # Every replica checks the store this often (seconds): a push reaches all replicas within about this long.
    policy_refresh: float = Field(1.0, gt=0)

    @field_validator("admin_token", "admin_token_next")
    @classmethod
    def _token_long_enough(cls, token: SecretStr, info: ValidationInfo) -> SecretStr:
        # The message names the setting, never the value (Settings hides inputs in its errors).
        if problem := admin_token_problem(token.get_secret_value()):
            raise ValueError(f"serving.{info.field_name} {problem}")
        return token

    @property
    def admin_tokens(self) -> tuple[str, ...]:
        """The admin tokens serving accepts (none: the admin endpoint needs --dev)."""
        return tuple(t.get_secret_value() for t in (self.admin_token, self.admin_token_next) if t.get_secret_value())


class StreamConfig(_Frozen):
    """The streaming path (freqcap.adapters.stream): Redis Streams consumer, rolling counters, Feast push, serving seam."""

    # Serving combines batch and stream features only when enabled (the stream views must be applied).
    enabled: bool = False
    # The stream's Redis: `host:port` (or a redis:// URL) of one server; with `redis_kind: redis_cluster`, start-up
    # nodes of a Redis Cluster (`h1:p1,h2:p2`). On a cluster each partition's keys share a hash tag, so a partition
    # lives on one master and its flush stays one atomic script there.
    redis_url: str = "127.0.0.1:6379"
    redis_kind: Literal["redis", "redis_cluster"] = "redis"
    stream_key: str = "freqcap:events"
    group: str = "freqcap-stream"
    dead_letter_key: str = "freqcap:events:dead"
    # Prefix of the worker's own Redis keys (state per pair, dedup marks, dirty set, status).
    state_prefix: str = "freqcap:stream"
    # Counts are kept per time bucket; a bucket is labelled by its end, events in (end - bucket, end].
    bucket: str = "1m"
    # Buckets older than the watermark minus retention are dropped: the longest window the stream serves alone
    # (24h) plus room for a late batch run.
    retention: str = "26h"
    windows: tuple[str, ...] = ("1h", "24h")
    # Events older than the watermark minus this are late: dead-lettered with reason `late`, never counted.
    allowed_lateness: str = "10m"
    dedup_ttl: str = "27h"
    # Serving uses the stream only while the worker was last caught up at most this long ago (wall clock).
    max_lag: str = "30s"
    # Events are partitioned by user into this many streams (`<stream_key>:{p<k>}`; 1: `stream_key` itself), each
    # with its own state, consumed by one worker at a time (freqcap.domain.stream.partitions). Fixed for the life
    # of the state: changing it re-routes users, so drain and start from a fresh `state_prefix`.
    partitions: int = Field(1, ge=1, le=1024)
    batch_size: int = Field(5_000, gt=0)
    block_ms: int = Field(200, ge=0)
    # A micro-batch (one atomic state write, one push, one acknowledgement) is flushed when it holds this many
    # messages, when the stream is drained, or `push_interval` after its first read, whichever comes first.
    flush_events: int = Field(20_000, gt=0)
    # A micro-batch is written as atomic units of at most this many messages: each unit's script holds the
    # partition's Redis for a few milliseconds at most (serving may read the same Redis).
    commit_events: int = Field(1_000, gt=0)
    # Changed pairs are pushed to the online store at least this often.
    push_interval: str = "0.5s"
    # direct: Feast's Redis layout built in Python, written pipelined; feast: FeatureStore.push (any online store).
    # atomic: the online rows written by the flush's own script, with the marks and `last_id` (the online store
    # must be the stream's one Redis server); the rows are then the pairs' state (no state keys, no second write).
    # lua: accepted for older settings files, the same as direct (the state is no longer a Redis hash to encode).
    push_mode: Literal["lua", "direct", "atomic", "feast"] = "direct"
    # direct to a Redis online store: a micro-batch's push is written by a thread while the next micro-batch is
    # decided (awaited before that one's first commit, and whenever the stream is drained). Off: each push is
    # awaited where it is sent (the baseline `benchmarks/bench_stream.py` compares it with).
    overlap_push: bool = True
    # A worker owns a partition while it renews this lease; a dead worker's partitions are taken over after it
    # expires (all of its pending entries claimed before anything new is read).
    lease_ttl: str = "10s"
    # Pair states kept in the worker's memory (read from Redis on a miss; oldest not in use first out, down to 5 %
    # below this in one pass).
    cache_pairs: int = Field(200_000, gt=0)
    # Unused since partitions are owned by lease (takeover claims every pending entry at once); kept so older
    # settings files still load.
    claim_idle: str = "30s"
    # How often serving re-reads the stream's status and the batch cut-off.
    status_refresh: str = "0.5s"

    @field_validator("bucket", "retention", "allowed_lateness", "dedup_ttl", "max_lag", "claim_idle", "lease_ttl")
    @classmethod
    def _positive(cls, value: str) -> str:
        return _positive_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> StreamConfig:
        bucket = parse_duration(self.bucket).total_seconds()
        retention = parse_duration(self.retention).total_seconds()
        if bucket != int(bucket) or 86400 % int(bucket):
            raise ValueError("bucket must be a whole number of seconds dividing a day (e.g. 1s, 10s, 1m, 5m, 1h)")
        for w in self.windows:
            seconds = parse_duration(w).total_seconds()
            if seconds % bucket:
                raise ValueError(f"window {w} is not a multiple of the bucket {self.bucket}")
            if seconds > retention:
                raise ValueError(f"window {w} is longer than retention {self.retention}")
        if parse_duration(self.allowed_lateness).total_seconds() >= retention:
            raise ValueError("allowed_lateness must be shorter than retention")
        if parse_duration(self.dedup_ttl).total_seconds() < retention:
            raise ValueError("dedup_ttl must be at least retention (a redelivered event must still be recognised)")
        if self.redis_kind == "redis_cluster" and self.partitions < 2:
            # One partition's stream is the untagged `stream_key` (older producers write it): on a cluster its keys
            # would fall into different slots, and a partition's flush must stay on one master.
            raise ValueError("partitions must be at least 2 with redis_kind redis_cluster (keys then carry a hash tag)")
        return self

    def seconds(self, name: str) -> float:
        """A duration setting in seconds (`cfg.seconds("bucket")`)."""
        return parse_duration(getattr(self, name)).total_seconds()


class GuardrailsConfig(_Frozen):
    """Bounds a proposed policy must respect before it is published (freqcap.domain.policy.guardrails)."""

    min_cap: int = Field(1, ge=1)
    max_cap: int = Field(200, ge=1)
    # Any cap present in both the live and the proposed policy may change by at most this factor either way.
    max_cap_ratio: float = Field(4.0, ge=1.0)
    # The projected share of active (user, entity) pairs at or over their cap may move at most this much per level.
    max_hit_rate_change: float = Field(0.15, ge=0.0, le=1.0)
    # A candidate that drops a rule, a cap, a min_gap or a stop of the live policy fails `change_vs_live` unless this
    # is true (the removal and its projected effect are reported either way).
    allow_removals: bool = False


class ForecastSettings(_Frozen):
    """The what-if forecast of a candidate policy against the live one before publishing (freqcap.domain.forecast)."""

    enabled: bool = True
    # Recent traffic the policies are replayed on (the period ending at the newest event); the impressions of the
    # longest cap window before it are read as history (counts already reached).
    period: str = "7d"
    attribution_window: str = "7d"
    bootstrap: int = Field(200, ge=20)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    # Guardrail: relative drop of projected conversions / reach (everyone, any level) vs the live policy.
    max_conversion_drop: float = Field(0.05, ge=0.0, le=1.0)
    max_reach_drop: float = Field(0.10, ge=0.0, le=1.0)


class PublishConfig(_Frozen):
    """Where the publish DAG pushes policies, and its guardrails. The admin token is `serving.admin_token`."""

    serving_url: str = "http://127.0.0.1:8000"
    timeout_seconds: float = Field(5.0, gt=0)
    # After a push, how long to wait for serving to report the new version.
    verify_seconds: float = Field(10.0, gt=0)
    # Verified = this many answers in a row report the new version, `verify_interval` seconds apart: with several
    # workers or replicas behind one address a single answer may come from one that has not synced yet.
    verify_consecutive: int = Field(5, ge=1)
    verify_interval: float = Field(0.25, gt=0)
    guardrails: GuardrailsConfig = GuardrailsConfig()
    forecast: ForecastSettings = ForecastSettings()


class DriftSettings(_Frozen):
    """Feature and prediction drift of the current window against the training reference (Evidently)."""

    # Training-set columns compared; the exact exposure and context columns are computed from events alone.
    columns: tuple[str, ...] = ("format", "audience", "hour_of_day", "n_advertiser", "n_campaign", "n_ad")
    # Fixed stat tests (Evidently would otherwise switch tests with the sample size, breaking the time series).
    cat_method: str = "jensenshannon"
    cat_threshold: float = Field(0.1, gt=0.0)
    # Exposure counts are heavy-tailed and follow the weekly traffic cycle: a day-to-day wobble of ~0.15 (normed
    # Wasserstein) is normal there, hence a looser threshold than for the categorical columns.
    num_method: str = "wasserstein"
    num_threshold: float = Field(0.2, gt=0.0)
    # The champion's predicted conversion probability (num_method).
    prediction_threshold: float = Field(0.1, gt=0.0)
    # Rows compared per side at most: a uniform sample with a fixed seed, so a rerun gives the same numbers.
    max_rows: int = Field(50_000, gt=0)
    seed: int = 7
    # Fewer current rows than this: drift is not computed (and said so).
    min_rows: int = Field(200, gt=0)
    # Score both sides with the champion model (prediction drift) when the rows carry its inputs.
    prediction: bool = True


class WebhookReceiver(_Frozen):
    """One place alarms are delivered to (`freqcap.jobs.monitoring.paging`).

    `url` may carry a token (Slack incoming webhooks do): it is a secret, never logged or written; deliveries are
    recorded under the receiver's `name`. Set it from the environment, e.g.
    `FREQCAP__MONITORING__PAGING__RECEIVERS='[{"name": "oncall", "url": "https://..."}]'`."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    url: SecretStr
    # `alertmanager`: the Alertmanager webhook payload (version "4"), which PagerDuty, Opsgenie and Grafana OnCall
    # accept; `slack`: {"text": ...} (Slack, Mattermost, Teams workflows, any plain JSON receiver).
    format: Literal["alertmanager", "slack"] = "alertmanager"
    # Alarms of at least this severity are delivered (`page` only pages; `warn` also sends warnings).
    min_severity: Literal["page", "warn"] = "warn"

    @field_validator("url")
    @classmethod
    def _http(cls, url: SecretStr) -> SecretStr:
        if not re.match(r"^https?://[^/\s]+", url.get_secret_value()):
            raise ValueError("must be an http:// or https:// URL")  # the value itself is never echoed
        return url


class PagingConfig(_Frozen):
    """Alarm delivery to webhooks: firing, repeats of what keeps firing, resolves, retries."""

    receivers: tuple[WebhookReceiver, ...] = ()
    # An alarm that keeps firing is sent again only after this long (Alertmanager's repeat_interval).
    repeat_interval: str = "4h"
    # Send a message when an alarm clears.
    send_resolved: bool = True
    # Attempts per message within one run, waiting backoff_seconds · 2^k between them (at most backoff_max_seconds).
    # A message still undelivered stays pending and is tried again by the next run: an alarm is never dropped.
    attempts: int = Field(3, ge=1)
    backoff_seconds: float = Field(0.5, ge=0.0)
    backoff_max_seconds: float = Field(8.0, ge=0.0)
    timeout_seconds: float = Field(5.0, gt=0.0)
    # Link in each message (Alertmanager `externalURL`, the Slack text): where the on-call page is served.
    page_url: str | None = None

    @field_validator("repeat_interval")
    @classmethod
    def _positive(cls, value: str) -> str:
        return _positive_duration(value)

    @model_validator(mode="after")
    def _unique_names(self) -> PagingConfig:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError(f"receiver names must be unique: {sorted(names)}")
        return self


class FairnessSettings(_Frozen):
    """The fairness audit (freqcap.domain.monitoring.fairness): each cohort's cap against its own fitted curve.
    The alarm thresholds are the `cohort_suppressed` / `cohort_overcapped` rules of the alerts file."""

    enabled: bool = True
    # caps.parquet of a curves fit; None: the newest under <data_dir>/curves (what training wrote).
    curves_path: str | None = None


class FragmentationSettings(_Frozen):
    """The signal-fragmentation diagnostic (freqcap.domain.monitoring.fragmentation), per campaign."""

    enabled: bool = True
    # Conversions and impressions per creative are counted over this last span, scaled to a week.
    window: str = "7d"
    # Conversions per creative and week a creative needs to learn (the platforms' learning phase is ~50/week;
    # scale it with your traffic: a simulated world of a few thousand users needs ~20).
    learning_conversions_per_week: float = Field(50.0, gt=0.0)
    # A campaign is told to consolidate when at least this share of its creatives is below the threshold.
    min_share_below: float = Field(0.5, gt=0.0, le=1.0)
    # Campaigns listed on the on-call page (those to consolidate first).
    max_campaigns_shown: int = Field(15, ge=1)

    @field_validator("window")
    @classmethod
    def _positive(cls, value: str) -> str:
        return _positive_duration(value)


class MonitoringConfig(_Frozen):
    """The hourly monitoring job (freqcap.domain.monitoring): windows, where its inputs and outputs live, drift settings."""

    schedule: str | None = "@hourly"
    # Cap hit and fail-open rates cover the decisions in (as_of - window, as_of]; cap hit rate moves are measured
    # against the `baseline_window` just before it; drift compares the impressions of the last `drift_window`.
    window: str = "1h"
    baseline_window: str = "24h"
    drift_window: str = "24h"
    # "Degraded since" is found at this resolution in the decision log.
    since_bucket: str = "5m"
    # None: the packaged monitoring/alerts.yaml and monitoring/dashboard.yaml (`freqcap.resources`).
    alerts_path: str | None = None
    dashboard_path: str | None = None
    # None: the training set of the champion model if MLflow knows one, else the newest under <data_dir>/training.
    reference_path: str | None = None
    # None: the policy last published (<data_dir>/publish/published.jsonl), else serving.policy_path.
    policy_path: str | None = None
    # None: <data_dir>/monitoring/workspace (what `make ui` serves).
    workspace_dir: str | None = None
    project: str = "freqcap"
    drift: DriftSettings = DriftSettings()
    paging: PagingConfig = PagingConfig()
    fairness: FairnessSettings = FairnessSettings()
    fragmentation: FragmentationSettings = FragmentationSettings()

    @field_validator("window", "baseline_window", "drift_window", "since_bucket")
    @classmethod
    def _positive_duration(cls, value: str) -> str:
        return _positive_duration(value)

    def seconds(self, name: str) -> float:
        """A duration setting in seconds (`cfg.seconds("window")`)."""
        return parse_duration(getattr(self, name)).total_seconds()


class PrivacyConfig(_Frozen):
    """Pseudonymous user ids (freqcap.domain.privacy): the HMAC keys used at the ingestion edge.

    Keys are secrets: set them from the environment (`FREQCAP__PRIVACY__KEYS__K1=<at least 32 characters>`), never
    in a committed file. With no key configured, a random one is generated once into `key_file` (mode 0600) so the
    embedded defaults work; production sets its own. Rotation: add a key, make it `active_key`, keep the retired one
    until the longest retention horizon has passed (docs: privacy page).
    """

    # Off only for tests of the raw pipeline; the ingestion edge pseudonymizes whenever this is on.
    enabled: bool = True
    active_key: str = "k1"
    keys: dict[str, SecretStr] = Field(default_factory=dict)
    # None: <data_dir>/secrets/pseudonym_keys.yaml (generated when no key is configured).
    key_file: str | None = None


class RetentionConfig(_Frozen):
    """How long each store keeps what it holds (`freqcap retention`, the `freqcap_maintenance` DAG).

    A horizon is an age measured from the maintenance run's time: what is older goes. `Settings` checks each
    horizon against what the jobs downstream still read (e.g. raw events at least the longest feature window plus
    `lateness`) and rejects a shorter one with a message naming the field. docs/operations/retention.md says why
    each default is what it is."""

    # <data_dir>/raw/events: a Parquet file goes when its newest event_ts is older than this.
    raw_events: str = "90d"
    # Late arrivals and re-runs: raw events are kept at least this much longer than the longest feature window.
    lateness: str = "2d"
    # runs/<stamp>/validation/clean: the validated copy a features run aggregates (and a re-run re-reads).
    clean_events: str = "7d"
    # runs/<stamp>/validation/quarantine.parquet: the rows set aside, kept for the investigation of bad data.
    quarantine: str = "30d"
    # runs/<stamp>/ (feature tables and gate reports of a features run).
    feature_runs: str = "14d"
    # feast/offline/<table>/snapshot_<stamp>.parquet (point-in-time joins); the newest per table is always kept.
    snapshots: str = "60d"
    # training/<model>/<stamp>/ and curves/<stamp>/; the champion's training set is always kept.
    training_sets: str = "90d"
    # The decision log's date=YYYY-MM-DD partitions (sampled decisions, no user ids).
    decision_log: str = "30d"
    # Evidently workspace snapshots (one per monitoring run), by their report time.
    evidently_snapshots: str = "90d"
    # monitoring/runs/<stamp>/ (metrics, samples, drift and alarm files of each hourly run).
    monitoring_runs: str = "7d"
    # MLflow runs (and their artifacts) of the experiments freqcap creates; runs of aliased model versions are kept.
    mlflow_runs: str = "180d"
    # The stream's dead letters (Redis dead-letter streams and the replay transport's JSON lines).
    dead_letters: str = "14d"
    # Airflow's metadata DB (dag runs, task instances, logs, XComs), via `airflow db clean`.
    airflow_metadata: str = "30d"
    # Online keys live this much longer than the longest window they serve (`feast.online_key_ttl` unset).
    online_key_margin: str = "1d"

    @field_validator("*")
    @classmethod
    def _positive(cls, value: str, info: Any) -> str:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError(f"retention.{info.field_name} must be a positive duration")
        return value

    def horizon(self, name: str) -> timedelta:
        """A horizon as a timedelta (`cfg.horizon("raw_events")`)."""
        return parse_duration(getattr(self, name))


class StackConfig(_Frozen):
    """Where each component of the production-like stack (`freqcap stack up`, `make up`) lives on one machine.

    `freqcap stack` derives every other component's settings from this section (tracking URI, Feast registry and
    online store, serving URL, Airflow's connections), so one file says where everything is. Secrets are not here:
    they come from the environment (or are generated once into `<dir>/secrets.env`, mode 0600, never committed).
    """

    dir: Path = Path(".stack")  # pids, logs (one folder: <dir>/logs), secrets and the stack's data_dir
    # The PostgreSQL server (no database name): each component gets its own database `<database_prefix>_<name>`.
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    database_prefix: str = "freqcap"
    # Redis for the online store, the event stream and serving's live policy (host:port).
    redis: str = "127.0.0.1:6379"
    # Celery's broker: a Redis database of its own, or RabbitMQ (amqp://guest:guest@127.0.0.1:5672//).
    broker: str = "redis://127.0.0.1:6379/1"
    host: str = "127.0.0.1"  # every component binds here (loopback on a workstation)
    airflow_port: int = Field(8080, gt=0, lt=65536)
    mlflow_port: int = Field(5000, gt=0, lt=65536)
    evidently_port: int = Field(8001, gt=0, lt=65536)
    serving_port: int = Field(8000, gt=0, lt=65536)
    stream_metrics_port: int = Field(9108, gt=0, lt=65536)
    serving_workers: int = Field(2, gt=0)
    celery_concurrency: int = Field(2, gt=0)
    # Airflow components serve their task logs over HTTP (port 8793) only when they do not share one log folder.
    log_servers: bool = False
    startup_timeout: float = Field(240.0, gt=0)


class Settings(_Frozen):
    """Everything a freqcap job needs to know, validated once."""

    # Errors name the setting but never echo its value: some settings are secrets (admin tokens, pseudonym keys).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    data_dir: Path = Path("data")
    features: FeaturesConfig
    validation: ValidationConfig = ValidationConfig()
    feast: FeastConfig = FeastConfig()
    simulation: SimulationConfig = SimulationConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    demo: DemoConfig = DemoConfig()
    training: TrainingSettings = TrainingSettings()
    tracking: TrackingConfig = TrackingConfig()
    serving: ServingConfig = ServingConfig()
    publish: PublishConfig = PublishConfig()
    stream: StreamConfig = StreamConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    stack: StackConfig = StackConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    retention: RetentionConfig = RetentionConfig()

    @property
    def longest_online_window(self) -> timedelta:
        """The longest span a feature served online covers: the tiers' windows (decayed sums use the longest),
        the signal tiers' lookback and the stream's windows."""
        spans = [parse_duration(w) for t in self.features.tiers for w in t.windows]
        spans += [parse_duration(self.features.signal_lookback)]
        spans += [parse_duration(w) for w in self.stream.windows]
        return max(spans)

    @property
    def online_key_ttl(self) -> timedelta:
        """How long an online key lives after its last write: `feast.online_key_ttl` when set, else the longest
        window served plus `retention.online_key_margin` (a key outlives every window it holds counts for)."""
        if self.feast.online_key_ttl:
            return parse_duration(self.feast.online_key_ttl)
        return self.longest_online_window + self.retention.horizon("online_key_margin")

    @model_validator(mode="after")
    def _horizons_cover_their_readers(self) -> Settings:
        """Each retention horizon is at least what the jobs reading that store look back over."""
        r = self.retention
        longest = self.longest_online_window
        monitoring = timedelta(seconds=self.monitoring.seconds("window") + self.monitoring.seconds("baseline_window"))
        needs = {
            # Features and curves read the longest window of events before as_of; late events arrive after it.
            "raw_events": (longest + r.horizon("lateness"), "the longest feature window plus retention.lateness"),
            # Point-in-time joins look up snapshots over the longest window, each at most feast.snapshot_ttl old.
            "snapshots": (
                longest + parse_duration(self.feast.snapshot_ttl),
                "the longest feature window plus feast.snapshot_ttl",
            ),
            # Monitoring compares the last window with the baseline window before it.
            "decision_log": (monitoring, "monitoring.window plus monitoring.baseline_window"),
            "monitoring_runs": (timedelta(seconds=self.monitoring.seconds("window")), "monitoring.window"),
            # A redelivered or replayed event must still find its dead letter while the stream keeps state for it.
            "dead_letters": (timedelta(seconds=self.stream.seconds("retention")), "stream.retention"),
        }
        for name, (minimum, why) in needs.items():
            if r.horizon(name) < minimum:
                raise ValueError(
                    f"retention.{name} = {getattr(r, name)} is shorter than {why} ({_days(minimum)}), "
                    "which the jobs reading it need"
                )
        return self

    @model_validator(mode="after")
    def _atomic_push_shares_the_server(self) -> Settings:
        """`stream.push_mode: atomic` writes the online rows inside the stream's flush script: they must live on
        the stream's one Redis server, and outlive the stream's retention (they are the pairs' state)."""
        if self.stream.push_mode != "atomic":
            return self
        online = self.feast.online
        if self.stream.redis_kind != "redis" or online.kind != "redis":
            raise ValueError("stream.push_mode atomic needs stream.redis_kind redis and feast.online.kind redis")
        if _server(self.stream.redis_url) != _server(online.redis_connection_string):
            raise ValueError(
                "stream.push_mode atomic needs feast.online.redis_connection_string on the server of stream.redis_url"
            )
        if self.online_key_ttl < timedelta(seconds=self.stream.seconds("retention")):
            raise ValueError("stream.push_mode atomic needs the online key TTL to be at least stream.retention")
        return self


def _server(address: str) -> tuple[str, int]:
    """`redis://h:p/0`, `h:p,db=0,...` (Feast's connection string) -> (host, port); localhost is 127.0.0.1."""
    first = address.split(",", 1)[0].strip().removeprefix("redis://").split("/", 1)[0].rpartition("@")[2]
    host, _, port = first.rpartition(":") if ":" in first else (first, "", "6379")
    host = host or "127.0.0.1"
    return ("127.0.0.1" if host == "localhost" else host), int(port or 6379)


def _days(span: timedelta) -> str:
    """A span for an error message: whole days as `29d`, anything else in hours or seconds."""
    seconds = int(span.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds}s"


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """`FREQCAP__FEAST__ONLINE__KIND=redis` -> {"feast": {"online": {"kind": "redis"}}}."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith("FREQCAP__"):
            continue
        path = [p.lower() for p in name[len("FREQCAP__") :].split("__") if p]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(value)
    return out


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load settings: packaged defaults, then the YAML at `path` (or $FREQCAP_CONFIG), then env overrides."""
    environ = dict(os.environ if environ is None else environ)
    raw = yaml.safe_load(resources.files("freqcap").joinpath("defaults.yaml").read_text())
    path = path or environ.get("FREQCAP_CONFIG")
    if path:
        raw = _deep_merge(raw, yaml.safe_load(Path(path).read_text()) or {})
    raw = _deep_merge(raw, _env_overrides(environ))
    return Settings.model_validate(raw)

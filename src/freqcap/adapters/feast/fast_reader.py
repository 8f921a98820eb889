"""Fast online reads for `decide`: the Feast online store read directly, in one round trip, decoding only what the
policy needs.

Why: `FeastReader` goes through `get_online_features`, whose protobuf -> Python conversion and response building
cost several times the Redis round trip itself (profiled). These readers return exactly the `UserState` that
`FeastReader` returns for the same store (tests/integration/test_fast_reader.py), from the same bytes:

* `RedisFeatureReader`: one pipelined round trip of HMGETs, the user key plus each distinct (user, advertiser),
  (user, campaign) and (user, ad) key, asking only for the hash fields of the columns `FeastReader` reads. The
  commands go out as one pre-packed write on a pooled redis-py connection and the replies are read one by one
  (redis-py's `Pipeline` bookkeeping costs more than the round trip itself for ~100 keys).
  `RedisClusterFeatureReader` does the same on a Redis Cluster: one such round trip per master, all masters at once.
  The client has a socket timeout and no retries (Feast's has neither), so a lookup thread blocked on a frozen
  Redis is released after `socket_timeout`, not after the freeze ends.
* `SqliteFeatureReader`: one SELECT (a UNION ALL over the four view tables) with `IN` on the serialized entity
  keys and the feature names, on a per-thread read-only connection.

Keys, hash fields, table names and the decoding of values are Feast's online format as
`freqcap.adapters.feast.online_format` writes it down: the per-request key builders check themselves byte for byte
against Feast's serializer at construction (and fall back to it), the hash fields against those Feast's own
`online_read` asks for.

Staleness: Feast's standard online path does not enforce a view's `ttl` (the Redis store reads `_ts:<view>` only
to report an event timestamp; `OUTSIDE_MAX_AGE` exists only on the precomputed-vector path), and an expired Redis
hash (`key_ttl_seconds`) is simply absent. These readers do the same: a value is returned however old, a missing
value reads as None (counts 0). `make_reader` picks the fast reader for the configured store and falls back to
`FeastReader` for anything else (Redis Sentinel, GLIDE client, online feature-view versioning).
"""

from __future__ import annotations

import logging
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from feast.infra.online_stores.redis import RedisClient, RedisOnlineStore, RedisOnlineStoreConfig, RedisType
from feast.types import String
from redis.backoff import NoBackoff
from redis.retry import Retry

from freqcap.adapters.feast import online_format as fmt
from freqcap.adapters.feast.cluster_routing import ClusterTopology, cluster_topology_for, key_slot, round_trip_by_node
from freqcap.adapters.feast.reader import DEFAULT_SIGNAL_TIER, UNKNOWN_AUDIENCE, FeastReader, FeatureReader, UserState
from freqcap.adapters.feast.repo.feature_views import stream_view_name
from freqcap.adapters.feast.stream_seam import StreamSeamSource
from freqcap.config import FeaturesConfig, Settings
from freqcap.domain.calendar import PERIODS, calendar_key
from freqcap.domain.features import USER_TABLE, ServingColumns, serving_columns
from freqcap.domain.policy.engine import LEVELS, Candidate, EntityState
from freqcap.domain.stream.buckets import Buckets
from freqcap.domain.stream.seam import BatchRow, StreamRow

log = logging.getLogger(__name__)

# A socket timeout well above the decide budget (10 ms by default): it only frees a lookup thread stuck on a
# frozen server; the request itself already failed open at the budget.
DEFAULT_SOCKET_TIMEOUT = 0.1
# The connections of the fast reader as Redis' CLIENT LIST shows them.
CLIENT_NAME = "freqcap-fast-reader"


class ReaderUnavailable(RuntimeError):
    """The feature views the policy needs are not (yet) registered, or do not have the expected layout."""


# ------------------------------------------------------------------------------------------------ the layout


def _check_view(view: Any, join_keys: Sequence[str], features: Sequence[str]) -> None:
    """The registered view has the join keys (strings) and features we read, or reading it directly is wrong."""
    keys = {f.name: f.dtype for f in view.entity_columns}
    if set(keys) != set(join_keys):
        raise ReaderUnavailable(f"view {view.name}: join keys {sorted(keys)}, expected {sorted(join_keys)}")
    if any(dtype != String for dtype in keys.values()):
        raise ReaderUnavailable(f"view {view.name}: join keys must be strings, got {keys}")
    have = {f.name for f in view.features}
    missing = [f for f in features if f not in have]
    if missing:
        raise ReaderUnavailable(f"view {view.name}: missing features {missing}")


# ------------------------------------------------------------------------------------------------------ Redis


@dataclass(frozen=True)
class _RedisPlan:
    """Everything a read needs, resolved once from Feast's registry and helpers."""

    user_key: Callable[[str], bytes]
    user_fields: tuple[bytes, ...]
    # level -> (columns, key builder (user, entity) -> redis key, hash fields)
    tiers: dict[str, tuple[ServingColumns, Callable[..., bytes], tuple[bytes, ...]]]
    fast_keys: bool
    # The RESP pieces of `HMGET <key> <fields...>` around the key (see `_hmget_parts`), user view and per level.
    user_tail: tuple[bytes, bytes]
    tier_tails: dict[str, tuple[bytes, bytes]]
    # Per level: the commands from cached key pieces (`_TierCommands`); None: whole keys by the key builders.
    tier_commands: dict[str, _TierCommands] | None
    windows: dict[str, tuple[int, ...]]  # per level: window seconds, in column order
    # Per level: the state of a pair with no row (every field absent), one shared object: most candidate pairs of
    # a request were never shown to the user, and the engine judges one object once per request.
    empty: dict[str, EntityState]


def _hmget_parts(fields: Sequence[bytes]) -> tuple[bytes, bytes]:
    """(array header + command name, encoded fields) of `HMGET key *fields` in RESP; the key goes in between."""
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(fields))
    return head, b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)


def pack_hmget(key: bytes, parts: tuple[bytes, bytes]) -> bytes:
    """`HMGET key fields...` as RESP bytes (what redis-py's `pack_command` produces, without its per-call cost)."""
    return b"%s$%d\r\n%s\r\n%s" % (parts[0], len(key), key, parts[1])


_LEN = struct.Struct("<I").pack  # a key value's length word


class _TierCommands:
    """The `HMGET` commands of one level's (user, entity) keys, from pieces: Feast's key is
    head + value + value + project (values in sorted join-key order, each a type word, a length and the bytes), so
    the entity's part is built once and kept (an ad catalog is bounded; the users are not) and the user's part once
    per request. Profiled: building 132 keys and commands from scratch cost ~180 µs of a ~1 ms decision.
    `for_level` checks the pieces against the reader's own key builder and returns None on any difference."""

    _MAX_CACHED = 200_000

    def __init__(self, head: bytes, suffix: bytes, entity_first: bool, tail: tuple[bytes, bytes]):
        self.head, self.suffix, self.entity_first = head, suffix, entity_first
        self.cmd_head, self.fields = tail[0], b"\r\n" + tail[1]
        self.cached: dict[str, bytes] = {}
        self.fronts: dict[str, tuple[int, bytes]] = {}

    @staticmethod
    def value(v: str) -> bytes:
        b = v.encode()
        return b"%s%s%s" % (fmt.STRING_TYPE, _LEN(len(b)), b)

    def user_part(self, user_id: str) -> bytes:
        """The request's piece of every key of this level."""
        v = self.value(user_id)
        return v + self.suffix if self.entity_first else self.head + v

    def entity_part(self, entity: str) -> bytes:
        part = self.cached.get(entity)
        if part is None:
            if len(self.cached) >= self._MAX_CACHED:
                self.cached.clear()
            v = self.value(entity)
            part = self.cached[entity] = self.head + v if self.entity_first else v + self.suffix
        return part

    def command(self, user_part: bytes, entity: str) -> bytes:
        if self.entity_first:
            # Everything before the user's piece is kept per entity and user-piece length (ids of one length
            # are the common case): the command is then one concatenation.
            n = len(user_part)
            front = self.fronts.get(entity)
            if front is None or front[0] != n:
                a = self.entity_part(entity)
                if len(self.fronts) >= self._MAX_CACHED:
                    self.fronts.clear()
                front = self.fronts[entity] = (n, b"%s$%d\r\n%s" % (self.cmd_head, len(a) + n, a))
            return front[1] + user_part + self.fields
        b = self.entity_part(entity)
        return b"%s$%d\r\n%s%s%s" % (self.cmd_head, len(user_part) + len(b), user_part, b, self.fields)

    @classmethod
    def for_level(cls, config: Any, join_keys: Sequence[str], key_of: Callable[..., bytes], tail: tuple[bytes, bytes]):
        """The commands of a (user_id, entity) view, or None when its layout is not the one assumed here."""
        if len(join_keys) != 2 or join_keys[0] != "user_id":
            return None
        head = fmt.entity_key_head(join_keys, config.entity_key_serialization_version)
        entity_first = sorted(join_keys)[0] != "user_id"
        built = cls(head, fmt.redis_key_suffix(config), entity_first, tail)
        probes = ("u1", "", "ünï-ĉødé", "x" * 300)
        for i, user in enumerate(probes * 2):  # twice: the second time from the kept pieces
            entity = probes[(i + 1) % len(probes)]
            if built.command(built.user_part(user), entity) != pack_hmget(key_of(user, entity), tail):
                log.warning(
                    "fast reader: key pieces differ from the key builder for %s; building whole keys", join_keys
                )
                return None
        built.cached.clear()
        built.fronts.clear()
        return built


def redis_client_for(online_store_config: Any, socket_timeout: float, socket_connect_timeout: float | None = None):
    """A redis-py client for Feast's connection string (`host:port,db=0,password=...`) with a socket timeout and
    no retries: a frozen server raises `redis.TimeoutError` after `socket_timeout` instead of blocking."""
    nodes, params = RedisOnlineStore._parse_connection_string(online_store_config.connection_string)
    params = dict(params)
    params["decode_responses"] = False  # values are protobuf bytes
    params["socket_timeout"] = socket_timeout
    params["socket_connect_timeout"] = socket_connect_timeout or socket_timeout
    # redis-py retries timeouts and connection errors 3 times with backoff (seconds) by default.
    params["retry"] = Retry(NoBackoff(), 0)
    params.setdefault("client_name", CLIENT_NAME)  # visible in CLIENT LIST
    return redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **params)


class RedisFeatureReader:
    """`FeatureReader` over Feast's Redis online store: one pipelined round trip per request.

    `socket_timeout` bounds how long a read can block (Feast's own client has no timeout). The views are looked
    up in Feast's registry on the first read that finds them registered (so a server may start before the first
    `apply`; reads raise `ReaderUnavailable` meanwhile, like Feast's `FeatureViewNotFoundException`).
    """

    redis_type = RedisType.redis
    cluster = False
    reads_at = True  # `read` takes the request time (calendar counts, the stream seam)

    def __init__(
        self,
        store: Any,
        features: FeaturesConfig,
        *,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        socket_connect_timeout: float | None = None,
        client: Any = None,
        stream: Any = None,
    ):
        config = store.config
        online = config.online_store
        if not isinstance(online, RedisOnlineStoreConfig) or online.redis_type != self.redis_type:
            raise ValueError(f"{type(self).__name__} needs Feast's {self.redis_type.value} online store")
        self.store = store
        self.features = features
        self.socket_timeout = socket_timeout
        self.client = client or self._open_client(online, socket_timeout, socket_connect_timeout)
        self._user_cols, self._tiers = serving_columns(features)
        self._decoder = fmt.ValueDecoder()
        # A StreamSeamSource: when set, the stream views' buckets and the batch rows' cut-offs come back in the
        # same round trip and each window is resolved by freqcap.domain.stream.seam.
        self.stream = stream
        self.reads_stream = stream is not None
        self._plan: _RedisPlan | None = None
        self._lock = threading.Lock()
        try:
            self._plan = self._build_plan()
        except Exception as exc:  # not applied yet: retried on each read until it is
            log.info("fast reader: feature views not ready yet (%s)", exc)

    @staticmethod
    def _open_client(online: Any, socket_timeout: float, socket_connect_timeout: float | None) -> Any:
        return redis_client_for(online, socket_timeout, socket_connect_timeout)

    @property
    def fast_keys(self) -> bool:
        """True when keys are built by the self-checked specialization (False: by Feast's own serializer)."""
        return self._require_plan().fast_keys

    def keys_and_fields(self, user_id: str, candidates: Sequence[Candidate]) -> list[tuple[bytes, tuple]]:
        """The (redis key, hash fields) pairs one `read` sends, user key first (benchmarks and tests)."""
        plan = self._require_plan()
        out = [(plan.user_key(user_id), plan.user_fields)]
        for level, entity in _distinct_entities(candidates):
            _, key_of, fields = plan.tiers[level]
            out.append((key_of(user_id, entity), fields))
        return out

    def _require_plan(self) -> _RedisPlan:
        plan = self._plan
        if plan is None:
            with self._lock:
                if self._plan is None:
                    self._plan = self._build_plan()
                plan = self._plan
        return plan

    def _build_plan(self) -> _RedisPlan:
        config = self.store.config
        if config.registry.enable_online_feature_view_versioning:
            raise ReaderUnavailable("online feature view versioning is enabled: use FeastReader")

        def spec(view_name: str, join_keys: tuple[str, ...], wanted: Sequence[str]):
            view = self.store.get_feature_view(view_name, allow_registry_cache=True)
            _check_view(view, join_keys, wanted)
            try:  # exactly the hash fields Feast's online_read asks for (less `_ts:<view>`, not needed here)
                fields = fmt.redis_fields(view, wanted, config)
            except fmt.FormatMismatch as exc:
                raise ReaderUnavailable(f"unexpected Feast hash-field layout for {view_name}") from exc
            builder, fast = fmt.redis_key_builder(config, join_keys)
            return builder, fields, fast

        user_key, user_fields, fast = spec(USER_TABLE, ("user_id",), self._user_cols)
        tiers = {}
        for cols in self._tiers:
            key_of, batch_fields, tier_fast = spec(cols.view, cols.join_keys, cols.features)
            fields = batch_fields.features
            if self.stream is not None:
                # why here: the module builds every view from the default settings at import; only a stream needs it.

                # The batch row's event timestamp (its cut-off), then the stream view's fields: same hash.
                _, stream_fields, _ = spec(stream_view_name(cols.level), cols.join_keys, STREAM_READ)
                fields = (*fields, batch_fields.ts, *stream_fields.features)
            tiers[cols.level] = (cols, key_of, fields)
            fast = fast and tier_fast
        tier_tails = {level: _hmget_parts(fields) for level, (_, _, fields) in tiers.items()}
        tier_commands = {
            level: _TierCommands.for_level(config, cols.join_keys, key_of, tier_tails[level])
            for level, (cols, key_of, _) in tiers.items()
        }
        return _RedisPlan(
            user_key=user_key,
            user_fields=user_fields.features,
            tiers=tiers,
            fast_keys=fast,
            user_tail=_hmget_parts(user_fields.features),
            tier_tails=tier_tails,
            tier_commands=None if None in tier_commands.values() else tier_commands,
            windows={level: cols.window_seconds for level, (cols, _, _) in tiers.items()},
            empty={level: _empty_state(cols) for level, (cols, _, _) in tiers.items()},
        )

    def read(self, user_id: str, candidates: Sequence[Candidate], at: datetime | None = None) -> UserState:
        """The user's cohort and the state of every distinct (level, entity); with a stream, resolved at `at`
        (the request time; default now)."""
        plan, entities, commands = self.prepare(user_id, candidates)
        return self.decode(plan, entities, self._round_trip(commands), at)

    def prepare(self, user_id: str, candidates: Sequence[Candidate]) -> tuple[_RedisPlan, list, list[bytes]]:
        """(plan, distinct (level, entity) pairs, the RESP-packed HMGETs, user key first) of one read: what an
        asynchronous client sends (`AsyncRedisReader`) before `decode` turns the replies into a `UserState`."""
        plan = self._require_plan()
        entities = _distinct_entities(candidates)
        tiers = plan.tiers
        tails = plan.tier_tails
        commands = [pack_hmget(plan.user_key(user_id), plan.user_tail)]
        built = plan.tier_commands
        if built is None:
            commands += [pack_hmget(tiers[level][1](user_id, entity), tails[level]) for level, entity in entities]
        else:
            parts = {level: c.user_part(user_id) for level, c in built.items()}
            commands += [built[level].command(parts[level], entity) for level, entity in entities]
        return plan, entities, commands

    def decode(self, plan: _RedisPlan, entities: list, replies: list[Any], at: datetime | None = None) -> UserState:
        """The `UserState` of the replies to `prepare`'s commands (in order)."""
        dec = self._decoder
        decode, count, timestamp = dec.decode, dec.count, dec.timestamp
        audience_raw, tier_raw = replies[0]
        audience = decode(audience_raw) or UNKNOWN_AUDIENCE
        signal_tier = decode(tier_raw) or DEFAULT_SIGNAL_TIER
        if self.stream is not None:
            return self._resolve_with_stream(plan, entities, replies, audience, signal_tier, at)
        t = at.timestamp() if at is not None else time.time()
        states: dict[tuple[str, str], EntityState] = {}
        empty = plan.empty
        tiers = plan.tiers
        for (level, entity), values in zip(entities, replies[1:], strict=True):
            if values.count(None) == len(values):  # no row: zero in every window, as `count(None)` reads it
                states[(level, entity)] = empty[level]
                continue
            states[(level, entity)] = tiers[level][0].state(values, count, timestamp, t)
        return UserState(audience, signal_tier, states)

    def _resolve_with_stream(self, plan, entities, replies, audience, signal_tier, at) -> UserState:
        snap = self.stream.current()
        seam = snap.seam
        t = at.timestamp() if at is not None else time.time()
        dec = self._decoder
        count, timestamp = dec.count, dec.timestamp
        stale = seam is None
        states: dict[tuple[str, str], EntityState] = {}
        for (level, entity), values in zip(entities, replies[1:], strict=True):
            cols = plan.tiers[level][0]
            secs = cols.window_seconds
            m = len(cols.features)  # the batch row's fields; then its event timestamp, then the stream's
            watermark = snap.batch_watermarks.get(level)
            batch = None
            if any(v is not None for v in values[:m]):
                cutoff = fmt.event_timestamp_seconds(values[m])
                if watermark is not None and (cutoff is None or watermark > cutoff):
                    cutoff = watermark  # an unchanged row kept its older timestamp; its values hold at the watermark
                state = cols.state(values, count, timestamp, t)
                batch = BatchRow(
                    counts=state.counts,
                    conversions=state.conversions,
                    last_imp_ts=state.last_imp_ts,
                    cutoff=cutoff if cutoff is not None else float("inf"),
                    click_counts=state.click_counts,
                    conversion_counts=state.conversion_counts,
                    calendar=cols.calendar(values, count),
                )
            # A pair without a row had no event up to the view's watermark: a gap after it is a gap for it too.
            if seam is None or not seam.usable_for(batch, missing_cutoff=watermark):
                stale = True
                if batch is None:
                    states[(level, entity)] = plan.empty[level]
                else:
                    states[(level, entity)] = state
                continue
            imp_b, imp_c, clk_b, clk_c, conv_b, conv_c, last = values[m + 1 : m + 8]
            stream = StreamRow(
                impressions=Buckets(fmt.int64_list_values(imp_b), fmt.int64_list_values(imp_c)),
                conversions=Buckets(fmt.int64_list_values(conv_b), fmt.int64_list_values(conv_c)),
                last_imp=_ts_seconds(timestamp(last)),
                clicks=Buckets(fmt.int64_list_values(clk_b), fmt.int64_list_values(clk_c)),
            )
            states[(level, entity)] = seam.resolve(secs, batch, stream, t, cols.zone)
        return UserState(audience, signal_tier, states, stream_stale=stale)

    def _round_trip(self, commands: list[bytes]) -> list[Any]:
        """Send every command in one write and read one reply each: a pipeline, without redis-py's per-command
        Python bookkeeping (which costs more than the round trip: a redis-py pipelined HMGET of 100 keys, 1.8 ms, is
        mostly that). Any error leaves the connection closed, so no reply can be read by the wrong caller."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(commands)], check_health=False)
            return [conn.read_response() for _ in commands]
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def clear_caches(self) -> None:
        """Forget memoized decoded values (benchmarks measure reads without cross-request cache hits)."""
        self._decoder.clear()

    def close(self) -> None:
        self.client.close()


class RedisClusterFeatureReader(RedisFeatureReader):
    """`RedisFeatureReader` over Feast's `redis_cluster` online store: the same keys, fields and decoding, one
    pipelined round trip per master, all masters written before any reply is read (`round_trip_by_node`), so a
    read costs about the slowest master's round trip. `client` is the cluster's `ClusterTopology` (slot map and a
    client per master).

    A read that meets a moved slot (`MOVED` / `ASK`), a cluster that is down or a master that cannot be reached
    raises (serving fails open and counts it) and makes the topology re-read the slot map, so later reads go where
    the cluster now says; nothing is retried within the request's budget.
    """

    redis_type = RedisType.redis_cluster
    cluster = True

    def __init__(self, store: Any, features: FeaturesConfig, **kwargs: Any):
        super().__init__(store, features, **kwargs)
        # The slot map now, not on the first request (the event-loop reader never reads it itself).
        if not self.client.refresh(force=True):
            log.warning("Redis Cluster unreachable at start: reads fail until it answers")

    @staticmethod
    def _open_client(online: Any, socket_timeout: float, socket_connect_timeout: float | None) -> ClusterTopology:
        return cluster_topology_for(online, socket_timeout, socket_connect_timeout, client_name=CLIENT_NAME)

    @property
    def topology(self) -> ClusterTopology:
        return self.client

    def read(self, user_id: str, candidates: Sequence[Candidate], at: datetime | None = None) -> UserState:
        plan, entities, commands, slots = self.prepare_routed(user_id, candidates)
        return self.decode(plan, entities, round_trip_by_node(self.client, commands, slots), at)

    def prepare_routed(self, user_id: str, candidates: Sequence[Candidate]) -> tuple[_RedisPlan, list, list, list]:
        """`prepare`, plus the cluster slot of each command's key (same order)."""
        plan = self._require_plan()
        entities = _distinct_entities(candidates)
        tiers, tails = plan.tiers, plan.tier_tails
        keys = [plan.user_key(user_id)]
        keys += [tiers[level][1](user_id, entity) for level, entity in entities]
        commands = [pack_hmget(keys[0], plan.user_tail)]
        commands += [pack_hmget(key, tails[level]) for key, (level, _) in zip(keys[1:], entities, strict=True)]
        return plan, entities, commands, [key_slot(key) for key in keys]

    def prepare(self, user_id: str, candidates: Sequence[Candidate]) -> tuple[_RedisPlan, list, list[bytes]]:
        plan, entities, commands, _ = self.prepare_routed(user_id, candidates)
        return plan, entities, commands


# The stream view fields serving reads (clicks for the policy's stop after click).
STREAM_READ = ("imp_buckets", "imp_counts", "clk_buckets", "clk_counts", "conv_buckets", "conv_counts", "last_imp_ts")


def _empty_state(cols: ServingColumns) -> EntityState:
    """A pair with no row: zero in every window, clicks and conversions included."""
    zeros = dict.fromkeys(cols.window_seconds, 0)
    calendar = {calendar_key(p, cols.zone): 0 for p in PERIODS}  # no impression in any period, whenever asked
    return EntityState(counts={**zeros, **calendar}, click_counts=zeros, conversion_counts=zeros)


def _ts_seconds(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _distinct_entities(candidates: Sequence[Candidate]) -> list[tuple[str, str]]:
    """Every distinct (level, entity) of the candidates, first seen first."""
    seen: dict[tuple[str, str], None] = {}
    adv, camp, ad = LEVELS
    for c in candidates:
        seen[(adv, c.advertiser_id)] = None
        seen[(camp, c.campaign_id)] = None
        seen[(ad, c.ad_id)] = None
    return list(seen)


# ----------------------------------------------------------------------------------------------------- SQLite


class SqliteFeatureReader:
    """`FeatureReader` over Feast's SQLite online store: one SELECT per request (UNION ALL over the views, `IN`
    on serialized entity keys and feature names), on a per-thread read-only connection.

    Feast's SQLite rows are (entity_key, feature_name, value, event_ts, ...); keys are `serialize_entity_key`
    without a project suffix (the project is in the table name)."""

    reads_at = True  # `read` takes the request time (calendar counts)

    def __init__(self, store: Any, features: FeaturesConfig, *, busy_timeout: float = DEFAULT_SOCKET_TIMEOUT):
        # why here: Feast's SQLite module registers process-wide sqlite3 datetime adapters; only SQLite users load it.
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        config = store.config
        if getattr(config.online_store, "type", None) != "sqlite":
            raise ValueError("SqliteFeatureReader needs Feast's SQLite online store")
        self.store = store
        self.features = features
        self.busy_timeout = busy_timeout
        self.path = SqliteOnlineStore._get_db_path(config)
        self._user_cols, self._tiers = serving_columns(features)
        self._decoder = fmt.ValueDecoder()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._plan: dict[str, Any] | None = None
        try:
            self._plan = self._build_plan()
        except Exception as exc:
            log.info("fast reader: feature views not ready yet (%s)", exc)

    def _require_plan(self) -> dict[str, Any]:
        plan = self._plan
        if plan is None:
            with self._lock:
                if self._plan is None:
                    self._plan = self._build_plan()
                plan = self._plan
        return plan

    def _build_plan(self) -> dict[str, Any]:
        # why here: Feast's SQLite module registers process-wide sqlite3 datetime adapters; only SQLite users load it.
        from feast.infra.online_stores.sqlite import _quote_id

        config = self.store.config
        if config.registry.enable_online_feature_view_versioning:
            raise ReaderUnavailable("online feature view versioning is enabled: use FeastReader")

        def spec(view_name: str, join_keys: tuple[str, ...], wanted: Sequence[str]):
            view = self.store.get_feature_view(view_name, allow_registry_cache=True)
            _check_view(view, join_keys, wanted)
            builder, fast = fmt.sqlite_key_builder(config, join_keys)
            return builder, _quote_id(fmt.sqlite_table_name(config, view)), fast

        user_key, user_table, fast = spec(USER_TABLE, ("user_id",), self._user_cols)
        tiers = {}
        for cols in self._tiers:
            key_of, table, tier_fast = spec(cols.view, cols.join_keys, cols.features)
            tiers[cols.level] = (cols, key_of, table, {f: i for i, f in enumerate(cols.features)})
            fast = fast and tier_fast
        return {"user": (user_key, user_table), "tiers": tiers, "fast_keys": fast}

    @property
    def fast_keys(self) -> bool:
        return self._require_plan()["fast_keys"]

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            uri = Path(self.path).resolve().as_uri() + "?mode=ro"  # read-only: serving never writes
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout)
            self._local.conn = conn
        return conn

    def read(self, user_id: str, candidates: Sequence[Candidate], at: datetime | None = None) -> UserState:
        """The user's cohort and the state of every distinct (level, entity); calendar counts as of `at` (the request
        time; default now)."""
        t = at.timestamp() if at is not None else time.time()
        plan = self._require_plan()
        entities = _distinct_entities(candidates)
        user_key, user_table = plan["user"]
        parts = [
            f"SELECT 0, entity_key, feature_name, value FROM {user_table} WHERE entity_key = ? AND feature_name IN (?, ?)"
        ]
        params: list[Any] = [user_key(user_id), *self._user_cols]
        by_key: dict[tuple[int, bytes], tuple[str, str]] = {}
        for tag, (level, (cols, key_of, table, _)) in enumerate(plan["tiers"].items(), start=1):
            keys = []
            for lvl, entity in entities:
                if lvl == level:
                    key = key_of(user_id, entity)
                    keys.append(key)
                    by_key[(tag, key)] = (level, entity)
            if not keys:
                continue
            parts.append(
                f"SELECT {tag}, entity_key, feature_name, value FROM {table} "
                f"WHERE entity_key IN ({','.join('?' * len(keys))}) AND feature_name IN ({','.join('?' * len(cols.features))})"
            )
            params += keys
            params += cols.features
        rows = self._conn().execute(" UNION ALL ".join(parts), params).fetchall()
        user_values: dict[str, bytes] = {}
        found: dict[tuple[str, str], list[bytes | None]] = {}
        tier_by_tag = list(plan["tiers"].values())
        for tag, key, feature, value in rows:
            if tag == 0:
                user_values[feature] = value
                continue
            cols, _, _, index = tier_by_tag[tag - 1]
            slot = found.setdefault(by_key[(tag, key)], [None] * len(cols.features))
            slot[index[feature]] = value
        dec = self._decoder
        decode, count, timestamp = dec.decode, dec.count, dec.timestamp
        audience = decode(user_values.get("audience")) or UNKNOWN_AUDIENCE
        signal_tier = decode(user_values.get("signal_tier")) or DEFAULT_SIGNAL_TIER
        states: dict[tuple[str, str], EntityState] = {}
        empty: dict[str, list[None]] = {}
        for level, entity in entities:
            cols = plan["tiers"][level][0]
            values = found.get((level, entity)) or empty.setdefault(level, [None] * len(cols.features))
            states[(level, entity)] = cols.state(values, count, timestamp, t)
        return UserState(audience, signal_tier, states)

    def clear_caches(self) -> None:
        self._decoder.clear()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# ---------------------------------------------------------------------------------------------------- factory


def make_reader(
    store: Any,
    settings: Settings,
    *,
    socket_timeout: float | None = None,
    fast: bool = True,
) -> FeatureReader:
    """The fastest reader that returns what `FeastReader` returns for this store: `RedisFeatureReader` for a
    single-node Redis online store, `RedisClusterFeatureReader` for a Redis Cluster (redis-py client, both),
    `SqliteFeatureReader` for SQLite, else `FeastReader`.

    `socket_timeout` (seconds; default max(0.1, 10 x the decide budget)) bounds a blocked Redis read."""
    if fast:
        config = store.config
        online = config.online_store
        kind = getattr(online, "type", None)
        versioned = config.registry.enable_online_feature_view_versioning
        if socket_timeout is None:
            socket_timeout = max(DEFAULT_SOCKET_TIMEOUT, 10 * settings.serving.budget_ms / 1000.0)
        try:
            if kind == "redis" and not versioned:
                kinds = {RedisType.redis: RedisFeatureReader, RedisType.redis_cluster: RedisClusterFeatureReader}
                reader_type = kinds.get(online.redis_type)
                if reader_type is not None and online.client == RedisClient.redis:
                    stream = None
                    if settings.stream.enabled:
                        stream = StreamSeamSource(settings, store, socket_timeout=socket_timeout)
                    return reader_type(store, settings.features, socket_timeout=socket_timeout, stream=stream)
            elif kind == "sqlite" and not versioned:
                return SqliteFeatureReader(store, settings.features, busy_timeout=socket_timeout)
        except Exception:  # never worse than Feast's own path
            log.exception("fast reader unavailable; using FeastReader")
    log.info("using FeastReader (online store %s)", getattr(store.config.online_store, "type", "?"))
    return FeastReader(store, settings.features)

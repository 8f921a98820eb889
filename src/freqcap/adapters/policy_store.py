"""The live-policy store: where the last pushed policy is kept so that every serving replica, and a restarted one,
serves it (`serving.policy_store`).

Two backends behind one small interface: `FilePolicyStore` (one JSON file, `DataLayout.live_policy`, replaced
atomically: replicas on one host) and `RedisPolicyStore` (one hash with the fields `version`, `document` (JSON)
and `pushed_at`: production). Each stored entry has a *revision*, a short string that changes on every save and is
cheap to read (a `stat`, one HMGET), so replicas poll the revision and load the document only when it changed.

The store holds documents, not validated policies: `policy_from_stored` validates one exactly like a push would,
and checks that the document's own version is the stored version (a hand-edited or half-written entry is refused).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from freqcap.config import Settings
from freqcap.domain.policy import Policy, PolicyValidationError, parse_policy
from freqcap.errors import FreqcapError
from freqcap.layout import DataLayout

# Socket timeout of the store's Redis calls: a hung Redis costs a sync tick at most this long, never a request.
REDIS_TIMEOUT_SECONDS = 1.0
# What a Redis (or Redis Cluster) call may raise when the store is unreachable: the cluster client's own errors
# (e.g. no start-up node answers) are not RedisErrors.
_REDIS_ERRORS = (redis.RedisError, OSError, redis.exceptions.RedisClusterException)


class PolicyStoreUnavailable(FreqcapError):
    """The store could not be read or written (Redis down, disk error): retry later; serving keeps its policy."""


class StoredPolicyInvalid(FreqcapError):
    """The stored entry is unreadable or inconsistent (bad JSON, missing field, version mismatch, invalid policy)."""


class StoredPolicy(NamedTuple):
    """One stored entry: the policy document as pushed, its version, when it was pushed and the entry's revision."""

    document: dict[str, Any]
    version: str
    pushed_at: str | None
    revision: str


class PolicyStore(Protocol):
    """Where the live policy is kept. `kind` names the backend in logs and metrics."""

    kind: str

    def revision(self) -> str | None:
        """A string that changes on every save (None: nothing stored); cheap enough to poll every second."""
        ...

    def load(self) -> StoredPolicy | None:
        """The stored entry, or None when there is none."""
        ...

    def save(self, document: Mapping[str, Any]) -> str:
        """Store `document` (a policy document with a `version`) as the live policy; returns the new revision."""
        ...


def _version_of(document: Mapping[str, Any]) -> str:
    version = document.get("version")
    if not isinstance(version, str) or not version:
        raise ValueError("a stored policy document needs a non-empty string `version`")
    return version


def _now() -> str:
    return datetime.now(UTC).isoformat()


class FilePolicyStore:
    """One JSON file `{"version", "pushed_at", "document"}`, written to a temporary file and renamed over the old
    one: a reader sees the old entry or the new one, never a partial write. Revision: inode, mtime and size."""

    kind = "file"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def revision(self) -> str | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PolicyStoreUnavailable(f"{self.path}: {exc}") from exc
        return _file_revision(st)

    def load(self) -> StoredPolicy | None:
        try:
            with self.path.open("rb") as fh:
                revision = _file_revision(os.fstat(fh.fileno()))  # of the file actually read
                raw = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PolicyStoreUnavailable(f"{self.path}: {exc}") from exc
        try:
            entry = json.loads(raw)
        except ValueError as exc:
            raise StoredPolicyInvalid(f"{self.path}: not JSON: {exc}") from exc
        if not isinstance(entry, dict):
            raise StoredPolicyInvalid(f"{self.path}: not a JSON object")
        return _entry(entry.get("document"), entry.get("version"), entry.get("pushed_at"), revision, str(self.path))

    def save(self, document: Mapping[str, Any]) -> str:
        entry = {"version": _version_of(document), "pushed_at": _now(), "document": dict(document)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(entry, fh)
                    fh.flush()
                    os.fsync(fh.fileno())  # the rename must not publish a file whose bytes are not on disk yet
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return _file_revision(self.path.stat())
        except OSError as exc:
            raise PolicyStoreUnavailable(f"{self.path}: {exc}") from exc


def _file_revision(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


class RedisPolicyStore:
    """One Redis hash: `version`, `document` (JSON) and `pushed_at`, all set by one HSET (atomic). Revision:
    `version@pushed_at` (one HMGET)."""

    kind = "redis"

    def __init__(self, client: Any, key: str):
        self.client = client
        self.key = key

    def revision(self) -> str | None:
        try:
            version, pushed_at = self.client.hmget(self.key, ["version", "pushed_at"])
        except _REDIS_ERRORS as exc:
            raise PolicyStoreUnavailable(f"redis {self.key}: {type(exc).__name__}: {exc}") from exc
        if version is None and pushed_at is None:
            return None
        return _redis_revision(version, pushed_at)

    def load(self) -> StoredPolicy | None:
        try:
            fields = self.client.hgetall(self.key)
        except _REDIS_ERRORS as exc:
            raise PolicyStoreUnavailable(f"redis {self.key}: {type(exc).__name__}: {exc}") from exc
        if not fields:
            return None
        fields = {_text(k): v for k, v in fields.items()}
        version, pushed_at, raw = fields.get("version"), fields.get("pushed_at"), fields.get("document")
        try:
            document = json.loads(raw) if raw is not None else None
        except ValueError as exc:
            raise StoredPolicyInvalid(f"redis {self.key}: document is not JSON: {exc}") from exc
        revision = _redis_revision(version, pushed_at)
        return _entry(document, _text(version), _text(pushed_at), revision, f"redis {self.key}")

    def save(self, document: Mapping[str, Any]) -> str:
        version, pushed_at = _version_of(document), _now()
        mapping = {"version": version, "document": json.dumps(dict(document)), "pushed_at": pushed_at}
        try:
            self.client.hset(self.key, mapping=mapping)
        except _REDIS_ERRORS as exc:
            raise PolicyStoreUnavailable(f"redis {self.key}: {type(exc).__name__}: {exc}") from exc
        return _redis_revision(version, pushed_at)


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _redis_revision(version: Any, pushed_at: Any) -> str:
    return f"{_text(version)}@{_text(pushed_at)}"


def _entry(document: Any, version: Any, pushed_at: Any, revision: str, where: str) -> StoredPolicy:
    if not isinstance(document, dict):
        raise StoredPolicyInvalid(f"{where}: the document is missing or not an object")
    if not isinstance(version, str) or not version:
        raise StoredPolicyInvalid(f"{where}: the version is missing")
    return StoredPolicy(document, version, pushed_at if isinstance(pushed_at, str) else None, revision)


def policy_from_stored(stored: StoredPolicy) -> Policy:
    """Validate a stored document like a pushed one; raise `StoredPolicyInvalid` when it is invalid or its own
    version is not the stored version."""
    try:
        policy = parse_policy(stored.document)
    except PolicyValidationError as exc:
        raise StoredPolicyInvalid(f"stored policy {stored.version} is invalid: {exc}") from exc
    if policy.version != stored.version:
        raise StoredPolicyInvalid(f"stored version {stored.version} but the document is policy {policy.version}")
    return policy


def redis_address(settings: Settings) -> str:
    """The Redis of the `redis` store: `serving.policy_redis_url`, else the online store's host:port (a Feast
    connection string's options, e.g. `,password=...`, are read too)."""
    return settings.serving.policy_redis_url or settings.feast.online.redis_connection_string


def _timeouts() -> dict[str, Any]:
    return {
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        "retry": Retry(NoBackoff(), 0),
    }


def _redis_client(address: str) -> Any:
    # One attempt per call: redis-py's default retries took 10 s to give up on a refused connection, and the
    # sync tries again on its next tick anyway.
    timeouts = _timeouts()
    if "://" in address:
        return redis.Redis.from_url(address, **timeouts)
    # A Feast connection string: "host:port,password=...,ssl=true,db=0".
    host_port, *options = address.split(",")
    opts = dict(o.split("=", 1) for o in options if "=" in o)
    host, _, port = host_port.strip().partition(":")
    return redis.Redis(
        host=host,
        port=int(port or 6379),
        db=int(opts.get("db", 0)),
        password=opts.get("password") or None,
        ssl=opts.get("ssl", "").lower() == "true",
        **timeouts,
    )


class _LazyRedisCluster:
    """A redis-py `RedisCluster` created on first use: its constructor reads the slot map (I/O), and opening the
    store must not do any; a cluster that cannot be reached raises on each use until it answers."""

    def __init__(self, address: str, timeouts: dict[str, Any]):
        nodes = [n.strip() for n in address.split(",") if n.strip() and "=" not in n]
        self._startup = [redis.cluster.ClusterNode(n.rpartition(":")[0], int(n.rpartition(":")[2])) for n in nodes]
        opts = dict(o.split("=", 1) for o in address.split(",") if "=" in o)
        self._kwargs = {**timeouts, "password": opts.get("password") or None}
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = redis.RedisCluster(startup_nodes=self._startup, **self._kwargs)
        return getattr(self._client, name)


def policy_store_from_settings(settings: Settings) -> PolicyStore | None:
    """The store `serving.policy_store` selects (None for `none`). Opening it does no I/O."""
    kind = settings.serving.policy_store
    if kind == "file":
        return FilePolicyStore(DataLayout.of(settings).live_policy)
    if kind == "redis":
        if settings.serving.policy_redis_url is None and settings.feast.online.kind == "redis_cluster":
            # The online store's cluster: the key lives on whichever master serves its slot.
            client = _LazyRedisCluster(settings.feast.online.redis_connection_string, _timeouts())
            return RedisPolicyStore(client, settings.serving.policy_redis_key)
        return RedisPolicyStore(_redis_client(redis_address(settings)), settings.serving.policy_redis_key)
    return None

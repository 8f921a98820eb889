"""Removing one person from the streaming path: the event streams, dead letters, pair state and dedup marks.

What the stream keeps about a user (key names in `freqcap.adapters.stream.state` and
`freqcap.domain.stream.partitions`), and what forgetting does to each:

* **Event streams** (`stream_key`, or `<stream_key>:{p<k>}` per partition) and **dead-letter streams**: entries
  whose `user_id` field is one of the forms are read with `XRANGE`, acknowledged in every consumer group (so no
  worker reads them again) and `XDEL`eted. Their `event_id`s are collected for the dedup marks.
* **Pair state** `<state_prefix>:{p<k>}:s:<level>:<user>\\x1f<entity>`: the layout puts the user in the name, so one
  `SCAN` of the partition's pairs finds every user of the batch (no other data needed); deleted.
* **Unpushed list** `<state_prefix>:{p<k>}:unpushed` (state keys whose push did not finish): rewritten without the
  user's keys by one Lua script (atomic against the worker's own `APPEND`, on one server or a cluster).
* **Pending log** `<state_prefix>:{p<k>}:pending` (the states of pairs whose push did not finish, when the online
  rows are the state): rewritten without the user's records by one Lua script (matched by the user in each name).
* **Dedup marks** `<state_prefix>:{p<k>}:seen:<generation>` (hashes of applied `event_id`s): the user's event ids,
  from the streams and from the event files (the job passes them), are `HDEL`eted from every generation.
* The embedded replay's dead-letter file (JSON lines, `DataLayout.stream_dead_letters`): rewritten without the
  user's records, atomically.

Every partition is visited: which partition holds a user depends on the form of the id the producer used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from freqcap.adapters.stream.state import glob_escape, pair_state_pattern, split_state_key
from freqcap.config import StreamConfig
from freqcap.domain.stream.partitions import dead_letter_name, state_base, stream_name

_RANGE_COUNT = 1000


@dataclass
class StreamForgetResult:
    stream_entries: int = 0
    dead_letters: int = 0
    pair_states: int = 0
    dedup_marks: int = 0
    event_ids: set[str] = field(default_factory=set)  # of the removed entries (not reported: only counted)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _user_entries(client: Any, key: str, wanted: set[str]) -> tuple[list[bytes], set[str]]:
    """Ids and event ids of the entries of stream `key` whose `user_id` is in `wanted`."""
    ids: list[bytes] = []
    events: set[str] = set()
    start = "-"
    while True:
        batch = client.xrange(key, min=start, max="+", count=_RANGE_COUNT)
        for entry_id, fields in batch:
            decoded = {_text(k): _text(v) for k, v in fields.items()}
            if decoded.get("user_id") in wanted:
                ids.append(entry_id)
                if decoded.get("event_id"):
                    events.add(decoded["event_id"])
        if len(batch) < _RANGE_COUNT:
            return ids, events
        start = "(" + _text(batch[-1][0])  # exclusive: after the last entry read


def _delete_entries(client: Any, key: str, ids: list[bytes]) -> int:
    if not ids:
        return 0
    try:
        groups = [_text(g["name"]) for g in client.xinfo_groups(key)]
    except redis.ResponseError:  # no such stream
        groups = []
    for group in groups:  # acknowledged first: a worker never gets a deleted entry back from its pending list
        client.xack(key, group, *ids)
    return int(client.xdel(key, *ids))


def _pair_state_keys(client: Any, base: str, wanted: set[str]) -> list[bytes]:
    """The partition's pair-state keys of users in `wanted`: one `SCAN` of the partition's pairs for the whole
    batch (a pattern per user would cost a pass over the database per user), each name split by the layout."""
    keys: list[bytes] = []
    for key in client.scan_iter(match=pair_state_pattern(base), count=_RANGE_COUNT):
        _, user, _ = split_state_key(_text(key), base)
        if user in wanted:
            keys.append(key)
    return keys


# The unpushed list rewritten without some names, atomically (the worker APPENDs to it inside its own script; a
# script is one key on one node, so this works the same on a Redis Cluster). The list is `<I length><name>`...
_REWRITE_UNPUSHED = """
local blob = redis.call('GET', KEYS[1])
if not blob then return 0 end
local drop = {}
for i = 1, #ARGV do drop[ARGV[i]] = true end
local kept, pos, removed = {}, 1, 0
while pos <= #blob do
  local n = struct.unpack('<I4', blob, pos)
  local name = string.sub(blob, pos + 4, pos + 3 + n)
  if drop[name] then removed = removed + 1 else kept[#kept + 1] = string.sub(blob, pos, pos + 3 + n) end
  pos = pos + 4 + n
end
if removed == 0 then return 0 end
if #kept == 0 then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], table.concat(kept)) end
return removed
"""


def _rewrite_unpushed(client: Any, key: str, removed: set[bytes]) -> None:
    client.register_script(_REWRITE_UNPUSHED)(keys=[key], args=sorted(removed))


# The pending log rewritten without the records of some users, atomically (as above). Records are
# `<I n><name><I n><state>`; a name is `<base>:s:<level>:<user>\x1f<entity>` (ARGV[1]: the length of `<base>:s:`).
_REWRITE_PENDING = """
local blob = redis.call('GET', KEYS[1])
if not blob then return 0 end
local skip = tonumber(ARGV[1])
local drop = {}
for i = 2, #ARGV do drop[ARGV[i]] = true end
local kept, pos, removed = {}, 1, 0
while pos <= #blob do
  local n = struct.unpack('<I4', blob, pos)
  local name = string.sub(blob, pos + 4, pos + 3 + n)
  local m = struct.unpack('<I4', blob, pos + 4 + n)
  local stop = pos + 7 + n + m
  local colon = string.find(name, ':', skip + 1, true)
  local sep = string.find(name, '\\31', (colon or skip) + 1, true)
  local user = colon and sep and string.sub(name, colon + 1, sep - 1)
  if user and drop[user] then removed = removed + 1 else kept[#kept + 1] = string.sub(blob, pos, stop) end
  pos = stop + 1
end
if removed == 0 then return 0 end
if #kept == 0 then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], table.concat(kept)) end
return removed
"""


def _rewrite_pending(client: Any, base: str, users: set[str]) -> int:
    script = client.register_script(_REWRITE_PENDING)
    return int(script(keys=[f"{base}:pending"], args=[len(base) + 3, *sorted(users)]))


def _seen_keys(client: Any, base: str) -> list[bytes]:
    return list(client.scan_iter(match=f"{glob_escape(base)}:seen:*", count=_RANGE_COUNT))


def forget_stream(
    client: Any, cfg: StreamConfig, forms: Collection[str], event_ids: Iterable[str] = ()
) -> StreamForgetResult:
    """Remove `forms` from the stream's Redis keys (every partition); `event_ids`: the user's events known from
    elsewhere (the event files), whose dedup marks go too."""
    wanted = set(forms)
    result = StreamForgetResult()
    for partition in range(cfg.partitions):
        for name, is_dead in (
            (stream_name(cfg.stream_key, partition, cfg.partitions), False),
            (dead_letter_name(cfg.dead_letter_key, partition, cfg.partitions), True),
        ):
            ids, events = _user_entries(client, name, wanted)
            n = _delete_entries(client, name, ids)
            if is_dead:
                result.dead_letters += n
            else:
                result.stream_entries += n
            result.event_ids |= events
    marks = sorted(result.event_ids | set(event_ids))
    for partition in range(cfg.partitions):
        base = state_base(cfg.state_prefix, partition)
        states = _pair_state_keys(client, base, wanted)
        if states:
            result.pair_states += int(client.delete(*states))
            _rewrite_unpushed(client, f"{base}:unpushed", set(states))
        result.pair_states += _rewrite_pending(client, base, wanted)
        if marks:
            for seen in _seen_keys(client, base):
                for i in range(0, len(marks), _RANGE_COUNT):
                    result.dedup_marks += int(client.hdel(seen, *marks[i : i + _RANGE_COUNT]))
    return result


def forget_dead_letter_file(path: Path, forms: Collection[str]) -> int:
    """Rewrite the replay's dead-letter JSON lines without the records of `forms`; returns the records removed."""
    if not path.exists():
        return 0
    wanted = set(forms)
    kept: list[str] = []
    removed = 0
    for line in path.read_text().splitlines():
        try:
            fields = json.loads(line).get("fields") or {}
        except (ValueError, AttributeError):
            kept.append(line)
            continue
        if str(fields.get("user_id")) in wanted:
            removed += 1
        else:
            kept.append(line)
    if removed:
        tmp = path.with_name(path.name + ".forget-tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return removed

"""One partition owned by a worker: read -> micro-batch -> decide in process -> one atomic write -> push -> ack.

The order of a flush is what makes kill -9 harmless anywhere:
1. entries at or before the partition's `last_id` were applied by an earlier flush (whoever read them): they are
   only acknowledged;
2. the rest are parsed, their user ids replaced by pseudonyms (`freqcap.domain.stream.privacy`; with a
   pseudonymizer, which the worker always has while `privacy.enabled`), judged against the dedup marks and the watermark (`freqcap.domain.stream.batch`), and added
   to their pairs' counters, held in memory (read from Redis on a miss);
3. dead letters (malformed, late) are written under their source ids: a replay adds nothing;
4. **one atomic write** (`RedisPartitionState.commit`): marks, changed pairs, counters, watermark, `last_id`;
   fenced if the lease is no longer ours. With `push_mode: direct` to Redis the online rows are the pairs' state:
   the unit appends the changed pairs' states to the pending log (cheap to build: no Feast encoding); otherwise
   it writes a state key per pair and appends their names to `unpushed`. A micro-batch larger than
   `stream.commit_events` is decided and written as several such units in stream order (steps 2-4 each), so one
   write never holds Redis long; a crash between them leaves the first units applied and their entries skipped;
5. the lease is checked (a worker paused past it since its write gives the partition up here: its states are in
   the pending log for the new owner, and pushing them late could overwrite that owner's newer rows); then
   each changed pair's stream row is encoded and pushed once per micro-batch (one pipelined write of only the
   values that changed since this consumer last wrote the pair: usually the impression lists and the last
   impression), then the pending log / `unpushed` is cleared, only while the lease is ours (a crash before that
   re-pushes them on the next start: a push writes a pair's whole state, so repeating it is harmless; until then
   those pairs stay in the cache, since their rows are not their state yet);
6. the entries are acknowledged.

With `stream.overlap_push` (rows as state) step 5's write runs in a thread while the next micro-batch is read and
decided: that batch decides all its units (steps 2-3) first, then awaits the push and clears the pending log, and
only then writes its units (step 4). A kill -9 meanwhile leaves the states in the pending log, as before the clear.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from freqcap.adapters.feast.stream_push import (
    ROW_TTL_REFRESH_S,
    PairState,
    StreamRowEncoder,
    pair_row,
    remember,
    remember_pairs,
    state_blob,
    state_counts,
)
from freqcap.adapters.stream.counting import UnitCounter
from freqcap.adapters.stream.parsing import MessageParser
from freqcap.adapters.stream.state import FENCED, WRITTEN, FlushUnit, pending_packer
from freqcap.adapters.stream.transport import Message
from freqcap.config import StreamConfig
from freqcap.domain.privacy import Pseudonymizer
from freqcap.domain.stream.batch import LATE, OK, PairKey, judge
from freqcap.domain.stream.buckets import PairCounts, prune_horizon
from freqcap.domain.stream.messages import StreamEvent
from freqcap.domain.stream.partitions import first_after, id_key
from freqcap.domain.stream.privacy import pseudonymize_dead, pseudonymize_events

log = logging.getLogger(__name__)
_US = 1_000_000
# A full pair cache evicts down to this share below `stream.cache_pairs` at once (one pass per that many new pairs).
_EVICT_SLACK = 0.05


class LostPartition(RuntimeError):
    """The partition's lease is no longer this worker's: its pending work is left for the new owner."""


def reason_group(reason: str) -> str:
    """`missing_user_id` -> `missing`, `too_long_ad_id` -> `too_long`, `bad_encoding_ad_id` -> `bad_encoding`
    (metrics group the per-field reasons)."""
    for group in ("missing", "too_long", "bad_encoding"):
        if reason.startswith(group + "_"):
            return group
    return reason


class PartitionConsumer:
    """The consumer of one partition while this worker holds its lease (`token`)."""

    def __init__(
        self,
        cfg: StreamConfig,
        partition: int,
        token: str,
        transport: Any,
        state: Any,
        pusher: Any,
        stats: Any,
        *,
        allowed_formats: tuple[str, ...] | None = None,
        crash_hook: Callable[[str], None] | None = None,
        pseudonymizer: Pseudonymizer | None = None,
    ):
        self.cfg = cfg
        self.pseudonymizer = pseudonymizer
        self.pseudonyms: dict[str, str] = {}  # raw user id -> pseudonym (HMAC), across units; bounded
        self.partition = partition
        self.token = token
        self.transport = transport
        self.state = state
        self.pusher = pusher
        self.stats = stats
        self.allowed_formats = allowed_formats
        self.crash_hook = crash_hook or (lambda point: None)
        self.bucket_s = int(cfg.seconds("bucket"))
        self.lateness_us = int(cfg.seconds("allowed_lateness") * _US)
        self.retention_s = cfg.seconds("retention")
        self.flush_after_s = cfg.seconds("push_interval")
        self.cache: dict[PairKey, PairCounts] = {}
        self.encoder = StreamRowEncoder()
        # Each pair's values as this consumer last wrote them to the online store (`RedisDirectPusher.push_values`
        # then writes only what changed). Empty for a new owner: its first write of a pair is whole.
        self.written: dict[PairKey, tuple[bytes, ...]] = {}
        # `stream.push_mode: atomic`: the rows are written by the flush's own script (no state keys, no push).
        self.atomic = cfg.push_mode == "atomic"
        if self.atomic and not hasattr(pusher, "row_updates"):
            raise ValueError("stream.push_mode atomic needs the online store on the stream's Redis (a direct writer)")
        # `direct` to a Redis online store: the online rows are the pairs' state too (read back on a cache miss);
        # a unit records its changed pairs' states in the pending log instead of a state key per pair, and the
        # push (once per micro-batch) makes them durable in the rows before the log is cleared.
        # Only while a row outlives the retention (its TTL is refreshed at most hourly): else state keys, as before.
        key_ttl = getattr(pusher, "key_ttl", None)
        self.rows_state = (
            not self.atomic
            and hasattr(pusher, "read_counts")
            and hasattr(state, "pending_key")
            and (not key_ttl or key_ttl >= self.retention_s + ROW_TTL_REFRESH_S)
        )
        self.unflushed: dict[PairKey, None] = {}  # pairs changed in this micro-batch, not yet pushed
        # `stream.overlap_push` (rows as state): the previous micro-batch's push, still being written by a thread
        # while this one is decided; awaited before this one's first commit (see `_apply`).
        self.overlap = cfg.overlap_push and self.rows_state
        self.inflight: _Push | None = None
        self.pending_names: dict[PairKey, bytes] = {}  # pairs' names in the pending log (`pack_pending`'s memo)
        self.pack_pending = pending_packer()  # in C when this install has it
        self.counter = UnitCounter()  # the unit's pairs, counters and pruning; in C when this install has it
        self.parser = MessageParser()  # `parse_message` of each message; the common one in C (same answer)
        self.pending: list[Message] = []
        self.batch_started = 0.0
        self.caught_up_at: float | None = None  # wall time of the read that found the stream drained
        self.watermark_us: int | None = None
        self.last_id: str | None = None
        self.coverage_written: bytes | None = None  # the coverage start last copied into the status

    def start(self) -> None:
        """Load the partition's state, claim what earlier owners left pending, finish their unfinished push."""
        snap = self.state.load()
        self.watermark_us, self.last_id = snap.watermark_us, snap.last_id
        if hasattr(self.state, "switch_layout"):  # before anything is written in this owner's layout
            dropped = self.state.switch_layout("rows" if self.atomic or self.rows_state else "keys")
            if dropped:
                log.info("partition %d: %d stale pair-state keys dropped (state was in rows)", self.partition, dropped)
        self.transport.take_over()
        if snap.unpushed or snap.pending:
            blobs = self.state.read_pairs(snap.unpushed) if snap.unpushed else {}
            pairs = {k: state_counts(blobs[k]) for k in snap.unpushed if k in blobs}
            for k, (buckets, last_imp_us) in snap.pending.items():  # written after any state key: newer
                pairs[k] = PairCounts(buckets, last_imp_us)
            if snap.pending and not self.rows_state:  # logged under rows-as-state, now read from state keys
                self.state.write_pairs(
                    [(k, state_blob(self.encoder.values(pairs[k]), pairs[k].last_imp_us)) for k in snap.pending]
                )
            self._push(list(pairs.items()))
            self.state.pushed(self.token)

    def step(self, block_ms: int) -> int:
        """One read (blocking only when nothing is waiting to be flushed); flush when a bound is reached."""
        read_at = time.time()
        messages = self.transport.read(self.cfg.batch_size, 0 if self.pending else block_ms)
        if messages and not self.pending:
            self.batch_started = time.monotonic()
        self.pending += messages
        caught_up = self.transport.caught_up
        if caught_up:
            self.caught_up_at = read_at
        if (
            caught_up
            or len(self.pending) >= self.cfg.flush_events
            or time.monotonic() - self.batch_started >= self.flush_after_s
        ):
            self.flush()
        return len(messages)

    @property
    def drained(self) -> bool:
        return self.transport.caught_up and not self.pending and self.inflight is None

    def flush(self, final: bool = False) -> None:
        """Apply, push and acknowledge the micro-batch (see the module docstring). Its push is left in flight
        (`stream.overlap_push`) unless the stream is drained or this is the `final` flush (a worker releasing the
        partition): freshness is only reported, and a partition only given up, once everything read is visible."""
        messages, self.pending = self.pending, []
        if messages:
            ids = [m.id for m in messages]  # the bisection's and the acknowledgement's
            todo = self._not_yet_applied(messages, ids)
            self.stats.messages += len(messages)
            self.stats.skipped += len(messages) - len(todo)
            if todo:
                self._apply(todo)
            self.transport.ack(ids)
            self.stats.batches += 1
        if final or self.transport.caught_up:
            self._await_push()

    def _not_yet_applied(self, messages: list[Message], ids: list[str]) -> list[Message]:
        """The messages after `last_id` (`ids`: theirs). A micro-batch is in stream order: each read returns
        ascending ids, and reads only move forward (own pending entries from `0`, then new ones from `>`)."""
        if self.last_id is None:
            return messages
        return messages[first_after(ids, self.last_id) :]

    def _apply(self, todo: list[Message]) -> None:
        """Commit the micro-batch in atomic units of at most `stream.commit_events` messages (each unit holds the
        partition's Redis for a few milliseconds at most), then push every changed pair once, with its last
        encoding.

        With `overlap_push` every unit is decided first (parsing, dedup, counting: most of the CPU) while the
        previous micro-batch's push is still being written by its thread; that push is awaited, its pending log
        cleared, and only then are this batch's units committed (the log a unit appends to holds only states whose
        push has not finished)."""
        changed: dict[PairKey, tuple[PairKey, PairCounts, tuple[bytes, ...]]] = {}
        step = self.cfg.commit_events
        chunks = [todo[start : start + step] for start in range(0, len(todo), step)]
        if self.overlap:
            decided, ahead_ids, watermark_us = [], set(), self.watermark_us
            for chunk in chunks:  # marks of this batch's earlier units are not in Redis yet: `ahead_ids`
                decided.append(self._decide_unit(chunk, watermark_us, ahead_ids))
                watermark_us = decided[-1].judged.watermark_us
            if self.inflight is not None:
                waited = time.perf_counter()
                self._await_push()
                self.stats.pushes_overlapped += 1
                self.stats.push_wait_seconds += time.perf_counter() - waited
            for unit in decided:
                self._commit_unit(unit)
        else:
            for chunk in chunks:
                for item in self._commit_unit(self._decide_unit(chunk, self.watermark_us, None)):
                    changed[item[0]] = item
        if not self.atomic and not self.state.holds(self.token):
            # Paused past the lease between commit and push: the new owner pushes these states from the pending
            # log; pushing them here too could land after its newer rows and overwrite them.
            self._forget()
            raise LostPartition(f"partition {self.partition}: its lease is gone (before the push)")
        if self.overlap:  # encoded here, written by a thread while the next micro-batch is decided
            self.inflight = _Push(self.pusher, self.unflushed, self.cache, self.encoder, self.written)
            self.unflushed = {}
            self.crash_hook("push_sent")  # a kill here leaves a push half written
            return
        if self.rows_state:  # encoded once, here, with each pair's state after the micro-batch
            self._push([(k, self.cache[k]) for k in self.unflushed])
            self.state.pushed(self.token)
            self.unflushed.clear()
        elif not self.atomic:
            encoded = list(changed.values())
            self._push([(k, counts) for k, counts, _ in encoded], encoded)
            self.state.pushed()
        self.crash_hook("push")

    def _await_push(self) -> None:
        """Wait for the push in flight (its error, if any, is raised here), then clear the pending log."""
        push, self.inflight = self.inflight, None
        if push is None:
            return
        push.wait()
        remember_pairs(self.written, push.pairs_list, push.values)
        self.stats.pushed += len(push.values)
        self.state.pushed(self.token)
        self.crash_hook("push")

    def _forget(self) -> None:
        """Drop what this consumer holds in memory about pairs (the partition is no longer surely its own)."""
        self.cache.clear()
        self.written.clear()
        self.unflushed.clear()

    def _decide_unit(self, todo: list[Message], watermark_us: int | None, ahead_ids: set[str] | None) -> _Decided:
        """Parse, dedup, judge and count one unit, write its dead letters, and build its atomic write (not sent).
        `watermark_us`: the watermark before this unit; `ahead_ids`: ids applied by decided units not committed yet
        (treated as marked; this unit's are added)."""
        events: list[StreamEvent] = []
        sources: list[Message] = []
        dead: list[tuple[Message, str]] = []
        for message, parsed in zip(todo, self.parser.parse(todo, self.allowed_formats), strict=True):
            if isinstance(parsed, str):
                dead.append((message, parsed))
            else:
                events.append(parsed)
                sources.append(message)
        if self.pseudonymizer is not None:  # the edge: nothing below (state, push, dead letters) sees a raw id
            events = pseudonymize_events(self.pseudonymizer, events, self.pseudonyms)
        ids = list({ev.event_id: None for ev in events})
        seen = self.state.seen(ids)
        if ahead_ids:
            seen.update(i for i in ids if i in ahead_ids)
        judged = judge(events, seen, watermark_us, self.lateness_us)
        if ahead_ids is not None:
            ahead_ids.update(judged.new_ids)
        late = [(m, "late") for m, v in zip(sources, judged.verdicts, strict=True) if v == LATE]
        if late:
            dead = sorted(dead + late, key=lambda d: id_key(d[0].id))
        keys = self.counter.keys(events, judged.verdicts)
        self._load_pairs(set(keys))
        horizon = prune_horizon(judged.watermark_us, self.retention_s, self.bucket_s) if judged.watermark_us else 0
        changed = self.counter.count(events, judged.verdicts, keys, self.cache, self.bucket_s, horizon)  # all loaded
        if self.pseudonymizer is not None and dead:
            dead = pseudonymize_dead(self.pseudonymizer, dead)
        self.transport.dead_letter(dead)
        self.crash_hook("dead_letters")
        counters = {
            "applied": judged.counts[OK],
            "duplicates": judged.counts[1],
            "late": judged.counts[LATE],
            "dead_letters": len(dead),
        }
        for _, reason in dead:
            name = f"dead:{reason_group(reason)}"
            counters[name] = counters.get(name, 0) + 1
        pending = None
        if self.rows_state:  # the states, cheaply: the rows are encoded once per micro-batch, at the push
            encoded, rows, blobs = [], [], []
            pending = self.pack_pending(self.state.base, changed, self.cache, self.pending_names)
            self.unflushed.update(dict.fromkeys(changed))  # kept in the cache until pushed
        elif self.atomic:  # the rows themselves, in the same script: they are the pairs' state
            encoded = [(k, self.cache[k], self.encoder.values(self.cache[k])) for k in changed]
            rows, blobs = self.pusher.row_updates(encoded, self.written), []
        else:
            encoded = [(k, self.cache[k], self.encoder.values(self.cache[k])) for k in changed]  # once per unit
            rows, blobs = [], [(k, state_blob(values, counts.last_imp_us)) for k, counts, values in encoded]
        unit = FlushUnit(
            self.token,
            todo[0].id,
            todo[-1].id,
            judged.watermark_us,
            judged.new_ids,
            blobs,
            counters,
            rows=rows,
            row_ttl=getattr(self.pusher, "key_ttl", None) or 0,
            pending=pending,
        )
        return _Decided(unit, judged, dead, encoded)

    def _commit_unit(self, decided: _Decided) -> list[tuple[PairKey, PairCounts, tuple[bytes, ...]]]:
        """Write one decided unit atomically; the changed pairs with their encoded rows (not under rows as state)."""
        unit, judged, dead, encoded = decided.unit, decided.judged, decided.dead, decided.encoded
        result = self.state.commit(unit)
        if result != WRITTEN:
            self._forget()
            why = "its lease is gone" if result == FENCED else "another worker applied these entries"
            raise LostPartition(f"partition {self.partition}: {why}")
        self.crash_hook("commit")
        if self.atomic:
            remember(self.written, encoded)
            self.stats.pushed += len(encoded)
        self.watermark_us, self.last_id = judged.watermark_us, unit.last_id
        s = self.stats
        s.applied += judged.counts[OK]
        s.duplicates += judged.counts[1]
        s.late += judged.counts[LATE]
        s.dead_letters += len(dead)
        for _, reason in dead:
            group = reason_group(reason)
            s.dead_by_reason[group] = s.dead_by_reason.get(group, 0) + 1
        return encoded

    def _load_pairs(self, keys: set[PairKey]) -> None:
        missing = [k for k in keys if k not in self.cache]
        if not missing:
            return
        if len(self.cache) + len(missing) > self.cfg.cache_pairs:
            self._evict(keys, len(missing))
        if self.atomic or self.rows_state:  # the online rows are the state
            found = self.pusher.read_counts(missing)
        else:
            found = {k: state_counts(b) for k, b in self.state.read_pairs(missing).items()}
            # No state key: the pair's row, pushed after every commit, is its newest state (a pair untouched since
            # the partition kept its state in the rows, or whose key expired with its buckets).
            keyless = [k for k in missing if k not in found]
            if keyless and hasattr(self.pusher, "read_counts"):
                found.update(self.pusher.read_counts(keyless))
        cache = self.cache
        for key in missing:  # a pair with no stored state starts empty (apply_counts then only looks them up)
            cache[key] = found.get(key) or PairCounts()

    def _evict(self, keys: set[PairKey], incoming: int) -> None:
        """Make room for `incoming` pairs, oldest first (insertion order), never a pair this batch needs (`keys`),
        has yet to push or is pushing. It evicts down to `_EVICT_SLACK` below `stream.cache_pairs` at once, and
        moves the pinned pairs it passes to the back of the order (they are in use), so a pass costs about one
        lookup per pair evicted. Evicting only the excess on every unit rescanned the pinned pairs each time: 25 %
        of a warm worker's CPU (`benchmarks/bench_stream.py`, warm drain)."""
        cache, keep = self.cache, self.unflushed
        landing = self.inflight.pairs if self.inflight is not None else {}
        limit = self.cfg.cache_pairs
        target = len(cache) + incoming - (limit - max(1, int(limit * _EVICT_SLACK)))
        victims: list[PairKey] = []
        pinned: list[PairKey] = []
        for key in cache:
            if key in keys or key in keep or key in landing:
                pinned.append(key)
            else:
                victims.append(key)
                if len(victims) >= target:
                    break
        for key in pinned:  # to the back of the order: in use now, the last to go
            cache[key] = cache.pop(key)
        written = self.written
        for key in victims:
            del cache[key]
            written.pop(key, None)
        self.stats.evicted += len(victims)

    def _push(self, pairs: Sequence[tuple[PairKey, PairCounts]], encoded: Sequence[Any] | None = None) -> None:
        """One write of the pairs' stream rows: the values encoded for the state when the pusher takes them (Feast's
        Redis layout), else rows through `FeatureStore.push`."""
        if not pairs:
            return
        if hasattr(self.pusher, "push_values"):
            if encoded is None:
                encoded = [(k, counts, self.encoder.values(counts)) for k, counts in pairs]
            self.stats.pushed += self.pusher.push_values(encoded, self.written)
            return
        horizon = prune_horizon(self.watermark_us, self.retention_s, self.bucket_s) if self.watermark_us else 0
        rows = []
        for (level, user, entity), counts in pairs:
            state = PairState(level, user, entity, counts.buckets, counts.last_imp_us)
            rows.append((state, pair_row(state, horizon)[0]))
        self.pusher.push(rows)
        self.stats.pushed += len(rows)


@dataclass
class _Decided:
    """A unit decided and ready to commit: its atomic write, verdicts, dead letters and (not under rows as state)
    its changed pairs' encodings."""

    unit: FlushUnit
    judged: Any
    dead: list[tuple[Message, str]]
    encoded: list[tuple[PairKey, PairCounts, tuple[bytes, ...]]]


class _Push:
    """A micro-batch's push, prepared here (each pair's row encoded once, `RedisDirectPusher.prepare_pairs`) and
    written by a thread of its own (`RedisDirectPusher.send` takes a connection of its own): the socket waits
    release the GIL, so Redis applies it while the caller decides the next micro-batch. `pairs` stay in the cache
    until it has landed (their rows are not their state before); `values` are remembered as written then."""

    def __init__(
        self,
        pusher: Any,
        pairs: dict[PairKey, None],
        cache: dict[PairKey, PairCounts],
        encoder: StreamRowEncoder,
        written: dict[PairKey, tuple[bytes, ...]],
    ):
        self.pairs = pairs
        self.pairs_list = list(pairs)
        commands, keys, self.values = pusher.prepare_pairs(self.pairs_list, cache, encoder, written)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(pusher, commands, keys), daemon=True)
        self._thread.start()

    def _run(self, pusher: Any, commands: list[bytes], keys: list[bytes]) -> None:
        try:
            pusher.send(commands, keys)
        except BaseException as exc:  # re-raised by `wait`, in the consumer's thread
            self._error = exc

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error

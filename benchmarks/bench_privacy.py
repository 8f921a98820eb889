"""What pseudonymizing user ids costs at each ingestion edge, in process, beside a floor measured in the same run.

* serving: `api.decide.pseudonymous_user` once per request (one HMAC-SHA256 of a simulator id), beside decoding
  the request body with msgspec (the cheapest stage of a decision; `bench_serving_cpu.py` has every stage);
* stream worker: `domain.stream.privacy.pseudonymize_events` over parsed micro-batches of 1,000 events (each
  distinct user hashed once per unit; users uniform over `--users`, so nearly every event hashes), beside `parse_message` of the same messages (the worker's
  first step);
* batch validation: `adapters.duckdb.pseudonymize.pseudonymize_column` on a DuckDB table of simulator-like events
  (hash the distinct ids in Python, then one UPDATE ... FROM join), beside copying the same table (CREATE TABLE AS:
  the floor of touching every row once), in seconds per million events.

CPU time (`time.process_time`), median of `--rounds` rounds.

    .venv/bin/python benchmarks/bench_privacy.py [--events 1000000 --users 100000 --rounds 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_result

KEY = {"k1": b"bench-key-" + b"x" * 40}


def _cpu(fn, repeat: int) -> float:
    """CPU seconds of `fn()` called `repeat` times."""
    t0 = time.process_time()
    for _ in range(repeat):
        fn()
    return time.process_time() - t0


def _messages(n: int, users: int, seed: int) -> list[dict[bytes, bytes]]:
    """Stream messages as Redis returns them (bytes), users uniform over `users` (with many users nearly every
    event of a unit is a user of its own: the worst case for the per-unit cache)."""
    rng = random.Random(seed)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        user = rng.randrange(users)
        fields = {
            "event_id": f"e{i}",
            "event_type": "impression",
            "event_ts": (start + timedelta(seconds=i)).isoformat(),
            "user_id": f"u{user:07d}",
            "advertiser_id": f"adv-{i % 40:03d}",
            "campaign_id": f"cmp-{i % 200:04d}",
            "ad_id": f"ad-{i % 1000:05d}",
            "format": "feed",
        }
        out.append({k.encode(): v.encode() for k, v in fields.items()})
    return out


def serving(rounds: int) -> dict[str, float]:
    from types import SimpleNamespace

    from freqcap.api.decide import pseudonymous_user
    from freqcap.api.wire import decode_decide
    from freqcap.domain.privacy import Pseudonymizer

    state = SimpleNamespace(pseudonymizer=Pseudonymizer(KEY, "k1"))
    ids = [f"u{i:07d}" for i in range(2000)]
    candidates = [
        {"ad_id": f"ad-{i:05d}", "campaign_id": f"cmp-{i:04d}", "advertiser_id": "adv-001"} for i in range(100)
    ]
    import json

    bodies = [
        json.dumps({"user_id": u, "context": {"format": "feed"}, "candidates": candidates}).encode() for u in ids[:300]
    ]
    n = 20_000

    def hmac_all() -> None:
        for i in range(n):
            pseudonymous_user(state, ids[i % 2000])

    def decode_all() -> None:
        for i in range(n):
            decode_decide(bodies[i % 300])

    hmac_us, decode_us = [], []
    for _ in range(rounds):
        hmac_us.append(1e6 * _cpu(hmac_all, 1) / n)
        decode_us.append(1e6 * _cpu(decode_all, 1) / n)
    return {"pseudonymize": statistics.median(hmac_us), "floor": statistics.median(decode_us)}


def stream(users: int, rounds: int, seed: int) -> dict[str, float]:
    from freqcap.domain.privacy import Pseudonymizer
    from freqcap.domain.stream.messages import parse_message
    from freqcap.domain.stream.privacy import pseudonymize_events

    p = Pseudonymizer(KEY, "k1")
    messages = _messages(100_000, users, seed)
    units = [messages[i : i + 1000] for i in range(0, len(messages), 1000)]
    parsed = [[parse_message(m) for m in unit] for unit in units]
    distinct = statistics.mean(len({e.user_id for e in unit}) for unit in parsed)
    hmac_us, parse_us = [], []
    for _ in range(rounds):
        hmac_us.append(1e6 * _cpu(lambda: [pseudonymize_events(p, unit) for unit in parsed], 1) / len(messages))
        parse_us.append(1e6 * _cpu(lambda: [[parse_message(m) for m in unit] for unit in units], 1) / len(messages))
    return {"pseudonymize": statistics.median(hmac_us), "floor": statistics.median(parse_us), "distinct": distinct}


def batch(events: int, users: int, rounds: int, seed: int) -> dict[str, float]:
    import duckdb

    from freqcap.adapters.duckdb.pseudonymize import pseudonymize_column
    from freqcap.domain.privacy import Pseudonymizer

    p = Pseudonymizer(KEY, "k1")
    con = duckdb.connect()
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
    con.execute(
        "CREATE TABLE src AS SELECT i AS _row, 'e' || i AS event_id, "
        f"'u' || lpad(CAST(CAST(floor(random() * {users}) AS BIGINT) AS VARCHAR), 7, '0') AS user_id, "
        "'ad-' || (i % 1000) AS ad_id FROM range($n) t(i)",
        {"n": events},
    )
    ((distinct,),) = con.sql("SELECT count(DISTINCT user_id) FROM src").fetchall()
    pseudo_s, copy_s = [], []
    for _ in range(rounds):
        con.execute("CREATE OR REPLACE TABLE ev AS SELECT * FROM src")
        t0 = time.process_time()
        pseudonymize_column(con, "ev", "user_id", p)
        pseudo_s.append(time.process_time() - t0)
        t0 = time.process_time()
        con.execute("CREATE OR REPLACE TABLE cp AS SELECT * FROM src")
        copy_s.append(time.process_time() - t0)
    con.close()
    per_m = 1_000_000 / events
    return {
        "pseudonymize": statistics.median(pseudo_s) * per_m,
        "floor": statistics.median(copy_s) * per_m,
        "distinct": distinct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    s = serving(args.rounds)
    st = stream(args.users, args.rounds, args.seed)
    b = batch(args.events, args.users, args.rounds, args.seed)
    rows = [
        [
            "serving, per decision",
            f"{s['pseudonymize']:.2f} µs",
            f"decode the body (msgspec, 100 candidates): {s['floor']:.1f} µs",
            f"{s['pseudonymize'] / s['floor']:.2f}",
        ],
        [
            f"stream worker, per event ({st['distinct']:.0f} distinct users per 1,000-event unit)",
            f"{st['pseudonymize']:.2f} µs",
            f"parse the message: {st['floor']:.2f} µs",
            f"{st['pseudonymize'] / st['floor']:.2f}",
        ],
        [
            f"batch validation, per million events ({b['distinct']:,} distinct users in {args.events:,})",
            f"{b['pseudonymize']:.2f} s",
            f"copy the table once (DuckDB): {b['floor']:.2f} s",
            f"{b['pseudonymize'] / b['floor']:.2f}",
        ],
    ]
    command = "    .venv/bin/python benchmarks/bench_privacy.py " + " ".join(sys.argv[1:])
    body = (
        f"1-minute load average {load:.1f} at the start (other work shares the 2 cores: ±30 %). CPU time, median of "
        f"{args.rounds} rounds; HMAC-SHA256 truncated to 128 bits (`freqcap.domain.privacy`).\n\n"
        + table(["edge", "pseudonymizing costs", "floor in the same run", "ratio"], rows)
        + f"\n\nCommand:\n\n{command}\n"
    )
    write_result("privacy", "Pseudonymization: cost per decision, per stream event, per million batch events", body)


if __name__ == "__main__":
    main()

"""Where a decision's CPU goes: each stage of `POST /v1/decide` timed in process (CPU time per request), and the
whole request through the msgspec fast path beside the same request through the FastAPI route (pydantic), in the
same run.

One run starts a redis-server of its own on a free port, builds the demo world into it (as `bench_http.py` does:
simulate, batch features, materialize into Feast's Redis online store), builds the serving app as `freqcap serve`
does (`freqcap.api.factory.build_app`), runs its lifespan, and then, on one event loop, times:

  whole requests   the ASGI app called directly (no sockets): the fast path, and FastAPI's route for the same
                   bodies (what every request paid before the fast path)
  stages           request decoding (msgspec; pydantic beside it), pseudonymizing the user id, building the HMGET commands, the Redis round
                   trip with its parsing, decoding the replies, the policy engine, building and encoding the answer,
                   a fail-open answer (what a shed request costs past HTTP), the decision-log rows of a sampled
                   request, the counters

Every figure is process CPU time divided by the requests (2,000 per stage, interleaved over 300 request bodies),
median of `--rounds` rounds. HTTP itself (uvicorn, the kernel) is not in here: `bench_http.py` measures it.

    .venv/bin/python benchmarks/bench_serving_cpu.py [--users 2500] [--candidates 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_POLICY, RESULTS, WORK, table, write_result
from bench_http import PrivateRedis, build_world, make_requests, settings_env

N = 2000


def _scope() -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/decide",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "http_version": "1.1",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
    }


async def _asgi(app, body: bytes) -> bytes:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(_scope(), receive, send)
    assert sent[0]["status"] == 200, sent
    return b"".join(m.get("body", b"") for m in sent[1:])


async def measure(app, world, args) -> dict[str, float]:
    """CPU µs per request of each stage (median over rounds)."""
    from freqcap.adapters.decision_log import decision_rows
    from freqcap.api.decide import pseudonymous_user, request_time
    from freqcap.api.schemas import DecideRequest, decide_response, encode, fail_open_response
    from freqcap.api.wire import decode_decide
    from freqcap.domain.policy.engine import decide

    state = app.state.serving
    reader = state.async_reader
    if reader is None:
        raise SystemExit("serving did not pick the event-loop Redis reader")
    sync = reader.sync
    ts = world["as_of"].replace(tzinfo=UTC).isoformat()
    reqs = make_requests(world, 300, args.candidates, random.Random(args.seed))
    bodies = [
        json.dumps({"user_id": u, "context": {"format": "feed", "ts": ts}, "candidates": c}).encode() for u, c in reqs
    ]
    wires = [decode_decide(b) for b in bodies]
    at = request_time(wires[0])
    if state.pseudonymizer is None:
        raise SystemExit("serving runs without pseudonymization (privacy.enabled is false)")
    # What the store knows each request's user by (serving maps the raw id once per request).
    keys = [pseudonymous_user(state, w.user_id) for w in wires]
    preps = [sync.prepare(k, w.candidates) for k, w in zip(keys, wires, strict=True)]
    users = [await reader.read(k, w.candidates, at) for k, w in zip(keys, wires, strict=True)]
    found = sum(u.audience != "unknown" for u in users)
    assert found > len(users) // 2, f"only {found} users found: raw ids and stored pseudonyms must match"
    replies = []
    for _, _, commands in preps:
        conn = await reader._connect()
        replies.append(await conn.call(b"".join(commands), len(commands)))
        reader._discard(conn)
    policy = state.policy
    decisions = [
        decide(policy, u.audience, u.signal_tier, w.candidates, u.states, at) for u, w in zip(users, wires, strict=True)
    ]
    answers = [decide_response(policy.version, d, stream_stale=False) for d in decisions]
    fast_app = app
    framework = super(type(app), app).__call__  # FastAPI's own __call__: routing, pydantic, the route

    def per_request(fn) -> float:
        t0 = time.process_time()
        for i in range(N):
            fn(i % 300)
        return 1e6 * (time.process_time() - t0) / N

    async def per_request_async(fn) -> float:
        t0 = time.process_time()
        for i in range(N):
            await fn(i % 300)
        return 1e6 * (time.process_time() - t0) / N

    async def read(i):
        w = wires[i]
        await reader.read(keys[i], w.candidates, at)

    stages = {
        "whole request, fast path (msgspec)": lambda i: _asgi(fast_app, bodies[i]),
        "whole request, FastAPI route (pydantic)": lambda i: _asgi(framework, bodies[i]),
    }
    sync_stages = {
        "decode the body: msgspec": lambda i: decode_decide(bodies[i]),
        "decode the body: pydantic (for comparison)": lambda i: DecideRequest.model_validate_json(bodies[i]),
        "pseudonymize the user id (HMAC-SHA256)": lambda i: pseudonymous_user(state, wires[i].user_id),
        "build the HMGET commands": lambda i: sync.prepare(keys[i], wires[i].candidates),
        "decode the replies": lambda i: sync.decode(preps[i][0], preps[i][1], replies[i], at),
        "policy engine": lambda i: decide(
            policy, users[i].audience, users[i].signal_tier, wires[i].candidates, users[i].states, at
        ),
        "build the answer": lambda i: decide_response(policy.version, decisions[i], stream_stale=False),
        "encode the answer": lambda i: encode(answers[i]),
        "fail-open answer, built and encoded": lambda i: encode(
            fail_open_response(policy.version, [c.ad_id for c in wires[i].candidates], "overload")
        ),
        "decision-log rows of one sampled request": lambda i: decision_rows(
            ts=at,
            fmt="feed",
            audience=users[i].audience,
            signal_tier=users[i].signal_tier,
            policy_version=policy.version,
            candidates=wires[i].candidates,
            decisions=decisions[i],
        ),
        "counters": lambda i: state.metrics.observe(0.001, None, decisions[i]),
    }
    rounds: dict[str, list[float]] = {name: [] for name in [*stages, "Redis round trip incl. commands+decode"]}
    rounds.update({name: [] for name in sync_stages})
    for _ in range(args.rounds):
        for name, fn in stages.items():
            rounds[name].append(await per_request_async(fn))
        rounds["Redis round trip incl. commands+decode"].append(await per_request_async(read))
        for name, fn in sync_stages.items():
            rounds[name].append(per_request(fn))
    return {name: statistics.median(values) for name, values in rounds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2500)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from freqcap.config import load_settings

    redis = PrivateRedis()
    try:
        print(f"building the world ({args.users:,} users, {args.days} days) into redis {redis.address} ...")
        world = build_world(redis.address, args.users, args.days, args.seed)
        env = {**settings_env(redis.address), "FREQCAP__SERVING__POLICY_STORE": "none"}
        # No shedding on a loop this benchmark keeps busy on purpose (every request is timed back to back).
        env["FREQCAP__SERVING__ADMISSION_MS"] = "1000000"
        settings = load_settings(environ=env)
        policy = WORK / "serving_cpu" / "policy.json"
        policy.parent.mkdir(parents=True, exist_ok=True)
        policy.write_text(json.dumps(BENCH_POLICY))
        from freqcap.api.factory import build_app

        app = build_app(settings, policy_path=policy, dev=True)

        async def run() -> dict[str, float]:
            async with app.router.lifespan_context(app):
                return await measure(app, world, args)

        load = os.getloadavg()[0]
        got = asyncio.run(run())
    finally:
        redis.stop()
    fast = got["whole request, fast path (msgspec)"]
    rows = [[name, f"{us:,.1f}", f"{100 * us / fast:.0f} %"] for name, us in got.items()]
    command = "    .venv/bin/python benchmarks/bench_serving_cpu.py " + " ".join(sys.argv[1:])
    body = (
        f"Recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; 1-minute load average {load:.1f} at the start.\n\n"
        f"In process, one event loop, a private redis-server on loopback; demo world of {args.users:,} users, "
        f"{args.candidates} candidates per request; CPU time per request (median of {args.rounds} rounds of {N:,}). "
        "Stages overlap the whole: the Redis round trip includes building the commands and decoding the replies; "
        "the decision log writes one request in ten by default (its rows cost is per sampled request).\n\n"
        + table(["stage", "CPU µs per request", "share of the fast path's whole"], rows)
        + f"\n\nCommand:\n\n{command}\n"
    )
    print(body)
    write_result("serving_cpu", "Serving: CPU per decision, by stage (in process)", body)
    (RESULTS / "serving_cpu.json").write_text(  # machine-readable beside the .md (benchmarks/capacity_plan.py)
        json.dumps({"command": command.strip(), "candidates": args.candidates, "stages_us": got}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()

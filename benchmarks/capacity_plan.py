"""Capacity plan: what it takes to serve a target world, computed from the measured per-unit costs.

Reads the recorded benchmark results (the JSON beside each `.md` where the benchmark writes one, else the `.md`
table itself) and the packaged stream settings, scales them to the target (default: 100 M users x 10 k active
campaigns, 50 k decisions/s, 200 k events/s) under stated assumptions, prints every line of arithmetic and
records `results/capacity.md` and `results/capacity.json`.

    .venv/bin/python benchmarks/capacity_plan.py [--users 100e6 --campaigns 10000 --decisions 50000 --events 200000]

Every input is named with where it came from; every assumption is a command-line option. `compute` is pure (no
I/O) so the arithmetic is tested on small hand-computed inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, table, write_result

GIB = 2**30
DAY_S = 86_400
TIERS = ("advertiser", "campaign", "ad")


@dataclass(frozen=True)
class Targets:
    users: float = 100e6
    campaigns: float = 10_000
    decisions_per_s: float = 50_000
    events_per_s: float = 200_000


@dataclass(frozen=True)
class Assumptions:
    """Choices, not measurements: each is stated in the plan and can be changed on the command line."""

    redis_shard_max_gb: float = 25.0  # data per shard: keeps a full resync / failover of one shard quick
    redis_fill: float = 0.7  # used_memory at most this share of maxmemory: fragmentation, forks, growth
    redis_cpu_util: float = 0.5  # one Redis main thread busy at most this share of the time (tail latency)
    redis_replicas: int = 1  # replicas per master (memory and nodes, not counted for CPU: they serve no writes)
    stream_buffer_s: float = 600.0  # the event stream keeps this much (MAXLEN): a worker restart fits in it
    serving_util: float = 0.6  # target CPU utilization of serving replicas (HPA target)
    serving_cores_per_replica: int = 2  # one replica = 2 worker processes on 2 cores
    stream_util: float = 0.7  # target CPU utilization of one stream worker (one process, one core)
    partition_headroom: float = 2.0  # partitions per worker at the start: workers can double without re-partitioning
    batch_window_h: float = 4.0  # the daily features + materialization run must finish within this
    spark_executor_cores: int = 4
    spark_efficiency: float = 0.7  # useful share of executor-core time (skew, shuffle waits, stragglers)
    feature_window_days: float = 28.0  # the longest window: a daily build scans this many days of events
    airflow_slots_per_worker: int = 8  # Celery worker concurrency (one slot per core)
    airflow_other_slots: int = 8  # concurrent non-materialize tasks (validate, Spark submits, train, monitor)
    airflow_min_workers: int = 2  # high availability


@dataclass(frozen=True)
class UnitCosts:
    """Measured per-unit costs (each from a recorded benchmark; see `load_unit_costs`)."""

    # Redis memory (bench_redis_bytes, wide-catalog world)
    pairs_per_user: dict[str, float]  # mean over every simulated user, per tier
    activity_elasticity: dict[str, float]  # d log(pairs) / d log(activity) across users, per tier
    events_per_user_day: float  # the measured world's activity
    catalog: dict[str, float]  # advertisers, campaigns, ads in the measured world
    bytes_per_key: float  # used_memory growth per key written (batch)
    stream_extra_bytes: dict[str, float]  # stream view fields added to a pair's hash, per tier
    stream_pair_states_per_user: float  # the worker's per-pair state keys per user (one day replayed)
    bytes_per_pair_state: float
    bytes_per_dedup_mark: float
    bytes_per_stream_entry: float
    # stream settings (freqcap defaults)
    dedup_ttl_s: float
    seen_generations: int
    # serving (bench_http: serving's process tree CPU per request; bench_serving_cpu: in-process fast path)
    serving_cpu_ms: float
    serving_cpu_in_process_ms: float
    redis_cpu_ms_per_decision: float
    # stream worker (bench_stream)
    stream_worker_cpu_us: float
    stream_redis_cpu_us: float
    stream_worker_measured_rate: float
    # aggregation (bench_engines)
    duckdb_cpu_s_per_m_events: float
    spark_cpu_s_per_m_events: float
    # materialization (bench_materialize)
    materialize_rows_per_s: float  # one process, incremental daily run, snapshot rows per second
    redis_cpu_us_per_row: float
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class Line:
    section: str
    name: str
    formula: str
    value: float
    unit: str

    def text(self) -> str:
        return f"{self.name} = {self.formula} = {_fmt(self.value)} {self.unit}".rstrip()


def _fmt(v: float) -> str:
    if float(v).is_integer():
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:,.2f}"
    return f"{v:.3g}"


def compute(u: UnitCosts, t: Targets, a: Assumptions) -> list[Line]:
    """The plan's arithmetic, line by line (pure: no I/O). Each line's formula names its inputs."""
    out: list[Line] = []

    def put(section: str, name: str, formula: str, value: float, unit: str = "") -> float:
        out.append(Line(section, name, formula, value, unit))
        return value

    s = "activity"
    e_user = put(
        s,
        "events per user per day (target)",
        f"{_fmt(t.events_per_s)} x {DAY_S} / {_fmt(t.users)}",
        t.events_per_s * DAY_S / t.users,
    )
    k = put(
        s,
        "activity ratio k",
        f"{_fmt(e_user)} / {_fmt(u.events_per_user_day)} (measured world)",
        e_user / u.events_per_user_day,
    )
    caps = {
        "advertiser": t.campaigns * u.catalog["advertisers"] / u.catalog["campaigns"],
        "campaign": t.campaigns,
        "ad": t.campaigns * u.catalog["ads"] / u.catalog["campaigns"],
    }
    pairs = {}
    for lv in TIERS:
        raw = u.pairs_per_user[lv] * k ** u.activity_elasticity[lv]
        pairs[lv] = put(
            s,
            f"user x {lv} pairs per user",
            f"min({_fmt(u.pairs_per_user[lv])} x k^{u.activity_elasticity[lv]:.2f}, catalog {_fmt(caps[lv])})",
            min(raw, caps[lv]),
        )
    pair_sum = sum(pairs.values())
    keys_user = put(s, "keys per user", f"{' + '.join(_fmt(pairs[lv]) for lv in TIERS)} + 1 (user key)", pair_sum + 1)

    s = "redis memory"
    m_batch = put(
        s,
        "batch features",
        f"{_fmt(t.users)} x {_fmt(keys_user)} keys x {_fmt(u.bytes_per_key)} B",
        t.users * keys_user * u.bytes_per_key / GIB,
        "GiB",
    )
    m_views = put(
        s,
        "stream views in the pair hashes",
        f"{_fmt(t.users)} x ({' + '.join(f'{_fmt(pairs[lv])} x {_fmt(u.stream_extra_bytes[lv])} B' for lv in TIERS)})",
        t.users * sum(pairs[lv] * u.stream_extra_bytes[lv] for lv in TIERS) / GIB,
        "GiB",
    )
    mean_el = sum(u.activity_elasticity.values()) / len(TIERS)
    states = min(u.stream_pair_states_per_user * k**mean_el, pair_sum)
    m_states = put(
        s,
        "stream worker pair states",
        f"{_fmt(t.users)} x min({_fmt(u.stream_pair_states_per_user)} x k^{mean_el:.2f}, {_fmt(pair_sum)}) x "
        f"{_fmt(u.bytes_per_pair_state)} B",
        t.users * states * u.bytes_per_pair_state / GIB,
        "GiB",
    )
    # A generation spans dedup_ttl / (G - 1) and expires G spans after its last write: a mark written during a
    # span lives G spans plus what was left of its own span, G + 0.5 spans on average.
    span = u.dedup_ttl_s / (u.seen_generations - 1)
    mark_life = put(
        s,
        "dedup mark lifetime (mean)",
        f"{_fmt(u.dedup_ttl_s)} s / {u.seen_generations - 1} x ({u.seen_generations} + 0.5)",
        span * (u.seen_generations + 0.5),
        "s",
    )
    m_dedup = put(
        s,
        "stream dedup marks",
        f"{_fmt(t.events_per_s)}/s x {_fmt(mark_life)} s x {_fmt(u.bytes_per_dedup_mark)} B",
        t.events_per_s * mark_life * u.bytes_per_dedup_mark / GIB,
        "GiB",
    )
    m_buffer = put(
        s,
        "event stream buffer",
        f"{_fmt(t.events_per_s)}/s x {_fmt(a.stream_buffer_s)} s x {_fmt(u.bytes_per_stream_entry)} B",
        t.events_per_s * a.stream_buffer_s * u.bytes_per_stream_entry / GIB,
        "GiB",
    )
    m_data = put(
        s,
        "data (masters)",
        " + ".join(_fmt(x) for x in (m_batch, m_views, m_states, m_dedup, m_buffer)),
        m_batch + m_views + m_states + m_dedup + m_buffer,
        "GiB",
    )
    put(s, "data without dedup marks", f"{_fmt(m_data)} - {_fmt(m_dedup)}", m_data - m_dedup, "GiB")
    put(s, "with replicas", f"{_fmt(m_data)} x (1 + {a.redis_replicas})", m_data * (1 + a.redis_replicas), "GiB")

    s = "redis shards"
    per_shard = a.redis_shard_max_gb * a.redis_fill
    shards_mem = put(
        s,
        "shards for memory",
        f"ceil({_fmt(m_data)} / ({_fmt(a.redis_shard_max_gb)} GiB x {a.redis_fill}))",
        math.ceil(m_data / per_shard),
    )
    c_reads = put(
        s,
        "Redis CPU, decisions",
        f"{_fmt(t.decisions_per_s)}/s x {_fmt(u.redis_cpu_ms_per_decision)} ms",
        t.decisions_per_s * u.redis_cpu_ms_per_decision / 1e3,
        "cores",
    )
    c_stream = put(
        s,
        "Redis CPU, stream",
        f"{_fmt(t.events_per_s)}/s x {_fmt(u.stream_redis_cpu_us)} µs",
        t.events_per_s * u.stream_redis_cpu_us / 1e6,
        "cores",
    )
    rows_day = t.users * keys_user
    window_s = a.batch_window_h * 3600
    c_mat = put(
        s,
        "Redis CPU, daily materialization (during its window)",
        f"{_fmt(rows_day)} rows x {_fmt(u.redis_cpu_us_per_row)} µs / {_fmt(window_s)} s",
        rows_day * u.redis_cpu_us_per_row / 1e6 / window_s,
        "cores",
    )
    c_total = put(
        s,
        "Redis CPU, total",
        f"{_fmt(c_reads)} + {_fmt(c_stream)} + {_fmt(c_mat)}",
        c_reads + c_stream + c_mat,
        "cores",
    )
    shards_cpu = put(
        s, "shards for CPU", f"ceil({_fmt(c_total)} / {a.redis_cpu_util})", math.ceil(c_total / a.redis_cpu_util)
    )
    shards = put(s, "shards (masters)", f"max({_fmt(shards_mem)}, {_fmt(shards_cpu)})", max(shards_mem, shards_cpu))
    put(s, "data per master", f"{_fmt(m_data)} / {_fmt(shards)}", m_data / shards, "GiB")
    put(s, "Redis nodes", f"{_fmt(shards)} x (1 + {a.redis_replicas})", shards * (1 + a.redis_replicas))

    s = "stream"
    w_cores = put(
        s,
        "worker CPU",
        f"{_fmt(t.events_per_s)}/s x {_fmt(u.stream_worker_cpu_us)} µs",
        t.events_per_s * u.stream_worker_cpu_us / 1e6,
        "cores",
    )
    per_worker = put(
        s,
        "events/s per worker",
        f"{a.stream_util} / {_fmt(u.stream_worker_cpu_us)} µs",
        a.stream_util / u.stream_worker_cpu_us * 1e6,
        "events/s",
    )
    workers = put(
        s,
        "stream workers",
        f"ceil({_fmt(t.events_per_s)} / {_fmt(per_worker)})",
        math.ceil(t.events_per_s / per_worker),
    )
    put(
        s,
        "stream partitions",
        f"2^ceil(log2({_fmt(workers)} x {a.partition_headroom}))",
        2 ** math.ceil(math.log2(workers * a.partition_headroom)),
    )
    put(
        s,
        "cross-check: workers at the measured drain rate",
        f"ceil({_fmt(t.events_per_s)} / {_fmt(u.stream_worker_measured_rate)})",
        math.ceil(t.events_per_s / u.stream_worker_measured_rate),
    )
    del w_cores

    s = "serving"
    cores = put(
        s,
        "serving CPU",
        f"{_fmt(t.decisions_per_s)}/s x {_fmt(u.serving_cpu_ms)} ms",
        t.decisions_per_s * u.serving_cpu_ms / 1e3,
        "cores",
    )
    at_util = put(
        s, "cores at target utilization", f"{_fmt(cores)} / {a.serving_util}", cores / a.serving_util, "cores"
    )
    put(
        s,
        "serving replicas",
        f"ceil({_fmt(at_util)} / {a.serving_cores_per_replica})",
        math.ceil(at_util / a.serving_cores_per_replica),
    )
    put(
        s,
        "floor: replicas at the in-process fast path's CPU",
        f"ceil({_fmt(t.decisions_per_s)} x {_fmt(u.serving_cpu_in_process_ms)} ms / {a.serving_util} / "
        f"{a.serving_cores_per_replica})",
        math.ceil(t.decisions_per_s * u.serving_cpu_in_process_ms / 1e3 / a.serving_util / a.serving_cores_per_replica),
    )

    s = "batch"
    daily = put(s, "events per day", f"{_fmt(t.events_per_s)} x {DAY_S}", t.events_per_s * DAY_S, "events")
    scanned = put(
        s,
        "events per daily build",
        f"{_fmt(daily)} x {_fmt(a.feature_window_days)} d",
        daily * a.feature_window_days,
        "events",
    )
    spark_cpu = put(
        s,
        "Spark CPU per build",
        f"{_fmt(scanned / 1e6)} M x {_fmt(u.spark_cpu_s_per_m_events)} s",
        scanned / 1e6 * u.spark_cpu_s_per_m_events,
        "core-s",
    )
    put(
        s,
        "Spark executors",
        f"ceil({_fmt(spark_cpu)} / ({_fmt(window_s)} s x {a.spark_executor_cores} x {a.spark_efficiency}))",
        math.ceil(spark_cpu / (window_s * a.spark_executor_cores * a.spark_efficiency)),
    )
    incr = daily / 1e6 * u.spark_cpu_s_per_m_events
    put(
        s,
        "Spark executors if one day is aggregated per run (daily partials merged)",
        f"ceil({_fmt(daily / 1e6)} M x {_fmt(u.spark_cpu_s_per_m_events)} s / ({_fmt(window_s)} x "
        f"{a.spark_executor_cores} x {a.spark_efficiency}))",
        math.ceil(incr / (window_s * a.spark_executor_cores * a.spark_efficiency)),
    )
    put(
        s,
        "DuckDB on one node, for comparison: core-hours per build",
        f"{_fmt(scanned / 1e6)} M x {_fmt(u.duckdb_cpu_s_per_m_events)} s / 3600",
        scanned / 1e6 * u.duckdb_cpu_s_per_m_events / 3600,
        "core-h",
    )
    mat = put(
        s,
        "materialization processes",
        f"ceil({_fmt(rows_day)} rows / ({_fmt(u.materialize_rows_per_s)} rows/s x {_fmt(window_s)} s))",
        math.ceil(rows_day / (u.materialize_rows_per_s * window_s)),
    )
    slots = put(s, "Airflow task slots", f"{_fmt(mat)} + {a.airflow_other_slots}", mat + a.airflow_other_slots)
    put(
        s,
        "Airflow workers",
        f"max({a.airflow_min_workers}, ceil({_fmt(slots)} / {a.airflow_slots_per_worker}))",
        max(a.airflow_min_workers, math.ceil(slots / a.airflow_slots_per_worker)),
    )
    return out


def sensitivity(u: UnitCosts, t: Targets, a: Assumptions, per_user_day: list[float]) -> list[dict[str, float]]:
    """The plan's Redis and stream lines at other per-user activity levels (events per user per day), the user
    count and decision rate held: the event rate follows the activity."""
    out = []
    for e in per_user_day:
        v = {
            ln.name: ln.value
            for ln in compute(u, Targets(t.users, t.campaigns, t.decisions_per_s, e * t.users / DAY_S), a)
        }
        out.append(
            {
                "events_per_user_day": e,
                "events_per_s": e * t.users / DAY_S,
                "keys_per_user": v["keys per user"],
                "redis_data_gib": v["data (masters)"],
                "dedup_gib": v["stream dedup marks"],
                "shards": v["shards (masters)"],
                "stream_workers": v["stream workers"],
                "spark_executors": v["Spark executors"],
            }
        )
    return out


# --- reading the recorded results ---------------------------------------------------------------------------------


def md_tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in `text`, as rows of {header: cell}."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].startswith("|") and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1]):
            headers = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                rows.append(dict(zip(headers, cells, strict=False)))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def number(cell: str) -> float:
    """The first number in a table cell (`1,466.3`, `0.3 % (...)`, `11.83x`)."""
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?", cell)
    if not m:
        raise ValueError(f"no number in table cell {cell!r}")
    return float(m.group(0).replace(",", ""))


def _json_or_none(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _http_costs(results: Path) -> tuple[float, float, str]:
    """Serving's CPU and Redis's CPU per request at the highest open-loop rate with < 1 % degraded answers."""
    data = _json_or_none(results / "http.json")
    if data:
        ok = [ph for ph in data["phases"] if ph["rate"] is not None and ph["degraded_pct"] < 1.0]
        best = max(ok, key=lambda ph: ph["rate"])
        return best["serving_cpu_ms"], best["redis_cpu_ms"], f"http.json, {best['rate']:,.0f} req/s"
    rows = md_tables((results / "http.md").read_text())[0]
    ok = [r for r in rows if r["target req/s"][0].isdigit() and number(r["degraded (answers, by reason)"]) < 1.0]
    best = max(ok, key=lambda r: number(r["target req/s"]))
    label = f"http.md, {best['target req/s']} req/s"
    return number(best["serving CPU ms/req"]), number(best["Redis CPU ms/req"]), label


def _engine_costs(results: Path) -> tuple[float, float, str]:
    data = _json_or_none(results / "engines.json")
    if data:
        return data["duckdb_cpu_ns_per_event"] / 1e3, data["spark_cpu_ns_per_event"] / 1e3, "engines.json"
    rows = md_tables((results / "engines.md").read_text())[0]
    by = {r["engine"].split()[0]: number(r["CPU ns / event"]) for r in rows}
    return by["DuckDB"] / 1e3, by["Spark"] / 1e3, "engines.md"


def _serving_in_process(results: Path) -> tuple[float, str]:
    data = _json_or_none(results / "serving_cpu.json")
    if data:
        return data["stages_us"]["whole request, fast path (msgspec)"] / 1e3, "serving_cpu.json"
    rows = md_tables((results / "serving_cpu.md").read_text())[0]
    row = next(r for r in rows if r["stage"].startswith("whole request, fast path"))
    return number(row["CPU µs per request"]) / 1e3, "serving_cpu.md"


def load_unit_costs(results: Path = RESULTS) -> UnitCosts:
    """The measured per-unit costs from the recorded results (and the stream's configured dedup TTL)."""
    from freqcap.adapters.stream.state import SEEN_GENERATIONS
    from freqcap.config import load_settings, parse_duration

    rb = json.loads((results / "redis_bytes.json").read_text())
    wide = next(w for w in rb["worlds"] if w["name"] == "wide catalog")
    stream = json.loads((results / "stream.json").read_text())
    # The tuned worker with the default push mode and its push overlapped (what `freqcap stream` runs); the
    # default-GC and awaited-push drains are baselines.
    drain = next(
        d
        for d in stream["drain"]
        if d["workers"] == 1
        and d.get("gc", "tuned") == "tuned"
        and d.get("mode", "direct") == "direct"
        and d.get("overlap", True)
    )
    mat = json.loads((results / "materialize-10000000-redis.json").read_text())["redis"]["bulk"][0]
    serving_ms, redis_ms, http_src = _http_costs(results)
    duck, spark, eng_src = _engine_costs(results)
    in_process, sc_src = _serving_in_process(results)
    batch = wide["batch_bytes_per_key"]
    with_stream = wide["with_stream_bytes_per_key"]
    return UnitCosts(
        pairs_per_user={lv: wide["pairs_per_user"][lv]["mean_all_users"] for lv in TIERS},
        activity_elasticity={lv: wide["pairs_per_user"][lv]["activity_elasticity"] for lv in TIERS},
        events_per_user_day=wide["events"] / wide["users"] / wide["days"],
        catalog={"advertisers": wide["advertisers"], "campaigns": wide["campaigns"], "ads": wide["ads"]},
        bytes_per_key=wide["used_memory_per_key_batch"],
        stream_extra_bytes={lv: max(0.0, with_stream[lv] - batch[lv]) for lv in TIERS},
        stream_pair_states_per_user=wide["stream_pair_states"] / wide["users"],
        bytes_per_pair_state=wide["bytes_per_pair_state"],
        bytes_per_dedup_mark=wide["bytes_per_dedup_mark"],
        bytes_per_stream_entry=wide["bytes_per_stream_entry"],
        dedup_ttl_s=parse_duration(load_settings().stream.dedup_ttl).total_seconds(),
        seen_generations=SEEN_GENERATIONS,
        serving_cpu_ms=serving_ms,
        serving_cpu_in_process_ms=in_process,
        redis_cpu_ms_per_decision=redis_ms,
        stream_worker_cpu_us=drain["worker_cpu_us"],
        stream_redis_cpu_us=drain["redis_cpu_us"],
        stream_worker_measured_rate=drain["per_worker_per_s"],
        duckdb_cpu_s_per_m_events=duck,
        spark_cpu_s_per_m_events=spark,
        materialize_rows_per_s=mat["rows"] / mat["incr_seconds"],
        redis_cpu_us_per_row=mat["redis_cpu_s"] / mat["rows"] * 1e6,
        sources={
            "redis memory, pairs per user": f"redis_bytes.json (wide catalog: {wide['users']:,} users x "
            f"{wide['days']} d, {wide['campaigns']:,} campaigns)",
            "serving CPU, Redis CPU per decision": http_src,
            "serving in-process fast path": sc_src,
            "stream worker and Redis CPU per event": "stream.json (1 partition, 1 worker)",
            "aggregation CPU per event": eng_src,
            "materialization rate, Redis CPU per row": "materialize-10000000-redis.json (bulk, incremental run)",
            "dedup TTL": "freqcap defaults (stream.dedup_ttl)",
        },
    )


def render(
    u: UnitCosts, t: Targets, a: Assumptions, lines: list[Line], sens: list[dict[str, float]], command: str
) -> str:
    def cell(value) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{k} {_fmt(x)}" for k, x in value.items())
        return _fmt(value)

    inputs = [[f.name, cell(getattr(u, f.name))] for f in fields(u) if f.name != "sources"]
    sections = []
    for section in dict.fromkeys(ln.section for ln in lines):
        rows = [
            [ln.name, f"`{ln.formula}`", f"**{_fmt(ln.value)}** {ln.unit}".rstrip()]
            for ln in lines
            if ln.section == section
        ]
        sections.append(f"### {section}\n\n" + table(["quantity", "arithmetic", "value"], rows))
    return (
        f"Command: `{command}`\n\n"
        f"Target: {_fmt(t.users)} users x {_fmt(t.campaigns)} active campaigns, {_fmt(t.decisions_per_s)} "
        f"decisions/s, {_fmt(t.events_per_s)} events/s.\n\n## Measured inputs\n\n"
        + table(["input", "value"], inputs)
        + "\n\nSources (benchmarks/results/): "
        + "; ".join(f"{k}: {v}" for k, v in u.sources.items())
        + ".\n\n## Assumptions\n\n"
        + table(["assumption", "value"], [[k, str(v)] for k, v in asdict(a).items()])
        + "\n\n## The arithmetic\n\n"
        + "\n\n".join(sections)
        + "\n\n## Sensitivity to the users' activity\n\n"
        f"The same {_fmt(t.users)} users and {_fmt(t.decisions_per_s)} decisions/s; the event rate follows the "
        f"events per user per day (the measured world's: {_fmt(u.events_per_user_day)}; the target's: "
        f"{_fmt(t.events_per_s * DAY_S / t.users)}).\n\n"
        + table(
            [
                "events / user / day",
                "events/s",
                "keys / user",
                "Redis data GiB",
                "of which dedup marks GiB",
                "Redis masters",
                "stream workers",
                "Spark executors",
            ],
            [
                [
                    _fmt(r["events_per_user_day"]),
                    _fmt(r["events_per_s"]),
                    _fmt(r["keys_per_user"]),
                    _fmt(r["redis_data_gib"]),
                    _fmt(r["dedup_gib"]),
                    _fmt(r["shards"]),
                    _fmt(r["stream_workers"]),
                    _fmt(r["spark_executors"]),
                ]
                for r in sens
            ],
        )
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(Targets):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=float, default=f.default)
    for f in fields(Assumptions):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the recorded benchmark results are")
    args = parser.parse_args()
    t = Targets(**{f.name: getattr(args, f.name) for f in fields(Targets)})
    a = Assumptions(**{f.name: getattr(args, f.name) for f in fields(Assumptions)})
    u = load_unit_costs(args.results)
    lines = compute(u, t, a)
    for ln in lines:
        print(f"[{ln.section}] {ln.text()}")
    target_day = t.events_per_s * DAY_S / t.users
    levels = sorted({round(u.events_per_user_day, 2), 20.0, 50.0, round(target_day, 2)})
    sens = sensitivity(u, t, a, levels)
    command = " ".join([".venv/bin/python benchmarks/capacity_plan.py", *sys.argv[1:]])
    write_result("capacity", "Capacity plan from the measured per-unit costs", render(u, t, a, lines, sens, command))
    (RESULTS / "capacity.json").write_text(
        json.dumps(
            {
                "command": command,
                "targets": asdict(t),
                "assumptions": asdict(a),
                "inputs": asdict(u),
                "lines": [asdict(ln) for ln in lines],
                "sensitivity": sens,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

"""`freqcap` command line: one entry point for every job. Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import ipaddress
import json
import logging
import os
import signal
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from freqcap.cli import output
from freqcap.errors import FreqcapError
from freqcap.layout import DataLayout, parse_as_of


def _settings(args: argparse.Namespace):
    from pydantic import ValidationError

    from freqcap.config import load_settings

    try:
        return load_settings(args.config)
    except ValidationError as exc:  # names each setting at fault, never its value (secrets among them)
        raise FreqcapError(f"invalid settings: {exc}") from exc


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_simulate(args: argparse.Namespace) -> int:
    from freqcap.adapters.simulation_files import simulate_to_dir

    base = _settings(args).simulation
    overrides = {k: v for k, v in {"users": args.users, "days": args.days, "seed": args.seed}.items() if v is not None}
    summary = simulate_to_dir(Path(args.out), base.model_copy(update=overrides))
    _print(summary.to_dict())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from freqcap.adapters.gx import validate_events
    from freqcap.adapters.secrets import load_pseudonymizer

    settings = _settings(args)
    report = validate_events(
        Path(args.events),
        as_of=parse_as_of(args.as_of),
        config=settings.validation,
        out_dir=Path(args.out),
        ads_catalog=Path(args.ads) if args.ads else None,
        pseudonymizer=load_pseudonymizer(settings),  # an ingestion edge: the outputs hold pseudonyms
    )
    _print(report.to_dict())
    return 0


def cmd_features_build(args: argparse.Namespace) -> int:
    from freqcap.adapters.feature_engine import build_features

    build = build_features(
        args.events,
        parse_as_of(args.as_of),
        args.out,
        _settings(args).features,
        users=args.users,
        deduplicate=not args.no_dedup,
    )
    _print(
        {
            "paths": build.paths,
            "rows": build.rows,
            "events_in_window": build.events_scanned,
            "seconds": round(build.seconds, 3),
            "notes": build.notes,
        }
    )
    return 0


def cmd_features_online(args: argparse.Namespace) -> int:
    from freqcap.adapters.feast.online import read_user_features
    from freqcap.adapters.secrets import load_pseudonymizer
    from freqcap.domain.privacy import is_pseudonym

    settings = _settings(args)
    # The store knows users by pseudonym: a raw id is mapped as serving maps it, a pseudonym is used as given.
    pseudonymizer = load_pseudonymizer(settings, create=False)
    user = args.user if pseudonymizer is None or is_pseudonym(args.user) else pseudonymizer(args.user)
    _print(read_user_features(settings, DataLayout.of(settings).feast_repo, user, limit=args.limit))
    return 0


def cmd_curves_fit(args: argparse.Namespace) -> int:
    from freqcap.jobs.curves import fit_curves_to_dir

    summary = fit_curves_to_dir(
        Path(args.events),
        Path(args.out),
        floor=args.floor,
        floor_kind=args.floor_kind,
        users=Path(args.users) if args.users else None,
        cost_per_impression=args.cost_per_impression,
        value_per_conversion=args.value_per_conversion,
        attribution_window=args.attribution_window,
        features=_settings(args).features,
        maturity_share=args.maturity_share
        if args.maturity_share is not None
        else _settings(args).training.maturity_share,
        penalty_shape=args.penalty_shape or _settings(args).training.penalty_shape,
    )
    _print(summary.to_dict())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from freqcap.domain.evaluation import AuctionConfig, EvaluationConfig
    from freqcap.domain.policy import load_policy
    from freqcap.jobs.evaluate import evaluate_to_dir

    settings = _settings(args)
    sim = settings.simulation
    config = EvaluationConfig(
        users=args.users or sim.users,
        days=args.days or sim.days,
        seeds=args.seeds,
        base_seed=sim.seed if args.base_seed is None else args.base_seed,
        start=sim.start,
        auction=replace(AuctionConfig(), candidates=args.candidates),
        floor=args.floor,
        penalty_shape=args.penalty_shape or settings.training.penalty_shape,
        holdout_share=args.holdout_share,
        **({"global_caps": tuple(int(c) for c in args.global_caps.split(","))} if args.global_caps else {}),
        **(
            {"given_policy": load_policy(args.policy), "given_policy_name": Path(args.policy).name}
            if args.policy
            else {}
        ),
    )
    report, paths, run = evaluate_to_dir(
        Path(args.out), config, settings, workers=args.workers, mlflow=args.mlflow, experiment=args.experiment
    )
    _print(
        {
            "headline": report.headline(),
            "holdout": {k: v for k, v in report.holdout_pooled().items() if k != "estimate_cuped"},
            "oracle_beats_all": report.oracle_check()["beats_all"],
            "global_caps": [s.global_cap for s in report.seeds],
            "seconds": round(report.seconds, 1),
            "paths": {k: str(v) for k, v in paths.items()},
            "mlflow_run": run,
        }
    )
    return 0


def is_loopback(host: str) -> bool:
    """Is `host` an address only this machine reaches (127.0.0.0/8, ::1, `localhost`)? `0.0.0.0` and `::` are not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # another name: it may resolve anywhere


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    serving = settings.serving
    policy = args.policy or serving.policy_path  # none: start not ready, fail-open, until a policy is pushed
    workers = args.workers
    if workers < 1:
        raise FreqcapError("--workers must be at least 1")
    if workers > 1 and serving.policy_store == "none":
        # A push reaches the one worker that answers it: the others would serve another policy indefinitely.
        raise FreqcapError("--workers > 1 needs a shared policy store: set serving.policy_store to file or redis")
    host, port = args.host or serving.host, args.port or serving.port
    if args.dev and not is_loopback(host):
        # --dev may leave the admin endpoint open: such a server must not be reachable from another machine.
        raise FreqcapError(f"--dev serves on loopback only (127.0.0.1, ::1, localhost), not on {host!r}")
    import uvicorn

    from freqcap.api import factory, server

    try:
        app = factory.build_app(settings, policy_path=policy, dev=args.dev)
    except ValueError as exc:  # e.g. an empty admin token outside dev mode
        raise FreqcapError(str(exc)) from exc
    # uvicorn's own warnings stay on by default (a server's operator wants them); -vv adds its access log.
    log_level = logging.getLevelName(min(logging.WARNING, logging.getLogger().getEffectiveLevel())).lower()
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level, **server.uvicorn_options())
        return 0
    # Worker processes import the app by name and rebuild it from the environment (the checks above ran here).
    os.environ.update(
        {
            factory.ENV_DEV: "1" if args.dev else "0",
            factory.ENV_LOG_LEVEL: logging.getLevelName(logging.getLogger("freqcap").getEffectiveLevel()),
            **({factory.ENV_POLICY: str(Path(policy).resolve())} if policy else {}),
            **({"FREQCAP_CONFIG": str(Path(args.config).resolve())} if args.config else {}),
        }
    )
    options = server.uvicorn_options()
    uvicorn.run(factory.FACTORY, factory=True, workers=workers, host=host, port=port, log_level=log_level, **options)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from freqcap.jobs.monitoring import run_monitoring

    as_of = args.as_of or datetime.now(UTC).replace(minute=0, second=0, microsecond=0).isoformat()
    result = run_monitoring(_settings(args), as_of, events_dir=args.events, users=args.users)
    alarms = result["alarms"]
    _print(
        {
            "as_of": alarms["as_of"],
            "fired": [f"{i['rule']} [{i['segment']}]" for i in alarms["fired"]],
            "resolved": [f"{r['rule']} [{r['segment']}]" for r in alarms["resolved"]],
            "open": [f"{i['rule']} [{i['segment']}] since {i['opened_at']}" for i in alarms["open"]],
            "decisions": result["collected"]["decisions"],
            "drift": (result["drift"].get("drift") or {}).get("drifted_columns"),
            "paged": [
                f"{m['receiver']}: {m['status']} {m['rule']} ({'ok' if m['ok'] else m['error']})"
                for m in result["paging"]["messages"]
            ],
            "page": result["published"]["page"],
            "workspace": result["published"]["workspace"],
            "notes": result["collected"]["notes"] + result["drift"]["notes"],
        }
    )
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from freqcap.jobs.forget import forget_users, read_request_file

    users, pseudonyms = list(args.user or []), list(args.pseudonym or [])
    for name in args.from_file or []:
        u, p = read_request_file(Path(name))
        users += u
        pseudonyms += p
    record = forget_users(
        users,
        _settings(args),
        pseudonyms=pseudonyms,
        request_id=args.request_id,
        extra_paths=args.path or [],
        stream=args.stream,
        verify=args.verify,
    )
    _print(record)
    return 1 if record["residual"] else 0


def cmd_retention(args: argparse.Namespace) -> int:
    from freqcap.jobs.retention import GROUPS, prune

    now = args.now or datetime.now(UTC).isoformat()
    groups = args.group or list(GROUPS)
    counts = prune(_settings(args), now, dry_run=args.dry_run, groups=groups)
    _print({"now": now, "dry_run": args.dry_run, "groups": groups, "removed": counts})
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from freqcap.cli.demo import run_demo

    return run_demo(Path(args.dir), config_path=args.config, users=args.users, days=args.days, seed=args.seed)


def cmd_dags_folder(args: argparse.Namespace) -> int:
    from freqcap.resources import dags_folder

    print(dags_folder())
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from freqcap.cli import stack

    settings = _settings(args)
    if args.dir:
        settings = settings.model_copy(update={"stack": settings.stack.model_copy(update={"dir": Path(args.dir)})})
    config_file = args.config or os.environ.get("FREQCAP_CONFIG")
    if args.action == "up":
        seconds = stack.up(settings, config_file)
        print(stack.format_status(stack.status(settings)))
        print(f"every component healthy after {seconds:.1f} s; logs in {settings.stack.dir.resolve() / 'logs'}")
        return 0
    if args.action == "status":
        lines = stack.status(settings)
        print(stack.format_status(lines))
        return 0 if all(line.healthy for line in lines) else 1
    stopped = stack.down(settings)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing (no component of this stack was running)"))
    return 0


def long_lived_gc() -> None:
    """Tune the cyclic garbage collector for a long-running worker, once it has started.

    The worker keeps up to `stream.cache_pairs` pair states (millions of small dicts and ints) and the imported
    libraries' objects alive for its whole life, and none of them form cycles; with the default thresholds every
    full collection walks all of them. Freezing what exists at start and collecting the young generation less often
    cut the worker's CPU per event from 90 to 53 us in the same run (`benchmarks/bench_stream.py`, results/stream.md:
    `FREQCAP_STREAM_GC=default` keeps Python's defaults, the baseline).

    The young generation is collected once per million allocations: a micro-batch's own objects (its messages,
    events, pair keys and row values: about ten per event) then mostly die before a collection would walk them and
    move the survivors to an older generation, to be walked again. Against 50,000: 6-9 % less worker CPU per event
    on warm drains alternated with it, and the same peak memory: what dies is freed by its reference
    count, not by the collector."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(1_000_000, 20, 100)


def cmd_stream_run(args: argparse.Namespace) -> int:
    from freqcap.adapters.feast.store import apply_definitions, open_store
    from freqcap.jobs.stream import metrics_server, redis_worker, replay_worker

    settings = _settings(args)
    repo = DataLayout.of(settings).feast_repo
    store = open_store(settings, repo)
    apply_definitions(store, settings, repo)
    if args.replay:
        stats = replay_worker(settings, store, Path(args.replay)).run(until_caught_up=True)
        _print({"mode": "replay", **stats.__dict__})
        return 0
    with redis_worker(settings, store, consumer=args.consumer) as worker:
        if os.environ.get("FREQCAP_STREAM_GC") != "default":  # `default`: the benchmark's baseline
            long_lived_gc()
        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        signal.signal(signal.SIGINT, lambda *_: worker.stop())
        if args.metrics_port is not None:
            with metrics_server(worker, settings, args.metrics_port, args.metrics_host) as port:
                logging.getLogger(__name__).warning("stream metrics on http://%s:%d/metrics", args.metrics_host, port)
                stats = worker.run(until_caught_up=args.until_caught_up)
        else:
            stats = worker.run(until_caught_up=args.until_caught_up)
    _print({"mode": "redis", **stats.__dict__})
    return 0


def cmd_stream_produce(args: argparse.Namespace) -> int:
    from freqcap.adapters.stream.produce import load_events, produce
    from freqcap.adapters.stream.status import stream_redis_client

    cfg = _settings(args).stream
    since = parse_as_of(args.since) if args.since else None
    messages = load_events(Path(args.events), since=since)
    client = stream_redis_client(cfg, socket_timeout=10)
    coverage = since
    if coverage is None and messages:  # the whole directory: nothing older exists in this world
        from freqcap.domain.stream.messages import parse_ts

        first = parse_ts(messages[0]["event_ts"])
        coverage = datetime_from_us(first) - timedelta(microseconds=1)
    report = produce(
        client,
        args.stream or cfg.stream_key,
        messages,
        rate=args.rate,
        coverage_start=coverage,
        duplicate_share=args.duplicate_share,
        partitions=cfg.partitions,
    )
    _print(
        {
            "events": report.events,
            "duplicates": report.duplicates,
            "seconds": round(report.seconds, 3),
            "rate": round(report.rate, 1),
            "coverage_start": coverage,
        }
    )
    return 0


def datetime_from_us(us: int):
    return datetime.fromtimestamp(us / 1_000_000, UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freqcap", description="Personalized ad frequency capping.")
    parser.add_argument("--config", help="YAML settings file (default: $FREQCAP_CONFIG, then packaged defaults)")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more output: -v freqcap's INFO logs, third-party warnings, libraries' deprecation warnings; "
        "-vv freqcap DEBUG, third-party INFO; -vvv third-party DEBUG (default: freqcap's own output, its warnings "
        "and errors, and third-party errors)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the whole loop end to end on embedded defaults")
    p.add_argument("--dir", default="demo", help="working directory for the demo's data (default: ./demo)")
    p.add_argument("--users", type=int, default=None)
    p.add_argument("--days", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "dags-folder", help="print the folder of freqcap's DAG files (point Airflow's dags folder or a bundle at it)"
    )
    p.set_defaults(func=cmd_dags_folder)

    p = sub.add_parser(
        "stack", help="the production-like stack on this machine: Airflow (Celery), MLflow, Evidently UI, serving"
    )
    p.add_argument("action", choices=["up", "status", "down"])
    p.add_argument("--dir", help="the stack's folder: pids, logs, secrets, data (default: stack.dir, .stack)")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("simulate", help="simulated events, users, ads and the ground truth")
    p.add_argument("--out", required=True)
    p.add_argument("--users", type=int)
    p.add_argument("--days", type=int)
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("validate", help="validate events with Great Expectations; quarantine bad rows")
    p.add_argument("--events", required=True)
    p.add_argument("--as-of", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--ads", help="ad catalog (ads.parquet); default: none")
    p.set_defaults(func=cmd_validate)

    features = sub.add_parser("features", help="batch frequency features").add_subparsers(dest="action", required=True)
    p = features.add_parser("build", help="one Parquet file per tier, as of a time")
    p.add_argument("--events", required=True)
    p.add_argument("--as-of", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--users", help="users.parquet (default: beside the events directory)")
    p.add_argument("--no-dedup", action="store_true", help="events are already deduplicated by event_id")
    p.set_defaults(func=cmd_features_build)
    p = features.add_parser("online", help="read a user's online features back through Feast")
    p.add_argument("--user", required=True)
    p.add_argument("--limit", type=int, default=5, help="at most this many pairs per tier")
    p.set_defaults(func=cmd_features_online)
    p = sub.add_parser("serve", help="the decision API (POST /v1/decide), failing open within its time budget")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--policy",
        help="policy YAML to serve when the policy store holds none (default: serving.policy_path; "
        "neither: start not ready, fail-open, until a policy is pushed)",
    )
    p.add_argument(
        "--dev", action="store_true", help="allow an empty admin token (local development only; loopback hosts only)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on one port (default 1; more need serving.policy_store file or redis)",
    )
    p.set_defaults(func=cmd_serve)

    stream = sub.add_parser("stream", help="the streaming path: rolling counters from Redis Streams -> Feast")
    stream_sub = stream.add_subparsers(dest="action")
    stream.add_argument("--consumer", help="consumer name in the group (default: <hostname>-worker)")
    stream.add_argument("--replay", help="embedded mode: replay this event directory instead of reading Redis")
    stream.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on PORT")
    stream.add_argument(
        "--metrics-host", default="127.0.0.1", help="bind address of /metrics (default 127.0.0.1; 0.0.0.0 in a pod)"
    )
    stream.add_argument("--until-caught-up", action="store_true", help="stop once the stream is drained")
    stream.set_defaults(func=cmd_stream_run)
    p = stream_sub.add_parser("produce", help="replay simulator events into the Redis stream at a rate")
    p.add_argument("--events", required=True)
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    p.add_argument("--since", help="only events after this time (e.g. the batch cut-off); declared as coverage")
    p.add_argument("--stream", help="stream key (default: stream.stream_key)")
    p.add_argument("--duplicate-share", type=float, default=0.0, help="re-send this share of events (dedup demo)")
    p.set_defaults(func=cmd_stream_produce)

    curves = sub.add_parser("curves", help="exposure-response curves and caps").add_subparsers(
        dest="action", required=True
    )
    p = curves.add_parser("fit", help="curves.parquet, caps, plots and a proposed policy.yaml from events alone")
    p.add_argument("--events", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--floor", type=float, default=0.5, help="R for relative floors (default 0.5), a rate for absolute")
    p.add_argument("--floor-kind", choices=["relative", "absolute", "economic"], default="relative")
    p.add_argument("--users", help="users.parquet (default: beside the events directory)")
    p.add_argument("--cost-per-impression", type=float, help="economic floor: cost of one impression")
    p.add_argument("--value-per-conversion", type=float, help="economic floor: value (default: mean in the data)")
    p.add_argument("--attribution-window", default="7d")
    p.add_argument(
        "--maturity-share",
        type=float,
        help="count an impression once its observed window covers this share of the learned delays "
        "(default: training.maturity_share; 1 = the whole attribution window)",
    )
    p.add_argument("--penalty-shape", choices=["generic", "curve"],
                   help="soft penalty of the proposed policy: the fitted curve's shape, or policy.penalty's "
                   "(default: training.penalty_shape)")  # fmt: skip
    p.set_defaults(func=cmd_curves_fit)

    p = sub.add_parser(
        "evaluate", help="replay simulated traffic under no cap, a global cap, personalized and oracle caps"
    )
    p.add_argument("--out", required=True, help="report directory (tables, plot, fitted policy)")
    p.add_argument("--users", type=int, help="users per world (default: simulation.users)")
    p.add_argument("--days", type=int, help="days per world (default: simulation.days)")
    p.add_argument("--seeds", type=int, default=5, help="worlds (seeds) to average over (default 5)")
    p.add_argument("--base-seed", type=int, help="first seed (default: simulation.seed)")
    p.add_argument("--candidates", type=int, default=5, help="candidate ads per opportunity (default 5)")
    p.add_argument("--floor", type=float, default=0.5, help="relative floor of fitted and true caps (default 0.5)")
    p.add_argument("--penalty-shape", choices=["generic", "curve"],
                   help="soft penalty of the fitted policy (default: training.penalty_shape)")  # fmt: skip
    p.add_argument("--global-caps", help="global campaign caps to sweep, e.g. 2,3,4,5,6,8,10,12,15")
    p.add_argument("--holdout-share", type=float, default=0.1, help="share of users held out on the global cap")
    p.add_argument("--policy", help="also evaluate this policy file (e.g. the champion's), as written")
    p.add_argument("--workers", type=int, default=1, help="seeds evaluated in parallel processes (default 1)")
    p.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=None,
                   help="log an MLflow run (default: when tracking.tracking_uri is configured)")  # fmt: skip
    p.add_argument("--experiment", help="MLflow experiment (default freqcap-evaluation)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "forget", help="remove users from every store (events, snapshots, online store, stream...); audit record"
    )
    p.add_argument("--user", action="append", metavar="ID", help="a raw user id (repeat for several)")
    p.add_argument("--pseudonym", action="append", metavar="P", help="a pseudonym u.<key>.<digest> (repeat)")
    p.add_argument("--from-file", action="append", metavar="F",
                   help="ids one per line, or JSON {\"users\": [...], \"pseudonyms\": [...]} (repeat)")  # fmt: skip
    p.add_argument("--request-id", help="the deletion request's id, recorded in the audit (default: a new one)")
    p.add_argument("--path", action="append", metavar="DIR",
                   help="an events directory or table outside the data directory to clean too (repeat)")  # fmt: skip
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="visit the stream's Redis (default: required when streaming is on, tried when the online store is Redis)")  # fmt: skip
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="afterwards search every file of the data directory for the ids (default on)")  # fmt: skip
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("monitor", help="one monitoring run: cap hits, fail-open, frequency, drift, alarms, page")
    p.add_argument("--as-of", help="end of the monitored window (ISO 8601; default: the current hour)")
    p.add_argument("--events", help="events directory (default: <data_dir>/raw/events)")
    p.add_argument("--users", help="users.parquet (default: beside the events directory)")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("retention", help="prune every store to its retention horizon (retention.* settings)")
    p.add_argument("--dry-run", action="store_true", help="remove nothing; report what would go")
    p.add_argument("--now", help="the time horizons count back from (ISO 8601; default: now)")
    p.add_argument("--group", action="append", choices=["events", "features", "training", "monitoring", "stream",
                   "airflow"], help="only these store groups (repeatable; default: all)")  # fmt: skip
    p.set_defaults(func=cmd_retention)
    return parser


# Top-level modules only the `all` extra installs: a base (serving) install lacks them.
EXTRA_MODULES = frozenset({"airflow", "mlflow", "great_expectations", "evidently", "xgboost", "matplotlib"})


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The module of the `all` extra whose absence raised `exc`, or None when it is something else."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRA_MODULES:
        return None
    try:
        return top if importlib.util.find_spec(top) is None else None
    except (ImportError, ValueError):
        return top


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output.configure(args.verbose)
    try:
        return args.func(args)
    except FreqcapError as exc:
        print(f"freqcap: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (missing := _missing_extra(exc)) is None:
            raise
        print(
            f"freqcap: `freqcap {args.command}` needs {missing}, which this install leaves out "
            "(the base install serves decisions); install the pipeline too: pip install 'freqcap[all]'",
            file=sys.stderr,
        )
        return 2
    finally:
        output.restore()


if __name__ == "__main__":
    sys.exit(main())

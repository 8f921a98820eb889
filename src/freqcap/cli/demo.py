"""`freqcap demo`: simulate a small world, run the features DAG through Airflow, show what came out."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd

from freqcap.adapters.airflow.local import airflow_environment, init_metadata_db, run_dag, task_states
from freqcap.adapters.decision_log import DecisionLog, decision_log_from_settings, read_decision_log
from freqcap.adapters.duckdb.truth_raw import raw_count_truth
from freqcap.adapters.feast.online import read_user_features
from freqcap.adapters.gx.events import REPORT_FILE
from freqcap.adapters.mlflow.tracking import client
from freqcap.adapters.secrets import load_pseudonymizer
from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.api.live import serve_in_thread
from freqcap.cli import output
from freqcap.config import load_settings
from freqcap.domain.features import USER_TABLE
from freqcap.domain.simulate import true_cap
from freqcap.domain.simulate.truth import cap_from_curve
from freqcap.jobs.monitoring import run_monitoring
from freqcap.layout import GUARDRAILS_REPORT, DataLayout, ads_path_for, feature_table_path, parse_as_of


def _step(n: int, text: str) -> float:
    print(f"\n[{n}] {text}", flush=True)
    return time.perf_counter()


def _done(started: float) -> None:
    print(f"    done in {time.perf_counter() - started:.1f}s", flush=True)


def run_demo(
    work_dir: Path,
    config_path: str | None = None,
    users: int | None = None,
    days: int | None = None,
    seed: int | None = None,
) -> int:
    """Run the demo in `work_dir`; returns a process exit code (0 when the DAG run succeeded)."""
    work_dir = work_dir.resolve()
    data_dir = work_dir / "data"  # the demo's own data directory; everything below it comes from DataLayout
    # Start clean: a stale Airflow DB (an interrupted earlier demo) would make dag.test() resume that run.
    for owned in (work_dir / "airflow", data_dir):
        shutil.rmtree(owned, ignore_errors=True)
    os.environ["FREQCAP__DATA_DIR"] = str(data_dir)
    if config_path:
        os.environ["FREQCAP_CONFIG"] = str(Path(config_path).resolve())

    airflow_environment(work_dir / "airflow", **output.airflow_logging())

    settings = load_settings()
    size = {"users": settings.demo.users, "days": settings.demo.days, "seed": settings.demo.seed}
    size.update({k: v for k, v in {"users": users, "days": days, "seed": seed}.items() if v is not None})
    sim = settings.simulation.model_copy(update=size)
    print(f"freqcap demo — working directory {work_dir}")

    t = _step(1, f"simulating {sim.users:,} users over {sim.days} days (seed {sim.seed})")
    layout = DataLayout.of(settings)
    summary = simulate_to_dir(layout.raw_dir, sim)
    print(
        f"    {summary.events:,} events: {summary.impressions:,} impressions, {summary.clicks:,} clicks, "
        f"{summary.conversions:,} conversions; {summary.advertisers} advertisers, {summary.campaigns} campaigns, "
        f"{summary.ads} ads"
    )
    _done(t)

    as_of = parse_as_of(sim.start) + timedelta(days=sim.days)
    t = _step(
        2,
        f"running the Airflow DAG freqcap_features as of {as_of.isoformat()} (dag.test, SQLite metadata DB)",
    )

    init_metadata_db()  # imports Airflow, which configures logging its way
    output.after_airflow_import()
    dag_run = run_dag(
        "freqcap_features",
        logical_date=as_of,
        conf={"as_of": as_of.isoformat(), "events_dir": str(summary.events_dir)},
    )
    states = task_states(dag_run)
    print(f"    DAG run {dag_run.run_id}: {dag_run.state}; tasks: {states}")
    _done(t)
    if str(dag_run.state) != "success":
        print("    the features DAG failed; see the task logs above", flush=True)
        return 1

    run = layout.features_run(as_of)
    report = json.loads((run.validation_dir / REPORT_FILE).read_text())
    materialized = json.loads(run.materialize_report.read_text())
    t = _step(3, "reading one user's features back from the online store through Feast")

    user_table = feature_table_path(run.features_dir, USER_TABLE)
    (user_id,) = duckdb.sql(
        f"SELECT user_id FROM read_parquet('{user_table}') WHERE audience = 'high_intent' ORDER BY imp_7d DESC LIMIT 1"
    ).fetchall()[0]
    sample = read_user_features(settings, layout.feast_repo, user_id, limit=3)
    _done(t)

    print("\n=== summary ===")
    print(f"raw events        {summary.events_dir}  (+ users.parquet, ads.parquet, ground_truth.json beside it)")
    print(
        f"validation        {report['total_rows']:,} rows: {report['clean_rows']:,} clean, {report['invalid_rows']:,} "
        f"quarantined, {report['duplicates_removed']:,} duplicates removed"
    )
    print(f"quarantine        {report['quarantine_path']}")
    print(f"feature tables    {run.features_dir}  rows: {materialized['rows']:,}")
    print(f"feast repo        {materialized['feast_repo']}  (online store: {materialized['online_store']})")
    print(f"materialization   {materialized['rows']:,} rows in {materialized['seconds']:.1f}s")
    print(f"\nonline features of user {user_id} (high_intent, most active):")
    user = sample["user"]
    print(
        f"  audience={user['audience'][0]} signal_tier={user['signal_tier'][0]} imp_24h={user['imp_24h'][0]} "
        f"imp_7d={user['imp_7d'][0]}"
    )
    for table in ("user_advertiser", "user_campaign", "user_ad"):
        rows = sample[table]
        if not rows:
            continue
        key = next(k for k in rows if k.endswith("_id") and k != "user_id")
        for i, entity in enumerate(rows[key]):
            print(
                f"  {table:16s} {entity:12s} imp 1h/24h/7d/28d = {rows['imp_1h'][i]}/{rows['imp_24h'][i]}/"
                f"{rows['imp_7d'][i]}/{rows['imp_28d'][i]}  decayed={rows['imp_decayed'][i]:.2f}  "
                f"clicks 28d={rows['clk_28d'][i]} conversions 28d={rows['conv_28d'][i]}"
            )
    print(f"\ntry: freqcap features online --user {user_id}   (with FREQCAP__DATA_DIR={data_dir})")

    t = _step(4, "running the Airflow DAG freqcap_training (training set -> XGBoost/MLflow -> curves -> caps)")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # XGBoost threads sleep instead of spinning on 2 cores
    dag_run = run_dag(
        "freqcap_training", logical_date=as_of, conf={"as_of": as_of.isoformat(), "events_dir": str(summary.events_dir)}
    )
    states = task_states(dag_run)
    print(f"    DAG run {dag_run.run_id}: {dag_run.state}; tasks: {states}")
    _done(t)
    if str(dag_run.state) != "success":
        print("    the training DAG failed; see the task logs above", flush=True)
        return 1
    _print_training(settings, layout, as_of)
    code = _serve_and_publish(settings, layout, as_of)
    if code == 0:
        _monitor(settings, as_of)
    return code


def _monitor(settings, as_of) -> None:
    """One run of the monitoring job over the demo's decision log: alarms, drift, the on-call page."""
    t = _step(6, "one hourly monitoring run (what the freqcap_monitoring DAG does): decision log -> alarms, page")
    # Half an hour after the demo's requests (stamped at as_of): the run's last hour holds them.
    result = run_monitoring(settings, as_of + timedelta(minutes=30))
    alarms = result["alarms"]
    for incident in alarms["fired"]:
        print(f"    alarm fired: {incident['rule']} [{incident['segment']}]")
    if not alarms["fired"]:
        print("    no alarm fired")
    drifted = (result["drift"].get("drift") or {}).get("drifted_columns") or []
    if any(str(c).startswith("n_") for c in drifted):
        # Not a false alarm: the simulated world starts with no history, so exposure counts in its last day are
        # higher than over the training period; a world in steady state does not drift here (tests/integration/
        # test_monitoring_drift.py checks both cases).
        print(f"    drifted: {drifted} — the simulated world starts empty, so its last day's exposure counts exceed")
        print("    the training period's: a real shift in what the model saw; steady traffic stays quiet")
    print(f"    decisions in the window: {result['collected']['decisions']}")
    print(f"    on-call page      {result['published']['page']}")
    print(f"    Evidently workspace {result['published']['workspace']}  (make ui)")
    _done(t)


def _serve_and_publish(settings, layout: DataLayout, as_of) -> int:
    """Start the decision API (no policy yet: fail-open), publish the champion's policy through the publish DAG,
    then show decisions for a heavy and a light user."""
    import httpx

    from freqcap.api.app import create_app

    t = _step(5, "starting the decision API (uvicorn on loopback) and publishing the champion's policy")
    token = secrets.token_urlsafe(32)  # this demo's admin token; production reads it from the environment
    os.environ["FREQCAP__SERVING__ADMIN_TOKEN"] = token
    budget_ms = max(settings.serving.budget_ms, 100.0)  # SQLite on a busy laptop; Redis meets the default
    configured = decision_log_from_settings(settings)
    # The demo logs every request (production samples `serving.decision_log_sample_rate`).
    decision_log = DecisionLog(configured.directory, sample_rate=1.0) if configured else None
    app = create_app(settings, policy_path=None, admin_token=token, budget_ms=budget_ms, decision_log=decision_log)
    with serve_in_thread(app, host="127.0.0.1", port=0) as url:
        os.environ["FREQCAP__PUBLISH__SERVING_URL"] = url
        ready = httpx.get(url + "/readyz").json()
        print(f"    serving at {url} (lookup budget {budget_ms:.0f} ms); before publishing: {ready}")
        probe = {
            "user_id": "u0000001",
            "context": {"format": "feed", "ts": as_of.isoformat()},
            "candidates": [{"ad_id": "ad-00000", "campaign_id": "cmp-0000", "advertiser_id": "adv-000"}],
        }
        before = httpx.post(url + "/v1/decide", json=probe).json()
        print(
            f"    a decision before publishing fails open: degraded={before['degraded']} "
            f"reason={before['degraded_reason']} penalty={before['decisions'][0]['penalty']}"
        )
        dag_run = run_dag("freqcap_publish", logical_date=as_of, conf={})
        states = task_states(dag_run)
        print(f"    DAG run {dag_run.run_id}: {dag_run.state}; tasks: {states}")
        if str(dag_run.state) != "success":
            print("    the publish DAG failed; see the task logs above", flush=True)
            return 1
        served = httpx.get(url + "/v1/policy").json()
        guardrails = next(layout.publish_dir.rglob(GUARDRAILS_REPORT))
        print(f"    serving now runs policy {served['version']}; guardrail report {guardrails}")
        for check in json.loads(guardrails.read_text())["guardrails"]["checks"]:
            print(f"      {check['name']:22s} {'ok' if check['passed'] else 'FAILED'}  {check['detail']}")

        features_dir = layout.features_run(as_of).features_dir
        user_table, ad_table = feature_table_path(features_dir, USER_TABLE), feature_table_path(features_dir, "user_ad")
        heavy, light = duckdb.sql(f"""
            (SELECT user_id, audience, imp_7d FROM read_parquet('{user_table}') ORDER BY imp_7d DESC, user_id LIMIT 1)
            UNION ALL
            (SELECT user_id, audience, imp_7d FROM read_parquet('{user_table}') WHERE imp_7d BETWEEN 1 AND 3
             ORDER BY user_id LIMIT 1)""").fetchall()
        # The heavy user's most-seen ads plus ads nobody showed them: candidates an ad server might rank.
        seen = duckdb.sql(
            f"SELECT ad_id FROM read_parquet('{ad_table}') WHERE user_id = '{heavy[0]}' ORDER BY imp_28d DESC LIMIT 4"
        ).fetchall()
        ads = duckdb.sql(
            f"SELECT ad_id, campaign_id, advertiser_id FROM read_parquet('{ads_path_for(layout.events_dir)}')"
        ).df()
        chosen = [a for (a,) in seen] + [a for a in ads["ad_id"] if a not in {s for (s,) in seen}][:2]
        meta = ads.set_index("ad_id")
        candidates = [
            {"ad_id": a, "campaign_id": meta.loc[a, "campaign_id"], "advertiser_id": meta.loc[a, "advertiser_id"]}
            for a in chosen
        ]
        raw_ids = _raw_ids(settings, layout, [heavy[0], light[0]])
        for label, (user_id, audience, imp_7d) in (("heavy", heavy), ("light", light)):
            # The feature tables know the user by pseudonym; the ad server sends the raw id, as in production.
            user_id = raw_ids.get(user_id, user_id)
            resp = httpx.post(
                url + "/v1/decide",
                json={
                    "user_id": user_id,
                    "context": {"format": "feed", "ts": as_of.isoformat()},
                    "candidates": candidates,
                },
            ).json()
            status = "degraded: " + str(resp["degraded_reason"]) if resp["degraded"] else "ok"
            print(f"\n    {label} user {user_id} ({audience}, {imp_7d} impressions in 7 days) -> {status}")
            for d in resp["decisions"]:
                b = d["binding"]
                bind = (
                    f"{b['level']} {b['count']}/{b['cap']} per {b['window']}" if b and b["cap"] else (b and b["level"])
                )
                dist = "" if d["distance_to_cap"] is None else f"{d['distance_to_cap']:+.0f}"
                print(
                    f"      {d['ad_id']:10s} penalty {d['penalty']:.3f}  distance {dist:>4s}  binding {bind}  ({d['reason']})"
                )
        metrics = httpx.get(url + "/metrics").text
    _done(t)
    hits = [line for line in metrics.splitlines() if line.startswith(("freqcap_cap_hits_total", "freqcap_decide_fail"))]
    print("    /metrics: " + "; ".join(hits))
    if decision_log is not None:
        logged = read_decision_log(decision_log.directory)
        print(f"    decision log {decision_log.directory}: {len(logged)} rows (sampled, no user ids)")
    print(
        f"\ntry: freqcap serve --dev --policy {guardrails.with_name('policy.yaml')}   (with FREQCAP__DATA_DIR={layout.root})"
    )
    return 0


def _raw_ids(settings, layout: DataLayout, pseudonyms: list[str]) -> dict[str, str]:
    """{pseudonym: raw id} for the given pseudonyms, found by pseudonymizing the simulated users (the demo plays
    the ad server too: it knows the raw ids). Empty when privacy is off (the tables hold raw ids then)."""
    pseudonymizer = load_pseudonymizer(settings)
    if pseudonymizer is None:
        return {}
    wanted = set(pseudonyms)
    users = pd.read_parquet(layout.raw_dir / "users.parquet", columns=["user_id"])["user_id"]
    return {p: raw for raw, p in zip(users, pseudonymizer.many(users), strict=True) if p in wanted}


def _print_training(settings, layout: DataLayout, as_of) -> None:
    """The MLflow outcome and the proposed caps beside the simulator's true caps."""
    out = layout.curves_dir(as_of)
    caps = pd.read_parquet(out / "caps.parquet")
    policy = (out / "policy.yaml").read_text().splitlines()
    mc = client(settings)
    versions = mc.search_model_versions("name = 'freqcap-conversion'")
    latest = max(versions, key=lambda v: int(v.version))
    aliases = sorted(a for a, v in mc.get_registered_model("freqcap-conversion").aliases.items() if v == latest.version)
    run = mc.get_run(latest.run_id)
    metrics = run.data.metrics
    print("\n=== training ===")
    print(f"MLflow            {settings.tracking.tracking_uri or layout.mlflow_db}  run {latest.run_id}")
    print(
        f"model             freqcap-conversion v{latest.version} aliases {aliases}; "
        f"valid ROC-AUC {metrics.get('valid_roc_auc', float('nan')):.3f}, PR-AUC "
        f"{metrics.get('valid_pr_auc', float('nan')):.3f}, ECE {metrics.get('valid_ece', float('nan')):.4f}"
    )
    print(f"curves            {out}  (curves.parquet, caps.csv, plots/, {policy[0] if policy else ''})")
    gt = load_ground_truth(layout.raw_dir)
    truth = raw_count_truth(layout.raw_dir)
    floor = settings.training.floor
    print(f"\nproposed caps (per user within 28 days) at floor R={floor}, beside the simulator's truth:")
    print(
        f"  {'cohort':22s} {'level':10s} {'proposed':>8s} {'range':>7s} {'true (raw n)':>12s} {'fresh g(n)':>10s}  note"
    )
    for aud in gt["audiences_order"]:
        for level in ("advertiser", "campaign", "ad"):
            row = caps[(caps["cohort"] == f"{aud}/all") & (caps["level"] == level)]
            if row.empty:
                continue
            r = row.iloc[0]
            t_rows = truth[(truth["audience"] == aud) & (truth["signal_tier"] == "*") & (truth["level"] == level)]
            raw_cap = cap_from_curve(t_rows.sort_values("n")["true_ratio"].to_numpy(), floor) if len(t_rows) else None
            rng = f"{int(r['cap_low'])}-{int(r['cap_high'])}" if pd.notna(r.get("cap_low")) else ""
            note = "censored (at least)" if r.get("censored") else ("" if r.get("determined") else "uncertain")
            print(
                f"  {aud + '/all':22s} {level:10s} {int(r['cap']):>8d} {rng:>7s} {raw_cap!s:>12s} "
                f"{true_cap(gt, aud, level, floor):>10d}  {note}"
            )
    print("\n'true (raw n)' is the simulator's curve by raw 28-day count (what the data shows and serving caps);")
    print("'fresh g(n)' is its curve for back-to-back exposures, which spread-out delivery never reaches.")

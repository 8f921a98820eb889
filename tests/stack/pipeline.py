"""The operator's session the stack tests replay: simulate a world, trigger the features DAG over REST, let the
scheduler chain training and publish through their Assets, send traffic, run monitoring, retrain, backfill.

`run_pipeline` returns what each step observed, read through the REST API and the artifacts.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyarrow.parquet as pq
from mlflow import MlflowClient

from freqcap.adapters.airflow.rest import AirflowRest
from freqcap.adapters.simulation_files import simulate_to_dir
from freqcap.config import SimulationConfig
from freqcap.layout import DataLayout

FEATURES, TRAINING, PUBLISH, MONITORING = (
    "freqcap_features",
    "freqcap_training",
    "freqcap_publish",
    "freqcap_monitoring",
)
DAGS = (FEATURES, TRAINING, PUBLISH, MONITORING)
# Daily retention; left paused by the pipeline (it would prune what the run just wrote only past its horizons).
MAINTENANCE = "freqcap_maintenance"
USERS, DAYS = 2_500, 14
REGISTERED_MODEL = "freqcap-conversion"  # resources/models/conversion.yaml


@dataclass
class Observed:
    """What the session saw; the tests assert on it."""

    today: datetime
    runs: dict[str, list[Any]] = field(default_factory=dict)  # dag_id -> finished runs, in order
    tasks: dict[str, dict[str, str]] = field(default_factory=dict)  # run id -> task states
    failures: dict[str, dict[str, str]] = field(default_factory=dict)  # run id -> failed task -> its log's end
    upstream: dict[str, list[tuple]] = field(default_factory=dict)  # run id -> (asset, source DAG, source run)
    serving_policy_after_publish: dict[str, Any] | None = None
    champion_after_publish: Any = None  # the registry's champion version when publish finished
    backfill: Any = None
    backfill_runs: list[Any] = field(default_factory=list)
    decisions_sent: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def _finish(client: AirflowRest, seen: Observed, dag_id: str, run_id: str, timeout: float = 900) -> Any:
    run = client.wait(dag_id, run_id, timeout=timeout)
    seen.runs.setdefault(dag_id, []).append(run)
    seen.tasks[run_id] = client.task_states(dag_id, run_id)
    if run.state.value != "success":
        seen.failures[run_id] = client.failures(dag_id, run_id)
    return run


def _send_decisions(stack, today: datetime, n: int = 400) -> int:
    """Decision requests as an ad server would send them (users and ads of the simulated world)."""
    layout = DataLayout.of(stack.job_settings())
    users = pq.read_table(layout.raw_dir / "users.parquet", columns=["user_id"]).column(0).to_pylist()
    ads = pq.read_table(layout.raw_dir / "ads.parquet", columns=["ad_id", "campaign_id", "advertiser_id"]).to_pylist()
    rng = random.Random(7)
    # Stamped inside the hour the next scheduled monitoring run looks at (it ends at the last full hour).
    now = (datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(minutes=10)).isoformat()
    with httpx.Client(base_url=stack.serving_url, timeout=5) as http:
        for _ in range(n):
            body = {
                "user_id": rng.choice(users),
                "context": {"format": rng.choice(["feed", "stories", "reels"]), "ts": now},
                "candidates": rng.sample(ads, 5),
            }
            http.post("/v1/decide", json=body).raise_for_status()
    return n


def run_pipeline(stack) -> Observed:
    t0 = time.monotonic()
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    seen = Observed(today=today)
    layout = DataLayout.of(stack.job_settings())
    start = (today - timedelta(days=DAYS)).isoformat()
    simulate_to_dir(layout.raw_dir, SimulationConfig(users=USERS, days=DAYS, seed=11, start=start))
    seen.timings["simulate"] = time.monotonic() - t0

    client = AirflowRest.connect(stack.airflow_url, "admin", stack.admin_password)
    client.wait_for_dags([*DAGS, MAINTENANCE])
    # Consumers first: an Asset event that reaches a paused DAG does not queue a run for later.
    for dag_id in (TRAINING, PUBLISH):
        client.set_paused(dag_id, False)

    # 1. features, triggered as an operator would, for today's @daily interval. Triggered while still paused: the
    # scheduler then finds today's run already there instead of racing the trigger to create it.
    t = time.monotonic()
    run_id = client.trigger(FEATURES, logical_date=today)
    client.set_paused(FEATURES, False)
    _finish(client, seen, FEATURES, run_id)
    seen.timings["features"] = time.monotonic() - t

    # 2. training follows on the features' Asset, 3. publish on training's.
    t = time.monotonic()
    training = client.wait_for_run(TRAINING, after=set())
    _finish(client, seen, TRAINING, training.dag_run_id)
    seen.upstream[training.dag_run_id] = client.triggered_by(TRAINING, training.dag_run_id)
    seen.timings["training"] = time.monotonic() - t
    t = time.monotonic()
    publish = client.wait_for_run(PUBLISH, after=set())
    _finish(client, seen, PUBLISH, publish.dag_run_id)
    seen.upstream[publish.dag_run_id] = client.triggered_by(PUBLISH, publish.dag_run_id)
    seen.timings["publish"] = time.monotonic() - t
    seen.serving_policy_after_publish = httpx.get(f"{stack.serving_url}/v1/policy", timeout=5).json()
    registry = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    seen.champion_after_publish = registry.get_model_version_by_alias(REGISTERED_MODEL, "champion")
    client.set_paused(PUBLISH, True)  # later proposals stay proposals: serving keeps the published one

    # 4. traffic, then the hourly monitoring run (unpausing schedules the latest hour).
    seen.decisions_sent = _send_decisions(stack, today)
    time.sleep(2.0)  # the decision log flushes every second
    t = time.monotonic()
    client.set_paused(MONITORING, False)
    monitoring = client.wait_for_run(MONITORING, after=set())
    _finish(client, seen, MONITORING, monitoring.dag_run_id)
    client.set_paused(MONITORING, True)
    seen.timings["monitoring"] = time.monotonic() - t

    # 5. a second training run (drift may have scheduled one already; else an ML engineer triggers it).
    t = time.monotonic()
    done = {r.dag_run_id for r in seen.runs[TRAINING]}
    pending = [r for r in client.runs(TRAINING) if r.dag_run_id not in done]
    second = pending[0].dag_run_id if pending else client.trigger(TRAINING)
    _finish(client, seen, TRAINING, second)
    client.set_paused(TRAINING, True)  # the backfill's Asset events must not retrain
    seen.timings["second training"] = time.monotonic() - t

    # 6. Airflow's backfill of the features DAG over the three days before today.
    t = time.monotonic()
    backfill_id = client.backfill(FEATURES, today - timedelta(days=3), today - timedelta(days=1))
    seen.backfill = client.wait_backfill(backfill_id)
    seen.backfill_runs = client.runs(FEATURES, run_type=["backfill"])
    for run in seen.backfill_runs:
        seen.tasks[run.dag_run_id] = client.task_states(FEATURES, run.dag_run_id)
    seen.timings["backfill"] = time.monotonic() - t
    seen.timings["total"] = time.monotonic() - t0
    return seen

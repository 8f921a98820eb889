"""Drift acceptance on simulated worlds, through the monitoring job functions with real Evidently and a real
XGBoost model: an injected audience-mix shift raises the drift alarm (once, asking for retraining), an unshifted
world raises nothing. Drift scores are checked against their definitions computed here with numpy.

Worlds: 2,000 users × 3 days each — the reference (seed 1), an unshifted world and a shifted one (seed 2). At
this size an unshifted world's columns stay below the drift thresholds (checked on 5 seed pairs while choosing
them: the largest unshifted exposure-count score was 0.16 against the 0.2 threshold)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.mlflow.champion import Scorer
from freqcap.config import load_settings
from freqcap.jobs.monitoring import alarms_job, collect_job, drift_job, drift_signal, publish_job
from tests.unit.domain.monitoring.helpers import simulate_world, write_reference

pytestmark = pytest.mark.slow
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
FEATURES = ("hour_of_day", "n_advertiser", "n_campaign", "n_ad")
CATEGORIES = {
    "audience": ("high_intent", "returning", "cold"),
    "format": ("feed", "stories", "reels", "search", "video"),
}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift-worlds")
    return {
        "tmp": tmp,
        "reference": simulate_world(tmp / "reference", seed=1),
        "plain": simulate_world(tmp / "plain", seed=2),
        "shifted": simulate_world(tmp / "shifted", seed=2, shifted=True),
    }


def _encode(rows: pd.DataFrame) -> np.ndarray:
    cols = [pd.Categorical(rows[c], categories=v).codes for c, v in CATEGORIES.items()]
    return np.column_stack([*cols, *(rows[c].to_numpy(dtype=float) for c in FEATURES)]).astype(np.float32)


@pytest.fixture(scope="module")
def scorer(worlds):
    """A real XGBoost model of the simulator's true conversion probability, trained on the reference rows."""
    import xgboost as xgb

    reference = pq.read_table(_reference_rows(worlds)).to_pandas()
    truth = pq.read_table(worlds["tmp"] / "reference" / "truth" / "impressions.parquet", columns=["event_id", "p_conv"])
    frame = reference.merge(truth.to_pandas(), on="event_id")
    assert len(frame) == len(reference)
    booster = xgb.train(
        {"objective": "reg:squarederror", "max_depth": 4, "eta": 0.3, "nthread": 1, "seed": 1},
        xgb.DMatrix(_encode(frame), label=frame["p_conv"].to_numpy()),
        num_boost_round=30,
    )
    return Scorer(
        "xgboost on the simulator's truth", (*CATEGORIES, *FEATURES), lambda r: booster.inplace_predict(_encode(r))
    )


def _reference_rows(worlds):
    settings = load_settings(environ={"FREQCAP__DATA_DIR": str(worlds["tmp"] / "ref-data")})
    events, users, end = worlds["reference"]
    return write_reference(settings, events, users, end)


def _settings(tmp_path, worlds):
    settings = load_settings(environ={"FREQCAP__DATA_DIR": str(tmp_path / "data")})
    events, users, end = worlds["reference"]
    write_reference(settings, events, users, end)  # found as the newest training set under the data dir
    return settings


def _run(settings, world, as_of, scorer, checks=None):
    events, users, _ = world
    collected = collect_job({"as_of": as_of.isoformat(), "events_dir": str(events), "users": str(users)}, settings)
    drifted = drift_job(collected, settings, scorer=scorer)
    if checks:
        checks(drifted)
    alarms = alarms_job(collected, drifted, settings)
    published = publish_job(collected, drifted, alarms, settings)
    return drifted, alarms, published


def _js_distance(p: pd.Series, q: pd.Series) -> float:
    """Jensen-Shannon distance (natural log) of two categorical samples, from its definition."""
    keys = sorted(set(p) | set(q))
    a = np.array([(p == k).mean() for k in keys])
    b = np.array([(q == k).mean() for k in keys])
    m = (a + b) / 2

    def kl(x, y):
        mask = x > 0
        return float(np.sum(x[mask] * np.log(x[mask] / y[mask])))

    return float(np.sqrt((kl(a, m) + kl(b, m)) / 2))


def _wasserstein_normed(ref: pd.Series, cur: pd.Series) -> float:
    """W1 between the two empirical distributions (area between the CDFs), divided by the reference's std."""
    x, y = np.sort(ref.to_numpy(float)), np.sort(cur.to_numpy(float))
    grid = np.unique(np.concatenate([x, y]))
    fx = np.searchsorted(x, grid[:-1], side="right") / len(x)
    fy = np.searchsorted(y, grid[:-1], side="right") / len(y)
    return float(np.sum(np.abs(fx - fy) * np.diff(grid)) / max(np.std(ref.to_numpy(float)), 1e-3))


def _snapshot(published) -> dict:
    """The stored snapshot, read back from the workspace's files (as `evidently ui` reads it)."""
    root = Path(published["workspace"]) / published["project_id"] / "snapshots"
    return json.loads((root / f"{published['snapshot_id']}.json").read_text())


def _results(snapshot: dict, metric_type: str) -> list[dict]:
    return [
        r
        for r in snapshot["metric_results"].values()
        if r["metric_value_location"]["metric"]["params"]["type"].endswith(f":{metric_type}")
    ]


def _ui_series(published, selectors) -> dict[tuple[str, str], list]:
    """(metric, segment/label) -> values over the runs, as the Evidently UI's storage answers a dashboard panel."""
    import asyncio
    import uuid

    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local.base import InMemoryDataStorage

    storage = InMemoryDataStorage(published["workspace"])
    out = {}
    for metric, labels in selectors:
        flt = SeriesFilter(tags=[], metadata={}, metric=f"evidently:metric_v2:{metric}", metric_labels=labels)
        answer = asyncio.run(storage.get_data_series(uuid.UUID(published["project_id"]), [flt], None, None))
        for s in answer.series:
            out[(metric, s.params.get("segment") or s.params.get("value_type"))] = s.values
    return out


def _freqcap_values(snapshot: dict) -> dict[tuple[str, str], float]:
    out = {}
    for result in snapshot["metric_results"].values():
        params = result["metric_value_location"]["metric"]["params"]
        if params["type"].endswith(":FreqcapValue"):
            out[(params["name"], params["segment"])] = result["value"]
    return out


def test_shifted_audience_mix_raises_the_drift_alarm_once(tmp_path, worlds, scorer):
    settings = _settings(tmp_path, worlds)
    end = worlds["shifted"][2]

    def independent(drifted):
        assert drifted["computed"], drifted["notes"]
        cur, ref = pd.read_parquet(drifted["current_sample"]), pd.read_parquet(drifted["reference_sample"])
        scores = {c["column"]: c for c in drifted["drift"]["columns"]}
        assert scores["audience"]["score"] == pytest.approx(_js_distance(ref["audience"], cur["audience"]), rel=1e-9)
        assert scores["n_ad"]["score"] == pytest.approx(_wasserstein_normed(ref["n_ad"], cur["n_ad"]), rel=1e-9)
        pred = drifted["drift"]["prediction"]
        assert pred["score"] == pytest.approx(_wasserstein_normed(ref["prediction"], cur["prediction"]), rel=1e-9)

    drifted, alarms, published = _run(settings, worlds["shifted"], end, scorer, independent)
    drift = drifted["drift"]
    assert "audience" in drift["drifted_columns"] and "format" not in drift["drifted_columns"]
    assert drift["drifted_share"] > 0.25 and drift["prediction"]["drifted"]
    assert {i["rule"] for i in alarms["fired"]} == {"feature_drift", "prediction_drift"}
    assert alarms["retrain"] and drift_signal(alarms)["incidents"]

    snapshot = _snapshot(published)
    assert "alarm:feature_drift" in snapshot["tags"] and snapshot["metadata"]["alarms_fired"] != "none"
    values = _freqcap_values(snapshot)
    assert values[("drift_share", "all")] == pytest.approx(drift["drifted_share"])
    assert (
        values[("alarm_open", "rule=feature_drift")] == 1.0 and values[("alarm_open", "rule=serving_fail_open")] == 0.0
    )
    # The snapshot's own drift (recomputed from the same samples) equals what the alarm judged.
    (count,) = _results(snapshot, "DriftedColumnsCount")
    assert count["count"]["value"] == drift["drifted_count"]
    assert count["share"]["value"] == pytest.approx(drift["drifted_share"])

    # An hour later the world is still shifted: the incident stays open, nothing fires, training is not re-asked.
    _, later, published2 = _run(settings, worlds["shifted"], end + timedelta(hours=1), scorer)
    assert later["fired"] == [] and not later["retrain"] and drift_signal(later) is None
    assert {i["rule"]: i["opened_at"] for i in later["open"]}["feature_drift"] == end.isoformat()
    assert published2["project_id"] == published["project_id"]
    assert (
        len(
            list(
                (tmp_path / "data" / "monitoring" / "workspace" / published["project_id"] / "snapshots").glob("*.json")
            )
        )
        == 2
    )
    # What `make ui` (evidently ui) serves: the dashboard's series, read by Evidently's own UI storage.
    series = _ui_series(
        published, [("DriftedColumnsCount", {"value_type": "share"}), ("FreqcapValue", {"name": "alarm_open"})]
    )
    assert series[("DriftedColumnsCount", "share")] == [pytest.approx(drift["drifted_share"])] * 2
    assert series[("FreqcapValue", "rule=feature_drift")] == [1.0, 1.0]
    assert series[("FreqcapValue", "rule=serving_fail_open")] == [0.0, 0.0]
    history = [
        (e["event"], e["rule"])
        for e in map(json.loads, (tmp_path / "data" / "monitoring" / "alarms.jsonl").read_text().splitlines())
    ]
    assert sorted(history) == [("fired", "feature_drift"), ("fired", "prediction_drift")]


def test_unshifted_world_raises_nothing(tmp_path, worlds, scorer):
    settings = _settings(tmp_path, worlds)
    drifted, alarms, _ = _run(settings, worlds["plain"], worlds["plain"][2], scorer)
    drift = drifted["drift"]
    assert drift["drifted_columns"] == [] and drift["drifted_share"] == 0.0
    assert not drift["prediction"]["drifted"]
    assert alarms["fired"] == [] and alarms["open"] == [] and drift_signal(alarms) is None
    page = (tmp_path / "data" / "monitoring" / "oncall.html").read_text()
    assert 'data-state="ok"' in page and "No open alarms." in page

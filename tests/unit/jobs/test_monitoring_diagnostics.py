"""The fairness audit and the signal-fragmentation diagnostic on simulated worlds, through the monitoring jobs
(collect → alarms → the page's sections), each on a world built to trigger it and one built not to; the numbers are
checked against brute-force loops over the raw events written here (not the jobs' DuckDB queries or pandas).

Worlds: 2,000 users × 7 days, seed 5. `fragmented`: the top advertiser's first campaign runs 24 equally weighted
ads (`ModelParams.fragmented_campaign_ads`); `single`: every campaign runs one ad (`max_ads_per_campaign=1`).
Learning threshold scaled to this world: 20 conversions per creative and week (the fragmented campaign converts
~46 times a week: ~2 per creative split 24 ways, enough for 2 creatives consolidated).

Curves for the fairness audit: the simulator's true caps (ground truth, floor 0.5) per audience × level in the
caps-table format a curves fit writes — what a perfect fit would give. Policy `fair` caps every cohort at its
curve's cap; `unfair` caps `high_intent` at the campaign level at 1 (far below its curve) and lets `cold` see
10× its curve's cap at the advertiser level."""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.config import SimulationConfig, load_settings
from freqcap.domain.events import AUDIENCES, LEVELS, SIGNAL_TIERS
from freqcap.domain.monitoring.page import render_page
from freqcap.domain.simulate.params import ModelParams
from freqcap.domain.simulate.truth import true_cap
from freqcap.jobs.monitoring import alarms_job, collect_job, drift_job, page_context, paging_job
from freqcap.layout import parse_as_of
from tests.unit.jobs.webhook_receiver import Receiver

WEEK = 7 * 86_400
THRESHOLD = 20.0
W28 = 28 * 86_400


def _world(out: Path, **params):
    s = simulate_to_dir(out, SimulationConfig(users=2000, days=7, seed=5), params=ModelParams(**params))
    return s.events_dir, s.users_path, parse_as_of(load_ground_truth(out)["window"]["end"]), load_ground_truth(out)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diagnostics")
    return {
        "tmp": tmp,
        "fragmented": _world(tmp / "fragmented", fragmented_campaign_ads=24),
        "single": _world(tmp / "single", max_ads_per_campaign=1),
    }


def _settings(tmp: Path, **extra: str):
    env = {
        "FREQCAP__DATA_DIR": str(tmp / "data"),
        "FREQCAP__MONITORING__FRAGMENTATION__LEARNING_CONVERSIONS_PER_WEEK": str(THRESHOLD),
        "FREQCAP__MONITORING__FRAGMENTATION__MAX_CAMPAIGNS_SHOWN": "10000",
        **extra,
    }
    return load_settings(environ=env)


def _raw(events_dir: Path) -> pd.DataFrame:
    return pq.read_table(events_dir).to_pandas()


def _collect(settings, events_dir, users, end):
    inputs = {"as_of": end.isoformat(), "events_dir": str(events_dir), "users": str(users)}
    collected = collect_job(inputs, settings)
    alarms = alarms_job(collected, drift_job(collected, settings), settings)
    return collected, json.loads(Path(collected["metrics_path"]).read_text()), alarms


# ------------------------------------------------------------------------------------------- fragmentation


def _brute_fragmentation(events: pd.DataFrame, end) -> dict[str, dict]:
    """Per campaign from the raw events, with plain loops: creatives, weekly conversions, share below, HHI."""
    lo = end - timedelta(days=7)
    seen: set[str] = set()
    imps: dict[tuple[str, str], int] = defaultdict(int)
    convs: dict[tuple[str, str], int] = defaultdict(int)
    for e in events.itertuples(index=False):
        if e.event_id in seen or not (lo < e.event_ts.to_pydatetime() <= end):
            continue
        seen.add(e.event_id)
        if e.event_type == "impression":
            imps[(e.campaign_id, e.ad_id)] += 1
        elif e.event_type == "conversion":
            convs[(e.campaign_id, e.ad_id)] += 1
    out: dict[str, dict] = {}
    for key in set(imps) | set(convs):
        c = out.setdefault(key[0], {"ads": [], "imps": [], "convs": []})
        c["ads"].append(key[1])
        c["imps"].append(imps[key])
        c["convs"].append(convs[key])
    for c in out.values():
        total = sum(c["imps"])
        c["creatives"] = len(c["ads"])
        c["per_week"] = sum(c["convs"])  # the window is a week
        c["per_creative"] = dict(zip(c["ads"], c["convs"], strict=True))
        c["below"] = sum(1 for x in c["convs"] if x < THRESHOLD)
        c["hhi"] = sum((x / total) ** 2 for x in c["imps"])
        n_target = max(1, int(c["per_week"] // THRESHOLD))
        c["consolidate"] = (
            c["per_week"] >= THRESHOLD and c["creatives"] > n_target and c["below"] / c["creatives"] >= 0.5
        )
        c["target"] = n_target
    return out


def test_fragmentation_flags_the_campaign_split_over_many_creatives(worlds):
    events_dir, users, end, _ = worlds["fragmented"]
    settings = _settings(worlds["tmp"] / "frag")
    _, metrics, _ = _collect(settings, events_dir, users, end)
    raw = _raw(events_dir)
    truth = _brute_fragmentation(raw, end)
    ads = pq.read_table(Path(events_dir).parent / "ads.parquet").to_pandas()
    split = ads.groupby("campaign_id").size().idxmax()
    assert ads.groupby("campaign_id").size().max() == 24

    frag = metrics["fragmentation"]
    shown = {c["campaign_id"]: c for c in frag["shown"]}
    assert set(shown) == set(truth) and frag["campaigns"] == len(truth)
    for cid, t in truth.items():
        got = shown[cid]
        assert got["creatives"] == t["creatives"], cid
        assert got["conversions_per_week"] == pytest.approx(t["per_week"]), cid
        assert got["creatives_below"] == t["below"], cid
        assert got["hhi"] == pytest.approx(t["hhi"], rel=1e-12), cid
        assert got["per_creative"] == pytest.approx(t["per_creative"]), cid
        assert got["max_per_creative"] == max(t["convs"]), cid
        assert (got["recommendation"] == "consolidate") == t["consolidate"], cid
    s = truth[split]
    assert s["creatives"] == 24 and s["consolidate"] and s["hhi"] < 0.06  # ~1/24: delivery split evenly
    assert shown[split]["recommendation"] == "consolidate" and shown[split]["target_creatives"] == s["target"]
    assert frag["to_consolidate"] == sum(t["consolidate"] for t in truth.values())
    rows = {(r["name"], r["segment"]): r["value"] for r in metrics["rows"]}
    assert rows[("creatives_below_learning_share", f"campaign={split}")] == pytest.approx(s["below"] / 24)
    html = render_page(page_context(settings, metrics, {}, {"open": []}, {}))
    assert f'data-campaign="{split}" data-recommendation="consolidate"' in html


def test_fragmentation_stays_quiet_when_every_campaign_runs_one_creative(worlds):
    events_dir, users, end, _ = worlds["single"]
    settings = _settings(worlds["tmp"] / "single")
    _, metrics, _ = _collect(settings, events_dir, users, end)
    truth = _brute_fragmentation(_raw(events_dir), end)
    frag = metrics["fragmentation"]
    assert all(t["creatives"] == 1 for t in truth.values())
    assert frag["to_consolidate"] == 0 and frag["campaigns"] == len(truth)
    assert all(c["hhi"] == 1.0 and c["recommendation"] != "consolidate" for c in frag["shown"])
    rows = {(r["name"], r["segment"]): r["value"] for r in metrics["rows"]}
    assert rows[("campaigns_to_consolidate", "all")] == 0.0


# ---------------------------------------------------------------------------------------------- fairness


def _caps_table(path: Path, gt: dict) -> Path:
    rows = []
    for a in AUDIENCES:
        for t in SIGNAL_TIERS:
            for lv in LEVELS:
                cap = true_cap(gt, a, lv)
                rows.append({"cohort": f"{a}/{t}", "level": lv, "cap": cap, "cap_low": cap - 1, "cap_high": cap + 1,
                             "censored": False, "fallback": "none", "window": "28d", "support": 1000, "kind": "cohort"})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _policy(path: Path, gt: dict, unfair: bool) -> Path:
    rules = []
    for a in AUDIENCES:
        for lv in LEVELS:
            cap = true_cap(gt, a, lv)
            if unfair and (a, lv) == ("high_intent", "campaign"):
                cap = 1
            if unfair and (a, lv) == ("cold", "advertiser"):
                cap = 10 * cap
            rules.append({"match": {"audience": a}, "level": lv, "caps": [{"window": "28d", "max": cap}]})
    doc = {
        "version": "unfair" if unfair else "fair",
        "created_at": "2026-10-01T00:00:00Z",
        "defaults": [],
        "rules": rules,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def _brute_peaks(events: pd.DataFrame, users: pd.DataFrame, start, end, level: str) -> dict[tuple[str, str], list[int]]:
    """cohort -> per (user, entity) pair with an impression in (start, end]: the peak count over (t − 28d, t]."""
    audience = dict(zip(users["user_id"], users["audience"], strict=True))
    ev = events.drop_duplicates("event_id")
    lookback = start - timedelta(days=28)
    tier: dict[str, str] = {}
    for e in ev.itertuples(index=False):
        ts = e.event_ts.to_pydatetime()
        if not (lookback < ts <= start) or e.event_type not in ("click", "conversion"):
            continue
        if e.event_type == "conversion" or tier.get(e.user_id) != "converter":  # a click never demotes a converter
            tier[e.user_id] = "converter" if e.event_type == "conversion" else "engaged"
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in ev[ev["event_type"] == "impression"].itertuples(index=False):
        times[(e.user_id, getattr(e, f"{level}_id"))].append(e.event_ts.timestamp())
    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    s, t_end = start.timestamp(), end.timestamp()
    for (user, _), ts in times.items():
        ts.sort()
        peak = 0
        for i, t in enumerate(ts):
            if s < t <= t_end:
                peak = max(peak, i + 1 - bisect.bisect_right(ts, t - W28))
        if peak:
            out[(audience.get(user, "unknown"), tier.get(user, "impression_only"))].append(peak)
    return out


@pytest.fixture(scope="module")
def brute_peaks(worlds):
    """level -> cohort -> peaks, over the last 24 h of the fragmented world (the same for every policy)."""
    events_dir, users, end, _ = worlds["fragmented"]
    raw, user_table = _raw(events_dir), pq.read_table(users).to_pandas()
    return {lv: _brute_peaks(raw, user_table, end - timedelta(hours=24), end, lv) for lv in LEVELS}


@pytest.mark.parametrize("unfair", [True, False], ids=["unfair", "fair"])
def test_fairness_alarm_names_the_cohorts_whose_cap_is_far_from_their_curve(worlds, brute_peaks, unfair):
    events_dir, users, end, gt = worlds["fragmented"]
    tmp = worlds["tmp"] / ("unfair" if unfair else "fair")
    tmp.mkdir()
    caps = _caps_table(tmp / "curves" / "caps.parquet", gt)
    chat = Receiver().start()
    hooks = [{"name": "chat", "url": chat.url("hook"), "format": "slack", "min_severity": "warn"}]
    settings = _settings(
        tmp,
        FREQCAP__MONITORING__FAIRNESS__CURVES_PATH=str(caps),
        FREQCAP__MONITORING__POLICY_PATH=str(_policy(tmp / "policy.yaml", gt, unfair)),
        FREQCAP__MONITORING__WINDOW="24h",
        FREQCAP__PRIVACY__ENABLED="false",  # raw ids in, so the brute force can join users by their own ids
        FREQCAP__MONITORING__PAGING__RECEIVERS=json.dumps(hooks),
    )
    collected, metrics, alarms = _collect(settings, events_dir, users, end)
    try:
        paging_job(collected, alarms, settings)
    finally:
        chat.stop()
    paged = sorted(line for b in chat.bodies for line in b["text"].splitlines() if "cohort_" in line)
    fired = sorted((i["rule"], i["segment"]) for i in alarms["fired"] if i["rule"].startswith("cohort_"))
    if unfair:
        expected = [("cohort_overcapped", f"cohort=cold/{t},level=advertiser") for t in SIGNAL_TIERS]
        expected += [("cohort_suppressed", f"cohort=high_intent/{t},level=campaign") for t in SIGNAL_TIERS]
        assert fired == sorted(expected)
        assert len(paged) == 2 + 6  # two messages (one per rule), one line per cohort
        for rule, segment in expected:
            assert any(f"{rule} [{segment}] cap_to_curve_ratio=" in line for line in paged), (rule, segment)
    else:
        assert fired == [] and paged == []

    audit = {(r["cohort"], r["level"]): r for r in metrics["fairness"]["cohorts"]}
    assert len(audit) == len(AUDIENCES) * len(SIGNAL_TIERS) * len(LEVELS)
    for level in LEVELS:
        peaks = brute_peaks[level]
        for (a, t), values in peaks.items():
            row = audit[(f"{a}/{t}", level)]
            curve = true_cap(gt, a, level)
            assert row["curve_cap"] == curve
            assert row["pairs"] == len(values), (a, t, level)
            assert row["mean_frequency"] == pytest.approx(sum(values) / len(values))
            assert row["beyond_curve_share"] == pytest.approx(sum(v > curve for v in values) / len(values))
            assert row["at_cap_share"] == pytest.approx(sum(v >= row["policy_cap"] for v in values) / len(values))
    suppressed = audit[("high_intent/engaged", "campaign")]
    assert suppressed["policy_cap"] == (1 if unfair else true_cap(gt, "high_intent", "campaign"))
    html = render_page(page_context(settings, metrics, {}, alarms, {}))
    verdict = "suppressed" if unfair else "ok"
    assert f'data-cohort="high_intent/engaged" data-level="campaign" data-verdict="{verdict}"' in html

"""Realized vs configured frequency against a loop over the raw events with the caps written out by hand."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.duckdb.impressions import impression_counts
from freqcap.adapters.events_files import write_events
from freqcap.domain.monitoring.frequency import cap_windows, realized_frequency
from freqcap.domain.policy import parse_policy
from tests.unit.domain.monitoring.helpers import T0

H, D = 3600, 86400
ADS = {f"a{i}": (f"c{i // 2}", f"v{i // 4}") for i in range(6)}  # ad -> (campaign, advertiser)
AUDIENCE = {f"u{i}": ("cold", "returning", "high_intent")[i % 3] for i in range(8)}
LOOKBACK = 28 * D
POLICY = parse_policy(
    {
        "version": "f1",
        "created_at": "2026-10-01T00:00:00Z",
        "defaults": [
            {"level": "advertiser", "caps": [{"window": "7d", "max": 25}]},
            {"level": "campaign", "caps": [{"window": "24h", "max": 4}]},
            {"level": "ad", "caps": [{"window": "1h", "max": 1}, {"window": "7d", "max": 8}]},
        ],
        "rules": [
            {"match": {"audience": "cold"}, "level": "ad", "caps": [{"window": "24h", "max": 2}]},
            {"match": {"signal_tier": "converter"}, "level": "campaign", "caps": [{"window": "7d", "max": 6}]},
        ],
    }
)


def expected_caps(audience: str, tier: str, level: str) -> list[tuple[int, int]]:
    """The caps POLICY applies, written out by hand: (window seconds, max)."""
    if level == "ad":
        return [(D, 2)] if audience == "cold" else [(H, 1), (7 * D, 8)]
    if level == "campaign":
        return [(7 * D, 6)] if tier == "converter" else [(D, 4)]
    return [(7 * D, 25)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("freq")
    rng = random.Random(11)
    events = []
    for i in range(700):
        ad = rng.choice(list(ADS)[: 2 + i % 5])  # uneven: a0/a1 are shown most
        user = rng.choice(list(AUDIENCE)[: 3 + i % 6])
        ts = T0 - timedelta(days=9) + timedelta(seconds=rng.randrange(9 * D + 2 * H))
        kind = rng.choices(["impression", "click", "conversion"], [0.85, 0.1, 0.05])[0]
        events.append((f"e{i}", kind, ts, user, ad))
    events += [(e[0], *e[1:]) for e in events[:40]]  # re-delivered duplicates: counted once
    table = pa.table(
        {
            "event_id": [e[0] for e in events],
            "event_type": [e[1] for e in events],
            "event_ts": pa.array([e[2] for e in events], pa.timestamp("us", tz="UTC")),
            "user_id": [e[3] for e in events],
            "advertiser_id": [ADS[e[4]][1] for e in events],
            "campaign_id": [ADS[e[4]][0] for e in events],
            "ad_id": [e[4] for e in events],
            "format": ["feed"] * len(events),
            "conversion_value": [None] * len(events),
        }
    )
    write_events(table, tmp / "events" / "part-0.parquet")
    users = pa.table({"user_id": list(AUDIENCE), "audience": list(AUDIENCE.values())})
    pq.write_table(users, tmp / "users.parquet")
    unique = {e[0]: e for e in events}.values()
    return tmp, sorted(unique, key=lambda e: e[2])


def test_realized_frequency_equals_brute_force(world):
    tmp, events = world
    start, end = T0 - timedelta(hours=20), T0 + timedelta(hours=2)
    imps = impression_counts(tmp / "events", tmp / "users.parquet", start, end, cap_windows(POLICY), LOOKBACK)
    rows, table = realized_frequency(imps, POLICY)
    got = {(r.name, r.segment): r for r in rows}

    def tier(user):
        kinds = {e[1] for e in events if e[3] == user and start - timedelta(seconds=LOOKBACK) < e[2] <= start}
        return "converter" if "conversion" in kinds else "engaged" if "click" in kinds else "impression_only"

    impressions = [e for e in events if e[1] == "impression"]
    in_window = [e for e in impressions if start < e[2] <= end]
    assert len(imps) == len(in_window) > 50
    # every rule of the policy applies to someone in the window
    assert "converter" in {tier(e[3]) for e in in_window} and "cold" in {AUDIENCE[e[3]] for e in in_window}
    entity = {"ad": lambda e: e[4], "campaign": lambda e: ADS[e[4]][0], "advertiser": lambda e: ADS[e[4]][1]}
    beyond_any = defaultdict(bool)
    for level, key in entity.items():
        beyond, peaks = 0, defaultdict(float)
        for e in in_window:
            aud, t = AUDIENCE[e[3]], tier(e[3])
            over, ratio = False, 0.0
            for window, cap in expected_caps(aud, t, level):
                n = sum(
                    1
                    for o in impressions
                    if o[3] == e[3] and key(o) == key(e) and e[2] - timedelta(seconds=window) < o[2] <= e[2]
                )
                over |= n > cap
                ratio = max(ratio, n / cap)
            beyond += over
            beyond_any[e[0]] |= over
            peaks[(e[3], key(e))] = max(peaks[(e[3], key(e))], ratio)
        assert got[("beyond_cap_share", f"level={level}")].value == pytest.approx(beyond / len(in_window))
        assert got[("beyond_cap_share", f"level={level}")].support == len(in_window)
        values = np.array(list(peaks.values()))
        for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            assert got[(f"frequency_to_cap_{label}", f"level={level}")].value == pytest.approx(np.quantile(values, q))
        assert got[("frequency_to_cap_max", f"level={level}")].value == pytest.approx(values.max())
        assert table[level]["pairs"] == len(peaks)
    share_all = sum(beyond_any[e[0]] for e in in_window) / len(in_window)
    assert got[("beyond_cap_share", "all")].value == pytest.approx(share_all)
    assert 0 < share_all < 1, "the fixture must put some impressions over a cap and some under"
    for aud in ("cold", "returning", "high_intent"):
        mine = [e for e in in_window if AUDIENCE[e[3]] == aud]
        for t in {tier(e[3]) for e in mine}:
            cohort = [e for e in mine if tier(e[3]) == t]
            want = sum(beyond_any[e[0]] for e in cohort) / len(cohort)
            assert got[("beyond_cap_share", f"cohort={aud}/{t}")].value == pytest.approx(want)


def test_levels_without_caps_are_left_out(world):
    tmp, _ = world
    policy = parse_policy({"version": "f2", "created_at": "2026-10-01T00:00:00Z",
                           "defaults": [{"level": "ad", "caps": [{"window": "24h", "max": 2}]}]})  # fmt: skip
    start, end = T0 - timedelta(hours=20), T0 + timedelta(hours=2)
    imps = impression_counts(tmp / "events", tmp / "users.parquet", start, end, cap_windows(policy), LOOKBACK)
    rows, table = realized_frequency(imps, policy)
    assert set(table) == {"ad"}
    assert {r.segment for r in rows if r.name == "beyond_cap_share" and r.segment.startswith("level=")} == {"level=ad"}


def test_a_policy_without_caps_still_lists_the_window_impressions(world):
    """No cap, no window to count (a tiny world can propose such a policy): the impressions of the window are read,
    nothing is counted, and no level has a realized-frequency row."""
    tmp, events = world
    start, end = T0 - timedelta(hours=20), T0 + timedelta(hours=2)
    imps = impression_counts(tmp / "events", tmp / "users.parquet", start, end, {}, LOOKBACK)
    in_window = [e for e in events if e[1] == "impression" and start < e[2] <= end]
    assert len(imps) == len(in_window) > 50
    assert not [c for c in imps.columns if c.startswith("c_")]  # no count column (`count_column`)

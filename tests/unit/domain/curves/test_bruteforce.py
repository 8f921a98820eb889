"""Brute-force checks on a tiny hand-made event set: n-th impression indexing in the 28-day window, entry,
signal tier at entry, attribution window (last touch), and the estimator's sums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.adapters.duckdb.curve_events import load_event_arrays
from freqcap.adapters.events_files import write_events
from freqcap.domain.curves.estimate import EstimatorParams, GroupedInput, estimate_curves
from freqcap.domain.curves.sequences import (
    LEVEL_NAMES,
    TIER_NAMES,
    last_touch_credit,
    level_sequences,
    signal_tier_codes,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
W = 28 * 86_400 * 10**6
LOOKBACK = 28 * 86_400 * 10**6
ATTR = 7 * 86_400 * 10**6
HIER = {"a1": ("c1", "v1"), "a2": ("c1", "v1"), "a3": ("c2", "v1"), "a4": ("c3", "v2")}


def _events() -> list[dict]:
    rows = []

    def add(kind: str, user: str, day: float, ad: str, value: float | None = None) -> None:
        camp, adv = HIER[ad]
        rows.append(
            {
                "event_id": f"e{len(rows)}",
                "event_type": kind,
                "event_ts": T0 + day * DAY,
                "user_id": user,
                "advertiser_id": adv,
                "campaign_id": camp,
                "ad_id": ad,
                "format": "feed",
                "conversion_value": value,
            }
        )

    # u1: a1 over 45 days (the 28-day window rolls), a2 and a3 of the same advertiser in between
    for d in (0, 1, 2, 3.5, 27.5, 28.5, 29, 40, 41):
        add("impression", "u1", d, "a1")
    for d in (1.5, 2.5, 30):
        add("impression", "u1", d, "a2")
    add("impression", "u1", 2.7, "a3")
    add("click", "u1", 0.5, "a1")
    add("conversion", "u1", 3.6, "a1", 20.0)  # last touch: the a1 impression at day 3.5
    add("conversion", "u1", 29.2, "a2", 30.0)  # a2's last impression before it is day 2.5: 26.7 d > 7 d
    add("conversion", "u1", 41.5, "a1", 25.0)
    # u2: a4 in a burst; converter before its second run
    for d in (0, 0.1, 0.2, 35, 35.1):
        add("impression", "u2", d, "a4")
    add("conversion", "u2", 0.15, "a4", 10.0)  # credited to the day-0.1 impression
    add("conversion", "u2", 10, "a4", 10.0)  # 9.8 days after the last a4 impression: outside the window
    add("click", "u2", 34, "a4")
    # u3: only a click, then one impression 29 days later (click out of the lookback)
    add("click", "u3", 1, "a1")
    add("impression", "u3", 30, "a1")
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("tiny")
    rows = _events()
    write_events(pa.Table.from_pylist(rows), root / "events" / "part-0.parquet")
    pq.write_table(
        pa.table({"user_id": ["u1", "u2", "u3"], "audience": ["cold", "returning", "cold"]}), root / "users.parquet"
    )
    ev, report = load_event_arrays(root / "events", root / "users.parquet")
    return rows, ev, report


def _us(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _brute(rows: list[dict], level: str) -> dict[tuple[str, int], tuple[int, int, str]]:
    """(user, ts) of each impression -> (n in window, entry ts, tier as of the entry)."""
    imps = sorted((r for r in rows if r["event_type"] == "impression"), key=lambda r: (r["user_id"], r["event_ts"]))
    out = {}
    for r in imps:
        t = _us(r["event_ts"])
        same = [
            _us(o["event_ts"])
            for o in imps
            if o["user_id"] == r["user_id"] and o[f"{level}_id"] == r[f"{level}_id"] and 0 <= t - _us(o["event_ts"]) < W
        ]
        entry = min(same)

        def seen(kind: str, entry: int = entry, user: str = r["user_id"]) -> bool:
            return any(
                o["event_type"] == kind and o["user_id"] == user and 0 < entry - _us(o["event_ts"]) < LOOKBACK
                for o in rows
            )

        tier = "converter" if seen("conversion") else "engaged" if seen("click") else "impression_only"
        out[(r["user_id"], t)] = (len(same), entry, tier)
    return out


def _brute_last_touch(rows: list[dict]) -> dict[tuple[str, int], int]:
    credit: dict[tuple[str, int], int] = {}
    imps = [r for r in rows if r["event_type"] == "impression"]
    for c in (r for r in rows if r["event_type"] == "conversion"):
        before = [
            i
            for i in imps
            if i["user_id"] == c["user_id"] and i["ad_id"] == c["ad_id"] and i["event_ts"] <= c["event_ts"]
        ]
        if before:
            last = max(before, key=lambda i: i["event_ts"])
            if _us(c["event_ts"]) - _us(last["event_ts"]) <= ATTR:
                key = (last["user_id"], _us(last["event_ts"]))
                credit[key] = credit.get(key, 0) + 1
    return credit


def test_loaded_arrays_are_sorted_and_complete(tiny) -> None:
    rows, ev, report = tiny
    assert report.rows_read == len(rows) and report.rows_skipped == 0 and report.duplicates_dropped == 0
    assert ev.n_impressions == sum(r["event_type"] == "impression" for r in rows)
    order = np.lexsort((ev.imp_ts, ev.imp_user))
    assert np.array_equal(order, np.arange(ev.n_impressions))
    assert ev.audiences == ("cold", "returning")


@pytest.mark.parametrize("level", LEVEL_NAMES)
def test_window_rank_entry_and_tier_match_brute_force(tiny, level: str) -> None:
    rows, ev, _ = tiny
    users = sorted({r["user_id"] for r in rows})
    tier_imp = signal_tier_codes(ev, ev.imp_user, ev.imp_ts, LOOKBACK)
    seq = level_sequences(ev, level, W, tier_imp, 86_400e6)
    expected = _brute(rows, level)
    got = {
        (users[ev.imp_user[i]], int(ev.imp_ts[i])): (
            int(seq.n[i]),
            int(ev.imp_ts[seq.entry[i]]),
            TIER_NAMES[seq.tier[i]],
        )
        for i in range(ev.n_impressions)
    }
    assert got == expected
    assert max(v[0] for v in got.values()) >= 4  # the window actually rolled: counts fell back


def test_decayed_count_matches_brute_force(tiny) -> None:
    rows, ev, _ = tiny
    h = 86_400e6
    seq = level_sequences(ev, "ad", W, np.zeros(ev.n_impressions, dtype=np.int8), h)
    users = sorted({r["user_id"] for r in rows})
    imps = [r for r in rows if r["event_type"] == "impression"]
    for i in range(ev.n_impressions):
        user, t = users[ev.imp_user[i]], int(ev.imp_ts[i])
        ad = next(r["ad_id"] for r in imps if r["user_id"] == user and _us(r["event_ts"]) == t)
        want = sum(
            2.0 ** (-(t - _us(o["event_ts"])) / h)
            for o in imps
            if o["user_id"] == user and o["ad_id"] == ad and 0 <= t - _us(o["event_ts"]) < W
        )
        assert seq.decayed[i] == pytest.approx(want, rel=1e-9)


def test_last_touch_credit_respects_the_attribution_window(tiny) -> None:
    rows, ev, _ = tiny
    users = sorted({r["user_id"] for r in rows})
    credit = last_touch_credit(ev, ATTR)
    got = {(users[ev.imp_user[i]], int(ev.imp_ts[i])): int(credit.y[i]) for i in np.flatnonzero(credit.y)}
    assert got == _brute_last_touch(rows)
    assert sum(got.values()) == 3  # the two conversions more than 7 days after their last touch get nothing


def test_estimator_sums_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    m = 4000
    user = rng.integers(0, 300, m)
    group = rng.integers(0, 2, m)
    n = rng.integers(1, 6, m)
    y = (rng.random(m) < 0.2).astype(float)
    y_entry = (rng.random(m) < 0.3).astype(float)
    y_entry[n == 1] = y[n == 1]
    est = estimate_curves(
        GroupedInput(user, group, n, y, y_entry, 2), EstimatorParams(min_support=1, min_entry_conversions=0)
    )
    for (g, k), row in est.set_index(["group", "n"]).iterrows():
        sel = (group == g) & (n == k)
        first = (group == g) & (n == 1)
        assert row["support"] == sel.sum()
        assert row["ratio"] == pytest.approx(y[sel].sum() / y_entry[sel].sum())
        assert row["rate"] == pytest.approx(y[first].mean() * y[sel].sum() / y_entry[sel].sum())
        assert row["naive_rate"] == pytest.approx(y[sel].mean())
        assert row["ci_low"] < row["rate"] < row["ci_high"]

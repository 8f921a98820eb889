"""Ground truth by *raw* exposure count: the true marginal conversion curve in the terms the data can show.

`ground_truth.json` declares g(n), the response to n *fresh* (back-to-back) exposures of one level, the others
held at their first exposure. What an estimator can see in the events, and what serving can cap, is the raw
count n = the n-th impression of an entity to a user within a window (28 d), under the real delivery: exposures
spread over days recover (n_eff < n), and the other levels' counts grow along with this one (an ad's 5th
impression is also at least its campaign's 5th). This module computes the curve of that quantity from the
latent per-impression conversion probability `p_conv` (truth/impressions.parquet), so estimators can be checked
like with like.

Definition, for a group G of users (an audience, or audience × signal tier), a level L and n ≥ 1, over the
impressions i with ts ≤ `until`:

- n_i = impressions of i's (user, L-entity) pair in (t_i − window, t_i]; entry(i) = the first of them
  (the (n_i − 1)-th previous impression of the pair).
- signal tier of i at level L = the user's tier as of entry(i): `converter` with a conversion event in
  (t − lookback, t), else `engaged` with a click event there, else `impression_only` (t = entry time).
- `true_ratio(n)` = Σ_{n_i = n} p_i / Σ_{n_i = n} p_entry(i): the conversion probability of the n-th exposure
  relative to the *same pairs'* first exposure (a fixed cohort at each n: no survivorship).
- `true_rate(n)` = first_rate × true_ratio(n), first_rate = mean p over the group's first exposures × the
  probability that a conversion falls within `attribution_window` (the log-normal delay of ground_truth.json),
  i.e. the expected share of n-th impressions with a conversion observable within the attribution window.

Written in SQL (DuckDB window functions and ASOF joins), independently of `freqcap.domain.curves`, which works in numpy.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd

from freqcap.config import parse_duration

if TYPE_CHECKING:  # only a type here: importing the curves package needs scipy, which a serving install lacks
    from freqcap.domain.curves.sequences import EventArrays

_US = 1_000_000


def _lit(text: str | Path) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def delay_cdf(ground_truth: dict, seconds: float) -> float:
    """P(conversion delay ≤ seconds) under the simulator's log-normal delay."""
    d = ground_truth["delays"]["conversion_hours"]
    if seconds <= 0:
        return 0.0
    z = (math.log(seconds / 3600.0) - math.log(d["median"])) / d["log_sigma"]
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def raw_count_truth(
    sim_dir: str | Path,
    *,
    levels: tuple[str, ...] = ("advertiser", "campaign", "ad"),
    window: str = "28d",
    lookback: str = "28d",
    attribution_window: str = "7d",
    until: datetime | None = None,
    max_n: int = 60,
    threads: int = 2,
) -> pd.DataFrame:
    """True curves by raw count for every audience, audience × signal tier and level of a simulated world.

    Returns columns: audience, signal_tier (`*` = all tiers of the audience), level, n, true_ratio, true_rate,
    support (number of n-th impressions), first_rate. `until` limits the impressions (e.g. to those whose
    attribution window is complete: data end − attribution window).
    """
    sim_dir = Path(sim_dir)
    gt = json.loads((sim_dir / "ground_truth.json").read_text())
    w_us = int(parse_duration(window).total_seconds() * _US)
    lb_us = int(parse_duration(lookback).total_seconds() * _US)
    in_window = delay_cdf(gt, parse_duration(attribution_window).total_seconds())
    until_us = None if until is None else int(until.timestamp() * _US)
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {threads}")
        events = f"read_parquet({_lit(sim_dir / 'events' / '**' / '*.parquet')}, hive_partitioning = false)"
        con.execute(
            f"""CREATE TEMP TABLE imp AS
            SELECT e.user_id, e.advertiser_id, e.campaign_id, e.ad_id, epoch_us(e.event_ts) AS ts, t.p_conv,
                   u.audience
            FROM {events} e
            JOIN read_parquet({_lit(sim_dir / "truth" / "impressions.parquet")}) t USING (event_id)
            JOIN read_parquet({_lit(sim_dir / "users.parquet")}) u ON u.user_id = e.user_id
            WHERE e.event_type = 'impression'"""
        )
        for kind in ("click", "conversion"):
            con.execute(
                f"CREATE TEMP TABLE sig_{kind} AS SELECT user_id, epoch_us(event_ts) AS ts FROM {events} "
                f"WHERE event_type = '{kind}'"
            )
        frames = []
        for level in levels:
            frame = f"PARTITION BY user_id, {level}_id ORDER BY ts RANGE BETWEEN {w_us - 1} PRECEDING AND CURRENT ROW"
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE seq AS
                SELECT audience, user_id, ts, p_conv,
                       count(*) OVER w AS n, min(ts) OVER w AS entry_ts, first_value(p_conv) OVER w AS entry_p
                FROM imp WINDOW w AS ({frame})"""
            )
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE tiered AS
                SELECT s.*, CASE
                    WHEN cv.ts IS NOT NULL AND s.entry_ts - cv.ts < {lb_us} THEN 'converter'
                    WHEN ck.ts IS NOT NULL AND s.entry_ts - ck.ts < {lb_us} THEN 'engaged'
                    ELSE 'impression_only' END AS signal_tier
                FROM seq s
                ASOF LEFT JOIN sig_conversion cv ON s.user_id = cv.user_id AND s.entry_ts > cv.ts
                ASOF LEFT JOIN sig_click ck ON s.user_id = ck.user_id AND s.entry_ts > ck.ts"""
            )
            where = f"n <= {max_n}" + ("" if until_us is None else f" AND ts <= {until_us}")
            df = con.execute(
                f"""SELECT audience, signal_tier, n, sum(p_conv) AS p_sum, sum(entry_p) AS entry_sum, count(*) AS support
                FROM tiered WHERE {where} GROUP BY GROUPING SETS ((audience, signal_tier, n), (audience, n))
                """
            ).fetchdf()
            df["signal_tier"] = df["signal_tier"].fillna("*")
            df["level"] = level
            frames.append(df)
    finally:
        con.close()
    out = pd.concat(frames, ignore_index=True)
    out["true_ratio"] = out["p_sum"] / out["entry_sum"]
    first = out[out["n"] == 1].assign(first_rate=lambda d: d["p_sum"] / d["support"] * in_window)
    out = out.merge(first[["audience", "signal_tier", "level", "first_rate"]], on=["audience", "signal_tier", "level"])
    out["true_rate"] = out["first_rate"] * out["true_ratio"]
    out["support"] = out["support"].astype("int64")
    out["n"] = out["n"].astype("int64")
    cols = ["audience", "signal_tier", "level", "n", "true_ratio", "true_rate", "support", "first_rate"]
    return out[cols].sort_values(["level", "audience", "signal_tier", "n"]).reset_index(drop=True)


def causal_credit(sim_dir: str | Path, ev: EventArrays) -> np.ndarray:
    """The simulator's latent causal conversions as a credit, per impression of `ev` (the simulated world's events
    loaded by `freqcap.adapters.duckdb.curve_events.load_event_arrays`, in its order): 1 where the impression caused
    a conversion that arrived by the end of the data (`ev.data_end_us`), else 0. What a perfect attribution would
    credit: a benchmark's oracle beside the EM's estimate (`fit_curves(..., given_credit=...)`).

    `ev`'s order is rebuilt here (users coded by sorted id, then time) and checked against `ev` impression by
    impression; a mismatch (events that are not the simulator's own, e.g. deduplicated or filtered) raises."""
    sim_dir = Path(sim_dir)
    events = f"read_parquet({_lit(sim_dir / 'events' / '**' / '*.parquet')}, hive_partitioning = false)"
    con = duckdb.connect()
    try:
        got = con.execute(
            f"""WITH u AS (SELECT user_id, (row_number() OVER (ORDER BY user_id) - 1)::INTEGER AS code
                           FROM (SELECT DISTINCT user_id FROM {events}))
            SELECT u.code, epoch_us(e.event_ts) AS ts, t.converted, epoch_us(t.conversion_ts) AS conversion_us
            FROM {events} e JOIN u USING (user_id)
            JOIN read_parquet({_lit(sim_dir / "truth" / "impressions.parquet")}) t USING (event_id)
            WHERE e.event_type = 'impression' ORDER BY u.code, ts"""
        ).fetchnumpy()
    finally:
        con.close()
    user, ts = np.asarray(got["code"]), np.asarray(got["ts"])
    if len(ts) != ev.n_impressions or not (np.array_equal(user, ev.imp_user) and np.array_equal(ts, ev.imp_ts)):
        raise ValueError(f"{sim_dir}: the events are not in the order of the given EventArrays")
    at = np.asarray(got["conversion_us"], dtype=np.float64)  # NaN without a conversion
    observed = np.asarray(got["converted"], dtype=bool) & (np.nan_to_num(at, nan=np.inf) <= ev.data_end_us)
    return observed.astype(np.float64)

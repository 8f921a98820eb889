"""The model-based exposure curve: the model's implied conversion rate at the n-th exposure of one level.

Per group — a cohort (audience × signal tier), an audience (`<audience>/all`) and everyone (`all`), the groups
of the empirical curves — and level L, two readings of the model on (typically the validation) rows:

**rate** — the model's implied response under today's delivery, by the very estimator of the empirical curve
(`freqcap.domain.curves.estimate`) with the model's predictions p̂ in place of the conversion credit:

    rate(n) = first × Σ_{i: n_i = n} p̂_i / Σ_{i: n_i = n} p̂_entry(i),    first = mean p̂ over rows with n_L = 1

where entry(i) is the first impression of i's (user, entity) run, itself a fresh exposure (n_L = 1) among the
rows. The n-th impressions are compared with the first impressions of the same pairs, so heavy users are
compared with themselves. The exposure counts of the three levels and the recency move together along a
real run (an ad's 5th impression is also at least its campaign's 5th), which a partial dependence on one
column cannot reproduce; this curve is what `freqcap.domain.curves.compare_model_curves` checks against the
empirical one (`curve_disagreements`).

**partial_dependence** — set `n_L` to 1, …, max_n with every other column at its observed value and average
the prediction: what the model attributes to the count of that level alone (with the monotone constraint
beyond the wear-in it never rises there), anchored like the estimator: × (mean p̂ at n_L = 1) / PD(1).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from freqcap.domain.training.columns import exposure_column
from freqcap.domain.training.config import CurveConfig
from freqcap.domain.training.encoding import FeatureEncoding

CURVE_COLUMNS: tuple[str, ...] = (
    "cohort",
    "audience",
    "signal_tier",
    "level",
    "n",
    "rate",
    "partial_dependence",
    "rows",
    "support",
    "observed_rate",
)
ALL = "all"


def cohort_label(audience: str, signal_tier: str) -> str:
    """The readable cohort name of the curves contract (`returning/engaged`)."""
    return f"{audience}/{signal_tier}"


def _predict(booster: Any, inputs: pd.DataFrame) -> np.ndarray:
    return np.asarray(booster.inplace_predict(inputs), dtype=np.float64)


def _groups(rows: pd.DataFrame) -> Iterator[tuple[str, str, str, pd.DataFrame]]:
    """(label, audience, signal_tier, rows) of every cohort, every audience and everyone."""
    for (audience, tier), g in rows.groupby(["audience", "signal_tier"], sort=True, observed=True):
        yield cohort_label(str(audience), str(tier)), str(audience), str(tier), g
    for audience, g in rows.groupby("audience", sort=True, observed=True):
        yield cohort_label(str(audience), ALL), str(audience), ALL, g
    yield ALL, ALL, ALL, rows


def _entry_groups(runs: pd.DataFrame, entry: np.ndarray) -> dict[str, np.ndarray]:
    """Row positions per group label, each row in the cohort of its run's entry impression.

    The published curves take the signal tier as of the entry (`freqcap.domain.curves.core`), so a run stays in
    one cohort when its user's tier changes mid-run. Grouped by each row's own tier instead, the users who click
    or convert mid-run leave `impression_only` and the later impressions left there are the less receptive
    ones: the model's curve fell faster than the published one there (mean log ratio −0.2 to −0.35 on the
    simulated worlds, `benchmarks/bench_model_curve.py`). Rows without an entry among `runs` keep their own
    tier (the estimator drops them anyway)."""
    tier = runs["signal_tier"].astype(str).to_numpy()
    tier = np.where(entry >= 0, tier[np.maximum(entry, 0)], tier)
    cohorts = pd.DataFrame({"audience": runs["audience"].astype(str).to_numpy(), "signal_tier": tier})
    return {label: g.index.to_numpy() for label, _, _, g in _groups(cohorts)}


def _sample(rows: pd.DataFrame, size: int, rng: np.random.Generator) -> pd.DataFrame:
    if len(rows) <= size:
        return rows
    return rows.iloc[np.sort(rng.choice(len(rows), size, replace=False))]


def run_entries(rows: pd.DataFrame, level: str, lookback_us: int) -> np.ndarray:
    """Per row (positional): the position of its run's entry impression among `rows`, or -1 when the entry is
    not among them (it came before the rows' span) or is not a fresh exposure (n_L = 1).

    Within a (user, entity) pair in time order the entry of a row at exposure n is the row n − 1 before it,
    provided that row is within the lookback (every impression between them is then among the rows too)."""
    col = exposure_column(level)
    key = rows["user_id"].astype(str).to_numpy() + "\x1f" + rows[f"{level}_id"].astype(str).to_numpy()
    ts = rows["impression_ts"].to_numpy(dtype="datetime64[us]").astype(np.int64)
    order = np.lexsort((ts, key))
    k, t, n = key[order], ts[order], rows[col].to_numpy(dtype=np.int64)[order]
    starts = np.r_[True, k[1:] != k[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(k)), 0))
    cand = np.arange(len(k)) - (n - 1)
    ok = cand >= first
    safe = np.where(ok, cand, 0)
    ok &= (n[safe] == 1) & (t[safe] > t - lookback_us)
    out = np.full(len(k), -1, dtype=np.int64)
    out[order] = np.where(ok, order[safe], -1)
    return out


def implied_curve(p: np.ndarray, n: np.ndarray, entry: np.ndarray, max_n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rate, support) at n = 1 … max_n: the fixed-cohort estimator on predictions (see the module docstring);
    NaN where no row with a fresh entry is at that n."""
    used = entry >= 0
    first_rows = n == 1
    first = p[first_rows].mean() if first_rows.any() else np.nan
    idx = np.clip(n[used], 1, max_n + 1) - 1
    a = np.bincount(idx, weights=p[used], minlength=max_n + 1)[:max_n]
    b = np.bincount(idx, weights=p[entry[used]], minlength=max_n + 1)[:max_n]
    k = np.bincount(idx, minlength=max_n + 1)[:max_n]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(b > 0, first * a / b, np.nan)
    return rate, k.astype(np.int64)


def model_curve(
    booster: Any,
    rows: pd.DataFrame,
    encoding: FeatureEncoding,
    config: CurveConfig,
    label_column: str = "label_conversion",
    seed: int = 0,
    lookback_us: int = 28 * 86_400_000_000,
    runs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The implied rate and the anchored partial dependence per group × level; columns `CURVE_COLUMNS`.

    `rows` are training-set rows (typically the validation part) for the partial dependence; `runs` (default:
    `rows`) the rows the implied rate follows runs through — the whole training set in training, because a run's
    entry must be among them and the validation part alone holds few long runs; `lookback_us` the exposure
    lookback of n.
    `support`: rows at exactly that n whose run's fresh entry is among the rows (what the implied rate averages);
    `rows`: rows the partial dependence averages over; `observed_rate`: the label rate of all rows at that n, a
    raw reference that is *not* survivorship-robust.
    """
    out: list[pd.DataFrame] = []
    rng = np.random.default_rng(seed)
    ns = np.arange(1, config.max_n + 1)
    rows = rows.reset_index(drop=True)
    runs = rows if runs is None else runs.reset_index(drop=True)
    p_all = _predict(booster, encoding.transform(runs))
    entries = {level: run_entries(runs, level, lookback_us) for level in config.levels}
    implied = {level: _entry_groups(runs, entries[level]) for level in config.levels}
    for label, audience, tier, group in _groups(rows):
        if len(group) < config.min_cohort_rows:
            continue
        take = _sample(group, config.sample_rows, rng)
        tiled = take.loc[take.index.repeat(len(ns))].reset_index(drop=True)  # row-major: each row × every n
        for level in config.levels:
            col = exposure_column(level)
            tiled[col] = np.tile(ns, len(take)).astype(np.int64)
            pd_n = _predict(booster, encoding.transform(tiled)).reshape(len(take), len(ns)).mean(axis=0)
            observed = group[col].to_numpy()
            labels = group[label_column].to_numpy()
            pos = implied[level].get(label, np.zeros(0, dtype=np.int64))
            # entries of the group's rows, re-indexed into the group (every run is in its entry's group)
            where = np.full(len(runs), -1, dtype=np.int64)
            where[pos] = np.arange(len(pos))
            entry = entries[level][pos]
            entry = np.where(entry >= 0, where[np.maximum(entry, 0)], -1)
            run_n = runs[col].to_numpy()[pos]
            rate, support = implied_curve(p_all[pos], run_n, entry, config.max_n)
            first = p_all[pos][run_n == 1]
            anchor = float(first.mean()) if len(first) else float(pd_n[0])
            seen = np.array([(observed == n).sum() for n in ns])
            hits = np.array([labels[observed == n].sum() for n in ns], dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                observed_rate = np.where(seen > 0, hits / seen, np.nan)
                partial = np.where(pd_n[0] > 0, anchor * pd_n / pd_n[0], pd_n)
            out.append(
                pd.DataFrame(
                    {
                        "cohort": label,
                        "audience": audience,
                        "signal_tier": tier,
                        "level": level,
                        "n": ns.astype(np.int64),
                        "rate": rate,
                        "partial_dependence": partial,
                        "rows": np.int64(len(take)),
                        "support": support.astype(np.int64),
                        "observed_rate": observed_rate,
                    }
                )
            )
            tiled[col] = take[col].to_numpy().repeat(len(ns))
    if not out:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _EMPTY_DTYPES.items()})
    return pd.concat(out, ignore_index=True)[list(CURVE_COLUMNS)]


_EMPTY_DTYPES = {
    "cohort": "object",
    "audience": "object",
    "signal_tier": "object",
    "level": "object",
    "n": "int64",
    "rate": "float64",
    "partial_dependence": "float64",
    "rows": "int64",
    "support": "int64",
    "observed_rate": "float64",
}

"""The proposed policy: one soft cap rule per cohort (audience + signal tier) and per audience × level, defaults
from the global fit (pure: builds a validated `freqcap.domain.policy.Policy`).

`penalty_shape`: `generic` (default) leaves the soft penalty's shape to `policy.penalty` (onset, at_cap, floor);
`curve` writes each cap's multiplier table from the published curve of its cohort × level
(`freqcap.domain.curves.shape`), so the penalty falls the way that cohort's conversion rate does."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

import pandas as pd

from freqcap.domain.curves.shape import curve_multipliers
from freqcap.domain.policy import parse_policy
from freqcap.domain.policy.schema import PenaltyConfig, Policy

PenaltyShape = Literal["generic", "curve"]


def _provenance(row: pd.Series) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cohort": str(row["cohort"]),
        "estimated_cap": int(row["cap"]),
        "cap_range": [int(row["cap_low"]), int(row["cap_high"])],
        "support": int(row["support"]),
        "fallback": str(row["fallback"]),
        "censored": bool(row["censored"]),
        "reason": str(row["reason"]),
        "floor_kind": str(row["floor_kind"]),
        "floor_rate": None if pd.isna(row["floor_rate"]) else float(row["floor_rate"]),
    }
    if int(row["cap"]) < 1:
        out["note"] = "the curve is below the floor from the first exposure; 1 is the smallest cap a rule allows"
    return out


def _rule(row: pd.Series, audience: str, tier: str, multipliers: tuple[float, ...] | None = None) -> dict[str, Any]:
    cap: dict[str, Any] = {"window": str(row["window"]), "max": max(int(row["cap"]), 1)}
    if multipliers is not None:
        cap["multipliers"] = list(multipliers)
    return {
        "match": {"audience": audience, "signal_tier": tier},
        "level": str(row["level"]),
        "caps": [cap],
        "mode": "soft",
        "provenance": _provenance(row),
    }


def _tables(published: pd.DataFrame | None, floor: float) -> dict[tuple[str, str], tuple[float, ...] | None]:
    """(cohort label, level) → multiplier table of its published curve."""
    if published is None or published.empty:
        raise ValueError("penalty_shape 'curve' needs the published curves")
    return {
        (str(cohort), str(level)): curve_multipliers(g.sort_values("n")["rate_smooth"].to_numpy(), floor)
        for (cohort, level), g in published.groupby(["cohort", "level"], sort=False)
    }


def build_policy(
    caps: pd.DataFrame,
    *,
    created_at: datetime | None = None,
    source: dict[str, Any] | None = None,
    penalty_shape: PenaltyShape = "generic",
    published: pd.DataFrame | None = None,
) -> Policy:
    """Policy from a caps table (`freqcap.domain.curves.core`): rules for cohorts and audiences, global defaults.

    Rows without a usable curve (no support anywhere) produce no rule; serving then uses the next rule or
    the defaults. The version is a hash of the rules, so the same caps give the same version. With
    `penalty_shape="curve"`, each cap carries the multiplier table of its row's `published` curve (the fit's
    `CurveFit.published`), clipped at the default penalty floor.
    """
    if penalty_shape not in ("generic", "curve"):
        raise ValueError(f"penalty_shape must be 'generic' or 'curve', got {penalty_shape!r}")
    tables = _tables(published, PenaltyConfig().floor) if penalty_shape == "curve" else {}
    usable = caps[caps["usable"]]
    rules, defaults = [], []
    for _, row in usable.iterrows():
        table = tables.get((str(row["cohort"]), str(row["level"])))
        if row["kind"] == "global":
            defaults.append(_rule(row, "*", "*", table))
        elif row["kind"] == "audience":
            rules.append(_rule(row, str(row["audience"]), "*", table))
        else:
            rules.append(_rule(row, str(row["audience"]), str(row["signal_tier"]), table))
    body = repr(
        sorted((r["match"]["audience"], r["match"]["signal_tier"], r["level"], r["caps"][0]["max"]) for r in rules)
    ) + repr(sorted((r["level"], r["caps"][0]["max"]) for r in defaults))
    if penalty_shape == "curve":  # the same caps with another shape are another policy
        body += repr(sorted(str(r["caps"][0].get("multipliers")) for r in (*rules, *defaults)))
    version = "curves-" + hashlib.sha256(body.encode()).hexdigest()[:12]
    doc = {
        "schema_version": 1,
        "version": version,
        "created_at": (created_at or datetime.now(UTC)).isoformat(),
        "description": "Proposed by `freqcap curves fit`: per cohort × level, the last exposure whose marginal "
        "conversion rate stays above the floor (count of one entity's impressions to one user in the window)."
        + (" Soft penalty shaped like each cohort's fitted curve (multipliers)." if penalty_shape == "curve" else ""),
        "source": source or {},
        "defaults": defaults,
        "rules": rules,
    }
    return parse_policy(doc)

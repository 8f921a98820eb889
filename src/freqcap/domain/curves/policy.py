"""The proposed policy: one soft cap rule per cohort (audience + signal tier) and per audience × level, defaults
from the global fit (pure: builds a validated `freqcap.domain.policy.Policy`)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from freqcap.domain.policy import parse_policy
from freqcap.domain.policy.schema import Policy


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


def _rule(row: pd.Series, audience: str, tier: str) -> dict[str, Any]:
    return {
        "match": {"audience": audience, "signal_tier": tier},
        "level": str(row["level"]),
        "caps": [{"window": str(row["window"]), "max": max(int(row["cap"]), 1)}],
        "mode": "soft",
        "provenance": _provenance(row),
    }


def build_policy(
    caps: pd.DataFrame, *, created_at: datetime | None = None, source: dict[str, Any] | None = None
) -> Policy:
    """Policy from a caps table (`freqcap.domain.curves.core`): rules for cohorts and audiences, global defaults.

    Rows without a usable curve (no support anywhere) produce no rule; serving then uses the next rule or
    the defaults. The version is a hash of the rules, so the same caps give the same version.
    """
    usable = caps[caps["usable"]]
    rules, defaults = [], []
    for _, row in usable.iterrows():
        if row["kind"] == "global":
            defaults.append(_rule(row, "*", "*"))
        elif row["kind"] == "audience":
            rules.append(_rule(row, str(row["audience"]), "*"))
        else:
            rules.append(_rule(row, str(row["audience"]), str(row["signal_tier"])))
    body = repr(
        sorted((r["match"]["audience"], r["match"]["signal_tier"], r["level"], r["caps"][0]["max"]) for r in rules)
    ) + repr(sorted((r["level"], r["caps"][0]["max"]) for r in defaults))
    version = "curves-" + hashlib.sha256(body.encode()).hexdigest()[:12]
    doc = {
        "schema_version": 1,
        "version": version,
        "created_at": (created_at or datetime.now(UTC)).isoformat(),
        "description": "Proposed by `freqcap curves fit`: per cohort × level, the last exposure whose marginal "
        "conversion rate stays above the floor (count of one entity's impressions to one user in the window).",
        "source": source or {},
        "defaults": defaults,
        "rules": rules,
    }
    return parse_policy(doc)

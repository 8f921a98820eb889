"""Guardrails a proposed policy must pass before it replaces the live one (pure: no I/O).

Checks, each reported with its numbers:

- `windows_known`: every cap counts over a window the feature tables compute for its level (a calendar cap: in the
  features' calendar zone), and every `stop_cooldown` is such a window (otherwise serving would have no count for it).
- `caps_within_bounds`: every cap's `max` lies in [min_cap, max_cap].
- `change_vs_live`: every cap that exists in both policies (same audience, tier, level and window) changes by at most a
  factor `max_cap_ratio` either way, and nothing the live policy enforces is dropped: a rule or default, a cap, a
  `min_gap` or a stop (after click / conversion) that the candidate no longer has fails the check (unless
  `allow_removals`), reported with its projected effect on the feature snapshot (per level, the share of active
  pairs at or over a cap under the live policy and under the candidate, over the cohorts the removal touches).
  Soft caps whose penalty shape changes (a multiplier table added, dropped or refitted: the multiplier moves by more
  than `RESHAPE_TOLERANCE` at some count) are listed with the largest change (`reshaped`); reported, not judged.
- `projected_hit_change`: on the current feature snapshot, the share of active (user, entity) pairs at or over a cap,
  per level, moves by at most `max_hit_rate_change` (absolute) between the live and the proposed policy.

Without a live policy (first publication) the two comparisons pass and say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from freqcap.domain.calendar import PERIODS, calendar_key
from freqcap.domain.policy.engine import LEVELS, soft_cap_multiplier
from freqcap.domain.policy.schema import Policy


@dataclass(frozen=True)
class GuardrailLimits:
    min_cap: int = 1
    max_cap: int = 200
    max_cap_ratio: float = 4.0
    max_hit_rate_change: float = 0.15
    allow_removals: bool = False


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GuardrailReport:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}

    def summary(self) -> str:
        return "; ".join(f"{c.name}: {'ok' if c.passed else 'FAILED'} ({c.detail})" for c in self.checks)


def _all_rules(policy: Policy):
    yield from (("defaults", i, r) for i, r in enumerate(policy.defaults))
    yield from (("rules", i, r) for i, r in enumerate(policy.rules))


def window_errors(policy: Policy, windows_by_level: Mapping[str, set[int]]) -> list[tuple[str, str]]:
    """(field path, message) for each cap over a window the features do not count for its level: serving could not
    evaluate it (a decision with history at that level would fail open)."""
    errors = []
    for where, i, rule in _all_rules(policy):
        known = windows_by_level.get(rule.level, set())
        for j, cap in enumerate(rule.caps):
            if cap.window_seconds not in known:
                windows = ", ".join(_label(s) for s in sorted(known, key=str))
                what = f"{cap.window!r} in {policy.time_zone}" if cap.calendar else repr(cap.window)
                errors.append(
                    (f"{where}.{i}.caps.{j}.window", f"{what} is not a {rule.level} feature window ({windows})")
                )
        if rule.cooldown_seconds is not None and rule.cooldown_seconds not in known:
            errors.append(
                (f"{where}.{i}.stop_cooldown", f"{rule.stop_cooldown!r} is not a {rule.level} feature window")
            )
    return errors


def _label(key: Any) -> str:
    return f"{key[0]} in {key[1]}" if isinstance(key, tuple) else f"{key}s"


def feature_windows(features: Any) -> dict[str, set[Any]]:
    """Count keys the feature tables provide, per level, from a FeaturesConfig: window lengths (seconds) and the
    calendar periods in the features' zone, keyed (period, zone) like a calendar cap of a policy in that zone."""
    calendar = {calendar_key(p, features.calendar_time_zone) for p in PERIODS}
    return {t.level: set(t.window_seconds.values()) | calendar for t in features.tiers}


def check_windows(policy: Policy, windows_by_level: Mapping[str, set[int]]) -> Check:
    bad = [f"{path}: {msg}" for path, msg in window_errors(policy, windows_by_level)]
    detail = "every cap window is a feature window" if not bad else "; ".join(bad)
    return Check("windows_known", not bad, detail, {"unknown": bad})


def check_bounds(policy: Policy, limits: GuardrailLimits) -> Check:
    bad = [
        f"{where}.{i}.caps.{j}.max={cap.max}"
        for where, i, rule in _all_rules(policy)
        for j, cap in enumerate(rule.caps)
        if not limits.min_cap <= cap.max <= limits.max_cap
    ]
    detail = f"all caps within [{limits.min_cap}, {limits.max_cap}]" if not bad else "out of bounds: " + ", ".join(bad)
    return Check("caps_within_bounds", not bad, detail, {"out_of_bounds": bad})


def _cap_index(policy: Policy) -> dict[tuple[str, str, str, int], int]:
    return {
        (rule.match.audience, rule.match.signal_tier, rule.level, cap.window_seconds): cap.max
        for _, _, rule in _all_rules(policy)
        for cap in rule.caps
    }


def _rule_index(policy: Policy) -> dict[tuple[str, str, str, str], Any]:
    """(where, audience, tier, level) -> rule: defaults are keyed by level alone (every default matches everyone)."""
    out = {}
    for where, i, rule in _all_rules(policy):
        out[(where, rule.match.audience, rule.match.signal_tier, rule.level)] = (i, rule)
    return out


# A soft cap's shape counts as changed when its multiplier moves by more than this at some count (tables are
# published at 6 decimals; a refit nudges them by a few thousandths).
RESHAPE_TOLERANCE = 0.05


def _soft_caps(policy: Policy) -> dict[tuple[str, str, str, int], Any]:
    return {
        (rule.match.audience, rule.match.signal_tier, rule.level, cap.window_seconds): cap
        for _, _, rule in _all_rules(policy)
        if rule.mode == "soft"
        for cap in rule.caps
    }


def reshaped(candidate: Policy, live: Policy) -> list[dict[str, Any]]:
    """Soft caps present in both whose penalty shape changes (a multiplier table added, dropped or refitted, or a
    cap or `penalty` change that moves the generic shape): per cap, the largest absolute change of the multiplier
    over the counts either shape distinguishes, and the count where it happens; largest first."""
    old, new = _soft_caps(live), _soft_caps(candidate)
    out = []
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        horizon = max(a.max, b.max, len(a.multipliers or ()), len(b.multipliers or ())) + 8
        deltas = [
            abs(soft_cap_multiplier(b, c, candidate.penalty) - soft_cap_multiplier(a, c, live.penalty))
            for c in range(horizon + 1)
        ]
        worst = max(range(len(deltas)), key=deltas.__getitem__)
        if deltas[worst] > RESHAPE_TOLERANCE:
            audience, tier, level, window = key
            out.append(
                {
                    "cap": f"{audience}/{tier}/{level}/{window}s",
                    "largest_change": round(deltas[worst], 4),
                    "at_count": worst,
                    "live": "table" if a.multipliers is not None else "generic",
                    "proposed": "table" if b.multipliers is not None else "generic",
                }
            )
    return sorted(out, key=lambda r: -r["largest_change"])


def removals(candidate: Policy, live: Policy) -> tuple[list[str], set[tuple[str, str, str, str]]]:
    """What the live policy enforces and the candidate drops: readable items, and the keys of the live rules they
    belong to (a dropped rule or default, a cap of a kept rule, a `min_gap`, a stop)."""
    old, new = _rule_index(live), _rule_index(candidate)
    items: list[str] = []
    touched: set[tuple[str, str, str, str]] = set()
    for key, (i, rule) in old.items():
        where, audience, tier, level = key
        name = (
            f"{where}.{i} ({audience}/{tier}/{level})" if where == "rules" else f"defaults ({audience}/{tier}/{level})"
        )
        if key not in new:
            items.append(f"{name} removed")
            touched.add(key)
            continue
        kept = new[key][1]
        windows = {c.window_seconds for c in kept.caps}
        for cap in rule.caps:
            if cap.window_seconds not in windows:
                items.append(
                    f"cap {audience}/{tier}/{level}/{cap.window_seconds}s ({cap.max} per {cap.window}) removed"
                )
                touched.add(key)
        for flag in ("min_gap", "stop_after_click", "stop_after_conversion"):
            if getattr(rule, flag) and not getattr(kept, flag):
                items.append(f"{name}: {flag} removed")
                touched.add(key)
    return items, touched


def removal_effect(
    candidate: Policy, live: Policy, touched: set[tuple[str, str, str, str]], pairs: pd.DataFrame
) -> dict[str, dict[str, Any]]:
    """Per level with a removal, over the active pairs of the cohorts whose live rule lost something: how many, the
    share at or over a cap under the live policy and under the candidate, and the pairs released (over a live cap,
    under every candidate cap)."""
    out: dict[str, dict[str, Any]] = {}
    for level in sorted({key[3] for key in touched}):
        sub = pairs[pairs["level"] == level]
        if sub.empty:
            continue
        before = np.zeros(len(sub), dtype=bool)
        after = np.zeros(len(sub), dtype=bool)
        inside = np.zeros(len(sub), dtype=bool)
        for (audience, tier), idx in sub.groupby(["audience", "signal_tier"]).indices.items():
            rules = live.rules_for(str(audience), str(tier), level)
            keys = {k for k, (_, r) in _rule_index(live).items() if any(r is x for x in rules)}
            if not keys & touched:
                continue
            inside[idx] = True
            before[idx] = _hits(rules, sub, idx)
            after[idx] = _hits(candidate.rules_for(str(audience), str(tier), level), sub, idx)
        n = int(inside.sum())
        if not n:
            continue
        out[level] = {
            "pairs": n,
            "live": round(float(before[inside].mean()), 4),
            "proposed": round(float(after[inside].mean()), 4),
            "released_pairs": int((before & ~after).sum()),
        }
    return out


def _hits(rules, sub: pd.DataFrame, idx: np.ndarray) -> np.ndarray:
    hit = np.zeros(len(idx), dtype=bool)
    for rule in rules:
        for cap in rule.caps:
            column = count_column(cap.window_seconds)
            if column in sub.columns:
                hit |= sub[column].to_numpy()[idx] >= cap.max
    return hit


def check_change(
    candidate: Policy, live: Policy | None, limits: GuardrailLimits, pairs: pd.DataFrame | None = None
) -> Check:
    if live is None:
        return Check("change_vs_live", True, "no live policy: first publication")
    old, new = _cap_index(live), _cap_index(candidate)
    shared = sorted(set(old) & set(new))
    ratios = {k: new[k] / old[k] for k in shared}
    bad = {k: r for k, r in ratios.items() if r > limits.max_cap_ratio or r < 1 / limits.max_cap_ratio}
    worst = max((max(r, 1 / r) for r in ratios.values()), default=1.0)
    removed, touched = removals(candidate, live)
    shapes = reshaped(candidate, live)
    effect = removal_effect(candidate, live, touched, pairs) if touched and pairs is not None and len(pairs) else {}
    values = {
        "compared": len(shared),
        "added": len(set(new) - set(old)),
        "removed": removed,
        "removal_effect": effect,
        "largest_factor": round(worst, 3),
        "reshaped": shapes,
        "violations": [f"{a}/{t}/{lvl}/{w}s: {old[(a, t, lvl, w)]}->{new[(a, t, lvl, w)]}" for a, t, lvl, w in bad],
    }
    parts = []
    if bad:
        parts.append(
            f"{len(bad)} cap(s) change by more than ×{limits.max_cap_ratio}: " + ", ".join(values["violations"][:5])
        )
    if removed:
        shares = ", ".join(f"{lvl} {e['live']:.1%}→{e['proposed']:.1%}" for lvl, e in effect.items())
        projected = f"; projected cap-hit share {shares}" if shares else ""
        allowed = " (allowed: allow_removals)" if limits.allow_removals else ""
        parts.append(f"{len(removed)} removal(s){allowed}: " + ", ".join(removed[:5]) + projected)
    if not parts:
        parts.append(f"{len(shared)} shared caps, largest change ×{worst:.2f} (limit ×{limits.max_cap_ratio})")
    if shapes:  # reported, not judged: the projected checks below weigh what a new shape does
        top = shapes[0]
        parts.append(
            f"{len(shapes)} soft cap(s) change shape, largest {top['cap']} by {top['largest_change']:.2f} "
            f"at count {top['at_count']} ({top['live']} -> {top['proposed']})"
        )
    passed = not bad and (not removed or limits.allow_removals)
    return Check("change_vs_live", passed, "; ".join(parts), values)


def count_column(window_seconds: int) -> str:
    """Column of `pairs` holding the impression count over a window of this length."""
    return f"imp_{window_seconds}s"


def projected_hit_rates(policy: Policy, pairs: pd.DataFrame) -> dict[str, float]:
    """Per level, the share of active (user, entity) pairs whose count in some window reached the cap the policy
    applies to them. `pairs`: one row per pair with `level`, `audience`, `signal_tier` and `imp_<seconds>s` counts."""
    rates: dict[str, float] = {}
    for level in LEVELS:
        sub = pairs[pairs["level"] == level]
        if sub.empty:
            continue
        hit = np.zeros(len(sub), dtype=bool)
        for (audience, tier), idx in sub.groupby(["audience", "signal_tier"]).indices.items():
            for rule in policy.rules_for(str(audience), str(tier), level):
                for cap in rule.caps:
                    column = count_column(cap.window_seconds)
                    if column in sub.columns:
                        hit[idx] |= sub[column].to_numpy()[idx] >= cap.max
        rates[level] = float(hit.mean())
    return rates


def check_projected_hits(
    candidate: Policy, live: Policy | None, pairs: pd.DataFrame | None, limits: GuardrailLimits
) -> Check:
    if live is None:
        return Check("projected_hit_change", True, "no live policy: first publication")
    if pairs is None or pairs.empty:
        return Check("projected_hit_change", True, "no feature snapshot to project on: skipped", {"skipped": True})
    before, after = projected_hit_rates(live, pairs), projected_hit_rates(candidate, pairs)
    changes = {lvl: after.get(lvl, 0.0) - before.get(lvl, 0.0) for lvl in set(before) | set(after)}
    bad = {lvl: d for lvl, d in changes.items() if abs(d) > limits.max_hit_rate_change}
    values = {
        "pairs": len(pairs),
        "live": {k: round(v, 4) for k, v in before.items()},
        "proposed": {k: round(v, 4) for k, v in after.items()},
        "change": {k: round(v, 4) for k, v in changes.items()},
    }
    text = ", ".join(f"{lvl} {before.get(lvl, 0):.1%}→{after.get(lvl, 0):.1%}" for lvl in LEVELS if lvl in changes)
    limit = f"limit ±{limits.max_hit_rate_change:.0%}"
    return Check("projected_hit_change", not bad, f"projected cap-hit share {text} ({limit})", values)


def check_guardrails(
    candidate: Policy,
    live: Policy | None,
    *,
    limits: GuardrailLimits,
    windows_by_level: Mapping[str, set[int]],
    pairs: pd.DataFrame | None = None,
) -> GuardrailReport:
    """Every guardrail on a proposed policy (schema validity is the caller's `parse_policy`)."""
    return GuardrailReport(
        (
            check_windows(candidate, windows_by_level),
            check_bounds(candidate, limits),
            check_change(candidate, live, limits, pairs),
            check_projected_hits(candidate, live, pairs, limits),
        )
    )

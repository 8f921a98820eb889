"""Policies for the replay: the engine's decision rule compiled to arrays, and the policies the evaluation compares.

`compile_policy` turns a `freqcap.domain.policy.Policy` into per-level constraint tables indexed by cohort
(audience × signal tier), and `penalties` evaluates them for many users × candidates at once. It reproduces
`freqcap.domain.policy.engine.decide` exactly for cap rules (tests/unit/domain/evaluation compare the two on random states):
for a cap of `max` per window with `count` impressions in it, d = max − count; a hard rule makes the candidate
ineligible (penalty 0) once d ≤ 0, a soft rule contributes `penalty_for_distance(d)`; the strictest (lowest)
multiplier wins across all rules and levels, rounded to 6 decimals. A soft cap with a multiplier table
(`Cap.multipliers`: the penalty shaped like the cohort's fitted curve) contributes `multipliers[count]` instead. `min_gap` and the stops (click, conversion) are not
supported by the replay (a policy using them is rejected rather than evaluated wrongly).

A `ReplayPolicy` adds what the replay needs around a policy document: a name, a reserve (an opportunity is filled
only when the best score × penalty reaches it: the volume knob) and which exposure count the caps apply to —
`raw` (impressions in the window, what serving counts) or `effective` (the simulator's true decayed exposure
count n_eff − 1 with the true recovery half-lives; only an oracle can know it). `response` is the oracle
*penalty*: no caps at all, the penalty of each candidate is its true fatigue multiplier Π_L g(n_eff_L), so the
ranker's score × penalty is the true conversion probability (times the ranker's noise): the myopic optimum any
penalty can aim for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from freqcap.domain.events import LEVELS
from freqcap.domain.policy import PenaltyConfig, Policy, parse_policy
from freqcap.domain.simulate.params import ModelParams
from freqcap.domain.simulate.truth import cap_from_curve, declared_curves

TIER_NAMES: tuple[str, ...] = ("impression_only", "engaged", "converter")  # = freqcap.domain.curves.sequences order
CREATED_AT = datetime(2026, 1, 1, tzinfo=UTC)  # fixed: policies built here are reproducible documents


@dataclass(frozen=True)
class ReplayPolicy:
    """A policy as the replay plays it (see the module docstring). `policy=None` means no cap at all."""

    name: str
    policy: Policy | None
    counts: Literal["raw", "effective", "response"] = "raw"
    reserve: float = 0.0

    def with_reserve(self, reserve: float) -> ReplayPolicy:
        return replace(self, reserve=float(reserve))


INACTIVE = 1 << 40  # the "max" of a slot that does not apply: its distance never binds


@dataclass(frozen=True)
class Constraint:
    """One cap slot: a window and a mode, and per cohort (audience × tier) × level the max (0 = inactive)."""

    window_us: int
    hard: bool
    max_by_cohort: np.ndarray  # int64 [n_audiences * n_tiers, len(LEVELS)]; INACTIVE where no cap applies
    # Soft slots with any multiplier table: the multiplier by count already in the window [cohorts, levels, T]
    # (counts ≥ T take column T − 1): the table where the cap has one, the generic shape at max − count where it
    # has none, 1 where no cap applies. None: every cap of the slot has the generic shape (looked up by distance).
    by_count: np.ndarray | None = None


@dataclass(frozen=True)
class CompiledPolicy:
    name: str
    counts: str
    reserve: float
    penalty: PenaltyConfig
    constraints: tuple[Constraint, ...]
    n_tiers: int
    lut: np.ndarray  # penalty_for_distance at the integer distances _LUT_LOW … ceil(1 + onset)

    @property
    def is_empty(self) -> bool:
        return not self.constraints

    @property
    def windows(self) -> set[int]:
        return {c.window_us for c in self.constraints}

    def levels_with_window(self, window_us: int) -> set[str]:
        return {
            LEVELS[j]
            for c in self.constraints
            if c.window_us == window_us
            for j in np.flatnonzero((c.max_by_cohort < INACTIVE).any(0))
        }

    @property
    def uses_tier(self) -> bool:
        """Whether any cap differs between signal tiers of one audience."""
        for c in self.constraints:
            t = c.max_by_cohort.reshape(-1, self.n_tiers, len(LEVELS))  # (audiences, tiers, levels)
            if (t != t[:, :1, :]).any():
                return True
        return False


def compile_policy(rp: ReplayPolicy, audiences: Sequence[str], tiers: Sequence[str] = TIER_NAMES) -> CompiledPolicy:
    """Cap slots over cohorts (audience code × n_tiers + tier code) and levels: for each cohort and level, the
    caps of the rule `Policy.rules_for` picks (or the level's defaults)."""
    penalty = rp.policy.penalty if rp.policy is not None else PenaltyConfig()
    n_cohorts = len(audiences) * len(tiers)
    slots: dict[tuple[int, bool, int], np.ndarray] = {}
    tables: dict[tuple[int, bool, int], dict[tuple[int, int], tuple[float, ...]]] = {}
    if rp.policy is not None:
        for j, level in enumerate(LEVELS):
            for a, aud in enumerate(audiences):
                for t, tier in enumerate(tiers):
                    seen: dict[tuple[int, bool], int] = {}
                    for rule in rp.policy.rules_for(aud, tier, level):
                        if rule.min_gap or rule.stop_after_conversion or rule.stop_after_click:
                            raise ValueError(
                                f"policy {rp.name!r}: min_gap / stop_after_click / stop_after_conversion ({level} rule for "
                                f"{rule.match.audience}/{rule.match.signal_tier}) are not supported by the replay"
                            )
                        if any(cap.calendar for cap in rule.caps):
                            raise ValueError(
                                f"policy {rp.name!r}: calendar caps ({level} rule for {rule.match.audience}/"
                                f"{rule.match.signal_tier}) are not supported by the replay"
                            )
                        for cap in rule.caps:
                            base = (cap.window_seconds * 1_000_000, rule.mode == "hard")
                            key = (*base, seen.get(base, 0))
                            seen[base] = key[2] + 1
                            table = slots.setdefault(key, np.full((n_cohorts, len(LEVELS)), INACTIVE, dtype=np.int64))
                            table[a * len(tiers) + t, j] = cap.max
                            if cap.multipliers is not None:
                                tables.setdefault(key, {})[(a * len(tiers) + t, j)] = cap.multipliers
    constraints = tuple(
        Constraint(
            window_us=k[0],
            hard=k[1],
            max_by_cohort=tb,
            by_count=_by_count(tb, tables[k], penalty) if k in tables else None,
        )
        for k, tb in sorted(slots.items())
    )
    return CompiledPolicy(rp.name, rp.counts, rp.reserve, penalty, constraints, len(tiers), _penalty_lut(penalty))


def penalty_for_distance_vec(distance: np.ndarray, config: PenaltyConfig) -> np.ndarray:
    """`freqcap.domain.policy.engine.penalty_for_distance`, vectorized."""
    d = np.asarray(distance, dtype=np.float64)
    span = 1.0 + config.onset
    near = config.at_cap + (1.0 - config.at_cap) * (d / span)
    beyond = config.floor + (config.at_cap - config.floor) * np.exp2(np.minimum(d, 0.0))
    return np.where(d >= span, 1.0, np.where(d >= 0, near, beyond))


_LUT_LOW = -80  # 2^-80 is below float64 resolution next to the floor: every distance below it gives the floor


def _penalty_lut(config: PenaltyConfig) -> np.ndarray:
    """`penalty_for_distance` at the integer distances _LUT_LOW … ceil(1 + onset)."""
    top = int(np.ceil(1.0 + config.onset))
    return penalty_for_distance_vec(np.arange(_LUT_LOW, top + 1, dtype=np.float64), config)


def _by_count(
    max_by_cohort: np.ndarray, tables: dict[tuple[int, int], tuple[float, ...]], config: PenaltyConfig
) -> np.ndarray:
    """A soft slot's multiplier by count [cohorts, levels, T] (see `Constraint.by_count`). T reaches past every table
    and far enough beyond every cap that the generic shape has hit the `_LUT_LOW` distance, where the lookup by
    distance stops too: the last column holds for all larger counts in both."""
    active = max_by_cohort[max_by_cohort < INACTIVE]
    top = int(active.max()) if active.size else 0
    width = max(max((len(t) for t in tables.values()), default=1), top - _LUT_LOW + 1)
    count = np.arange(width, dtype=np.float64)
    mx = np.where(max_by_cohort < INACTIVE, max_by_cohort, 0).astype(np.float64)
    d = np.maximum(mx[:, :, None] - count, _LUT_LOW)
    out = np.where((max_by_cohort < INACTIVE)[:, :, None], penalty_for_distance_vec(d, config), 1.0)
    for (cohort, level), table in tables.items():
        row = np.asarray(table, dtype=np.float64)
        out[cohort, level, : len(row)] = row
        out[cohort, level, len(row) :] = row[-1]
    return out


def penalties(
    compiled: CompiledPolicy, cohort: np.ndarray, count_of: Any, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(eligible, penalty), each of `shape` (n, K), for n users × K candidates.

    `cohort` (n,) is audience code × n_tiers + tier code; `count_of(window_us)` returns the (n, K, levels)
    counts the caps of that window apply to (raw window counts, or effective counts), levels in `LEVELS` order.
    The multiplier is non-decreasing in the distance, so the strictest level of a slot is the one with the
    smallest distance: each slot needs one minimum over levels and one evaluation.
    """
    eligible = None
    mult = None
    lut = compiled.lut
    for c in compiled.constraints:
        mx = c.max_by_cohort[cohort]  # (n, levels)
        d = (mx[:, None, :] - count_of(c.window_us)).min(axis=2)  # (n, K)
        if c.hard:
            ok = d >= 1
            eligible = ok if eligible is None else eligible & ok
            continue
        if c.by_count is not None:
            # Curve-shaped caps: the multiplier depends on each level's count, not only on the smallest distance.
            counts = count_of(c.window_us)
            if not np.issubdtype(counts.dtype, np.integer):
                raise ValueError(f"policy {compiled.name!r}: multiplier tables need integer (raw) counts")
            idx = np.clip(counts, 0, c.by_count.shape[2] - 1)  # (n, K, levels)
            m = c.by_count[cohort[:, None, None], np.arange(len(LEVELS))[None, None, :], idx].min(axis=2)
            mult = m if mult is None else np.minimum(mult, m)
            continue
        if np.issubdtype(d.dtype, np.integer):
            np.clip(d, _LUT_LOW, _LUT_LOW + len(lut) - 1, out=d)
            d -= _LUT_LOW
            m = lut[d]
        else:
            m = penalty_for_distance_vec(d, compiled.penalty)
        mult = m if mult is None else np.minimum(mult, m)
    mult = np.ones(shape) if mult is None else np.round(mult, 6)
    if eligible is None:
        return np.ones(shape, dtype=bool), mult
    return eligible, np.where(eligible, mult, 0.0)


# ------------------------------------------------------------------------------------------------ policy builders


def no_cap(name: str = "no cap") -> ReplayPolicy:
    return ReplayPolicy(name, None)


def oracle_penalty(name: str = "oracle penalty") -> ReplayPolicy:
    """The true fatigue multiplier as the penalty (see the module docstring)."""
    return ReplayPolicy(name, None, counts="response")


def global_cap_policy(cap: int, *, level: str = "campaign", window: str = "28d", mode: str = "hard") -> Policy:
    """One cap for everyone at one level (`defaults`): the simple baseline."""
    return parse_policy(
        {
            "version": f"global-{level}-{cap}-per-{window}-{mode}",
            "created_at": CREATED_AT.isoformat(),
            "description": f"global {level} cap: at most {cap} impressions per {window} for every user",
            "defaults": [{"level": level, "caps": [{"window": window, "max": int(cap)}], "mode": mode}],
        }
    )


def with_mode(policy: Policy, mode: Literal["soft", "hard"]) -> Policy:
    """The same caps with every rule (and default) switched to `mode` (hard: without the soft penalty's multiplier
    tables, which a hard cap has no use for)."""
    doc = policy.model_dump(mode="json")
    for key in ("rules", "defaults"):
        for rule in doc[key]:
            rule["mode"] = mode
            if mode == "hard":
                for cap in rule["caps"]:
                    cap.pop("multipliers", None)
    doc["version"] = f"{policy.version}-{mode}"
    return parse_policy(doc)


def true_caps(params: ModelParams, floor: float) -> dict[str, dict[str, int]]:
    """The simulator's true cap per audience × level for a relative floor (its declared curves)."""
    curves = declared_curves(params)
    return {aud: {lv: cap_from_curve(curves[aud][lv]["marginal_rate"], floor) for lv in LEVELS} for aud in curves}


def oracle_policy(params: ModelParams, floor: float, mode: Literal["soft", "hard"] = "hard") -> Policy:
    """Caps per audience × level at the simulator's true caps (to be replayed on effective counts)."""
    caps = true_caps(params, floor)
    rules = [
        {
            "match": {"audience": aud, "signal_tier": "*"},
            "level": lv,
            "caps": [{"window": "28d", "max": max(cap, 1)}],
            "mode": mode,
            "provenance": {"source": "simulator ground truth", "floor": floor},
        }
        for aud, by_level in caps.items()
        for lv, cap in by_level.items()
    ]
    return parse_policy(
        {
            "version": f"oracle-{floor:g}-{mode}",
            "created_at": CREATED_AT.isoformat(),
            "description": "the simulator's true caps (declared curves), on the true effective exposure count",
            "rules": rules,
        }
    )

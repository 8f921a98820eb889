"""The policy engine: pure decisions for candidate ads from a policy and a user's frequency state. No I/O.

For each candidate, every rule that applies at each level (advertiser, campaign, ad) contributes its caps. For a
cap of `max` per `window` with `count` impressions already in that window, the distance to the cap is
`d = max − count` (impressions left; d ≤ 0: the next one exceeds the cap). The multiplier for the ranker is smooth
and monotone in the count (policy.penalty: onset, at_cap, floor):

    d ≥ 1 + onset       → 1                                   (well under the cap)
    0 ≤ d < 1 + onset   → linear from 1 down to at_cap at d=0 (approaching: no cliff at the cap)
    d < 0               → floor + (at_cap − floor)·2^d        (beyond: keeps falling towards floor)

The strictest constraint wins across all caps and levels (lowest multiplier; ties: smallest distance), so an
ad-level cap binds even while the campaign cap has room. `hard` rules make a candidate ineligible once d ≤ 0
(penalty 0); `min_gap` (recency) and `stop_after_conversion` bind the same way, scaled for soft rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from freqcap.domain.policy.schema import CapRule, PenaltyConfig, Policy

LEVELS = ("advertiser", "campaign", "ad")
_ENTITY_ATTR = {"advertiser": "advertiser_id", "campaign": "campaign_id", "ad": "ad_id"}


@dataclass(frozen=True)
class EntityState:
    """Frequency state of one (user, entity) pair: counts by window length in seconds, last impression, conversions."""

    counts: Mapping[int, int] = field(default_factory=dict)
    last_imp_ts: datetime | None = None
    conversions: int = 0


@dataclass(frozen=True)
class Candidate:
    ad_id: str
    campaign_id: str
    advertiser_id: str

    def entity(self, level: str) -> str:
        return getattr(self, _ENTITY_ATTR[level])


@dataclass(frozen=True)
class Binding:
    """The constraint that decided a candidate's penalty."""

    level: str
    window: str | None
    cap: int | None
    count: int
    kind: str = "cap"  # cap | min_gap | stop_after_conversion


@dataclass(frozen=True)
class Decision:
    ad_id: str
    eligible: bool
    penalty: float
    distance_to_cap: float | None
    binding: Binding | None
    reason: str


def penalty_for_distance(distance: float, config: PenaltyConfig) -> float:
    """The multiplier for `distance` impressions left before the cap (continuous, non-decreasing in distance)."""
    if distance >= 1 + config.onset:
        return 1.0
    if distance >= 0:
        span = 1 + config.onset
        return config.at_cap + (1 - config.at_cap) * (distance / span)
    return config.floor + (config.at_cap - config.floor) * 2.0**distance


def _window_count(state: EntityState, window_seconds: int) -> int:
    if window_seconds not in state.counts:
        raise KeyError(f"no count for a {window_seconds}s window (known: {sorted(state.counts)})")
    return int(state.counts[window_seconds])


@dataclass(frozen=True, slots=True)
class _Rule:
    """A CapRule reduced to plain values once per policy (attribute access on models is slow on the hot path)."""

    caps: tuple[tuple[str, int, int], ...]  # (window label, window seconds, max)
    hard: bool
    min_gap: str | None
    min_gap_seconds: float | None
    stop_after_conversion: bool
    zero: EntityState  # the state of an entity never shown: zero in every window of the rule


def _compile(rule: CapRule) -> _Rule:
    caps = tuple((c.window, c.window_seconds, c.max) for c in rule.caps)
    return _Rule(
        caps=caps,
        hard=rule.mode == "hard",
        min_gap=rule.min_gap,
        min_gap_seconds=rule.min_gap_seconds,
        stop_after_conversion=rule.stop_after_conversion,
        zero=EntityState(counts={sec: 0 for _, sec, _ in caps}),
    )


def _rules(policy: Policy, audience: str, signal_tier: str, level: str) -> tuple[_Rule, ...]:
    memo = policy.memo()
    key = ("engine", audience, signal_tier, level)
    rules = memo.get(key)
    if rules is None:
        rules = memo[key] = tuple(_compile(r) for r in policy.rules_for(audience, signal_tier, level))
    return rules


def _constraints(rule: _Rule, level: str, state: EntityState, now: datetime, penalty: PenaltyConfig):
    """(multiplier, distance, eligible, Binding fields) for each constraint of one rule (the Binding itself is built
    only for the winner)."""
    for window, seconds, cap in rule.caps:
        count = _window_count(state, seconds)
        distance = cap - count
        if rule.hard:
            eligible = distance >= 1
            mult = 1.0 if eligible else 0.0
        else:
            eligible, mult = True, penalty_for_distance(distance, penalty)
        yield mult, float(distance), eligible, (level, window, cap, count, "cap")
    if rule.min_gap_seconds and state.last_imp_ts is not None:
        gap = rule.min_gap_seconds
        elapsed = (now - state.last_imp_ts).total_seconds()
        if elapsed < gap:
            fraction = max(elapsed, 0.0) / gap
            mult = 0.0 if rule.hard else max(penalty.floor, penalty.at_cap * fraction)
            yield mult, None, not rule.hard, (level, rule.min_gap, None, 1, "min_gap")
    if rule.stop_after_conversion and state.conversions > 0:
        mult = 0.0 if rule.hard else penalty.floor
        yield mult, None, not rule.hard, (level, None, None, state.conversions, "stop_after_conversion")


def decide(
    policy: Policy,
    audience: str,
    signal_tier: str,
    candidates: Sequence[Candidate],
    states: Mapping[tuple[str, str], EntityState],
    now: datetime,
) -> list[Decision]:
    """One decision per candidate, in order. `states[(level, entity_id)]` is the user's state for that entity;
    a missing entry means no impressions in any window (all counts zero)."""
    rules = {level: _rules(policy, audience, signal_tier, level) for level in LEVELS}
    # Candidates share campaigns and advertisers: judge each (level, entity) once per call; and a reader may hand
    # the same state object for many entities (e.g. one shared "never shown" state): judge each object once per
    # level (a verdict depends on the level's rules, the state, `now` and the penalty only).
    verdicts: dict[tuple[str, str], tuple[Any, bool]] = {}
    by_state: dict[tuple[str, int], tuple[Any, bool]] = {}
    # Candidates whose three verdicts are the same objects get the same decision (but for the ad id): the
    # common case of ads never shown under advertisers and campaigns never shown.
    combos: dict[tuple[int, int, int], tuple] = {}
    penalty_config = policy.penalty

    def verdict_of(level: str, key: tuple[str, str]):
        verdict = verdicts.get(key)
        if verdict is None:
            state = states.get(key)
            same = (level, id(state))  # id(None) for every missing entry: all zero
            verdict = by_state.get(same)
            if verdict is None:
                verdict = by_state[same] = _entity_verdict(rules[level], level, state, now, penalty_config)
            verdicts[key] = verdict
        return verdict

    out: list[Decision] = []
    for cand in candidates:
        three = (
            verdict_of("advertiser", ("advertiser", cand.advertiser_id)),
            verdict_of("campaign", ("campaign", cand.campaign_id)),
            verdict_of("ad", ("ad", cand.ad_id)),
        )
        combo = (id(three[0]), id(three[1]), id(three[2]))
        fields = combos.get(combo)
        if fields is None:
            fields = combos[combo] = _combine(three)
        out.append(Decision(cand.ad_id, *fields))
    return out


def _combine(verdicts) -> tuple:
    """(eligible, penalty, distance, binding, reason) of a candidate from its advertiser, campaign and ad verdicts
    (in that order: on a tie, the first stricter one wins)."""
    best = None  # (multiplier, distance, eligible, binding)
    eligible = True
    for item, ok in verdicts:
        eligible = eligible and ok
        if item is not None and (best is None or _stricter(item, best)):
            best = item
    if best is None:
        return True, 1.0, None, None, "no cap applies"
    mult, distance, _, binding = best
    penalty = 0.0 if not eligible else round(mult, 6)
    return eligible, penalty, distance, binding, _reason(binding, distance, eligible)


def _entity_verdict(rules, level: str, state: EntityState | None, now: datetime, penalty: PenaltyConfig):
    """(strictest constraint or None, eligible) of one (level, entity) under its rules."""
    best, eligible = None, True
    for rule in rules:
        use = state or rule.zero
        for item in _constraints(rule, level, use, now, penalty):
            eligible = eligible and item[2]
            if best is None or _stricter(item, best):
                best = item
    if best is not None:
        best = (best[0], best[1], best[2], Binding(*best[3]))
    return best, eligible


def _stricter(a, b) -> bool:
    """Is constraint `a` stricter than `b`? Lower multiplier first, then fewer impressions left."""
    if a[0] != b[0]:
        return a[0] < b[0]
    da = a[1] if a[1] is not None else float("-inf")
    db = b[1] if b[1] is not None else float("-inf")
    return da < db


def _reason(binding: Binding, distance: float | None, eligible: bool) -> str:
    if binding.kind == "min_gap":
        return f"{binding.level}: last impression within min_gap {binding.window}"
    if binding.kind == "stop_after_conversion":
        return f"{binding.level}: user converted ({binding.count}); stop after conversion"
    state = "over" if distance is not None and distance <= 0 else "under"
    verdict = "" if eligible else ", ineligible (hard cap)"
    return f"{binding.level} cap {binding.cap}/{binding.window}: {binding.count} seen, {state} the cap{verdict}"

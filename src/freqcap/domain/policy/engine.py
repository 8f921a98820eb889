"""The policy engine: pure decisions for candidate ads from a policy and a user's frequency state. No I/O.

For each candidate, every rule that applies at each level (advertiser, campaign, ad) contributes its caps. For a
cap of `max` per `window` with `count` impressions already in that window, the distance to the cap is
`d = max − count` (impressions left; d ≤ 0: the next one exceeds the cap). The multiplier for the ranker is smooth
and monotone in the count (policy.penalty: onset, at_cap, floor):

    d ≥ 1 + onset       → 1                                   (well under the cap)
    0 ≤ d < 1 + onset   → linear from 1 down to at_cap at d=0 (approaching: no cliff at the cap)
    d < 0               → floor + (at_cap − floor)·2^d        (beyond: keeps falling towards floor)

A soft cap may carry its own shape instead (`Cap.multipliers`, e.g. the cohort's fitted exposure curve): the
multiplier is then `multipliers[count]` (past the table's end, its last value); distance and binding read as above.

A cap's window is rolling (`24h`: the last 24 hours) or calendar (`day`, `week`, `month`: since the period's start in
the policy's `time_zone`); the engine reads whichever count the state holds for it.

The strictest constraint wins across all caps and levels (lowest multiplier; ties: smallest distance), so an
ad-level cap binds even while the campaign cap has room. `hard` rules make a candidate ineligible once d ≤ 0
(penalty 0); `min_gap` (recency) and the stops bind the same way for hard rules. For soft rules the minimum gap is
smooth like the caps: `floor + (1 − floor)·elapsed/gap`, from the floor right after an impression up to exactly 1
at the gap (no jump at the boundary). `stop_after_click` / `stop_after_conversion` are deliberate steps: a click
(conversion) at the level inside `stop_cooldown` (default: the state's longest window) sets the multiplier to the
floor (soft) or makes the candidate ineligible (hard).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from freqcap.domain.policy.schema import Cap, CapRule, PenaltyConfig, Policy

LEVELS = ("advertiser", "campaign", "ad")
_ENTITY_ATTR = {"advertiser": "advertiser_id", "campaign": "campaign_id", "ad": "ad_id"}


@dataclass(frozen=True)
class EntityState:
    """Frequency state of one (user, entity) pair: impression counts by window (length in seconds for a rolling
    window, (period, zone) for a calendar one: `freqcap.domain.calendar`), last impression, clicks and conversions."""

    counts: Mapping[int, int] = field(default_factory=dict)
    last_imp_ts: datetime | None = None
    conversions: int = 0  # in the level's longest window
    clicks: int = 0  # in the level's longest window
    # Clicks and conversions by window length in seconds: what a `stop_cooldown` reads.
    click_counts: Mapping[int, int] = field(default_factory=dict)
    conversion_counts: Mapping[int, int] = field(default_factory=dict)


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
    kind: str = "cap"  # cap | min_gap | stop_after_click | stop_after_conversion


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


def soft_cap_multiplier(cap: Cap, count: int, config: PenaltyConfig) -> float:
    """A soft cap's multiplier with `count` impressions in its window: its own table (`Cap.multipliers`) when it has
    one, else the generic shape of `penalty_for_distance`."""
    if cap.multipliers is not None:
        return cap.multiplier_at(count)
    return penalty_for_distance(cap.max - count, config)


def gap_multiplier(elapsed: float, gap: float, config: PenaltyConfig) -> float:
    """Soft `min_gap`: floor right after an impression, rising linearly to exactly 1 at the gap (continuous)."""
    if elapsed >= gap:
        return 1.0
    return config.floor + (1.0 - config.floor) * (max(elapsed, 0.0) / gap)


def _stop_counts(state: EntityState, cooldown: int | None) -> tuple[int, int]:
    """(clicks, conversions) inside the cool-down; without one, in the longest window."""
    if cooldown is None:
        return state.clicks, state.conversions
    if cooldown not in state.click_counts or cooldown not in state.conversion_counts:
        raise KeyError(f"no click/conversion count for a {cooldown}s cool-down (known: {sorted(state.click_counts)})")
    return int(state.click_counts[cooldown]), int(state.conversion_counts[cooldown])


def _stops(rule, level: str, state: EntityState, penalty: PenaltyConfig):
    """The stop constraints of one rule (CapRule or compiled _Rule): click first, then conversion."""
    if not (rule.stop_after_click or rule.stop_after_conversion):
        return
    hard = rule.mode == "hard" if isinstance(rule, CapRule) else rule.hard
    clicks, conversions = _stop_counts(state, rule.cooldown_seconds)
    mult = 0.0 if hard else penalty.floor
    if rule.stop_after_click and clicks > 0:
        yield mult, None, not hard, (level, rule.stop_cooldown, None, clicks, "stop_after_click")
    if rule.stop_after_conversion and conversions > 0:
        yield mult, None, not hard, (level, rule.stop_cooldown, None, conversions, "stop_after_conversion")


def decide(
    policy: Policy,
    audience: str,
    signal_tier: str,
    candidates: Sequence[Candidate],
    states: Mapping[tuple[str, str], EntityState],
    now: datetime,
) -> list[Decision]:
    """One decision per candidate, in order. `states[(level, entity_id)]` is the user's state for that entity;
    a missing entry means no impressions in any window (all counts zero).

    Runs on the policy's compiled tables (`compile_policy`, built once per policy); the decisions equal
    `decide_reference`'s, which states the semantics one candidate at a time."""
    return compile_policy(policy).cohort(audience, signal_tier).decide(candidates, states, now)


# ---------------------------------------------------------------------------------------------------------------------
# The reference semantics: each candidate on its own, straight from the policy document. Slow; the tests hold the
# compiled path below to it.


def decide_reference(
    policy: Policy,
    audience: str,
    signal_tier: str,
    candidates: Sequence[Candidate],
    states: Mapping[tuple[str, str], EntityState],
    now: datetime,
) -> list[Decision]:
    """`decide`, one candidate at a time: every constraint of every rule that applies at each level (advertiser,
    campaign, ad, in that order); the strictest wins (`_stricter`; on a tie the first), any ineligible one makes
    the candidate ineligible."""
    out = []
    for cand in candidates:
        verdicts = [
            _entity_verdict(
                policy.rules_for(audience, signal_tier, level),
                level,
                states.get((level, cand.entity(level))),
                now,
                policy.penalty,
            )
            for level in LEVELS
        ]
        out.append(Decision(cand.ad_id, *_combine(verdicts)))
    return out


def _window_count(state: EntityState, window_seconds: Any) -> int:
    """The count of a cap's window: by seconds (rolling) or by (period, zone) (calendar)."""
    if window_seconds not in state.counts:
        what = (
            f"{window_seconds[0]} in {window_seconds[1]}" if isinstance(window_seconds, tuple) else f"{window_seconds}s"
        )
        raise KeyError(f"no count for a {what} window (known: {sorted(state.counts, key=str)})")
    return int(state.counts[window_seconds])


def _zero(rule: CapRule) -> EntityState:
    """The state of an entity never shown: zero in every window of the rule."""
    stops = {rule.cooldown_seconds: 0} if rule.cooldown_seconds is not None else {}
    return EntityState(counts={c.window_seconds: 0 for c in rule.caps}, click_counts=stops, conversion_counts=stops)


def _constraints(rule: CapRule, level: str, state: EntityState, now: datetime, penalty: PenaltyConfig):
    """(multiplier, distance, eligible, Binding fields) for each constraint of one rule."""
    hard = rule.mode == "hard"
    for cap in rule.caps:
        count = _window_count(state, cap.window_seconds)
        distance = cap.max - count
        if hard:
            eligible = distance >= 1
            mult = 1.0 if eligible else 0.0
        else:
            eligible, mult = True, soft_cap_multiplier(cap, count, penalty)
        yield mult, float(distance), eligible, (level, cap.window, cap.max, count, "cap")
    if rule.min_gap_seconds and state.last_imp_ts is not None:
        gap = rule.min_gap_seconds
        elapsed = (now - state.last_imp_ts).total_seconds()
        if elapsed < gap:
            mult = 0.0 if hard else gap_multiplier(elapsed, gap, penalty)
            yield mult, None, not hard, (level, rule.min_gap, None, 1, "min_gap")
    yield from _stops(rule, level, state, penalty)


def _entity_verdict(
    rules: Sequence[CapRule], level: str, state: EntityState | None, now: datetime, penalty: PenaltyConfig
):
    """(strictest constraint or None, eligible) of one (level, entity) under its rules."""
    best, eligible = None, True
    for rule in rules:
        use = state if state is not None else _zero(rule)
        for item in _constraints(rule, level, use, now, penalty):
            eligible = eligible and item[2]
            if best is None or _stricter(item, best):
                best = item
    if best is not None:
        best = (best[0], best[1], best[2], Binding(*best[3]))
    return best, eligible


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
    within = f" within {binding.window}" if binding.window else ""
    if binding.kind == "stop_after_conversion":
        return f"{binding.level}: user converted ({binding.count}){within}; stop after conversion"
    if binding.kind == "stop_after_click":
        return f"{binding.level}: user clicked ({binding.count}){within}; stop after click"
    state = "over" if distance is not None and distance <= 0 else "under"
    verdict = "" if eligible else ", ineligible (hard cap)"
    return f"{binding.level} cap {binding.cap}/{binding.window}: {binding.count} seen, {state} the cap{verdict}"


# ---------------------------------------------------------------------------------------------------------------------
# The compiled policy: rules resolved once per (audience, signal tier, level), plain tuples instead of models, the
# soft-cap multiplier tabulated by distance, and the verdict of an entity never shown precomputed. Per request, each
# distinct state object is judged once per level and each distinct combination of the three verdicts is combined
# once; a candidate then costs a few dict lookups.

_NEG_INF = float("-inf")
_OTHER = object()  # any audience (tier) no rule names: only wildcard rules match it
_MULT_TABLE = range(-64, 1)  # soft multipliers tabulated for these distances and up to the largest cap
_new = object.__new__


@dataclass(frozen=True, slots=True)
class _Rule:
    """A CapRule reduced to plain values."""

    # (window label, window seconds, max, multiplier table or None)
    caps: tuple[tuple[str, int, int, tuple[float, ...] | None], ...]
    hard: bool
    min_gap: str | None
    min_gap_seconds: float | None
    stop_after_click: bool
    stop_after_conversion: bool
    stop_cooldown: str | None
    cooldown_seconds: int | None


def _plain(rule: CapRule) -> _Rule:
    return _Rule(
        caps=tuple((c.window, c.window_seconds, c.max, c.multipliers) for c in rule.caps),
        hard=rule.mode == "hard",
        min_gap=rule.min_gap,
        min_gap_seconds=rule.min_gap_seconds,
        stop_after_click=rule.stop_after_click,
        stop_after_conversion=rule.stop_after_conversion,
        stop_cooldown=rule.stop_cooldown,
        cooldown_seconds=rule.cooldown_seconds,
    )


def compile_policy(policy: Policy) -> CompiledPolicy:
    """The policy's compiled tables, built on first use and kept with the (frozen) policy."""
    memo = policy.memo()
    compiled = memo.get("engine.compiled")
    if compiled is None:
        compiled = memo["engine.compiled"] = CompiledPolicy(policy)
    return compiled


class CompiledPolicy:
    """Every (audience, signal tier) cohort of a policy resolved to its rules per level. Audiences (tiers) that no
    rule names behave alike (only `*` rules match them) and share one cohort, so the table is complete."""

    def __init__(self, policy: Policy):
        self.version = policy.version
        self._audiences = frozenset(r.match.audience for r in policy.rules) - {"*"}
        self._tiers = frozenset(r.match.signal_tier for r in policy.rules) - {"*"}
        pen = policy.penalty
        top = max((c.max for r in (*policy.rules, *policy.defaults) for c in r.caps), default=0)
        mults = {d: penalty_for_distance(d, pen) for d in range(_MULT_TABLE.start, max(top, 0) + 1)}
        self.cohorts: dict[tuple[Any, Any], _Cohort] = {
            (a, t): _Cohort(policy, a, t, mults)
            for a in (*sorted(self._audiences), _OTHER)
            for t in (*sorted(self._tiers), _OTHER)
        }

    def cohort(self, audience: str, signal_tier: str) -> _Cohort:
        key = (
            audience if audience in self._audiences else _OTHER,
            signal_tier if signal_tier in self._tiers else _OTHER,
        )
        return self.cohorts[key]


class _Level:
    """One level's rules for one cohort, and the verdict of an entity never shown there."""

    __slots__ = ("level", "rules", "zero")

    def __init__(self, policy: Policy, audience: Any, signal_tier: Any, level: str):
        rules = policy.rules_for(audience, signal_tier, level)
        self.level = level
        self.rules = tuple(_plain(r) for r in rules)
        # No impressions: no recency or conversion constraint applies, so `now` does not matter.
        self.zero = _entity_verdict(rules, level, None, datetime.min, policy.penalty)


class _Cohort:
    __slots__ = ("levels", "mults", "penalty", "zero_key", "zero_proto")

    def __init__(self, policy: Policy, audience: Any, signal_tier: Any, mults: dict[int, float]):
        self.levels = tuple(_Level(policy, audience, signal_tier, level) for level in LEVELS)
        self.penalty = policy.penalty
        self.mults = mults
        zeros = tuple(lv.zero for lv in self.levels)
        self.zero_key = tuple(id(z) for z in zeros)  # the verdicts live as long as the cohort: stable ids
        self.zero_proto = _proto(zeros)

    def decide(
        self, candidates: Sequence[Candidate], states: Mapping[tuple[str, str], EntityState], now: datetime
    ) -> list[Decision]:
        adv, camp, ads = self.levels
        get = states.get
        seen_adv: dict[str, Any] = {}
        seen_camp: dict[str, Any] = {}
        # Per level, by state object: a reader may hand one shared state (e.g. "never shown") for many entities.
        by_adv: dict[int, Any] = {}
        by_camp: dict[int, Any] = {}
        by_ad: dict[int, Any] = {}
        combos = {self.zero_key: self.zero_proto}
        judge = self._judge
        out: list[Decision] = []
        append = out.append
        for cand in candidates:
            key = cand.advertiser_id
            va = seen_adv.get(key)
            if va is None:
                state = get(("advertiser", key))
                if state is None:
                    va = adv.zero
                else:
                    va = by_adv.get(id(state))
                    if va is None:
                        va = by_adv[id(state)] = judge(adv, state, now)
                seen_adv[key] = va
            key = cand.campaign_id
            vc = seen_camp.get(key)
            if vc is None:
                state = get(("campaign", key))
                if state is None:
                    vc = camp.zero
                else:
                    vc = by_camp.get(id(state))
                    if vc is None:
                        vc = by_camp[id(state)] = judge(camp, state, now)
                seen_camp[key] = vc
            state = get(("ad", cand.ad_id))  # ad ids rarely repeat within a request
            if state is None:
                vd = ads.zero
            else:
                vd = by_ad.get(id(state))
                if vd is None:
                    vd = by_ad[id(state)] = judge(ads, state, now)
            combo = (id(va), id(vc), id(vd))  # the verdicts are held by the dicts above: ids stay unique
            proto = combos.get(combo)
            if proto is None:
                proto = combos[combo] = _proto((va, vc, vd))
            # A frozen dataclass's __init__ sets each field through object.__setattr__ (~3x the cost of this):
            # the same instance, filled in directly.
            decision = _new(Decision)
            fields = decision.__dict__
            fields.update(proto)
            fields["ad_id"] = cand.ad_id
            append(decision)
        return out

    def _judge(self, level: _Level, state: EntityState, now: datetime):
        """`_entity_verdict` on the compiled rules (the same constraints in the same order)."""
        best = None
        eligible = True
        bm = bd = 0.0
        counts = state.counts
        mults = self.mults
        pen = self.penalty
        name = level.level
        for rule in level.rules:
            hard = rule.hard
            for window, seconds, cap, table in rule.caps:
                if seconds not in counts:
                    _window_count(state, seconds)  # raises, naming the window
                count = int(counts[seconds])
                distance = cap - count
                if hard:
                    ok = distance >= 1
                    mult = 1.0 if ok else 0.0
                    eligible = eligible and ok
                elif table is not None:
                    ok = True
                    mult = table[count] if count < len(table) else table[-1]
                else:
                    ok = True
                    mult = mults.get(distance)
                    if mult is None:
                        mult = penalty_for_distance(distance, pen)
                if best is None or mult < bm or (mult == bm and distance < bd):
                    best, bm, bd = (mult, float(distance), ok, (name, window, cap, count, "cap")), mult, distance
            if rule.min_gap_seconds and state.last_imp_ts is not None:
                gap = rule.min_gap_seconds
                elapsed = (now - state.last_imp_ts).total_seconds()
                if elapsed < gap:
                    mult = 0.0 if hard else gap_multiplier(elapsed, gap, pen)
                    eligible = eligible and not hard
                    if best is None or mult < bm or (mult == bm and bd > _NEG_INF):
                        best, bm, bd = (mult, None, not hard, (name, rule.min_gap, None, 1, "min_gap")), mult, _NEG_INF
            if rule.stop_after_click or rule.stop_after_conversion:
                for item in _stops(rule, name, state, pen):
                    mult = item[0]
                    eligible = eligible and item[2]
                    if best is None or mult < bm or (mult == bm and bd > _NEG_INF):
                        best, bm, bd = item, mult, _NEG_INF
        if best is not None:
            best = (best[0], best[1], best[2], Binding(*best[3]))
        return best, eligible


def _proto(verdicts) -> dict[str, Any]:
    """A decision's fields but the ad id, from its three verdicts."""
    eligible, penalty, distance, binding, reason = _combine(verdicts)
    return {
        "ad_id": None,
        "eligible": eligible,
        "penalty": penalty,
        "distance_to_cap": distance,
        "binding": binding,
        "reason": reason,
    }

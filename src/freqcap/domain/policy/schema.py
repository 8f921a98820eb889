"""Policy documents: typed, frozen, validated models with stable YAML/JSON serialization (pure, no I/O but paths).

A policy lists cap rules. A rule matches users by audience and signal tier (`*` matches any) and caps one level
of the hierarchy (advertiser, campaign or ad) with one or more windowed caps ("3 per 24h" and "10 per 7d" at once);
the strictest binding cap wins across rules and levels. Rules are tried most specific first (exact audience and tier,
then one wildcard, then both); `defaults` apply when no rule matches a level.

Invalid documents raise `PolicyValidationError`, whose message names each offending field by its path,
e.g. `rules.2.caps.0.max: Input should be greater than or equal to 1`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from freqcap.config import parse_duration
from freqcap.domain.calendar import PERIODS, calendar_key, zone
from freqcap.errors import FreqcapError

Level = Literal["advertiser", "campaign", "ad"]
SCHEMA_VERSION = 1


class PolicyValidationError(FreqcapError):
    """A policy document failed validation; `errors` holds (field path, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("invalid policy: " + "; ".join(f"{path}: {msg}" for path, msg in errors))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Cap(_Frozen):
    """At most `max` impressions of one entity to one user within `window`: a rolling feature window (e.g. 24h) or a
    calendar period (`day`, `week`, `month`: since its start in the policy's `time_zone`)."""

    window: str
    max: int = Field(ge=1)
    # Optional soft-penalty shape (soft rules only): `multipliers[c]` is the multiplier when `c` impressions are
    # already in the window (the next one is the (c+1)-th); counts past the end take the last value. Values in
    # [penalty.floor, 1], non-increasing in c. `freqcap curves fit --penalty-shape curve` writes the cohort's fitted
    # curve here (`freqcap.domain.curves.shape`); without it the generic shape of `policy.penalty` applies.
    multipliers: tuple[float, ...] | None = None
    # Parsed once: the engine reads it for every candidate on the hot path. The key of the count: seconds for a
    # rolling window, (period, zone) for a calendar one (set by the policy, which holds the zone).
    _window_seconds: Any = PrivateAttr(0)

    @field_validator("window")
    @classmethod
    def _window(cls, window: str) -> str:
        if window in PERIODS:
            return window
        if parse_duration(window).total_seconds() <= 0:
            raise ValueError("window must be positive")
        return window

    @field_validator("multipliers")
    @classmethod
    def _multipliers(cls, table: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if table is None:
            return None
        if not table:
            raise ValueError("a multiplier table needs at least one value")
        for i, m in enumerate(table):
            if not 0.0 <= m <= 1.0:  # also rejects NaN
                raise ValueError(f"value {i} ({m}) is outside [0, 1]")
        for i in range(1, len(table)):
            if table[i] > table[i - 1]:
                raise ValueError(
                    f"must be non-increasing in the count: value {i} ({table[i]}) > value {i - 1} ({table[i - 1]})"
                )
        return table

    def multiplier_at(self, count: int) -> float:
        """The table's multiplier with `count` impressions already in the window (past the end: the last value)."""
        table = self.multipliers
        assert table is not None
        return table[count] if count < len(table) else table[-1]

    def model_post_init(self, context: Any) -> None:
        if self.window in PERIODS:
            self._window_seconds = (self.window, "UTC")
        else:
            self._window_seconds = int(parse_duration(self.window).total_seconds())

    @property
    def calendar(self) -> str | None:
        """The calendar period (`day`, `week`, `month`), or None for a rolling window."""
        return self.window if self.window in PERIODS else None

    @property
    def window_seconds(self) -> Any:
        """The key of this cap's count in a state's counts: seconds (rolling) or (period, zone) (calendar)."""
        return self._window_seconds


class Match(_Frozen):
    """Which users a rule applies to; `*` matches any value."""

    audience: str = "*"
    signal_tier: Literal["*", "impression_only", "engaged", "converter"] = "*"

    @property
    def specificity(self) -> int:
        return (self.audience != "*") * 2 + (self.signal_tier != "*")


class CapRule(_Frozen):
    """Caps for one level of the hierarchy, for the users `match` selects."""

    match: Match = Match()
    level: Level
    caps: tuple[Cap, ...] = Field(min_length=1)
    # Minimum time between two impressions of the same entity (recency), e.g. "30m".
    min_gap: str | None = None
    # Over the cap: `soft` lowers the ranking score smoothly, `hard` makes the candidate ineligible.
    mode: Literal["soft", "hard"] = "soft"
    # Stop showing the level's entity to a user who clicked (converted) on it, for `stop_cooldown` after the click
    # (conversion); without a cool-down, for the level's longest feature window.
    stop_after_click: bool = False
    stop_after_conversion: bool = False
    # A feature window of the level (e.g. "7d"): the stop holds while a click (conversion) is inside it.
    stop_cooldown: str | None = None
    # Where the cap came from (fitted curve support, fallback reason, ...): informational only.
    provenance: dict[str, Any] = Field(default_factory=dict)
    _min_gap_seconds: float | None = PrivateAttr(None)
    _cooldown_seconds: int | None = PrivateAttr(None)

    def model_post_init(self, context: Any) -> None:
        if self.min_gap is not None:
            self._min_gap_seconds = parse_duration(self.min_gap).total_seconds()
        if self.stop_cooldown is not None:
            self._cooldown_seconds = int(parse_duration(self.stop_cooldown).total_seconds())

    @property
    def min_gap_seconds(self) -> float | None:
        return self._min_gap_seconds

    @property
    def cooldown_seconds(self) -> int | None:
        """The cool-down in seconds; None: the stops look at the level's longest window."""
        return self._cooldown_seconds

    @field_validator("stop_cooldown")
    @classmethod
    def _cooldown(cls, cooldown: str | None) -> str | None:
        if cooldown is not None and parse_duration(cooldown).total_seconds() <= 0:
            raise ValueError("stop_cooldown must be a positive duration")
        return cooldown

    @model_validator(mode="after")
    def _cooldown_needs_a_stop(self) -> CapRule:
        if self.stop_cooldown is not None and not (self.stop_after_click or self.stop_after_conversion):
            raise ValueError("stop_cooldown needs stop_after_click or stop_after_conversion")
        return self

    @field_validator("min_gap")
    @classmethod
    def _gap(cls, gap: str | None) -> str | None:
        if gap is not None and parse_duration(gap).total_seconds() <= 0:
            raise ValueError("min_gap must be positive")
        return gap

    @model_validator(mode="after")
    def _table_needs_soft(self) -> CapRule:
        if self.mode == "hard":
            bad = [i for i, c in enumerate(self.caps) if c.multipliers is not None]
            if bad:
                raise ValueError(f"caps.{bad[0]}.multipliers: a multiplier table needs mode 'soft' (this rule is hard)")
        return self

    @model_validator(mode="after")
    def _one_cap_per_window(self) -> CapRule:
        windows = [c.window_seconds for c in self.caps]
        if len(set(windows)) != len(windows):
            raise ValueError("at most one cap per window")
        return self


class PenaltyConfig(_Frozen):
    """Shape of the smooth penalty: multiplier = 1 well under the cap, falling through the cap, never a cliff."""

    # How many impressions before the cap the penalty starts to bite.
    onset: float = Field(1.0, ge=0.0)
    # Multiplier exactly at the cap (the next impression would exceed it).
    at_cap: float = Field(0.5, gt=0.0, le=1.0)
    # Floor of the multiplier far beyond the cap (0 would be a ban; soft rules keep some chance).
    floor: float = Field(0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> PenaltyConfig:
        if self.floor > self.at_cap:
            raise ValueError("floor must not exceed at_cap")
        return self


class Policy(_Frozen):
    """A complete, versioned capping policy."""

    schema_version: Literal[1] = SCHEMA_VERSION
    version: str = Field(min_length=1)
    created_at: datetime
    description: str = ""
    source: dict[str, Any] = Field(default_factory=dict)
    penalty: PenaltyConfig = PenaltyConfig()
    # The IANA zone of the calendar caps (`window: day | week | month`); it must be the features' calendar zone.
    time_zone: str = "UTC"
    defaults: tuple[CapRule, ...] = ()
    rules: tuple[CapRule, ...] = ()

    # Derived, immutable views other modules cache per policy (e.g. the engine's compiled rules).
    _memo: dict[Any, Any] = PrivateAttr(default_factory=dict)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)  # raises naming the zone
        return value

    def model_post_init(self, context: Any) -> None:
        # A calendar cap counts in the policy's zone: its count key carries it.
        for rule in (*self.defaults, *self.rules):
            for cap in rule.caps:
                if cap.calendar is not None:
                    cap._window_seconds = calendar_key(cap.calendar, self.time_zone)

    def memo(self) -> dict[Any, Any]:
        """A per-policy cache for values derived from this (frozen) policy."""
        return self._memo

    @model_validator(mode="after")
    def _defaults_match_everyone(self) -> Policy:
        for i, rule in enumerate(self.defaults):
            if rule.match.specificity:
                raise ValueError(f"defaults.{i}: a default rule must match every user (audience and tier '*')")
        keys = [(r.match.audience, r.match.signal_tier, r.level) for r in self.rules]
        dupes = {k for k in keys if keys.count(k) > 1}
        if dupes:
            raise ValueError(f"rules: more than one rule for (audience, signal_tier, level) {sorted(dupes)}")
        return self

    @model_validator(mode="after")
    def _tables_above_floor(self) -> Policy:
        # A soft rule keeps some chance (the floor); a table below it would be a ban the generic shape never is.
        for key in ("defaults", "rules"):
            for i, rule in enumerate(getattr(self, key)):
                for j, cap in enumerate(rule.caps):
                    if cap.multipliers is not None and min(cap.multipliers) < self.penalty.floor:
                        raise ValueError(
                            f"{key}.{i}.caps.{j}.multipliers: {min(cap.multipliers)} is below penalty.floor "
                            f"({self.penalty.floor})"
                        )
        return self

    def rules_for(self, audience: str, signal_tier: str, level: str) -> tuple[CapRule, ...]:
        """The rule that applies at `level` (most specific match first), else the level's defaults."""
        candidates = [
            r
            for r in self.rules
            if r.level == level and r.match.audience in ("*", audience) and r.match.signal_tier in ("*", signal_tier)
        ]
        if candidates:
            return (max(candidates, key=lambda r: r.match.specificity),)
        return tuple(r for r in self.defaults if r.level == level)


def _errors(exc: ValidationError) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in err["loc"]) or "(document)", err["msg"]) for err in exc.errors()]


def parse_policy(document: dict[str, Any] | str) -> Policy:
    """Validate a policy given as a dict or YAML/JSON text; raise PolicyValidationError naming the fields."""
    if isinstance(document, str):
        try:
            document = yaml.safe_load(document)
        except (yaml.YAMLError, ValueError, RecursionError) as exc:  # e.g. a 10 000-digit int, nesting too deep
            raise PolicyValidationError([("(document)", f"not valid YAML/JSON: {exc}")]) from exc
    if not isinstance(document, dict):
        raise PolicyValidationError([("(document)", "a policy must be a mapping")])
    try:
        return Policy.model_validate(document)
    except ValidationError as exc:
        raise PolicyValidationError(_errors(exc)) from exc


def load_policy(path: str | Path) -> Policy:
    return parse_policy(Path(path).read_text())


def policy_document(policy: Policy) -> dict[str, Any]:
    """A plain, stable dict (empty provenance dropped) for YAML/JSON output and diffs. A cap without a multiplier
    table has no `multipliers` key, so documents that use none read as before the table existed."""
    doc = json.loads(policy.model_dump_json(exclude_defaults=False))
    for key in ("defaults", "rules"):
        for rule in doc.get(key, ()):
            for cap in rule.get("caps", ()):
                if cap.get("multipliers", 0) is None:
                    del cap["multipliers"]
    return doc


def dump_policy(policy: Policy, path: str | Path) -> Path:
    """Write YAML (or JSON for a .json path) with a stable key order, so that policies diff line by line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = policy_document(policy)
    text = json.dumps(doc, indent=2) + "\n" if path.suffix == ".json" else yaml.safe_dump(doc, sort_keys=False)
    path.write_text(text)
    return path

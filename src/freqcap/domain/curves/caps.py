"""Floors and cap selection (pure).

The cap of a curve is the last exposure n whose marginal conversion rate — and that of every exposure before
it — is still at or above the floor rate. It is read off the *smoothed* curve (unimodal: it may rise for a
few exposures, then only falls; see `freqcap.domain.curves.smooth`), so one noisy bin neither ends the curve early
nor extends it. The same rule applied to the smoothed CI bounds gives a plausible range: `cap_low` (from the
lower bound: the earliest the crossing can be) and `cap_high` (from the upper bound).

Floors:
- `relative`: R × the group's first-exposure rate (default R = 0.5: stop where an impression converts at half
  the rate of the first);
- `absolute`: a conversion rate per impression;
- `economic`: cost of an impression / value of a conversion (value × marginal rate ≥ cost), the value given or
  the mean `conversion_value` in the data.

If the curve stays above the floor up to its last supported n, the cap is that n and `censored` is set: the
data show the cap is at least that, not where it is. A cap is flagged `determined` (caps table) when it comes
from the group's own curve, is not censored, and its range cap_high − cap_low is at most `max_cap_range`
(default 4 exposures); otherwise the reason says "uncertain" with the range, so nobody mistakes noise for a cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

FloorKind = Literal["relative", "absolute", "economic"]


@dataclass(frozen=True)
class FloorSpec:
    kind: FloorKind = "relative"
    value: float = 0.5  # R (relative), a rate (absolute); unused for economic
    cost_per_impression: float | None = None  # economic
    value_per_conversion: float | None = None  # economic (None: mean conversion value in the data)

    def __post_init__(self) -> None:
        if self.kind not in ("relative", "absolute", "economic"):
            raise ValueError(f"floor kind must be relative, absolute or economic, got {self.kind!r}")
        if self.kind == "relative" and not 0.0 < self.value <= 1.0:
            raise ValueError(f"a relative floor must be in (0, 1], got {self.value}")
        if self.kind == "absolute" and not 0.0 <= self.value <= 1.0:
            raise ValueError(f"an absolute floor is a rate in [0, 1], got {self.value}")
        if self.kind == "economic" and (self.cost_per_impression is None or self.cost_per_impression < 0):
            raise ValueError("an economic floor needs cost_per_impression ≥ 0")

    def rate(self, first_rate: float, mean_value: float | None = None) -> float:
        """The floor as a conversion rate, for a group whose first-exposure rate is `first_rate`."""
        if self.kind == "relative":
            return self.value * first_rate
        if self.kind == "absolute":
            return self.value
        value = self.value_per_conversion if self.value_per_conversion is not None else mean_value
        if value is None or not np.isfinite(value) or value <= 0:
            raise ValueError("an economic floor needs a positive value per conversion (none given, none in data)")
        assert self.cost_per_impression is not None
        return self.cost_per_impression / value

    @property
    def label(self) -> str:
        if self.kind == "relative":
            return f"{self.value:g} × first-exposure rate"
        if self.kind == "absolute":
            return f"rate {self.value:g}"
        return f"cost {self.cost_per_impression:g} / value per conversion"


@dataclass(frozen=True)
class CapDecision:
    cap: int  # 0: even the first exposure is below the floor
    censored: bool  # the curve never fell below the floor within its supported range
    reason: str


def leading_above(rates: np.ndarray, floor_rate: float) -> int:
    """Number of leading points ≥ floor_rate (the last n whose rate and all before it stay ≥ the floor)."""
    below = np.flatnonzero(~(np.asarray(rates, dtype=np.float64) >= floor_rate))
    return int(below[0]) if below.size else len(rates)


def select_cap(rate_smooth: np.ndarray, floor_rate: float) -> CapDecision:
    """Cap from a smoothed curve given for n = 1 … len(rate_smooth)."""
    n_max = len(rate_smooth)
    if n_max == 0:
        return CapDecision(0, True, "no supported exposure")
    cap = leading_above(rate_smooth, floor_rate)
    if cap == n_max:
        return CapDecision(cap, True, f"stays above the floor through n={n_max}, the last n with support: cap ≥ {cap}")
    if cap == 0:
        return CapDecision(0, False, "the first exposure is already below the floor")
    return CapDecision(cap, False, f"marginal rate falls below the floor at n={cap + 1}")

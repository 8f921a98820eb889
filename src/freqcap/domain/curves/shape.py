"""The soft penalty shaped like a cohort's fitted exposure curve (pure numpy).

The generic soft penalty (`freqcap.domain.policy.engine.penalty_for_distance`) is one shape for every cohort: 1 well
under the cap, a linear approach to `at_cap` at the cap, then a halving towards the floor. A cohort's fitted curve
already says how much less the next impression converts: with `count` impressions of the entity already in the
window, the next one is the (count + 1)-th, and its rate relative to the first is

    multiplier[count] = rate(count + 1) / rate(1)        (the smoothed curve, `rate_smooth`)

clipped to [floor, 1] and made non-increasing (a running minimum: a wear-in rise never lifts the multiplier above
an earlier one, and the ranker never prefers a more-exposed entity). Past the curve's last supported n the table
keeps falling the way the generic shape does beyond the cap — halving the distance to the floor per impression —
rather than holding the last supported value for ever; it ends once within `TAIL_TOLERANCE` of the floor (the
engine holds the last value for larger counts).
"""

from __future__ import annotations

import numpy as np

TAIL_TOLERANCE = 1e-4  # the tail stops once this close to the floor
DECIMALS = 6  # the engine rounds multipliers to 6 decimals; the table is published at that precision


def curve_multipliers(rate_smooth: np.ndarray, floor: float) -> tuple[float, ...] | None:
    """The multiplier table (index: impressions already in the window) of a smoothed curve for n = 1, 2, …; None
    when the curve has no positive, finite first-exposure rate (the generic shape applies then)."""
    rates = np.asarray(rate_smooth, dtype=np.float64)
    if not len(rates) or not np.isfinite(rates[0]) or rates[0] <= 0:
        return None
    bad = np.flatnonzero(~np.isfinite(rates))
    if bad.size:  # a hole in the curve: what follows it is not supported either
        rates = rates[: bad[0]]
    rel = np.minimum.accumulate(np.clip(rates / rates[0], floor, 1.0))
    tail = []
    last = float(rel[-1])
    while last - floor > TAIL_TOLERANCE:
        last = floor + (last - floor) / 2.0
        tail.append(last)
    table = np.concatenate([rel, np.asarray(tail, dtype=np.float64)])
    # Rounding is monotone, so the table stays non-increasing; never below the floor the policy validates against.
    table = np.maximum(np.round(table, DECIMALS), floor)
    ends = np.flatnonzero(table <= floor)
    if ends.size:  # the engine holds the last value: one floor entry says it
        table = table[: ends[0] + 1]
    return tuple(float(v) for v in table)

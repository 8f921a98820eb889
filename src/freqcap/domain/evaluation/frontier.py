"""Equal impression volume: the conversions-vs-impressions frontier of a policy, traced by its reserve (pure).

A policy fills fewer opportunities as its reserve rises (an opportunity is filled only when the best score ×
penalty reaches the reserve), so each policy has a frontier of (impressions, conversions) points, from its
natural volume (reserve 0) down to nothing. Two policies are compared *at equal volume* by reading one
policy's frontier at the other's impressions: linear interpolation between the runs around the target volume
(`interpolate`). A run is placed within `tolerance` (1 %) of every target volume (`match_volume`), so the
interpolation spans a short stretch of a smooth, mildly concave curve and its error is negligible next to the
differences measured. A target above a policy's natural
volume cannot be reached by a reserve: the comparison is then not made (NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrontierPoint:
    reserve: float
    impressions: float
    conversions: float
    expected_conversions: float = float("nan")


def interpolate(points: Sequence[FrontierPoint], volume: float, metric: str = "conversions") -> float:
    """`metric` at `volume` impressions, read off the policy's runs: linear between the two runs that bracket
    the volume; below the lowest run, the line through the two lowest runs (a short extrapolation, since a run
    is placed within a percent or so of every target) or, with a single run, through the origin. NaN above the
    natural (largest) volume: a reserve cannot add impressions."""
    if not points or not np.isfinite(volume) or volume < 0:
        return float("nan")
    xs = np.array([p.impressions for p in points], dtype=np.float64)
    ys = np.array([getattr(p, metric) for p in points], dtype=np.float64)
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    if volume > xs[-1]:
        return float("nan")
    on = xs == volume
    if on.any():
        return float(ys[on].mean())
    hi = int(np.searchsorted(xs, volume, side="left"))
    if hi == 0:  # below every run
        if len(xs) < 2 or xs[1] == xs[0]:
            return float(ys[0] * volume / xs[0]) if xs[0] > 0 else float("nan")
        lo, hi = 0, 1
    else:
        lo = hi - 1
    w = (volume - xs[lo]) / (xs[hi] - xs[lo])
    return float(ys[lo] + w * (ys[hi] - ys[lo]))


def nearest_gap(points: Sequence[FrontierPoint], volume: float) -> float:
    """Distance from `volume` to the nearest run, relative to `volume` (0: a run sits on it)."""
    if not points or volume <= 0:
        return float("nan")
    return float(min(abs(p.impressions - volume) for p in points) / volume)


def reserve_for_volume(best_value: np.ndarray, volume: float) -> float:
    """The reserve that keeps the `volume` best opportunities of a run with these best score × penalty values,
    if the frequency states did not change (they do: fewer impressions leave users fresher, so a replay at
    this reserve fills a little more; `match_volume` corrects for that)."""
    v = np.asarray(best_value, dtype=np.float64)
    v = v[v > 0]
    k = round(float(volume))
    if k >= len(v):
        return 0.0
    if k <= 0:
        return float(np.inf)
    return float(np.partition(v, len(v) - k)[len(v) - k])


def match_volume(
    run: Callable[[float], tuple[FrontierPoint, np.ndarray]],
    known: list[tuple[FrontierPoint, np.ndarray]],
    target: float,
    *,
    tolerance: float = 0.01,
    max_runs: int = 3,
) -> list[tuple[FrontierPoint, np.ndarray]]:
    """Runs of one policy near `target` impressions: each new reserve is predicted from the run closest to the
    target so far (`reserve_for_volume` on its best values), until a run lands within `tolerance` (relative) or
    `max_runs` were made. `run(reserve)` returns (point, best values); `known` are the policy's runs so far
    (at least its natural run). Returns the new runs; a target above the natural volume gets none."""
    if not known:
        raise ValueError("match_volume needs the policy's natural run")
    pool = list(known)
    natural = max(p.impressions for p, _ in pool)
    if target > natural * (1 + 1e-12) or target <= 0:
        return []
    new: list[tuple[FrontierPoint, np.ndarray]] = []
    for _ in range(max_runs):
        closest = min(pool, key=lambda pv: abs(pv[0].impressions - target))
        if abs(closest[0].impressions - target) <= tolerance * target:
            break
        result = run(reserve_for_volume(closest[1], target))
        new.append(result)
        pool.append(result)
    return new

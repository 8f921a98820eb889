"""Shape-constrained smoothing of exposure curves (pure numpy).

An exposure–response curve may rise for the first few exposures (wear-in) and then only falls (wear-out). The
smoother fits the closest *unimodal* sequence in weighted least squares — non-decreasing up to a peak among
the first `max_peak` exposures, non-increasing after it — by weighted pool-adjacent-violators (isotonic
regression) on each side, trying each candidate peak. One noisy bin therefore cannot make the curve jump back
above a floor it has already crossed: it is pooled with its neighbours.
"""

from __future__ import annotations

import numpy as np


def isotonic_decreasing(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-increasing fit (pool adjacent violators)."""
    v = np.asarray(values, dtype=np.float64)
    w = np.maximum(np.asarray(weights, dtype=np.float64), 1e-12)
    means: list[float] = []
    wts: list[float] = []
    sizes: list[int] = []
    for x, wx in zip(v, w, strict=True):
        means.append(float(x))
        wts.append(float(wx))
        sizes.append(1)
        while len(means) > 1 and means[-2] < means[-1]:
            m2, w2, s2 = means.pop(), wts.pop(), sizes.pop()
            total = wts[-1] + w2
            means[-1] = (means[-1] * wts[-1] + m2 * w2) / total
            wts[-1] = total
            sizes[-1] += s2
    return np.repeat(np.asarray(means), sizes)


def isotonic_increasing(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return -isotonic_decreasing(-np.asarray(values, dtype=np.float64), weights)


def unimodal_fit(values: np.ndarray, weights: np.ndarray, max_peak: int = 4) -> tuple[np.ndarray, int]:
    """Best weighted unimodal fit with the peak at index 0 … max_peak − 1; returns (fit, peak index)."""
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if len(v) == 0:
        return v.copy(), 0
    best: tuple[float, np.ndarray, int] | None = None
    for peak in range(min(max_peak, len(v))):
        up = isotonic_increasing(v[: peak + 1], w[: peak + 1])
        down = isotonic_decreasing(v[peak:], w[peak:])
        # the two halves share the peak point: let the larger fitted value stand
        fit = np.r_[up[:-1], max(up[-1], down[0]), down[1:]]
        if peak and fit[peak] < fit[peak - 1]:
            continue
        sse = float(np.sum(w * (fit - v) ** 2))
        if best is None or sse < best[0] - 1e-15:
            best = (sse, fit, peak)
    assert best is not None
    return best[1], best[2]


def monotone_tail(values: np.ndarray, weights: np.ndarray, max_peak: int = 4) -> np.ndarray:
    """The unimodal fit alone (see `unimodal_fit`)."""
    return unimodal_fit(values, weights, max_peak)[0]

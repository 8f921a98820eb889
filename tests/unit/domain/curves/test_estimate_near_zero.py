"""A point whose credit is a sliver of a conversion (EM credit is never exactly 0) gets the zero-event bound, not a
log-scale interval that explodes to [0, 1]: one such point used to drag a cohort's whole smoothed upper band up
and leave its cap undetermined (seen on young worlds: ci_high = 1.0 at n = 32 of the largest cohort)."""

from __future__ import annotations

import numpy as np
import pytest

from freqcap.domain.curves.estimate import EstimatorParams, GroupedInput, estimate_curves


def _inputs(credit_at_3: float) -> GroupedInput:
    rng = np.random.default_rng(3)
    users = 2000
    user = np.repeat(np.arange(users), 3)
    n = np.tile([1, 2, 3], users)
    y_first = (rng.random(users) < 0.05).astype(float)
    y = np.where(n == 1, np.repeat(y_first, 3), np.where(n == 2, (rng.random(3 * users) < 0.03), 0.0)).astype(float)
    y[n == 3] = 0.0
    y[np.flatnonzero(n == 3)[0]] = credit_at_3  # all of n = 3's credit on one impression
    y_entry = np.repeat(y_first, 3)
    return GroupedInput(user, np.zeros(len(user), dtype=np.int64), n, y, y_entry, 1)


@pytest.mark.parametrize("sliver", [1e-10, 1e-4, 0.3])
def test_sliver_of_credit_gets_the_zero_event_bound(sliver: float) -> None:
    params = EstimatorParams(min_support=1, min_entry_conversions=0)
    zero = estimate_curves(_inputs(0.0), params).set_index("n").loc[3]
    got = estimate_curves(_inputs(sliver), params).set_index("n").loc[3]
    # the exact zero case: [0, first_rate × 3.69 / entry conversions] (Poisson upper bound for no event)
    first, entry = zero["first_rate"], zero["entry_conversions"]
    assert zero["ci_high"] == pytest.approx(first * -np.log(0.025) / entry)
    assert got["ci_low"] == 0.0
    assert got["ci_high"] == pytest.approx(zero["ci_high"])
    assert got["ci_high"] < 0.05

"""The statistics that decide claims, against known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from quadrun.claims import (above, bootstrap_interval, claim, contains, finite, fmt_interval,
                            t_interval, welch_interval)


def test_t_interval_known_answer():
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)          # t_{0.975, 2} * s / sqrt(n), s = 1
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert t_interval([5.0]) == (5.0, None, None)
    assert t_interval([]) == (None, None, None)


def test_welch_interval_equals_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 7), rng.normal(0.0, 2.0, 5)
    diff, low, high = welch_interval(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_bootstrap_interval_brackets_the_median_and_is_reproducible():
    x = np.arange(20.0)
    est, low, high = bootstrap_interval(x, seed=3)
    assert est == 9.5 and low < 9.5 < high
    assert bootstrap_interval(x, seed=3) == (est, low, high)
    assert bootstrap_interval([1.0]) == (1.0, None, None)


def test_verdicts_from_intervals():
    assert above(0.1, 0.5) == "holds"
    assert above(-0.5, -0.1) == "fails"
    assert above(-0.1, 0.1) == "inconclusive"
    assert above(None, None) == "inconclusive"
    assert above(1.5, 2.0, threshold=1.0) == "holds"
    assert contains(1.0, 3.0, 2.0) and not contains(1.0, 3.0, 4.0) and not contains(None, 1, 0)


def test_claim_rejects_unknown_verdicts_and_finite_filters():
    with pytest.raises(ValueError, match="verdict must be one of"):
        claim("x", "s", "src", measured="m", target="t", verdict="true", why="w")
    assert finite([1, None, float("nan"), float("inf"), True, "a", 2.5]) == [1.0, 2.5]
    assert fmt_interval(1.234, 1.0, 1.5) == "1.23 [1, 1.5]"
    assert fmt_interval(1.234, None, None) == "1.23 (no interval)"

"""quadrun.stats against known answers (scipy's where scipy has the same statistic)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from quadrun import stats


def test_finite_median_mean():
    assert stats.finite([1, None, float("nan"), float("inf"), True, "a", 2.5, np.float64(3)]) \
        == [1.0, 2.5, 3.0]
    assert stats.median([3, None, 1, 2]) == 2.0 and stats.median([]) is None
    assert stats.mean([1, 2, float("nan")]) == 1.5 and stats.mean([None]) is None


def test_t_interval_equals_scipy():
    x = np.array([1.0, 2.0, 3.0, 7.0])
    est, low, high = stats.t_interval(x)
    ref = sp.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sp.sem(x))
    assert est == pytest.approx(x.mean()) and (low, high) == pytest.approx(ref, rel=1e-12)
    assert tuple(stats.t_interval([5.0])) == (5.0, None, None)
    assert tuple(stats.t_interval([])) == (None, None, None)


def test_welch_interval_equals_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 7), rng.normal(0.0, 2.0, 5)
    diff, low, high = stats.welch_interval(a, b)
    ci = sp.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert stats.welch_interval([1, 1], [1, 1]) == stats.Interval(0.0, 0.0, 0.0)
    assert not stats.welch_interval([1.0], [2.0, 3.0]).has_interval


def test_bootstrap_agrees_with_scipy_percentile_bootstrap():
    x = np.random.default_rng(1).lognormal(0, 1, 40)
    mine = stats.bootstrap(x, np.median, n=4000, seed=2)
    ref = sp.bootstrap((x,), np.median, n_resamples=4000, method="percentile",
                       random_state=np.random.default_rng(3)).confidence_interval
    assert mine.estimate == pytest.approx(np.median(x))
    # two independent Monte Carlo runs of the same percentile interval
    width = ref.high - ref.low
    assert abs(mine.low - ref.low) < 0.15 * width and abs(mine.high - ref.high) < 0.15 * width
    assert stats.bootstrap(x, np.median, n=4000, seed=2) == mine          # reproducible
    assert tuple(stats.bootstrap([1.0])) == (1.0, None, None)


def test_percentile_convention_is_outward_and_keeps_infinite_draws():
    draws = list(range(1, 101))                      # 1..100
    assert stats.percentile_interval(draws) == (3.0, 98.0)   # lower / higher order stats
    low, high = stats.percentile_interval(draws[:-5] + [math.inf] * 5)
    assert high == math.inf and low == 3.0
    assert stats.percentile_interval([math.nan, 1.0, 2.0]) == (1.0, 2.0)


def test_bootstrap_groups_resamples_within_each_group():
    groups = {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]}
    seen = []

    def stat(g):
        seen.append({k: sorted(v) for k, v in g.items()})
        return float(np.mean(g["b"]) - np.mean(g["a"]))

    iv = stats.bootstrap_groups(groups, stat, n=500, seed=0)
    assert iv.estimate == 18.0 and iv.low < 18.0 < iv.high
    # every resample keeps each group's units inside the group, with the group's size
    assert all(set(s["a"]) <= {1.0, 2.0, 3.0} and len(s["b"]) == 3 for s in seen)
    # several named statistics from the same resamples; an undefined one is dropped
    both = stats.bootstrap_groups(groups, lambda g: {"a": np.mean(g["a"]),
                                                     "none": None}, n=50, seed=0)
    assert both["a"].has_interval and both["none"].estimate is None \
        and both["none"].dropped == 50
    assert not stats.bootstrap_groups({"a": [1.0]}, lambda g: 1.0, n=50).has_interval


def test_clopper_pearson_known_answers():
    low, high = stats.clopper_pearson(3, 10)
    assert (low, high) == pytest.approx((0.06673951117773447, 0.6524528500599973), rel=1e-9)
    assert stats.clopper_pearson(0, 10)[0] == 0.0 and stats.clopper_pearson(10, 10)[1] == 1.0
    ref = sp.binomtest(3, 10).proportion_ci(0.95, method="exact")
    assert (low, high) == pytest.approx((ref.low, ref.high), rel=1e-9)


def test_fisher_one_sided_equals_scipy():
    less, more = stats.fisher_one_sided(1, 15, 7, 15)
    assert less == pytest.approx(sp.fisher_exact([[1, 14], [7, 8]], alternative="less")[1])
    assert more == pytest.approx(sp.fisher_exact([[1, 14], [7, 8]], alternative="greater")[1])
    assert less < 0.05 < more


def test_line_fit_equals_linregress():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([2.1, 3.9, 6.2, 7.8, 10.1])
    fit = stats.line_fit(x, y)
    ref = sp.linregress(x, y)
    half = sp.t.ppf(0.975, 3) * ref.stderr
    assert fit.slope == pytest.approx(ref.slope) and fit.intercept == pytest.approx(ref.intercept)
    assert (fit.low, fit.high) == pytest.approx((ref.slope - half, ref.slope + half))
    assert fit.r2 == pytest.approx(ref.rvalue ** 2)
    assert stats.line_fit([1, 2], [1, 3]).low is None       # two points: no interval
    assert stats.line_fit([1], [1]) is None


def test_holm_known_answer():
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (monotone), 0.5
    assert stats.holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert stats.holm([None, 0.2]) == [None, 0.2]


def test_detectable_difference_matches_a_simulated_power():
    sd, n = 2.0, 12
    mdd = stats.detectable_difference(sd, n, sd, n)
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        a, b = rng.normal(mdd, sd, n), rng.normal(0, sd, n)
        hits += stats.welch_interval(a, b).low > 0
    assert 0.72 < hits / 2000 < 0.86                  # 80 % power, two-sided 95 %
    assert stats.runs_needed(sd, sd, mdd) == n

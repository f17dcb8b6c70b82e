"""The one statistics module every claim uses (torch-free: numpy and scipy).

Every interval is a two-sided 95 % interval unless `level` says otherwise, returned as an
`Interval(estimate, low, high)`; `low`/`high` are None when the data cannot give one
(fewer than two values, no spread to resample).

- `finite`, `median`, `mean`, `std`: the numbers among values (None, NaN, inf and
  non-numbers dropped), their median, mean and sample standard deviation;
  `censored_median`, `censored_ratio`: the same where +inf is a target never reached;
  `column_medians`: medians over the rows of a small array, fast for bootstraps.
- `t_interval` (the mean), `welch_interval` (a difference of means, Welch's t).
- `bootstrap` (any statistic of one sample) and `bootstrap_groups` (any statistic of
  several groups, units resampled within each group: seeds within each d, say).
  One convention for both, the percentile bootstrap taken outwards: the interval is the
  lower (alpha/2) and upper (1 - alpha/2) order statistics of the draws
  (`np.quantile(..., method="lower" / "higher")`). A draw may be +-inf (a resample whose
  statistic is censored, e.g. a target never reached): it then sits at its end of the
  interval. A NaN draw (the statistic is undefined for that resample) is dropped and
  counted in `Interval.dropped`. With few units per group (3 seeds, say) the percentile
  bootstrap under-covers (simulate the rule that uses it; pde's slope rule does).
- `welch_p`: the one-sided p-value that matches a two-sided Welch interval.
- `clopper_pearson` (a binomial rate), `fisher_one_sided` (two rates), `fisher_runs_needed`.
- `least_squares` (slope, intercept), `line_fit`: the same with the slope's t interval
  and R^2.
- `holm`: Holm's step-down adjusted p-values.
- `detectable_difference`, `runs_needed`: the smallest difference of means that a Welch
  comparison of this many runs detects at 80 % power, and the runs per arm a difference
  needs (normal-theory t approximation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Union

import numpy as np

LEVEL = 0.95          # every interval, unless a claim says otherwise
BOOTSTRAP = 2000      # resamples, unless a claim says otherwise


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval (low/high None: no interval)."""
    estimate: Optional[float]
    low: Optional[float] = None
    high: Optional[float] = None
    dropped: int = 0          # bootstrap draws whose statistic was undefined

    def __iter__(self):       # est, low, high = interval
        return iter((self.estimate, self.low, self.high))

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def width(self) -> Optional[float]:
        return self.high - self.low if self.has_interval else None


# -- numbers --------------------------------------------------------------------------------
def is_number(v) -> bool:
    """A finite int or float (bools are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(float(v))


def finite(values: Iterable) -> List[float]:
    """The finite numbers among `values` as floats (None, NaN, inf, bools, text dropped)."""
    return [float(v) for v in values if is_number(v)]


def median(values: Iterable) -> Optional[float]:
    x = finite(values)
    return float(np.median(x)) if x else None


def mean(values: Iterable) -> Optional[float]:
    x = finite(values)
    return float(np.mean(x)) if x else None


def std(values: Iterable) -> Optional[float]:
    """The sample standard deviation (ddof = 1; 0 for one value)."""
    x = finite(values)
    if not x:
        return None
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def column_medians(vals: np.ndarray) -> np.ndarray:
    """np.median(vals, axis=0) for a small (seeds x ns) array, by one sort (several times
    faster for the bootstrap's thousands of calls)."""
    m = len(vals)
    s = np.sort(vals, axis=0)
    return s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) / 2


def censored_median(values: Iterable) -> float:
    """The median of values where a missing or infinite one is a target never reached
    (+inf): it stays in the sample, so a median can itself be +inf. (Python's
    statistics.median: fast on the short lists a bootstrap evaluates 10^5 times.)"""
    import statistics

    x = [math.inf if v is None or not math.isfinite(v) else float(v) for v in values]
    return float(statistics.median(x)) if x else math.inf


def censored_ratio(a: float, b: float) -> Optional[float]:
    """a / b for censored values (+inf: never reached): inf when only b is finite, 0 when
    only a is, None when neither is (undecided)."""
    if math.isinf(a) and math.isinf(b):
        return None
    if math.isinf(b):
        return 0.0
    return math.inf if math.isinf(a) else a / b


# -- t intervals --------------------------------------------------------------------------------
def _t(level: float, dof: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, dof))


def t_interval(values: Sequence, level: float = LEVEL) -> Interval:
    """Student-t interval of the mean of the finite values (no interval below 2 values)."""
    x = np.asarray(finite(values), dtype=float)
    if len(x) == 0:
        return Interval(None)
    m = float(x.mean())
    if len(x) < 2:
        return Interval(m)
    half = _t(level, len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return Interval(m, m - half, m + half)


def welch_interval(a: Sequence, b: Sequence, level: float = LEVEL) -> Interval:
    """Welch's t interval of mean(a) - mean(b) (no interval when a side has < 2 values)."""
    x, y = np.asarray(finite(a), float), np.asarray(finite(b), float)
    if len(x) == 0 or len(y) == 0:
        return Interval(None)
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Interval(diff)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0:
        return Interval(diff, diff, diff)
    dof = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    half = _t(level, dof) * se
    return Interval(diff, diff - half, diff + half)


# -- the bootstrap ----------------------------------------------------------------------------
def percentile_interval(draws: Sequence[float], level: float = LEVEL) -> tuple:
    """(low, high): the convention of this module, outward order statistics of the draws
    (+-inf allowed, NaN dropped); (None, None) without draws."""
    x = np.asarray([d for d in draws if not (isinstance(d, float) and math.isnan(d))], float)
    if len(x) == 0:
        return None, None
    a = (1 - level) / 2
    return (float(np.quantile(x, a, method="lower")),
            float(np.quantile(x, 1 - a, method="higher")))


def bootstrap(values: Sequence, stat: Callable = np.median, n: int = BOOTSTRAP,
              seed: int = 0, level: float = LEVEL) -> Interval:
    """stat(values) with its percentile-bootstrap interval over resamples of the finite
    values (no interval below 2 values or with n = 0)."""
    x = np.asarray(finite(values), float)
    if len(x) == 0:
        return Interval(None)
    est = float(stat(x))
    if len(x) < 2 or n <= 0:
        return Interval(est)
    rng = np.random.default_rng(seed)
    draws = [float(stat(x[rng.integers(0, len(x), len(x))])) for _ in range(n)]
    low, high = percentile_interval(draws, level)
    return Interval(est, low, high, dropped=sum(math.isnan(d) for d in draws))


Statistic = Callable[[Dict[Hashable, list]], Union[Optional[float], Dict[str, Optional[float]]]]


def bootstrap_groups(groups: Dict[Hashable, list], statistic: Statistic, n: int = BOOTSTRAP,
                     seed: int = 0, level: float = LEVEL):
    """A statistic of several groups of units (e.g. {d: [seed, ...]}), with its bootstrap
    interval: each resample draws, within every group, as many units as it has, with
    replacement, and evaluates `statistic({group: units})`.

    `statistic` returns a number (None: undefined, counted as dropped) or a dict of
    numbers; the result is an Interval, or a dict of Intervals with the same keys. No
    interval when n = 0 or when no group has two units."""
    groups = {g: list(units) for g, units in groups.items()}
    est = statistic(groups)
    several = isinstance(est, dict)
    names = list(est) if several else [None]

    def value(result, name):
        v = result.get(name) if several else result
        return math.nan if v is None else float(v)

    if n <= 0 or all(len(u) < 2 for u in groups.values()):
        out = {}
        for name in names:
            e = value(est, name)
            out[name] = Interval(None if math.isnan(e) else e)
        return out if several else out[None]
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in names}
    for _ in range(n):
        sample = {g: [u[i] for i in rng.integers(0, len(u), len(u))] if u else []
                  for g, u in groups.items()}
        result = statistic(sample)
        for name in names:
            draws[name].append(value(result, name))
    out = {}
    for name in names:
        e = value(est, name)
        low, high = percentile_interval(draws[name], level)
        out[name] = Interval(None if math.isnan(e) else e, low, high,
                             dropped=sum(math.isnan(d) for d in draws[name]))
    return out if several else out[None]


def welch_p(a: Sequence, b: Sequence) -> Optional[float]:
    """The p-value in the direction mean(a) > mean(b) that matches a two-sided Welch
    interval: 2 P(T >= t), capped at 1 (the 95 % interval lies above 0 exactly when it is
    below 0.05). None below 2 values a side."""
    from scipy.stats import t as student

    x, y = np.asarray(finite(a)), np.asarray(finite(b))
    if len(x) < 2 or len(y) < 2:
        return None
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = float(x.mean() - y.mean())
    if vx + vy == 0:
        return 0.0 if diff > 0 else 1.0
    dof = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    return min(1.0, 2 * float(student.sf(diff / math.sqrt(vx + vy), dof)))


# -- rates ---------------------------------------------------------------------------------------
def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple:
    """(low, high): the exact (Clopper-Pearson) interval of a rate k/n; (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import beta

    a = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return low, high


def fisher_one_sided(k1: int, n1: int, k2: int, n2: int) -> tuple:
    """One-sided Fisher exact p-values of k1/n1 against k2/n2:
    (p that the first rate is this low or lower, p that it is this high or higher)."""
    from scipy.stats import fisher_exact

    table = [[k1, n1 - k1], [k2, n2 - k2]]
    less = float(fisher_exact(table, alternative="less")[1])
    greater = float(fisher_exact(table, alternative="greater")[1])
    return min(1.0, less), min(1.0, greater)


def fisher_runs_needed(k: int, n: int, k0: int, n0: int, more: bool, level: float = 0.05,
                       most: int = 200) -> Optional[int]:
    """Runs per arm at which the observed rates k/n and k0/n0 (scaled, rounded) would reach
    a one-sided Fisher p <= level in the claimed direction (`more`: the first rate higher);
    None when they never would up to `most`, or when the rates do not differ that way."""
    if not n or not n0 or ((k / n <= k0 / n0) if more else (k / n >= k0 / n0)):
        return None
    for runs in range(max(n, n0), most + 1):
        a, b = round(k / n * runs), round(k0 / n0 * runs)
        p_fewer, p_more = fisher_one_sided(a, runs, b, runs)
        if (p_more if more else p_fewer) <= level * (1 + 1e-9):
            return runs
    return None


# -- lines ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LineFit:
    slope: float
    intercept: float
    low: Optional[float]       # the slope's t interval (None below 3 points)
    high: Optional[float]
    r2: Optional[float]
    n: int

    @property
    def interval(self) -> Interval:
        return Interval(self.slope, self.low, self.high)


def least_squares(x: Sequence[float], y: Sequence[float]) -> tuple:
    """(slope, intercept) of the least-squares line through (x, y) (x not all equal): the
    fit alone, cheap enough for a bootstrap statistic; `line_fit` adds the interval."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx = x - x.mean()
    slope = float((dx * (y - y.mean())).sum() / (dx * dx).sum())
    return slope, float(y.mean() - slope * x.mean())


def line_fit(x: Sequence[float], y: Sequence[float], level: float = LEVEL) -> Optional[LineFit]:
    """Least-squares line y = slope x + intercept through the pairs where both are finite,
    with the slope's t interval (n - 2 degrees of freedom); None below 2 points."""
    pairs = [(float(a), float(b)) for a, b in zip(x, y) if is_number(a) and is_number(b)]
    if len(pairs) < 2 or len({a for a, _ in pairs}) < 2:
        return None
    xs, ys = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    slope, intercept = least_squares(xs, ys)
    resid = ys - (slope * xs + intercept)
    sxx = float(((xs - xs.mean()) ** 2).sum())
    syy = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / syy if syy > 0 else None
    if len(pairs) < 3:
        return LineFit(slope, intercept, None, None, r2, len(pairs))
    se = math.sqrt(float((resid ** 2).sum()) / (len(pairs) - 2) / sxx)
    half = _t(level, len(pairs) - 2) * se
    return LineFit(slope, intercept, slope - half, slope + half, r2, len(pairs))


# -- several claims -----------------------------------------------------------------------------
def holm(pvalues: Sequence[Optional[float]]) -> List[Optional[float]]:
    """Holm's step-down adjusted p-values (None stays None and is not counted)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: List[Optional[float]] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


# -- power ----------------------------------------------------------------------------------------
def detectable_difference(sd_a: float, n_a: int, sd_b: float, n_b: int, level: float = LEVEL,
                          power: float = 0.8) -> Optional[float]:
    """The smallest true difference of means that a two-sided Welch comparison at `level`
    detects with probability `power`, given the two standard deviations and run counts
    (t approximation with Welch's degrees of freedom); None below 2 runs a side."""
    if n_a < 2 or n_b < 2 or sd_a is None or sd_b is None:
        return None
    va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    se = math.sqrt(va + vb)
    if se == 0:
        return 0.0
    dof = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    from scipy.stats import t

    return float((t.ppf(0.5 + level / 2, dof) + t.ppf(power, dof)) * se)


def runs_needed(sd_a: float, sd_b: float, difference: float, level: float = LEVEL,
                power: float = 0.8, most: int = 1000) -> Optional[int]:
    """Runs per arm for `detectable_difference` to reach `difference` (None: more than
    `most`, or no spread measured)."""
    if difference <= 0 or sd_a is None or sd_b is None:
        return None
    for n in range(2, most + 1):
        d = detectable_difference(sd_a, n, sd_b, n, level, power)
        if d is not None and d <= difference:
            return n
    return None

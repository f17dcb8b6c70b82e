"""From records to rates: per-seed curves, the median curve over seeds, n*(d) (where the
median test error reaches the target), n_c(d) (where the median corr(feature, p) reaches
c), and the slope of log n* against log d (or against the log of a reference count), with
its bootstrap interval over seeds resampled within each d (quadrun.stats.bootstrap_groups,
called once per rate). Torch-free.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from quadrun import stats


def curves(records: List[dict], regime: str, learner: str,
           key: str = "test_mse") -> Dict[int, Dict[int, Dict[int, Optional[float]]]]:
    """{d: {stream_seed: {n: value}}} of one regime and learner."""
    out: dict = {}
    for r in records:
        if r.get("learner") == learner and r.get("regime") == regime:
            out.setdefault(r["d"], {}).setdefault(r["stream_seed"], {})[r["n"]] = r.get(key)
    return out


def table(per_seed: Dict[int, Dict[int, Optional[float]]], missing: float) -> tuple:
    """(ns, values): the n every seed has, and a (seeds x ns) array in sorted seed order, a
    missing or non-finite value counted as `missing` (an error: inf; a correlation: 0)."""
    seeds = sorted(per_seed)
    ns = sorted(set.intersection(*(set(per_seed[s]) for s in seeds))) if seeds else []
    vals = np.array([[v if stats.is_number(v) else missing for v in (per_seed[s][n] for n in ns)]
                     for s in seeds], float).reshape(len(seeds), len(ns))
    return ns, vals


def first_crossing(ns: Sequence[float], values: Sequence[float], target: float) -> Optional[float]:
    """Smallest n with value <= target on the grid, interpolated linearly in (log n, log
    value) between the last point above and the first point below; None if never. Already
    below at the first grid point: that n (an upper bound: the grid starts too late)."""
    vals = [v if v is not None and math.isfinite(v) else math.inf for v in values]
    for i, e in enumerate(vals):
        if e <= target:
            if i == 0:
                return float(ns[0])
            e0, e1 = vals[i - 1], max(e, 1e-300)
            if not math.isfinite(e0):
                return float(ns[i])
            t = (math.log(target) - math.log(e0)) / (math.log(e1) - math.log(e0)) \
                if e1 != e0 else 1.0
            return float(math.exp(math.log(ns[i - 1]) + t * (math.log(ns[i]) - math.log(ns[i - 1]))))
    return None


def n_star(ns, errors, target: float) -> Optional[float]:
    """n*: where the error curve first reaches `target`."""
    return first_crossing(ns, errors, target)


def n_corr(ns, corrs, c: float) -> Optional[float]:
    """n_c: where a corr(feature, p) curve first reaches c (the crossing of 1 - corr below
    1 - c, interpolated in log n and log(1 - corr))."""
    return first_crossing(ns, [1.0 - v for v in corrs], 1.0 - c)


# how each quantity's median curve is read: (record key, value of a missing point, crossing)
QUANTITIES = {"error": ("test_mse", math.inf, n_star), "corr": ("corr", 0.0, n_corr)}


def median_curve(per_seed, quantity: str = "error") -> tuple:
    """(ns, the median over seeds at each n every seed has)."""
    ns, vals = table(per_seed, QUANTITIES[quantity][1])
    return ns, (stats.column_medians(vals).tolist() if len(vals) else [])


def slope(xs: Sequence[float], ys: Sequence[Optional[float]]) -> Optional[float]:
    """Least-squares slope of log y on log x; None with a missing y or fewer than 2 points."""
    if len(xs) < 2 or any(y is None for y in ys):
        return None
    if min(xs) == max(xs):
        return None
    return stats.least_squares(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)))[0]


def secant(reference: Callable[[int], float], dims: Sequence[int]) -> Optional[float]:
    """The secant slope of log reference(d) on log d over [min d, max d]."""
    if len(dims) < 2 or min(dims) == max(dims):
        return None
    a, b = min(dims), max(dims)
    return math.log(reference(b) / reference(a)) / math.log(b / a)


def rate(per_d: Dict[int, Dict[int, Dict[int, Optional[float]]]], quantity: str, level: float,
         x_of: Callable[[int], float], bootstrap: int, seed: int = 0) -> dict:
    """The rate of one learner: crossings c(d) of its median curves (quantity "error":
    n* at error `level`; "corr": n_c at corr `level`) and the slope of log c(d) on
    log x_of(d), with a 95 % bootstrap interval over seeds resampled within each d (one
    call of quadrun.stats.bootstrap_groups for the slope and every c(d)). A resample whose
    median curve misses the level at some d gives slope +inf when that d is in the upper
    half of the dims, -inf otherwise (`censored` counts them).

    Returns {"dims", "crossing": {d: value or None}, "last": {d: (largest n, median there)},
    "edge": [d whose crossing is the grid's first n], "seeds": {d: count},
    "slope": Interval, "crossing_interval": {d: Interval}, "censored", "local": [slopes
    between consecutive d]}."""
    key, missing, cross = QUANTITIES[quantity]
    dims = sorted(per_d)
    tables = {d: table(per_d[d], missing) for d in dims}
    order = {d: sorted(per_d[d]) for d in dims}
    xs = [x_of(d) for d in dims]
    middle = float(np.median(dims)) if dims else 0.0

    def crossing(d, rows) -> Optional[float]:
        ns, vals = tables[d]
        if not ns or not len(rows):
            return None
        return cross(ns, stats.column_medians(vals[rows]).tolist(), level)

    censored = [0]

    def statistic(sample) -> dict:
        found = {d: crossing(d, sample[d]) for d in dims}
        s = slope(xs, [found[d] for d in dims])
        if s is None and len(dims) >= 2:
            s = math.inf if max(d for d in dims if found[d] is None) > middle else -math.inf
            censored[0] += 1
        return {"slope": s, **{f"crossing/{d}": (math.inf if found[d] is None else found[d])
                               for d in dims}}

    full = {d: crossing(d, list(range(len(order[d])))) for d in dims}
    ivs = stats.bootstrap_groups({d: list(range(len(order[d]))) for d in dims}, statistic,
                               n=bootstrap, seed=seed)
    value = slope(xs, [full[d] for d in dims])
    if value is None and len(dims) >= 2:
        censored[0] -= 1                    # the estimate itself, not a resample
    last, edge = {}, []
    for d in dims:
        ns, meds = median_curve(per_d[d], quantity)
        last[d] = (ns[-1], meds[-1]) if ns else (None, None)
        if full[d] is not None and ns and full[d] <= ns[0]:
            edge.append(d)
    slope_iv = ivs["slope"]
    return {"dims": dims, "crossing": full, "last": last, "edge": edge,
            "seeds": {d: len(order[d]) for d in dims},
            "slope": stats.Interval(value, slope_iv.low, slope_iv.high) if value is not None
            else stats.Interval(None, slope_iv.low, slope_iv.high),
            "crossing_interval": {d: ivs[f"crossing/{d}"] for d in dims},
            "censored": censored[0],
            "local": [slope([x_of(a), x_of(b)], [full[a], full[b]]) for a, b in zip(dims, dims[1:])]}

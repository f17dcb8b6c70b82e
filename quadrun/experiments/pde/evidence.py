"""pde's evidence: what the records say about each claim (torch-free).

Reference records give the energy-gap fit of the preconditioned iteration (`gap_fit`);
network records give the error-vs-width slopes (`error_slopes`) and the width needed for a
target error (`width_for_target`, `growth_fits`)."""
from __future__ import annotations

import math

import numpy as np

from quadrun.claims import Evidence, fmt, fmt_interval, missing
from quadrun.solvers.pde import ROUNDOFF
from quadrun.stats import Interval, bootstrap_groups, is_number, line_fit, median
from quadrun.vocab import derive_seed

# Random-feature Newton stops when its predicted energy decrease is 1e-13 max(1, |E|): that
# leaves a relative H1 error of order sqrt(1e-13), so errors below RESOLUTION are not
# resolved and count as RESOLUTION in the slopes (a flat line there decides nothing).
RESOLUTION = 1e-6
MIN_DIMS = 3           # dimensions with the target reached that the growth fit needs


# -- the reference: energy gaps per PGD step ----------------------------------------------------
def _r2(fit) -> float:
    return 1.0 if fit.r2 is None else fit.r2     # an exactly constant line fits exactly


def gap_fit(record) -> dict:
    """The numbers of one reference's energy gaps over the steps before round-off
    (gap > ROUNDOFF * max(1, |E_h|)): rate (exp of the least-squares slope of log gap vs
    step, or the bound (floor/gap_0)^(1/steps) when round-off comes within 3 steps), r2,
    r2_power (R^2 of log gap vs log(t + 1): an algebraic decay t^-k fits that line),
    steps_fitted, finite, falls, first, last; `undecided` says why no rule applies."""
    gaps = record.get("energy_gaps") or []
    out = {"d": record.get("d"), "grid": record.get("grid"), "rate": None, "r2": None,
           "r2_power": None, "steps_fitted": 0, "finite": True, "falls": True,
           "first": None, "last": None, "undecided": None}
    if len(gaps) < 2:
        return {**out, "undecided": "fewer than two energy gaps recorded"}
    if not all(is_number(g) for g in gaps):
        return {**out, "finite": False}
    energy = record.get("newton_energy")
    floor = ROUNDOFF * max(1.0, abs(energy) if is_number(energy) else 1.0)
    g = np.asarray(gaps, dtype=float)
    below = np.nonzero(g <= floor)[0]
    live = int(below[0]) if len(below) else len(g)
    out.update(steps_fitted=live, first=float(g[0]), last=float(g[-1]))
    if live == 0:
        return {**out, "undecided": "the starting point is already the minimiser"}
    if live == len(g) and g[-1] >= g[0]:
        return {**out, "falls": False}
    if live < 3:
        if live < len(g):
            return {**out, "rate": float((floor / g[0]) ** (1 / live))}
        return {**out, "undecided": "too few steps to fit a rate (pde.pgd_steps)"}
    t, y = np.arange(live, dtype=float), np.log(g[:live])
    fit, power = line_fit(t, y), line_fit(np.log(t + 1), y)
    return {**out, "rate": float(np.exp(fit.slope)), "r2": _r2(fit), "r2_power": _r2(power)}



def references(records) -> list:
    """The reference records, one per (d, grid) (a sweep's jobs repeat the same one)."""
    out: dict = {}
    for r in records:
        if r.get("part") == "reference":
            out.setdefault((r.get("d"), r.get("grid")), r)
    return [out[k] for k in sorted(out, key=str)]



def geometric(records) -> Evidence:
    refs = references(records)
    if not refs:
        return missing("the grid reference did not run (pde.reference_d = 0); "
                       "pde.reference_d = 1..3 measures it", "no reference record")
    fits = [gap_fit(r) for r in refs]
    measured = "; ".join(
        f"d={f['d']}, {f['grid']}^{f['d']} grid: factor {fmt(f['rate'])} per step"
        + (f", R^2 {f['r2']:.4f} (power law {f['r2_power']:.3f})" if f["r2"] is not None else "")
        + f" over {f['steps_fitted']} steps" for f in fits)
    cases = [(f"d={f['d']}", Evidence(values=f, undecided=f["undecided"])) for f in fits]
    return Evidence(measured=measured, values={"fits": fits}, cases=cases,
                    next="more PGD steps (pde.pgd_steps) would decide")



# -- networks: error vs width ----------------------------------------------------------------
def _slope(widths):
    x = np.log(np.asarray(widths, float))

    def statistic(by_w: dict):
        meds = [max(median(by_w[w]), RESOLUTION) for w in widths]
        fit = line_fit(x, np.log(meds))
        return None if fit is None else fit.slope
    return statistic


def error_slopes(records, part: str) -> dict:
    """{d: {"slope", "low", "high", "widths", "medians", "replicates", "dropped"}}: the
    least-squares slope of log(max(median rel. L2, RESOLUTION)) vs log width at each d, with
    a 95 % interval: the bootstrap over replicates resampled within each width
    (quadrun.stats.bootstrap_groups) when every width has at least two finite errors, else
    (one replicate) the t interval of the regression slope over >= 3 widths, the scatter of
    the errors about the trend being the only measure of noise one replicate has. Widths
    without a finite error are left out (`dropped`)."""
    groups: dict = {}
    for r in records:
        if r.get("part") == part:
            e = r.get("rel_l2")
            groups.setdefault(r["d"], {}).setdefault(r["width"], []).append(
                e if is_number(e) else None)
    out = {}
    for d in sorted(groups):
        by_w = {w: [e for e in errs if e is not None] for w, errs in sorted(groups[d].items())}
        by_w = {w: errs for w, errs in by_w.items() if errs}
        widths = sorted(by_w)
        row = {"widths": widths, "medians": [median(by_w[w]) for w in widths],
               "replicates": min((len(v) for v in by_w.values()), default=0),
               "dropped": sorted(set(groups[d]) - set(widths)),
               "slope": None, "low": None, "high": None}
        if len(widths) >= 2 and max(row["medians"]) > RESOLUTION:
            if row["replicates"] >= 2:
                iv = bootstrap_groups(by_w, _slope(widths),
                                      seed=derive_seed("pde", "bootstrap", part, d))
            else:
                fit = line_fit(np.log(widths), np.log(np.maximum(row["medians"], RESOLUTION)))
                iv = fit.interval
            row.update(slope=iv.estimate, low=iv.low, high=iv.high)
        elif len(widths) >= 2:       # flat at the floor: no slope to speak of
            row["slope"] = 0.0
        out[d] = row
    return out


def error_falls(records, part: str) -> Evidence:
    slopes = error_slopes(records, part)
    if not slopes:
        key = "rf" if part == "random_features" else "ritz"
        return missing(f"no {part} cells ran (pde.{key}_dims = [])", f"no {part} record")
    cases, parts = [], []
    for d, s in slopes.items():
        if s["slope"] is None:
            parts.append(f"d={d}: {len(s['widths'])} width(s)")
            ev = Evidence(undecided="fewer than two widths with a finite error")
        elif max(s["medians"]) <= RESOLUTION:
            parts.append(f"d={d}: {fmt(s['slope'], 2)} (every error at the {RESOLUTION:g} floor)")
            ev = Evidence(undecided=f"every error at or below {RESOLUTION:g}")
        elif s["low"] is None:
            parts.append(f"d={d}: {fmt(s['slope'], 2)} (one replicate, two widths: no interval)")
            ev = Evidence(undecided="one replicate and two widths give no measure of the noise")
        else:
            how = "" if s["replicates"] >= 2 else " (one replicate: regression interval)"
            parts.append(f"d={d}: {fmt_interval(s['slope'], s['low'], s['high'], 2)}{how}")
            ev = Evidence(interval=Interval(s["slope"], s["low"], s["high"]))
        cases.append((f"d={d}", ev))
    return Evidence(measured="slope " + "; ".join(parts), cases=cases,
                    values={str(d): s for d, s in slopes.items()},
                    next="more widths or replicates (pde.repeats) would decide")


# -- width_vs_d -------------------------------------------------------------------------------

# -- networks: the width a target error needs, against d ------------------------------------
def _rss(x, y) -> tuple:
    fit = line_fit(x, y)
    resid = np.asarray(y) - (fit.slope * np.asarray(x) + fit.intercept)
    return fit.slope, float((resid ** 2).sum())


def growth_fits(points) -> dict:
    """Least squares of log w* against log d (polynomial, w* ~ d^k) and against d
    (exponential, w* ~ e^{b d}) over points [(d, w*)]: k, b and the residual sums of squares."""
    d = np.asarray([p[0] for p in points], float)
    y = np.log(np.asarray([p[1] for p in points], float))
    k, rss_poly = _rss(np.log(d), y)
    b, rss_exp = _rss(d, y)
    return {"k": float(k), "b": float(b), "rss_poly": rss_poly, "rss_exp": rss_exp}


def width_polynomial(records, part: str, target_error: float) -> Evidence:
    rows = [r for r in records if r.get("part") == part]
    if not rows:
        return missing(f"no {part} cells ran", f"no {part} record")
    by_d = width_for_target(rows, target_error).get(part, {})
    reached = sorted((int(d), w) for d, w in by_d.items() if w is not None)
    missed = sorted(int(d) for d, w in by_d.items() if w is None)
    widest, smallest = max(r["width"] for r in rows), min(r["width"] for r in rows)
    # w* at the smallest width tried is only an upper bound (w* <= smallest): it cannot be
    # fitted as a value, so the fit uses the d whose w* lies above it
    exact = [(d, w) for d, w in reached if w > smallest]
    bounded = [d for d, w in reached if w == smallest]
    measured = "w* " + ", ".join(f"d={d}: {w}" for d, w in reached) if reached else "w* none"
    if bounded:
        measured += f" (w* <= {smallest} at d = {', '.join(map(str, bounded))}: an upper bound)"
    if missed:
        measured += f"; not reached (w* > {widest}) at d = {', '.join(map(str, missed))}"
    values = {"reached": reached, "missed": missed}
    if len(reached) < MIN_DIMS:
        return Evidence(measured=measured, values=values, undecided=(
            f"the target is reached at {len(reached)} d "
            f"({', '.join(str(d) for d, _ in reached) or 'none'}), {MIN_DIMS} are needed; more "
            f"dimensions, wider networks or a larger pde.target_error would decide"))
    if not exact:
        return Evidence(measured=measured, values=values, undecided=(
            f"the smallest width tried ({smallest}) reaches the target at every d reached, so "
            f"no growth is resolved; smaller widths would decide"))
    if len(exact) < MIN_DIMS or len({w for _, w in exact}) == 1:
        return Evidence(measured=measured, values=values, undecided=(
            f"w* is resolved (above the smallest width tried, {smallest}) at {len(exact)} d "
            f"({', '.join(str(d) for d, _ in exact)}) with {len({w for _, w in exact})} "
            f"distinct value(s); {MIN_DIMS} d and two values are needed to tell a power of d "
            f"from an exponential; smaller widths, a finer width grid (pde.rf_widths, "
            f"pde.ritz_widths) or more dimensions would decide"))
    fits = growth_fits(exact)
    measured += (f"; fit w* ~ d^{fmt(fits['k'], 2)} (RSS {fmt(fits['rss_poly'], 2)}) vs "
                 f"e^({fmt(fits['b'], 2)} d) (RSS {fmt(fits['rss_exp'], 2)})")
    diff = fits["rss_exp"] - fits["rss_poly"]
    return Evidence(measured=measured, values={**values, **fits},
                    interval=Interval(diff, diff, diff))



# -- aggregation ------------------------------------------------------------------------------
def median_errors(records) -> dict:
    """{(part, d, width): median rel_l2 over replicates}. A non-finite error (a diverged
    training) counts as inf, so it is not dropped: np.median keeps it."""
    groups: dict = {}
    for r in records:
        e = r.get("rel_l2")
        groups.setdefault((r["part"], r["d"], r["width"]), []).append(
            float(e) if is_number(e) else math.inf)
    return {k: float(np.median(v)) for k, v in groups.items()}


def width_for_target(records, target: float) -> dict:
    """{part: {d: smallest width whose median rel. L2 error is <= target, or None}}."""
    out: dict = {}
    for (part, d, width), err in sorted(median_errors(records).items()):
        best = out.setdefault(part, {}).setdefault(str(d), None)
        if err <= target and (best is None or width < best):
            out[part][str(d)] = width
    return out

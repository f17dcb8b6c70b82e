"""Evidence from the network records (torch-free): the error-vs-width slopes above the
measured floor (`error_slopes`) and the width a target error needs against d (`wstar`,
`width_polynomial`).

The thresholds below were fixed before any run of the rules on measured records."""
from __future__ import annotations

import math

import numpy as np

from quadrun.claims import Evidence, fmt, fmt_interval, missing
from quadrun.stats import (BOOTSTRAP, Interval, bootstrap_groups, censored_median, is_number,
                           least_squares)
from quadrun.vocab import derive_seed

FLOOR_FACTOR = 10      # a width counts when its median error is >= 10 x its median floor
MIN_REPLICATES = 3     # replicates per width that a slope's bootstrap needs
MIN_DIMS = 5           # resolved d that width_vs_d needs, spanning at least
SPAN = 10.0            # one decade (largest d / smallest d)
MAX_DROPPED = 0.05     # resamples in which some d is unresolved, at most


def curves(records, part: str) -> dict:
    """{d: {width: [(error, floor), ...]}} over the replicates (None where not finite)."""
    out: dict = {}
    for r in records:
        if r.get("part") == part:
            e, f = r.get("rel_l2"), r.get("floor")
            out.setdefault(r["d"], {}).setdefault(r["width"], []).append(
                (float(e) if is_number(e) else None, float(f) if is_number(f) else None))
    return {d: dict(sorted(ws.items())) for d, ws in sorted(out.items())}


def _medians(by_w: dict) -> tuple:
    """(median error, median floor) per width; a width with a non-finite error has error
    inf (a diverged replicate counts against it), a missing floor is None."""
    errs, floors = {}, {}
    for w, units in by_w.items():
        e = [u[0] if u[0] is not None else math.inf for u in units]
        errs[w] = censored_median(e) if e else None
        fl = [u[1] for u in units]
        floors[w] = censored_median(fl) if all(f is not None for f in fl) and fl else None
    return errs, floors


def resolved_widths(by_w: dict) -> list:
    """The widths, from the smallest up, whose median error is finite and at least
    FLOOR_FACTOR x their median floor: the decay before the error meets its floor."""
    errs, floors = _medians(by_w)
    out = []
    for w in by_w:
        e, f = errs[w], floors[w]
        if e is None or not math.isfinite(e) or f is None or e < FLOOR_FACTOR * f:
            break
        out.append(w)
    return out


def _slope_statistic(widths):
    x = np.log(np.asarray(widths, float))

    def statistic(groups: dict):
        meds = [censored_median([e for e, _ in groups[w]]) for w in widths]
        if any(m is None or m <= 0 for m in meds):
            return None
        return least_squares(x, np.log(meds))[0]
    return statistic


def error_slopes(records, part: str) -> dict:
    """{d: {"widths", "medians", "floors", "fitted", "replicates", "slope", "low", "high"}}:
    per d, the least-squares slope of log median rel. L2 vs log width over the resolved
    widths (`resolved_widths`), with its 95 % bootstrap interval (replicates resampled
    within each width, quadrun.stats.bootstrap_groups) when every fitted width has at least
    MIN_REPLICATES finite errors and there are >= 2 fitted widths."""
    out = {}
    for d, by_w in curves(records, part).items():
        errs, floors = _medians(by_w)
        fitted = resolved_widths(by_w)
        groups = {w: [u for u in by_w[w] if u[0] is not None] for w in fitted}
        row = {"widths": list(by_w), "medians": [errs[w] for w in by_w],
               "floors": [floors[w] for w in by_w], "fitted": fitted,
               "replicates": min((len(g) for g in groups.values()), default=0),
               "slope": None, "low": None, "high": None}
        if len(fitted) >= 2 and row["replicates"] >= MIN_REPLICATES:
            iv = bootstrap_groups(groups, _slope_statistic(fitted),
                                  seed=derive_seed("pde", "bootstrap", part, d))
            row.update(slope=iv.estimate, low=iv.low, high=iv.high)
        elif len(fitted) >= 2:
            row["slope"] = _slope_statistic(fitted)(groups)
        out[d] = row
    return out


def error_falls(records, part: str) -> Evidence:
    slopes = error_slopes(records, part)
    if not slopes:
        key = "rf" if part == "random_features" else "ritz"
        return missing(f"no {part} cells ran (pde.{key}_dims = [])", f"no {part} record")
    cases, parts = [], []
    for d, s in slopes.items():
        widest = s["widths"][-1]
        floor = f"floor {fmt(s['floors'][-1])} at width {widest}"
        if len(s["fitted"]) < 2:
            at = s["widths"][len(s["fitted"])] if len(s["fitted"]) < len(s["widths"]) else None
            parts.append(f"d={d}: at its floor from width {at} on ({floor}; not a case)")
            continue
        span = f"widths {s['fitted'][0]}-{s['fitted'][-1]}"
        if s["low"] is None:
            parts.append(f"d={d}: {fmt(s['slope'], 2)} over {span} ({s['replicates']} replicate(s))")
            cases.append((f"d={d}", Evidence(undecided=(
                f"{s['replicates']} replicate(s) per width; {MIN_REPLICATES} are needed for "
                f"an interval (pde.repeats)"))))
            continue
        parts.append(f"d={d}: {fmt_interval(s['slope'], s['low'], s['high'], 2)} over {span} "
                     f"({floor})")
        cases.append((f"d={d}", Evidence(interval=Interval(s["slope"], s["low"], s["high"]))))
    return Evidence(measured="slope " + "; ".join(parts), cases=cases,
                    values={str(d): s for d, s in slopes.items()},
                    next="more replicates (pde.repeats) or widths would decide")


# -- the width a target error needs -------------------------------------------------------------
def crossing(widths, errs, floors, target: float):
    """w* where the median error curve first falls to `target`, interpolated linearly in
    log error vs log width between the two grid widths around it; None when it is not
    resolved: the smallest width already reaches it, no width does, or the error there is
    within FLOOR_FACTOR of the floor (the target then measures the floor, not the width)."""
    for i, (w, e) in enumerate(zip(widths, errs)):
        if e is not None and e <= target:
            f = floors[i]
            if i == 0 or f is None or target < FLOOR_FACTOR * f:
                return None
            w0, e0 = widths[i - 1], errs[i - 1]
            if not (e0 and math.isfinite(e0)) or e <= 0:
                return None
            t = (math.log(e0) - math.log(target)) / (math.log(e0) - math.log(e))
            return float(math.exp(math.log(w0) + t * (math.log(w) - math.log(w0))))
    return None


def wstar(by_d: dict, target: float) -> dict:
    """{d: w* or None} from {d: {width: [(error, floor), ...]}}."""
    out = {}
    for d, by_w in by_d.items():
        errs, floors = _medians(by_w)
        out[d] = crossing(list(by_w), [errs[w] for w in by_w], [floors[w] for w in by_w], target)
    return out


def _rss(x, y) -> tuple:
    slope, intercept = least_squares(x, y)
    resid = np.asarray(y) - (slope * np.asarray(x) + intercept)
    return slope, float((resid ** 2).sum())


def growth_fits(points) -> dict:
    """Least squares of log w* against log d (polynomial, w* ~ d^k) and against d
    (exponential, w* ~ e^{b d}) over points [(d, w*)]: k, b, the residual sums of squares,
    and r2_gap = R^2(polynomial) - R^2(exponential) = (RSS_exp - RSS_poly) / TSS, None when
    w* does not vary (nothing to tell apart: equal w* are not a polynomial growth)."""
    d = np.asarray([p[0] for p in points], float)
    y = np.log(np.asarray([p[1] for p in points], float))
    k, rss_poly = _rss(np.log(d), y)
    b, rss_exp = _rss(d, y)
    tss = float(((y - y.mean()) ** 2).sum())
    gap = (rss_exp - rss_poly) / tss if tss > 1e-12 * len(y) else None
    return {"k": float(k), "b": float(b), "rss_poly": rss_poly, "rss_exp": rss_exp, "r2_gap": gap}


def width_polynomial(records, part: str, target: float) -> Evidence:
    """R^2(log w* vs log d) - R^2(log w* vs d) over the resolved d, bootstrapped over
    replicates within each (d, width); decided only over >= MIN_DIMS resolved d spanning
    >= SPAN, else a description (not measured: not a verdict)."""
    by_d = curves(records, part)
    if not by_d:
        return missing(f"no {part} cells ran", f"no {part} record")
    ws = wstar(by_d, target)
    done = sorted(d for d, w in ws.items() if w is not None)
    measured = "w* " + ", ".join(f"d={d}: {fmt(w) if w else 'unresolved'}" for d, w in ws.items())
    values = {"wstar": {str(d): w for d, w in ws.items()}}
    spans = len(done) >= 2 and done[-1] / done[0] >= SPAN
    if len(done) >= 2 and len({round(ws[d], 9) for d in done}) > 1:
        fits = growth_fits([(d, ws[d]) for d in done])
        values.update(fits)
        measured += (f"; over d = {', '.join(map(str, done))}: w* ~ d^{fmt(fits['k'], 2)} "
                     f"(RSS {fmt(fits['rss_poly'], 2)}) vs e^({fmt(fits['b'], 2)} d) "
                     f"(RSS {fmt(fits['rss_exp'], 2)})")
    if len(done) < MIN_DIMS or not spans:
        return missing(f"a description, not a verdict: w* is resolved at {len(done)} d "
                       f"({', '.join(map(str, done)) or 'none'}); the rule needs >= {MIN_DIMS} "
                       f"spanning a factor {SPAN:g} in d (wider or finer width grids, more d, "
                       f"or another pde.target_error fixed in advance would measure it)",
                       measured, **values)

    def statistic(groups: dict):
        regrouped: dict = {}
        for (d, w), units in groups.items():
            regrouped.setdefault(d, {})[w] = units
        got = wstar({d: dict(sorted(v.items())) for d, v in regrouped.items()}, target)
        if any(got.get(d) is None for d in done):
            return None
        return growth_fits([(d, got[d]) for d in done])["r2_gap"]

    groups = {(d, w): units for d in done for w, units in by_d[d].items()}
    iv = bootstrap_groups(groups, statistic, seed=derive_seed("pde", "wstar", part))
    values.update(r2_gap_low=iv.low, r2_gap_high=iv.high, dropped=iv.dropped)
    measured += f"; R^2 gap (power - exponential) {fmt_interval(iv)}"
    if iv.estimate is None:
        return Evidence(measured=measured, values=values, undecided=(
            "w* is the same at every resolved d: no growth to tell a power from an exponential"),
            next="a lower pde.target_error or more d would decide")
    if iv.dropped > MAX_DROPPED * BOOTSTRAP:
        return Evidence(measured=measured, values=values, undecided=(
            f"w* is unresolved at some d in {iv.dropped} of {BOOTSTRAP} resamples"),
            next="more replicates (pde.repeats) would decide")
    return Evidence(measured=measured, values=values, interval=iv,
                    next="more replicates (pde.repeats) or more d would decide")


def width_for_target(records, target: float, parts) -> dict:
    """{part: {d: w* (interpolated) or None}} for the summary and the figure."""
    return {p: {str(d): w for d, w in wstar(curves(records, p), target).items()}
            for p in parts if any(r.get("part") == p for r in records)}

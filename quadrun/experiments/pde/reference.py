"""Evidence from the grid reference and its control (torch-free): the energy gap per PGD
step (`gap_fit`), the contraction factor across d (`rate_vs_d`) and the Barron norm of the
iterates (`barron_linear`, `barron_saturates`).

The tolerances below were fixed before any run of the rules on measured records."""
from __future__ import annotations

import math

import numpy as np

from quadrun.claims import Evidence, fmt, missing
from quadrun.solvers.pde import ROUNDOFF
from quadrun.stats import Interval, is_number, line_fit

from quadrun.experiments.pde.config import BOUNDED_CURVATURE

# the contraction factor "does not depend on d": the e-folding steps of the energy gap,
# tau_d = -1 / (slope of log gap per step), agree across the reference d within this
# ratio (largest over smallest, with the slopes' 95 % t intervals)
RATE_RATIO = 1.25
# "log B(u_t) grows at most linearly": no step after the first raises log B by more than
# the first step (t = 1 -> 2) does, plus this tolerance
GROWTH_TOLERANCE = 0.01
# "saturates": log B(u_T) within this of log B(Newton's minimiser), and that level within
# this of the same on the grid of half the cells (the level is the solution's, not the grid's)
SATURATION_TOLERANCE = 0.01


def references(records, part: str = "reference") -> list:
    """The reference (or control) records, one per (phi, d, grid) (a sweep repeats them)."""
    out: dict = {}
    for r in records:
        if r.get("part") == part:
            out.setdefault((str(r.get("phi", "")), r.get("d"), r.get("grid")), r)
    return [out[k] for k in sorted(out, key=str)]


def label(r) -> str:
    return f"{r.get('phi', '')} d={r.get('d')}".strip()


def _r2(fit) -> float:
    return 1.0 if fit.r2 is None else fit.r2     # an exactly constant line fits exactly


def gap_fit(record, late: bool = False) -> dict:
    """The numbers of one record's energy gaps over the steps before round-off
    (gap > ROUNDOFF * max(1, |E_h|)); with late, over the second half of those steps only
    (the slow modes of plain gradient descent, after the fast ones have died out).

    rate: exp of the least-squares slope of log gap vs step (or the bound
    (floor/gap_0)^(1/steps) when round-off comes within 3 steps); slope, slope_low,
    slope_high: the slope with its 95 % t interval; r2; r2_power (R^2 of log gap vs
    log(t + 1): an algebraic decay t^-k fits that line); steps_fitted, finite, falls,
    first, last; `undecided` says why no rule applies."""
    gaps = record.get("energy_gaps") or []
    out = {"phi": record.get("phi"), "d": record.get("d"), "grid": record.get("grid"),
           "rate": None, "slope": None, "slope_low": None, "slope_high": None, "r2": None,
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
    start = live // 2 if late else 0
    t, y = np.arange(start, live, dtype=float), np.log(g[start:live])
    fit, power = line_fit(t, y), line_fit(np.log(t + 1), y)
    return {**out, "steps_fitted": live - start, "rate": float(np.exp(fit.slope)),
            "slope": fit.slope, "slope_low": fit.low, "slope_high": fit.high,
            "r2": _r2(fit), "r2_power": _r2(power)}


def geometric(records) -> Evidence:
    refs = references(records)
    if not refs:
        return missing("the grid reference did not run (pde.reference_dims = []); "
                       "pde.reference_dims=[1,2,3] measures it", "no reference record")
    fits = [gap_fit(r) for r in refs]
    measured = "; ".join(
        f"{f['phi']} d={f['d']}: factor {fmt(f['rate'])}"
        + (f" (R^2 {f['r2']:.4f}, power law {f['r2_power']:.3f})" if f["r2"] is not None else "")
        + f" over {f['steps_fitted']} steps" for f in fits)
    cases = [(f"{f['phi']} d={f['d']}", Evidence(values=f, undecided=f["undecided"])) for f in fits]
    errors = [r.get("rel_l2") for r in refs if is_number(r.get("rel_l2"))]
    exact = (f"; the last iterate against the exact u*: rel. L2 {fmt(min(errors))} to "
             f"{fmt(max(errors))}" if errors else "")
    return Evidence(measured=f"{refs[0]['grid']}^d grid: {measured}{exact}",
                    values={"fits": fits}, cases=cases,
                    next="more PGD steps (pde.pgd_steps) would decide")


# -- the contraction factor across d -------------------------------------------------------------
def efold_ratio(fits: list) -> Interval:
    """max_d tau_d / min_d tau_d, tau = -1/slope (steps per e-fold of the gap), with the
    interval from the slopes' t intervals (an upper end of inf when a slope's interval
    reaches 0); no estimate when a slope is missing or not negative."""
    slopes = [f.get("slope") for f in fits]
    if len(fits) < 2 or any(s is None or s >= 0 for s in slopes):
        return Interval(None)
    tau = [-1 / s for s in slopes]
    est = max(tau) / min(tau)
    if any(f.get("slope_low") is None for f in fits):
        return Interval(est)
    lo = [-1 / f["slope_low"] for f in fits]                     # smallest tau each d allows
    hi = [math.inf if f["slope_high"] >= 0 else -1 / f["slope_high"] for f in fits]
    return Interval(est, max(1.0, max(lo) / min(hi)), max(hi) / min(lo))


def rate_vs_d(records, part: str = "reference") -> Evidence:
    """Cases: each bounded-curvature phi, the ratio of e-folding steps over the reference
    d (PGD: fitted over the steps before round-off; the control: over their second half)."""
    recs = references(records, part)
    if not recs:
        why = ("the grid reference did not run (pde.reference_dims = [])" if part == "reference"
               else "the control did not run (pde.control_steps = 0, or no logcosh reference)")
        return missing(why, f"no {part} record")
    by_phi: dict = {}
    for r in recs:
        by_phi.setdefault(r.get("phi"), []).append(gap_fit(r, late=part == "control"))
    parts, cases, values = [], [], {}
    for phi, fits in by_phi.items():
        iv = efold_ratio(fits)
        taus = ", ".join(f"d={f['d']}: {fmt(-1 / f['slope']) if f['slope'] and f['slope'] < 0 else '-'}"
                         for f in fits)
        text = f"{phi}: factor " + ", ".join(f"{fmt(f['rate'])}" for f in fits) + \
            f" (e-folding steps {taus}; ratio {fmt(iv.estimate)}" + \
            (f" [{fmt(iv.low)}, {fmt(iv.high)}])" if iv.has_interval else ")")
        values[phi] = {"fits": fits, "ratio": iv.estimate, "low": iv.low, "high": iv.high}
        if part == "reference" and phi not in BOUNDED_CURVATURE:
            parts.append(text + (" [not a case: phi'' unbounded]" if phi == "quartic" else
                                 " [not a case: linear, exact in one step]"))
            continue
        parts.append(text)
        dims = sorted({f["d"] for f in fits})
        undecided = None
        if len(dims) < 3:
            undecided = f"fitted at d = {dims}; d = 1, 2, 3 are needed (pde.reference_dims)"
        elif iv.estimate is None:
            undecided = "a d whose gap gives no fitted slope below 0"
        cases.append((phi, Evidence(interval=iv, undecided=undecided)))
    if not cases:
        return Evidence(measured="; ".join(parts), values=values, undecided=(
            f"no bounded-curvature phi ({', '.join(BOUNDED_CURVATURE)}) in pde.reference_phis"))
    return Evidence(measured="; ".join(parts), values=values, cases=cases,
                    next="more PGD steps or a finer grid would narrow the slopes' intervals")


# -- the Barron norm of the iterates ---------------------------------------------------------------
def barron_numbers(r) -> dict:
    """From one reference record: B_1, B_T, the largest per-step factor B_{t+1}/B_t (t >= 1),
    the excess growth max_{t>=2} dlogB_t - dlogB_1, the saturation gaps |log B_T - log B_h|
    and |log B_h - log B_h/2|, and the steps until B is within 1 % of B_T."""
    b = [v for v in (r.get("barron") or [])]
    out = {"phi": r.get("phi"), "d": r.get("d"), "undecided": None}
    if len(b) < 4 or not all(is_number(v) for v in b[1:]):
        return {**out, "undecided": "fewer than three Barron norms recorded (pde.pgd_steps)"}
    logs = np.log(np.asarray(b[1:], float).clip(min=1e-300))
    if b[1] <= 0:
        return {**out, "undecided": "the first iterate is zero (f = 0?)"}
    inc = np.diff(logs)
    sol, coarse = r.get("barron_solution"), r.get("barron_coarse")
    within = np.nonzero(np.abs(logs - logs[-1]) > 0.01)[0]
    out.update(first=float(b[1]), last=float(b[-1]), solution=sol, coarse=coarse,
               max_factor=float(np.exp(inc.max())), excess=float((inc[1:] - inc[0]).max()),
               saturation=max(abs(float(logs[-1] - math.log(sol))),
                              abs(math.log(sol) - math.log(coarse)))
               if is_number(sol) and is_number(coarse) and sol > 0 and coarse > 0 else None,
               steps_to_level=int(within[-1]) + 2 if len(within) else 1)
    return out


def _barron(records, which: str) -> Evidence:
    refs = references(records)
    if not refs or not any("barron" in r for r in refs):
        return missing("no reference record has Barron norms (pde.reference_dims = [])",
                       "no reference record")
    nums = [barron_numbers(r) for r in refs]
    key = "excess" if which == "linear" else "saturation"
    cases, parts = [], []
    for n in nums:
        if n["undecided"] is None:
            parts.append(f"{n['phi']} d={n['d']}: B {fmt(n['first'])} -> {fmt(n['last'])} "
                         f"(solution {fmt(n['solution'])}, half grid {fmt(n['coarse'])}), "
                         f"largest step factor {fmt(n['max_factor'])}, within 1 % after "
                         f"{n['steps_to_level']} step(s), {key} {fmt(n[key])}")
        v = n.get(key)
        cases.append((f"{n['phi']} d={n['d']}",
                      Evidence(interval=Interval(v, v, v) if v is not None else None,
                               undecided=n["undecided"] or (None if v is not None else
                                                            "no Barron norm of the solution"))))
    return Evidence(measured="; ".join(parts), values={"barron": nums}, cases=cases,
                    next="more PGD steps (pde.pgd_steps) would decide")


def barron_linear(records) -> Evidence:
    return _barron(records, "linear")


def barron_saturates(records) -> Evidence:
    return _barron(records, "saturates")

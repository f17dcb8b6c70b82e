"""pde: nonlinear variational PDEs, two-layer networks and the preconditioned iteration.

Marwah, Lipton, Lu, Risteski, "Neural Network Approximations of PDEs Beyond Linearity: A
Representational Perspective" (ICML 2023, arXiv 2210.12101), a theory paper: the minimiser
of E(u) = int |grad u|^2/2 + u^2/2 + phi(u) - f u on [0,1]^d (Neumann boundary) is the limit
of preconditioned gradient descent u <- u - eta (I - Laplace)^{-1} DE(u), which converges
exponentially fast and raises the Barron norm by a bounded factor per step, so a two-layer
network of size polynomial in d approximates it. With a manufactured u*
(quadrun.solvers.pde) this experiment measures three parts, one cell each:

- `reference` (d <= 3): the preconditioned iteration on a cell-centred grid, its energy
  gap per step against Newton on the same grid, and its error against u*;
- `random_features`: inner weights random, outer weights by Newton to round-off (the
  energy is convex in them), so the error left is approximation (and quadrature) error;
- `deep_ritz`: every weight trained with Adam on fresh Sobol points (`pde.train`), then an
  optional L-BFGS polish: the error with the optimisation error included.

The same (d, width, seed) starts both networks from the same inner weights, and every cell
of one d is scored on the same held-out Sobol points (paired comparisons).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import List

import numpy as np

from quadrun.claims import (FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, claim, fmt,
                            fmt_interval)
from quadrun.schema import ConfigError, TrainConfig, spec, train_config
from quadrun.solvers.pde import MAX_GRID_DIM, PHIS, ROUNDOFF, SOLUTIONS
from quadrun.vocab import derive_seed

SOLVERS = ("random_features", "deep_ritz")
SHORT = {"random_features": "rf", "deep_ritz": "ritz"}           # in claim ids
NAMES = {"random_features": "random features", "deep_ritz": "Deep Ritz"}
ACTIVATIONS = ("tanh", "softplus", "relu_k")   # quadrun.nn.ritz.ACTIVATIONS (a test checks)
PAPER = "Marwah, Lipton, Lu, Risteski (ICML 2023)"


@dataclass
class Config:
    phi: str = spec("quartic", choices=list(PHIS), help="nonlinearity: none | u^4/4 | alpha log cosh u")
    alpha: float = spec(1.0, gt=0, help="coefficient of logcosh")
    solution: str = spec("cosine_sum", choices=list(SOLUTIONS),
                         help="manufactured u*: d^-1/2 sum cos(pi x_i) | prod cos(pi x_i)")
    activation: str = spec("tanh", choices=list(ACTIVATIONS), help="relu_k: ReLU^power")
    power: int = spec(3, ge=1, le=8, help="k of the relu_k activation (ReLU^k)")
    scale: float = spec(1.0, gt=0, help="inner weights w ~ N(0, scale^2/d I)")
    repeats: int = spec(1, ge=1, le=100, help="replicates per (part, d, width): cells seed=0..repeats-1")
    test_points: int = spec(16384, ge=2, help="held-out Sobol points for the errors (power of 2)")
    target_error: float = spec(1e-2, gt=0, lt=1, help="rel. L2 error of the width-needed claim and plot")
    # random-feature Ritz
    rf_dims: List[int] = spec([1, 2, 3, 5, 10], ge=1, le=1000, help="dimensions; [] skips")
    rf_widths: List[int] = spec([64, 128, 256, 512, 1024], ge=1, le=65536)
    rf_points: int = spec(16384, ge=2, help="Sobol quadrature points of the energy (power of 2)")
    rf_rcond: float = spec(1e-12, gt=0, lt=1, help="relative eigenvalue cut-off of the Newton solve")
    # Deep Ritz: train.epochs x ritz_steps_per_epoch Adam steps on train.batch_size points
    ritz_dims: List[int] = spec([2, 5, 10], ge=1, le=1000, help="dimensions; [] skips")
    ritz_widths: List[int] = spec([64, 256], ge=1, le=65536)
    ritz_steps_per_epoch: int = spec(100, ge=1)
    ritz_lbfgs_steps: int = spec(0, ge=0, help="L-BFGS polish iterations after Adam; 0: none")
    ritz_lbfgs_points: int = spec(4096, ge=2, help="fixed Sobol points of the polish (power of 2)")
    ritz_dtype: str = spec("float32", choices=["float32", "float64"])
    train: TrainConfig = train_config(optimizer="adam", lr=0.01, schedule="cosine",
                                      batch_size=1024, epochs=20, eval_every=10, log_every=100)
    # grid reference
    reference_d: int = spec(2, ge=0, le=MAX_GRID_DIM, help="dimension of the grid reference; 0 skips it")
    reference_grid: int = spec(64, ge=2, le=4096, help="cells per axis")
    pgd_steps: int = spec(40, ge=1, le=100000)
    pgd_eta: float = spec(0.0, ge=0, lt=2, help="PGD step size; 0 picks 2/(2 + max phi'')")


def check(cfg) -> None:
    c = cfg.pde
    for key in ("test_points", "rf_points", "ritz_lbfgs_points"):
        if not _power_of_two(c[key]):
            raise ConfigError(f"pde.{key}: {c[key]} is not a power of two; Sobol points "
                              "keep their balance only in powers of two (e.g. 4096, 16384)")
    if c.ritz_dims and not _power_of_two(c.train.batch_size):
        raise ConfigError(f"pde.train.batch_size: {c.train.batch_size} is not a power of two; "
                          "Deep Ritz draws Sobol batches, use e.g. 512, 1024")
    if c.reference_d and c.reference_grid ** c.reference_d > 2 ** 24:
        raise ConfigError(f"pde.reference_grid: {c.reference_grid}^{c.reference_d} cells is too "
                          f"many; must be at most 2^24 cells in all")


def cells(c) -> list:
    out = []
    if c.reference_d:
        out.append({"part": "reference", "d": c.reference_d, "grid": c.reference_grid})
    for part, dims, widths in (("random_features", c.rf_dims, c.rf_widths),
                               ("deep_ritz", c.ritz_dims, c.ritz_widths)):
        for d in dict.fromkeys(dims):
            for width in dict.fromkeys(widths):
                out += [{"part": part, "d": d, "width": width, "seed": s}
                        for s in range(c.repeats)]
    return out


def measure(c, cell, ctx) -> dict:
    part = cell["part"]
    if part == "reference":
        return _reference(c, ctx)
    if part == "random_features":
        return _random_features(c, ctx, cell["d"], cell["width"], cell["seed"])
    return _deep_ritz(c, ctx, cell["d"], cell["width"], cell["seed"])


def summarize(records, c) -> dict:
    nets = [r for r in records if r.get("part") in SOLVERS]
    out = {"target_error": c.target_error,
           "width_for_target": width_for_target(nets, c.target_error),
           "problem": {"phi": c.phi, "solution": c.solution, "alpha": c.alpha,
                       "activation": c.activation}}
    refs = _references(records)
    if refs:
        out["reference"] = {k: v for k, v in refs[0].items()
                            if k not in ("part", "energy_gaps")}
    if any(r.get("part") == "deep_ritz" and r.get("status") == "diverged" for r in records):
        out["status"] = "diverged"
    return out


# ----------------------------------------------------------------------------------------
# Claims
# ----------------------------------------------------------------------------------------
# A geometric decay puts log gap on a line in the step (R^2 = 1); an algebraic one, t^-k,
# lies on a line in log(t + 1) instead. R2_MIN is the least R^2 that counts as a line.
R2_MIN = 0.99
# Random-feature Newton stops when its predicted energy decrease is 1e-13 max(1, |E|): that
# leaves a relative H1 error of order sqrt(1e-13), so errors below RESOLUTION are not
# resolved and count as RESOLUTION in the slopes (a flat line there decides nothing).
RESOLUTION = 1e-6
MIN_DIMS = 3           # dimensions with the target reached that the growth fit needs


def claims(records, c) -> list:
    """pgd_geometric; error_vs_width/rf and width_vs_d/rf (the approximation error, always
    stated); error_vs_width/ritz and width_vs_d/ritz where Deep Ritz ran."""
    parts = [p for p in SOLVERS
             if p == "random_features" or any(r.get("part") == p for r in records)]
    return ([_claim_geometric(records)]
            + [_claim_error_falls(records, p) for p in parts]
            + [_claim_width_polynomial(records, p, c.target_error) for p in parts])


def gap_fit(record) -> dict:
    """The decay of one reference record's energy gaps over the steps before round-off
    (gap > ROUNDOFF * max(1, |E_h|)): verdict, why and the numbers that decide them.

    rate: exp of the least-squares slope of log gap vs step t; r2: its R^2; r2_power:
    R^2 of log gap vs log(t + 1) (an algebraic decay t^-k would fit that line instead).
    holds: rate < 1 and r2 >= R2_MIN, or the gap reaches round-off in fewer than 3 steps;
    fails: a non-finite gap, rate >= 1 or a last gap not below the first (no fall), or
    r2 < R2_MIN with the power law fitting better (sublinear decay); else inconclusive."""
    gaps = record.get("energy_gaps") or []
    base = {"d": record.get("d"), "grid": record.get("grid"), "rate": None, "r2": None,
            "r2_power": None, "steps_fitted": 0}
    finite = [isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g)
              for g in gaps]
    if len(gaps) < 2:
        return {**base, "verdict": INCONCLUSIVE, "why": "fewer than two energy gaps recorded"}
    if not all(finite):
        return {**base, "verdict": FAILS, "why": "an energy gap is not finite (the iteration blew up)"}
    energy = record.get("newton_energy")
    floor = ROUNDOFF * max(1.0, abs(energy) if isinstance(energy, (int, float)) else 1.0)
    g = np.asarray(gaps, dtype=float)
    below = np.nonzero(g <= floor)[0]
    live = int(below[0]) if len(below) else len(g)
    base["steps_fitted"] = live
    if live == 0:
        return {**base, "verdict": INCONCLUSIVE, "why": "the starting point is already the minimiser"}
    if live == len(g) and g[-1] >= g[0]:
        return {**base, "verdict": FAILS,
                "why": f"the gap does not fall ({fmt(g[0])} at step 0, {fmt(g[-1])} at the end)"}
    if live < 3:
        if live < len(g):
            bound = (floor / g[0]) ** (1 / live)
            return {**base, "rate": float(bound), "verdict": HOLDS,
                    "why": f"the gap reaches round-off after {live} step(s): a per-step factor "
                           f"at most {fmt(bound)}, faster than a fit can resolve"}
        return {**base, "verdict": INCONCLUSIVE, "why": "too few steps to fit a rate (pde.pgd_steps)"}
    t = np.arange(live, dtype=float)
    y = np.log(g[:live])
    slope, r2 = _line(t, y)
    rate = float(np.exp(slope))
    r2_power = _line(np.log(t + 1), y)[1]
    out = {**base, "rate": rate, "r2": r2, "r2_power": r2_power}
    if rate >= 1:
        return {**out, "verdict": FAILS, "why": f"the gap does not fall: fitted factor {fmt(rate)} >= 1"}
    if r2 >= R2_MIN:
        return {**out, "verdict": HOLDS,
                "why": f"the gap falls by {fmt(rate)} per step, log gap linear in the step "
                       f"(R^2 {r2:.4f})"}
    if r2_power > r2:
        return {**out, "verdict": FAILS,
                "why": f"the gap falls, but log gap is closer to a power law in t (R^2 "
                       f"{r2_power:.3f}) than to a line (R^2 {r2:.3f}): sublinear, not geometric"}
    return {**out, "verdict": INCONCLUSIVE,
            "why": f"the gap falls but its log is not close to linear in the step (R^2 "
                   f"{r2:.3f} < {R2_MIN}): the rate changes along the run"}


def _claim_geometric(records) -> dict:
    statement = ("Preconditioned gradient descent u <- u - eta (I - Laplace)^{-1} DE(u) "
                 "converges to the minimiser of the energy exponentially fast.")
    source = f"{PAPER}, abstract; the preconditioned iteration in the proof of the main theorem"
    target = (f"fitted per-step factor of the energy gap < 1 and log gap linear in the step "
              f"(R^2 >= {R2_MIN}) over the steps before round-off "
              f"(gap > {ROUNDOFF:g} max(1, |E_h|))")
    refs = _references(records)
    if not refs:
        return claim("pgd_geometric", statement, source, measured="no reference record",
                     target=target, verdict=NOT_MEASURED,
                     why="the grid reference did not run (pde.reference_d = 0); "
                         "pde.reference_d = 1..3 measures it")
    fits = [gap_fit(r) for r in refs]
    measured = "; ".join(
        f"d={f['d']}, {f['grid']}^{f['d']} grid: factor {fmt(f['rate'])} per step"
        + (f", R^2 {f['r2']:.4f} (power law {f['r2_power']:.3f})" if f["r2"] is not None else "")
        + f" over {f['steps_fitted']} steps" for f in fits)
    verdicts = [f["verdict"] for f in fits]
    worst = next((f for v in (FAILS, INCONCLUSIVE) for f in fits if f["verdict"] == v), fits[0])
    verdict = worst["verdict"]
    where = f"d={worst['d']}: " if len(fits) > 1 else ""
    return claim("pgd_geometric", statement, source, measured=measured, target=target,
                 verdict=verdict, why=where + worst["why"],
                 values={"fits": fits, "verdicts": verdicts})


def error_slopes(records, part: str, n_boot: int = 2000) -> dict:
    """{d: {"slope", "low", "high", "widths", "medians", "seeds"}}: the least-squares slope of
    log(max(median rel. L2, RESOLUTION)) vs log width at each d, with a 95 % interval: a
    percentile bootstrap (records resampled within each width) when every width has at
    least two finite errors, else (one seed) the t interval of the regression slope from
    its residuals, when there are at least three widths: the scatter of the errors about
    the trend is the only measure of noise a single seed has. Widths without a finite
    error are left out."""
    groups: dict = {}
    for r in records:
        if r.get("part") != part:
            continue
        e = r.get("rel_l2")
        ok = isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e)
        groups.setdefault(r["d"], {}).setdefault(r["width"], []).append(e if ok else None)
    out = {}
    for d in sorted(groups):
        by_w = {w: [e for e in errs if e is not None] for w, errs in sorted(groups[d].items())}
        by_w = {w: errs for w, errs in by_w.items() if errs}
        widths = sorted(by_w)
        row = {"widths": widths, "medians": [float(np.median(by_w[w])) for w in widths],
               "seeds": min((len(v) for v in by_w.values()), default=0),
               "dropped": sorted(set(groups[d]) - set(widths)),
               "slope": None, "low": None, "high": None}
        if len(widths) >= 2:
            x = np.log(np.asarray(widths, float))

            def slope(meds):
                return _line(x, np.log(np.maximum(meds, RESOLUTION)))[0]

            row["slope"] = float(slope(np.asarray(row["medians"])))
            if max(row["medians"]) <= RESOLUTION:   # flat at the floor (no round-off slope)
                row["slope"] = 0.0
                if row["seeds"] >= 2:
                    row["low"] = row["high"] = 0.0
            elif row["seeds"] >= 2:
                rng = np.random.default_rng(derive_seed("pde", "bootstrap", part, d))
                draws = [slope(np.array([np.median(rng.choice(by_w[w], len(by_w[w])))
                                         for w in widths])) for _ in range(n_boot)]
                row["low"], row["high"] = (float(v) for v in np.percentile(draws, [2.5, 97.5]))
            elif len(widths) >= 3:
                row["low"], row["high"] = _slope_interval(
                    x, np.log(np.maximum(row["medians"], RESOLUTION)))
        out[d] = row
    return out


def _claim_error_falls(records, part: str) -> dict:
    what = ("random features: inner weights random, outer weights optimal, the approximation "
            "error alone" if part == "random_features" else
            "Deep Ritz: every weight trained, the optimisation error included")
    statement = (f"The two-layer network's error falls as its width grows, at every "
                 f"dimension d ({what}).")
    source = (f"{PAPER}, main theorem: the solution has a Barron norm polynomial in d, so by "
              "Barron (1993) width m reaches L2 error O(norm / sqrt(m))")
    target = (f"slope of log median rel. L2 error vs log width < 0 at every d: its 95 % "
              f"interval below 0 (a bootstrap over seeds where every width has >= 2, else the "
              f"regression's t interval over >= 3 widths); errors below {RESOLUTION:g} count "
              f"as {RESOLUTION:g}")
    cid = f"error_vs_width/{SHORT[part]}"
    slopes = error_slopes(records, part)
    if not slopes:
        return claim(cid, statement, source, measured=f"no {part} record", target=target,
                     verdict=NOT_MEASURED,
                     why=f"no {part} cells ran (pde.{'rf' if part == 'random_features' else 'ritz'}_dims = [])")
    falls, grows, open_ = [], [], {}
    parts = []
    for d, s in slopes.items():
        if s["slope"] is None:
            open_[d] = "fewer than two widths with a finite error"
            parts.append(f"d={d}: {len(s['widths'])} width(s)")
            continue
        if s["low"] is not None:
            how = "" if s["seeds"] >= 2 else " (one seed: regression interval)"
            parts.append(f"d={d}: {fmt_interval(s['slope'], s['low'], s['high'], 2)}{how}")
            sign = -1 if s["high"] < 0 else (1 if s["low"] > 0 else 0)
        else:
            floor = max(s["medians"]) <= RESOLUTION
            parts.append(f"d={d}: {fmt(s['slope'], 2)} "
                         + (f"(every error at the {RESOLUTION:g} floor)" if floor
                            else "(one seed, two widths: no interval)"))
            sign = 0
        if sign < 0:
            falls.append(d)
        elif sign > 0:
            grows.append(d)
        elif max(s["medians"]) <= RESOLUTION:
            open_[d] = f"every error at or below {RESOLUTION:g}"
        else:
            open_[d] = "the interval contains 0" if s["low"] is not None else \
                "one seed and two widths give no measure of the noise"
    measured = "slope " + "; ".join(parts)
    values = {str(d): s for d, s in slopes.items()}
    if grows:
        worst = max(grows, key=lambda d: slopes[d]["slope"])
        s = slopes[worst]
        return claim(cid, statement, source, measured=measured, target=target, verdict=FAILS,
                     why=f"the error grows with width at d = {', '.join(map(str, grows))} "
                         f"(d={worst}: median {fmt(s['medians'][0])} at width {s['widths'][0]}, "
                         f"{fmt(s['medians'][-1])} at {s['widths'][-1]})",
                     values=values)
    if open_:
        return claim(cid, statement, source, measured=measured, target=target,
                     verdict=INCONCLUSIVE,
                     why="not decided at " + "; ".join(f"d={d} ({why})" for d, why in open_.items())
                         + "; more widths or seeds (pde.repeats) would decide",
                     values=values)
    return claim(cid, statement, source, measured=measured, target=target, verdict=HOLDS,
                 why=f"the error falls with width at every d ({', '.join(map(str, falls))})",
                 values=values)


def growth_fits(points) -> dict:
    """Least squares of log w* against log d (polynomial, w* ~ d^k) and against d
    (exponential, w* ~ e^{b d}) over points [(d, w*)]: k, b and the residual sums of squares."""
    d = np.asarray([p[0] for p in points], float)
    y = np.log(np.asarray([p[1] for p in points], float))
    k, _, rss_poly = _line(np.log(d), y, rss=True)
    b, _, rss_exp = _line(d, y, rss=True)
    return {"k": float(k), "b": float(b), "rss_poly": float(rss_poly), "rss_exp": float(rss_exp)}


def _claim_width_polynomial(records, part: str, target_error: float) -> dict:
    statement = (f"The width a two-layer network needs for a fixed error grows polynomially "
                 f"in d, not exponentially ({NAMES[part]}).")
    source = (f"{PAPER}, main theorem: Barron norm O((d B_L)^(p log(1/eps))), polynomial in d "
              "for fixed eps, hence the width (Barron 1993)")
    target = (f"w*(d) = smallest width with median rel. L2 <= {target_error:g}; over the d "
              f"where it is resolved (reached above the smallest width tried; >= {MIN_DIMS} d, "
              f">= 2 distinct w*), log w* vs log d fits at least as well as log w* vs d "
              f"(residual sums of squares)")
    cid = f"width_vs_d/{SHORT[part]}"
    rows = [r for r in records if r.get("part") == part]
    if not rows:
        return claim(cid, statement, source, measured=f"no {part} record", target=target,
                     verdict=NOT_MEASURED, why=f"no {part} cells ran")
    by_d = width_for_target(rows, target_error).get(part, {})
    reached = sorted((int(d), w) for d, w in by_d.items() if w is not None)
    missed = sorted(int(d) for d, w in by_d.items() if w is None)
    widest = max(r["width"] for r in rows)
    smallest = min(r["width"] for r in rows)
    # w* at the smallest width tried is only an upper bound (w* <= smallest): it cannot be
    # fitted as a value, so the fit uses the d whose w* lies above it
    exact = [(d, w) for d, w in reached if w > smallest]
    bounded = [d for d, w in reached if w == smallest]
    measured = "w* " + ", ".join(f"d={d}: {w}" for d, w in reached) if reached else "w* none"
    if bounded:
        measured += f" (w* <= {smallest} at d = {', '.join(map(str, bounded))}: an upper bound)"
    if missed:
        measured += f"; not reached (w* > {widest}) at d = {', '.join(map(str, missed))}"
    if len(reached) < MIN_DIMS:
        return claim(cid, statement, source, measured=measured, target=target,
                     verdict=INCONCLUSIVE,
                     why=f"the target is reached at {len(reached)} d "
                         f"({', '.join(map(str, (d for d, _ in reached))) or 'none'}), "
                         f"{MIN_DIMS} are needed; more dimensions, wider networks or a larger "
                         f"pde.target_error would decide")
    if not exact:
        return claim(cid, statement, source, measured=measured, target=target,
                     verdict=INCONCLUSIVE,
                     why=f"the smallest width tried ({smallest}) reaches the target at every d "
                         f"reached, so no growth is resolved; smaller widths would decide")
    if len(exact) < MIN_DIMS:
        return claim(cid, statement, source, measured=measured, target=target,
                     verdict=INCONCLUSIVE,
                     why=f"w* is resolved (above the smallest width tried, {smallest}) at "
                         f"{len(exact)} d ({', '.join(str(d) for d, _ in exact)}), {MIN_DIMS} "
                         f"are needed to tell a power of d from an exponential; smaller "
                         f"widths, a finer width grid (pde.rf_widths, pde.ritz_widths) or "
                         f"more dimensions would decide")
    if len({w for _, w in exact}) == 1:
        return claim(cid, statement, source, measured=measured, target=target, verdict=HOLDS,
                     why=f"the same width {exact[0][1]} reaches the target at every d resolved: "
                         "no growth")
    fits = growth_fits(exact)
    measured += (f"; fit w* ~ d^{fmt(fits['k'], 2)} (RSS {fmt(fits['rss_poly'], 2)}) vs "
                 f"e^({fmt(fits['b'], 2)} d) (RSS {fmt(fits['rss_exp'], 2)})")
    values = {"reached": reached, "missed": missed, **fits}
    if fits["rss_poly"] <= fits["rss_exp"]:
        return claim(cid, statement, source, measured=measured, target=target, verdict=HOLDS,
                     why=f"a power of d fits w* at least as well as an exponential "
                         f"(d^{fmt(fits['k'], 2)})", values=values)
    return claim(cid, statement, source, measured=measured, target=target, verdict=FAILS,
                 why="an exponential in d fits w* better than a power of d", values=values)


# ----------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------
def figures(records, c, save) -> None:
    import matplotlib.pyplot as plt

    nets = [r for r in records if r.get("part") in SOLVERS]
    med = median_errors(nets)
    styles = {"random_features": ("-", "o"), "deep_ritz": ("--", "s")}
    if med:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        dims = sorted({d for _, d, _ in med})
        colours = {d: plt.cm.viridis(i / max(1, len(dims) - 1)) for i, d in enumerate(dims)}
        for part in SOLVERS:
            for d in dims:
                pts = sorted((w, e) for (s, dd, w), e in med.items()
                             if s == part and dd == d and math.isfinite(e))
                if pts:
                    ls, mk = styles[part]
                    ax.loglog(*zip(*pts), ls, marker=mk, color=colours[d],
                              label=f"{part.replace('_', ' ')}, d={d}")
        all_widths = sorted({w for _, _, w in med})
        ax.axhline(c.target_error, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("width m")
        ax.set_ylabel("relative L2 error (median over seeds)")
        ax.set_title("two-layer networks: error vs width")
        ax.set_xticks(all_widths, [str(w) for w in all_widths])
        ax.minorticks_off()
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        save(fig, "error_vs_width")

        fig, ax = plt.subplots(figsize=(5, 4))
        for part, by_d in width_for_target(nets, c.target_error).items():
            pts = sorted((int(d), w) for d, w in by_d.items() if w is not None)
            missed = sorted(int(d) for d, w in by_d.items() if w is None)
            line = None
            if pts:
                (line,) = ax.semilogy(*zip(*pts), styles[part][0], marker=styles[part][1],
                                      label=part.replace("_", " "))
            if missed:  # the target was not reached at any width tried: drawn above the top
                ax.semilogy(missed, [2 * all_widths[-1]] * len(missed), "x", ms=9,
                            color=line.get_color() if line else None,
                            label=f"{part.replace('_', ' ')}: not reached")
        ax.set_yticks(all_widths, [str(w) for w in all_widths])
        ax.minorticks_off()
        ax.set_xlabel("dimension d")
        ax.set_ylabel(f"smallest width with rel. L2 <= {c.target_error:g}")
        ax.set_title("width needed for the target error")
        if ax.lines:
            ax.legend()
        save(fig, "width_for_target")

    refs = _references(records)
    if refs:
        fig, ax = plt.subplots(figsize=(5, 4))
        for ref in refs:
            gaps = ref.get("energy_gaps") or []
            floor = 1e-17 * max(1.0, abs(gaps[0])) if gaps and gaps[0] is not None else 1e-17
            y = [max(g, floor) if isinstance(g, (int, float)) else math.nan for g in gaps]
            rate = ref.get("pgd_rate")
            ax.semilogy(range(len(y)), y, marker=".",
                        label=f"d={ref['d']}, {ref['grid']}^{ref['d']} grid (rate {fmt(rate)})")
        ax.set_xlabel("iteration")
        ax.set_ylabel("energy gap E_h(u_t) - E_h(u_h)")
        ax.set_title("preconditioned gradient descent")
        ax.legend(fontsize=8)
        save(fig, "reference_energy_gap")


# ----------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------
def median_errors(records) -> dict:
    """{(part, d, width): median rel_l2 over seeds} (non-finite errors count as inf)."""
    groups: dict = {}
    for r in records:
        e = r.get("rel_l2")
        e = e if isinstance(e, (int, float)) and math.isfinite(e) else math.inf
        groups.setdefault((r["part"], r["d"], r["width"]), []).append(e)
    return {k: _median(v) for k, v in groups.items()}


def width_for_target(records, target: float) -> dict:
    """{part: {d: smallest width whose median rel. L2 error is <= target, or None}}."""
    out: dict = {}
    for (part, d, width), err in sorted(median_errors(records).items()):
        best = out.setdefault(part, {}).setdefault(str(d), None)
        if err <= target and (best is None or width < best):
            out[part][str(d)] = width
    return out


def _median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def _references(records) -> list:
    """The reference records, one per (d, grid) (a sweep's jobs repeat the same one)."""
    out: dict = {}
    for r in records:
        if r.get("part") == "reference":
            out.setdefault((r.get("d"), r.get("grid")), r)
    return [out[k] for k in sorted(out, key=str)]


def _line(x, y, rss: bool = False):
    """(slope, R^2) of the least-squares line y ~ a + slope x, and its residual sum of
    squares when rss; R^2 is 1 when y is constant and fitted exactly."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    res = float(((y - (intercept + slope * x)) ** 2).sum())
    tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - res / tot if tot > 0 else (1.0 if res <= 1e-24 else 0.0)
    return (float(slope), r2, res) if rss else (float(slope), r2)


def _slope_interval(x, y, level: float = 0.95) -> tuple:
    """The t interval of the least-squares slope of y on x, from the residuals (n - 2
    degrees of freedom); both ends equal the slope when the fit is exact."""
    from scipy.stats import t

    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    res = float(((y - (intercept + slope * x)) ** 2).sum())
    se = math.sqrt(res / (len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
    half = float(t.ppf(0.5 + level / 2, len(x) - 2)) * se
    return float(slope - half), float(slope + half)


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


# ----------------------------------------------------------------------------------------
# The three parts
# ----------------------------------------------------------------------------------------
def _problem(c, d: int):
    from quadrun.solvers.pde import Problem

    return Problem(d=d, phi=c.phi, solution=c.solution, alpha=c.alpha)


def _test_points(c, ctx, d: int):
    """Held-out points: one Sobol scramble per d, shared by every cell of the run (paired
    comparisons), built once."""
    import torch

    from quadrun.nn.ritz import sobol_points

    seed = derive_seed(ctx.runtime.seed, "pde", "test_points", d)
    return ctx.shared(("pde", "test_points", d, c.test_points),
                      lambda: sobol_points(d, c.test_points, seed, dtype=torch.float64))


def _model(c, ctx, d: int, width: int, seed: int, dtype):
    """The two-layer network of (d, width, seed): both parts start from the same weights."""
    import torch

    from quadrun.nn.ritz import TwoLayer

    gen = torch.Generator().manual_seed(derive_seed(ctx.runtime.seed, "pde", "init", d, width, seed))
    return TwoLayer(d, width, c.activation, c.power, c.scale, generator=gen, dtype=dtype)


def _reference(c, ctx) -> dict:
    from quadrun.solvers.pde import reference_solution

    def log_gap(step, gap):
        ctx.log(step, {"reference/energy_gap": gap})

    out = reference_solution(_problem(c, c.reference_d), c.reference_grid, c.pgd_steps,
                             eta=c.pgd_eta or None, callback=log_gap)
    return {k: v for k, v in out.items() if k not in ("d", "grid")}   # the cell has them


def _random_features(c, ctx, d: int, width: int, seed: int) -> dict:
    import torch

    from quadrun.nn.ritz import errors, random_feature_ritz, sobol_points

    t0 = time.perf_counter()
    problem = _problem(c, d)
    model = _model(c, ctx, d, width, seed, torch.float64).to(ctx.device)
    x = sobol_points(d, c.rf_points, derive_seed(ctx.runtime.seed, "pde", "rf_points", d, seed),
                     ctx.device, torch.float64)
    info = random_feature_ritz(model, problem, x, rcond=c.rf_rcond)
    err = errors(model, problem, _test_points(c, ctx, d).to(ctx.device))
    return {**err, "steps": info["newton_iterations"], "converged": info["converged"],
            "status": "completed", "seconds": time.perf_counter() - t0}


def _deep_ritz(c, ctx, d: int, width: int, seed: int) -> dict:
    import torch

    from quadrun.nn.ritz import deep_ritz

    t0 = time.perf_counter()
    model = _model(c, ctx, d, width, seed, getattr(torch, c.ritz_dtype))
    out = deep_ritz(model, _problem(c, d), ctx, c.train, _test_points(c, ctx, d),
                    steps_per_epoch=c.ritz_steps_per_epoch, lbfgs_steps=c.ritz_lbfgs_steps,
                    lbfgs_points=c.ritz_lbfgs_points,
                    lbfgs_seed=derive_seed(ctx.runtime.seed, "pde", "lbfgs_points", d, seed),
                    name=f"deep_ritz/d{d}/w{width}/s{seed}")
    return {**{k: out[k] for k in ("rel_l2", "rel_h1", "energy_gap", "steps", "status")},
            "seconds": time.perf_counter() - t0}

"""pde's claims, declared once, and the evidence for them from records (torch-free).

- pgd_geometric: the preconditioned iteration's energy gap falls geometrically;
- error_vs_width/rf, error_vs_width/ritz: the network's error falls with its width at
  every d (random features: the approximation error alone; Deep Ritz: with the
  optimisation error);
- width_vs_d/rf, width_vs_d/ritz: the width needed for a fixed error grows polynomially
  in d, not exponentially.
"""
from __future__ import annotations

from dataclasses import dataclass

from quadrun.claims import (FAILS, HOLDS, INCONCLUSIVE, AllCases, Above, Below, Claim, Rule,
                            decide, fmt)
from quadrun.solvers.pde import ROUNDOFF

from quadrun.experiments.pde.config import NAMES, PAPER, SHORT, SOLVERS
from quadrun.experiments.pde.evidence import (MIN_DIMS, RESOLUTION, error_falls, geometric,
                                              references, width_for_target, width_polynomial)

# A geometric decay puts log gap on a line in the step (R^2 = 1); an algebraic one, t^-k,
# lies on a line in log(t + 1) instead. R2_MIN is the least R^2 that counts as a line.
R2_MIN = 0.99


# -- pgd_geometric ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GeometricDecay(Rule):
    """One reference's energy gaps (values of `gap_fit`): holds when the fitted per-step
    factor is < 1 and log gap is a line in the step (R^2 >= r2_min), or the gap reaches
    round-off in fewer than 3 steps; fails on a non-finite gap, no fall, a factor >= 1, or
    a power law in t fitting better than the line; else inconclusive."""
    r2_min: float = R2_MIN

    def _decide(self, ev):
        v = ev.values
        if not v["finite"]:
            return FAILS, "an energy gap is not finite (the iteration blew up)"
        if not v["falls"]:
            return FAILS, f"the gap does not fall ({fmt(v['first'])} at step 0, {fmt(v['last'])} at the end)"
        if v["r2"] is None:      # round-off within 3 steps: rate is a bound
            return HOLDS, (f"the gap reaches round-off after {v['steps_fitted']} step(s): a "
                           f"per-step factor at most {fmt(v['rate'])}, faster than a fit can resolve")
        if v["rate"] >= 1:
            return FAILS, f"the gap does not fall: fitted factor {fmt(v['rate'])} >= 1"
        if v["r2"] >= self.r2_min:
            return HOLDS, (f"the gap falls by {fmt(v['rate'])} per step, log gap linear in the "
                           f"step (R^2 {v['r2']:.4f})")
        if v["r2_power"] > v["r2"]:
            return FAILS, (f"the gap falls, but log gap is closer to a power law in t (R^2 "
                           f"{v['r2_power']:.3f}) than to a line (R^2 {v['r2']:.3f}): "
                           "sublinear, not geometric")
        return INCONCLUSIVE, (f"the gap falls but its log is not close to linear in the step "
                              f"(R^2 {v['r2']:.3f} < {self.r2_min}): the rate changes along the run")


GEOMETRIC = Claim(
    "pgd_geometric",
    statement="Preconditioned gradient descent u <- u - eta (I - Laplace)^{-1} DE(u) "
              "converges to the minimiser of the energy exponentially fast.",
    source=f"{PAPER}, abstract; the preconditioned iteration in the proof of the main theorem",
    target=f"fitted per-step factor of the energy gap < 1 and log gap linear in the step "
           f"(R^2 >= {R2_MIN}) over the steps before round-off (gap > {ROUNDOFF:g} max(1, |E_h|))",
    rule=AllCases(GeometricDecay()),
    setup="cell-centred finite-difference grid with the preconditioner applied by DCT; "
          "energy gap against damped Newton on the same grid")


# -- error_vs_width ---------------------------------------------------------------------------
def _error_claim(part: str) -> Claim:
    what = ("random features: inner weights random, outer weights optimal, the approximation "
            "error alone" if part == "random_features" else
            "Deep Ritz: every weight trained, the optimisation error included")
    return Claim(
        f"error_vs_width/{SHORT[part]}",
        statement=f"The two-layer network's error falls as its width grows, at every "
                  f"dimension d ({what}).",
        source=f"{PAPER}, main theorem: the solution has a Barron norm polynomial in d, so by "
               "Barron (1993) width m reaches L2 error O(norm / sqrt(m))",
        target=f"slope of log median rel. L2 error vs log width < 0 at every d: its 95 % "
               f"interval below 0 (a bootstrap over replicates where every width has >= 2, "
               f"else the regression's t interval over >= 3 widths); errors below "
               f"{RESOLUTION:g} count as {RESOLUTION:g}",
        rule=AllCases(Below(0.0)),
        setup="manufactured u* on [0,1]^d, Neumann boundary; tanh two-layer net with inner "
              "weights N(0, 1/d) through the cube; errors on held-out Sobol points")


def _width_claim(part: str, target_error: float) -> Claim:
    return Claim(
        f"width_vs_d/{SHORT[part]}",
        statement=f"The width a two-layer network needs for a fixed error grows polynomially "
                  f"in d, not exponentially ({NAMES[part]}).",
        source=f"{PAPER}, main theorem: Barron norm O((d B_L)^(p log(1/eps))), polynomial in d "
               "for fixed eps, hence the width (Barron 1993)",
        target=f"w*(d) = smallest width with median rel. L2 <= {target_error:g}; over the d "
               f"where it is resolved (reached above the smallest width tried; >= {MIN_DIMS} d, "
               f">= 2 distinct w*), log w* vs log d fits better than log w* vs d (residual "
               f"sum of squares of the exponential fit minus the polynomial's above 0)",
        rule=Above(0.0),
        setup="w* read off the width grid (pde.rf_widths, pde.ritz_widths)")


# -- the entry points ---------------------------------------------------------------------------
def claims(records, c) -> list:
    """pgd_geometric; error_vs_width/rf and width_vs_d/rf (the approximation error, always
    stated); error_vs_width/ritz and width_vs_d/ritz where Deep Ritz ran."""
    parts = [p for p in SOLVERS
             if p == "random_features" or any(r.get("part") == p for r in records)]
    declared = [GEOMETRIC] + [_error_claim(p) for p in parts] + \
        [_width_claim(p, c.target_error) for p in parts]
    evidence = {"pgd_geometric": geometric(records)}
    for p in parts:
        evidence[f"error_vs_width/{SHORT[p]}"] = error_falls(records, p)
        evidence[f"width_vs_d/{SHORT[p]}"] = width_polynomial(records, p, c.target_error)
    return decide(declared, evidence)


def summarize(records, c) -> dict:
    nets = [r for r in records if r.get("part") in SOLVERS]
    problem = {"phi": c.phi, "solution": c.solution, "activation": c.activation}
    if c.phi == "logcosh":
        problem["alpha"] = c.alpha
    out = {"target_error": c.target_error,
           "width_for_target": width_for_target(nets, c.target_error), "problem": problem}
    refs = references(records)
    if refs:
        out["reference"] = {k: v for k, v in refs[0].items()
                            if k not in ("part", "energy_gaps")}
    if any(r.get("part") == "deep_ritz" and r.get("status") == "diverged" for r in records):
        out["status"] = "diverged"
    return out

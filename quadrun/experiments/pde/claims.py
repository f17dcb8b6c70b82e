"""pde's claims, declared once from the run's config, and decided on evidence from records.

The paper's claims are about its proof's objects and its theorem's object, the trained
two-layer network:
- pgd_geometric, pgd_rate_vs_d: the preconditioned iteration converges geometrically, at a
  rate that does not depend on d (mechanism, part a);
- barron/linear, barron/saturates: the Barron norm of its iterates grows by a bounded
  factor per step and levels off (mechanism, part b);
- error_vs_width/ritz, width_vs_d/ritz: Deep Ritz, every weight trained.
quadrun's extensions (labelled so): the unpreconditioned control of pgd_rate_vs_d, and the
random-feature claims error_vs_width/rf, width_vs_d/rf (fixed inner weights: Barron's
adaptive rate does not apply; random-feature theory does).
"""
from __future__ import annotations

from quadrun.claims import Above, AllCases, Below, Claim, decide

from quadrun.experiments.pde import networks, reference
from quadrun.experiments.pde.config import PAPER, SHORT, SOLVERS
from quadrun.experiments.pde.reference import (GROWTH_TOLERANCE, RATE_RATIO,
                                               SATURATION_TOLERANCE)
from quadrun.experiments.pde.rules import GeometricDecay
from quadrun.solvers.pde import ROUNDOFF

BARRON = "Barron (1993)"


def _solution(c) -> str:
    extra = {"cosines": f", A = {c.amplitude:g}, k = {list(c.frequencies)}",
             "gaussian_bump": f", A = {c.amplitude:g}, s = {c.bump_width:g}, "
                              f"centre {list(c.bump_centre)}"}.get(c.solution, "")
    return f"u* = {c.solution}{extra} on [0,1]^d, Neumann boundary"


def declared(c) -> list:
    grid = f"{c.reference_grid}^d cell-centred grid, preconditioner (I + A)^-1 by DCT"
    mech = [
        Claim("pgd_geometric",
              statement="Preconditioned gradient descent u <- u - eta (I - Laplace)^{-1} DE(u) "
                        "converges to the minimiser of the energy exponentially fast.",
              source=f"{PAPER}, abstract; the preconditioned iteration in the proof of the main theorem",
              target=f"at every (phi, d) of the reference: fitted per-step factor of the energy gap "
                     f"< 1 and log gap linear in the step (R^2 >= {GeometricDecay.r2_min}) over the "
                     f"steps before round-off (gap > {ROUNDOFF:g} max(1, |E_h|))",
              rule=AllCases(GeometricDecay()),
              setup=f"{grid}; energy gap against damped Newton on the same grid; {_solution(c)}"),
        Claim("pgd_rate_vs_d",
              statement="The preconditioned iteration contracts at a rate that does not depend on "
                        "the dimension d: it is set by the convexity and smoothness of L.",
              source=f"{PAPER}, proof of the main theorem: exponential convergence of "
                     "preconditioned gradient descent in a Hilbert space",
              target=f"for each phi with bounded curvature (logcosh: phi'' <= alpha for every u, "
                     f"so eta = 2/(2 + alpha) at every d): the steps per e-fold of the energy gap, "
                     f"tau_d = -1/slope of log gap, agree over d = 1, 2, 3 within a factor "
                     f"{RATE_RATIO}: the 95 % interval of max tau / min tau (from the slopes' t "
                     f"intervals) below {RATE_RATIO}",
              rule=AllCases(Below(RATE_RATIO)),
              setup=f"{grid}; {_solution(c)}; quartic and none shown, not cases: quartic's "
                    f"phi'' = 3u^2 grows with max|u*| (sqrt(d) for the cosine sum), so its "
                    f"smoothness constant and step size change with d; none is exact in one step"),
        Claim("pgd_rate_vs_d/unpreconditioned",
              statement="Control: without the preconditioner, gradient descent contracts at a "
                        "rate that does depend on d, and pgd_rate_vs_d's rule sees it.",
              source="quadrun's negative control: plain gradient descent's rate is set by the "
                     "condition number of I + A + phi'', whose largest eigenvalue grows as 4 d n^2",
              target=f"the same ratio max tau / min tau over d = 1, 2, 3 (fitted over the second "
                     f"half of the steps before round-off) above {RATE_RATIO} (95 % interval)",
              rule=AllCases(Above(RATE_RATIO)), extension=True,
              setup=f"{c.control_grid}^d grid, {c.control_steps} steps, eta = 2/(2 + max A + L), "
                    f"bounded-curvature phis"),
        Claim("barron/linear",
              statement="Each preconditioned gradient step raises the Barron norm of the iterate "
                        "by at most a bounded factor, so log B(u_t) grows at most linearly in t.",
              source=f"{PAPER}, proof of the main theorem: B(u_t+1) <= B_L B(u_t)^p, p = 1 for a "
                     "linear PDE (phi none) and p = 3 for phi' = u^3 (quartic)",
              target=f"at every (phi, d) of the reference: no step after the first raises log B by "
                     f"more than the first step (u_1 -> u_2) does, plus {GROWTH_TOLERANCE}",
              rule=AllCases(Below(GROWTH_TOLERANCE)),
              setup=f"B(u) = sum_k pi|k| |a_k|, a_k the cosine coefficients of u on the "
                    f"{c.reference_grid}^d grid; u_0 = 0, so growth counts from u_1; "
                    f"phi in {list(c.reference_phis)}"),
        Claim("barron/saturates",
              statement="The Barron norm of the iterates saturates: it levels off at the Barron "
                        "norm of the solution, a property of the solution and not of the grid.",
              source=f"{PAPER}, main theorem: the iterates reach eps after O(log 1/eps) steps and "
                     "the eps-approximant has a bounded Barron norm",
              target=f"at every (phi, d): |log B(u_T) - log B(u_h)| and |log B(u_h) - log B(u_h/2)| "
                     f"below {SATURATION_TOLERANCE} (u_h: Newton's minimiser on the grid, u_h/2: on "
                     f"the grid of half the cells per axis)",
              rule=AllCases(Below(SATURATION_TOLERANCE)),
              setup=f"{c.pgd_steps} PGD steps on the {c.reference_grid}^d grid; {_solution(c)}"),
    ]
    return mech + [claim for part in ("deep_ritz", "random_features")
                   for claim in (_error_claim(c, part), _width_claim(c, part))]


def _net_setup(c, part: str) -> str:
    base = (f"{_solution(c)}, phi = {c.phi}; {c.activation} two-layer net, inner weights "
            f"N(0, {c.scale:g}^2/d) through the cube; {c.repeats} replicates; errors on "
            f"{c.test_points} held-out Sobol points")
    if part == "deep_ritz":
        t = c.train
        return (f"{base}; Deep Ritz: {t.optimizer} {t.epochs} x {c.ritz_steps_per_epoch} steps on "
                f"{t.batch_size} fresh Sobol points, lr {t.lr:g} {t.schedule}, {c.ritz_dtype}, "
                f"L-BFGS polish {c.ritz_lbfgs_steps}; floor: the {c.ritz_dtype} network against "
                f"the same weights in float64")
    return (f"{base}; outer weights by Newton on max({c.rf_points}, {c.rf_points_per_width} x "
            f"width) Sobol points; floor: two quadrature scrambles and the Newton decrement")


def _error_claim(c, part: str) -> Claim:
    rf = part == "random_features"
    return Claim(
        f"error_vs_width/{SHORT[part]}",
        statement=("With the inner weights fixed at random and only the outer weights fitted "
                   "(random features), the error falls as the number of features grows, at "
                   "every d." if rf else
                   "A trained two-layer network's error falls as its width grows, at every "
                   "dimension d (Deep Ritz: every weight trained, the optimisation error included)."),
        source=("quadrun's extension: for fixed random features the applicable result is Rahimi & "
                "Recht (2008): m random features reach O(C / sqrt(m)) for functions in the random-"
                "feature class (Barron's rate needs adaptive inner weights)" if rf else
                f"{PAPER}, main theorem with {BARRON}: the solution is eps-close to a function "
                "of Barron norm polynomial in d, which a width-m network reaches to O(norm / sqrt(m))"),
        target=(f"at every d where >= 2 widths, from the smallest up, have median error >= "
                f"{networks.FLOOR_FACTOR} x their median measured floor: the slope of log median "
                f"rel. L2 vs log width over those widths below 0 (95 % bootstrap interval over "
                f">= {networks.MIN_REPLICATES} replicates per width); d at the floor are listed, "
                f"not cases"),
        rule=AllCases(Below(0.0)), setup=_net_setup(c, part), extension=rf)


def _width_claim(c, part: str) -> Claim:
    rf = part == "random_features"
    return Claim(
        f"width_vs_d/{SHORT[part]}",
        statement=("With random features, the width that reaches a fixed error grows "
                   "polynomially in d, not exponentially." if rf else
                   "The width a trained two-layer network needs for a fixed error grows "
                   "polynomially in d, not exponentially."),
        source=("quadrun's extension: no theorem gives a polynomial width for fixed random "
                "features; Yehudai & Shamir (2019) show random features can need a width "
                "exponential in d for a single ReLU neuron" if rf else
                f"{PAPER}, main theorem: Barron norm O((d B_L)^max(p log(1/eps), p^log(1/eps))), "
                f"polynomial in d for fixed eps, p, B_L; {BARRON} turns it into a width"),
        target=(f"w*(d): the width where the median rel. L2 first reaches {c.target_error:g} "
                f"(log-log interpolated between grid widths, >= {networks.FLOOR_FACTOR} x the floor "
                f"there); over >= {networks.MIN_DIMS} resolved d spanning a factor "
                f"{networks.SPAN:g}: R^2 of log w* vs log d minus R^2 of log w* vs d above 0 (95 % "
                f"bootstrap over replicates; equal w* are undecided); otherwise a description, "
                f"not a verdict"),
        rule=Above(0.0), setup=_net_setup(c, part), extension=rf)


def claims(records, c) -> list:
    evidence = {
        "pgd_geometric": reference.geometric(records),
        "pgd_rate_vs_d": reference.rate_vs_d(records, "reference"),
        "pgd_rate_vs_d/unpreconditioned": reference.rate_vs_d(records, "control"),
        "barron/linear": reference.barron_linear(records),
        "barron/saturates": reference.barron_saturates(records),
    }
    for part in SOLVERS:
        evidence[f"error_vs_width/{SHORT[part]}"] = networks.error_falls(records, part)
        evidence[f"width_vs_d/{SHORT[part]}"] = networks.width_polynomial(records, part,
                                                                          c.target_error)
    return decide(declared(c), evidence)


def summarize(records, c) -> dict:
    problem = {"phi": c.phi, "solution": _solution(c), "activation": c.activation}
    out = {"target_error": c.target_error,
           "width_for_target": networks.width_for_target(records, c.target_error, SOLVERS),
           "problem": problem}
    refs = reference.references(records)
    if refs:    # the reference's error against the exact solution, per (phi, d)
        out["reference"] = {
            reference.label(r): {k: r.get(k) for k in ("grid", "rel_l2", "newton_rel_l2",
                                                       "pgd_rate", "eta", "barron_solution",
                                                       "barron_exact")}
            for r in refs}
    floors = {}
    for part in SOLVERS:
        for d, s in networks.error_slopes(records, part).items():
            floors.setdefault(part, {})[str(d)] = s["floors"][-1]
    if floors:
        out["floor_at_widest"] = floors
    if any(r.get("part") == "deep_ritz" and r.get("status") == "diverged" for r in records):
        out["status"] = "diverged"
    return out

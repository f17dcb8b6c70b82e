"""pde's lab: the cells and how one is measured.

Cells, in order: the grid reference at each (phi, d) (PGD with its energy gaps and the
Barron norm of every iterate), the unpreconditioned control at each (bounded-curvature
phi, d), then each network part by d, width and replicate. The same (d, width, replicate)
starts both networks from the same inner weights, and every cell of one d is scored on the
same held-out Sobol points (paired comparisons).

Each network record carries its own measured floor: the error it cannot resolve whatever
its width. Random features: the quadrature floor ||u_A - u_B|| / (sqrt 2 ||u*||), u_A and u_B
the energy minimisers on two independent scrambles of the same number of Sobol points (the
record's error is u_A's), and the solver floor sqrt(Newton decrement) / ||u*|| (the energy
is 1-strongly convex in H1, so the distance to the discrete minimiser is at most the
decrement's square root). Deep Ritz: the precision floor, the trained network evaluated in
its dtype against the same weights in float64.
"""
from __future__ import annotations

import copy
import math
import time

import torch

from quadrun.experiments.pde.config import control_phis, widths_for
from quadrun.nn.ritz import TwoLayer, deep_ritz, errors, random_feature_ritz, sobol_points
from quadrun.solvers.pde import Problem, reference_solution
from quadrun.vocab import derive_seed


def cells(c) -> list:
    out = [{"part": "reference", "phi": phi, "d": d, "grid": c.reference_grid}
           for phi in dict.fromkeys(c.reference_phis) for d in dict.fromkeys(c.reference_dims)]
    if out and c.control_steps:
        out += [{"part": "control", "phi": phi, "d": d, "grid": c.control_grid}
                for phi in dict.fromkeys(control_phis(c)) for d in dict.fromkeys(c.reference_dims)]
    for part, dims, widths in (("random_features", c.rf_dims, c.rf_widths),
                               ("deep_ritz", c.ritz_dims, c.ritz_widths)):
        for d in dims:
            for width in dict.fromkeys(widths_for(widths, dims, d)):
                out += [{"part": part, "d": d, "width": width, "replicate": r}
                        for r in range(c.repeats)]
    return out


def measure(c, cell, ctx) -> dict:
    part = cell["part"]
    if part in ("reference", "control"):
        return _reference(c, ctx, cell["phi"], cell["d"], cell["grid"], part == "reference")
    if part == "random_features":
        return _random_features(c, ctx, cell["d"], cell["width"], cell["replicate"])
    return _deep_ritz(c, ctx, cell["d"], cell["width"], cell["replicate"])


def problem(c, d: int, phi: str = None) -> Problem:
    return Problem(d=d, phi=phi or c.phi, solution=c.solution, alpha=c.alpha,
                   amplitude=c.amplitude, frequencies=tuple(c.frequencies),
                   bump_width=c.bump_width, bump_centre=tuple(c.bump_centre))


def quadrature_points(c, width: int) -> int:
    """rf_points, or rf_points_per_width x width rounded up to a power of 2 if more."""
    n = c.rf_points_per_width * width
    return max(c.rf_points, 2 ** math.ceil(math.log2(n)) if n > 0 else 0)


def _test_points(c, ctx, d: int):
    """Held-out points: one Sobol scramble per d, shared by every cell of the run (paired
    comparisons), built once."""
    seed = derive_seed(ctx.runtime.seed, "pde", "test_points", d)
    return ctx.shared(("pde", "test_points", d, c.test_points),
                      lambda: sobol_points(d, c.test_points, seed, dtype=torch.float64))


def _model(c, ctx, d: int, width: int, replicate: int, dtype) -> TwoLayer:
    """The two-layer network of (d, width, replicate): both parts start from it."""
    gen = torch.Generator().manual_seed(
        derive_seed(ctx.runtime.seed, "pde", "init", d, width, replicate))
    return TwoLayer(d, width, c.activation, c.power, c.scale, generator=gen, dtype=dtype)


def _rms(v) -> float:
    return float((v.double() ** 2).mean().sqrt())


# -- the grid reference and its control ----------------------------------------------------------
def _reference(c, ctx, phi: str, d: int, n: int, precondition: bool) -> dict:
    """PGD on the grid (with the Barron norm of each iterate), or gradient descent without
    the preconditioner (the control), against Newton on the same grid and u*."""
    name = f"{'reference' if precondition else 'control'}/{phi}/d{d}"

    def log_gap(step, gap):
        ctx.log(step, {f"{name}/energy_gap": gap})

    out = reference_solution(problem(c, d, phi), n, c.pgd_steps if precondition else c.control_steps,
                             eta=(c.pgd_eta or None) if precondition else None, callback=log_gap,
                             precondition=precondition, barron=precondition)
    return {k: v for k, v in out.items() if k not in ("d", "grid")}   # the cell has them


# -- the two networks ------------------------------------------------------------------------------
def _random_features(c, ctx, d: int, width: int, replicate: int) -> dict:
    """Inner weights random, outer weights by Newton to round-off on scramble A (the error)
    and on scramble B (with A, the quadrature floor)."""
    t0 = time.perf_counter()
    prob, n = problem(c, d), quadrature_points(c, width)
    test = _test_points(c, ctx, d).to(ctx.device)
    model = _model(c, ctx, d, width, replicate, torch.float64).to(ctx.device)
    x = sobol_points(d, n, derive_seed(ctx.runtime.seed, "pde", "rf_points", d, replicate),
                     ctx.device, torch.float64)
    info = random_feature_ritz(model, prob, x, rcond=c.rf_rcond)
    err = errors(model, prob, test)
    with torch.no_grad():
        u_a, u_star = model(test), prob.u_star(test)
        x_b = sobol_points(d, n, derive_seed(ctx.runtime.seed, "pde", "rf_points_b", d, width,
                                             replicate), ctx.device, torch.float64)
        ctx.check_stop(f"in random_features d={d} width={width}")
        random_feature_ritz(model, prob, x_b, rcond=c.rf_rcond)
        quad = _rms(u_a - model(test)) / math.sqrt(2) / _rms(u_star)
    solver = math.sqrt(max(info["decrement"], 0.0)) / _rms(u_star)
    return {**err, "floor": max(quad, solver), "floor_quadrature": quad, "floor_solver": solver,
            "points": n, "steps": info["newton_iterations"], "converged": info["converged"],
            "status": "completed", "seconds": time.perf_counter() - t0}


def _deep_ritz(c, ctx, d: int, width: int, replicate: int) -> dict:
    """Every weight trained (Adam on fresh Sobol points, then an optional L-BFGS polish)."""
    t0 = time.perf_counter()
    model = _model(c, ctx, d, width, replicate, getattr(torch, c.ritz_dtype))
    prob, test = problem(c, d), _test_points(c, ctx, d)
    out = deep_ritz(model, prob, ctx, c.train, test,
                    steps_per_epoch=c.ritz_steps_per_epoch, lbfgs_steps=c.ritz_lbfgs_steps,
                    lbfgs_points=c.ritz_lbfgs_points,
                    lbfgs_seed=derive_seed(ctx.runtime.seed, "pde", "lbfgs_points", d, replicate),
                    # the fit's name also seeds its Sobol batches (quadrun.training.fit)
                    name=f"deep_ritz/d{d}/w{width}/s{replicate}")
    with torch.no_grad():
        x = test.to(ctx.device)
        exact = copy.deepcopy(model).double()
        diff = model(x.to(next(model.parameters()).dtype)).double() - exact(x)
        floor = _rms(diff) / _rms(prob.u_star(x))
    return {**{k: out[k] for k in ("rel_l2", "rel_h1", "energy_gap", "steps", "status")},
            "floor": floor if math.isfinite(floor) else None,
            "seconds": time.perf_counter() - t0}

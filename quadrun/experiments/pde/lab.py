"""pde's lab: the cells (the reference, then each network part by d, width, replicate) and
how one is measured.

The same (d, width, replicate) starts both networks from the same inner weights, and every
cell of one d is scored on the same held-out Sobol points (paired comparisons)."""
from __future__ import annotations

import time

import torch

from quadrun.nn.ritz import TwoLayer, deep_ritz, errors, random_feature_ritz, sobol_points
from quadrun.solvers.pde import Problem, reference_solution
from quadrun.vocab import derive_seed


def cells(c) -> list:
    out = []
    if c.reference_d:
        out.append({"part": "reference", "d": c.reference_d, "grid": c.reference_grid})
    for part, dims, widths in (("random_features", c.rf_dims, c.rf_widths),
                               ("deep_ritz", c.ritz_dims, c.ritz_widths)):
        for d in dict.fromkeys(dims):
            for width in dict.fromkeys(widths):
                out += [{"part": part, "d": d, "width": width, "replicate": r}
                        for r in range(c.repeats)]
    return out


def measure(c, cell, ctx) -> dict:
    part = cell["part"]
    if part == "reference":
        return _reference(c, ctx)
    if part == "random_features":
        return _random_features(c, ctx, cell["d"], cell["width"], cell["replicate"])
    return _deep_ritz(c, ctx, cell["d"], cell["width"], cell["replicate"])


def _problem(c, d: int) -> Problem:
    return Problem(d=d, phi=c.phi, solution=c.solution, alpha=c.alpha)


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


# -- the three parts ---------------------------------------------------------------------------
def _reference(c, ctx) -> dict:
    """The preconditioned iteration on the grid, against Newton on the same grid and u*."""
    def log_gap(step, gap):
        ctx.log(step, {"reference/energy_gap": gap})

    out = reference_solution(_problem(c, c.reference_d), c.reference_grid, c.pgd_steps,
                             eta=c.pgd_eta or None, callback=log_gap)
    return {k: v for k, v in out.items() if k not in ("d", "grid")}   # the cell has them


def _random_features(c, ctx, d: int, width: int, replicate: int) -> dict:
    """Inner weights random, outer weights by Newton to round-off: approximation error."""
    t0 = time.perf_counter()
    problem = _problem(c, d)
    model = _model(c, ctx, d, width, replicate, torch.float64).to(ctx.device)
    x = sobol_points(d, c.rf_points,
                     derive_seed(ctx.runtime.seed, "pde", "rf_points", d, replicate),
                     ctx.device, torch.float64)
    info = random_feature_ritz(model, problem, x, rcond=c.rf_rcond)
    err = errors(model, problem, _test_points(c, ctx, d).to(ctx.device))
    return {**err, "steps": info["newton_iterations"], "converged": info["converged"],
            "status": "completed", "seconds": time.perf_counter() - t0}


def _deep_ritz(c, ctx, d: int, width: int, replicate: int) -> dict:
    """Every weight trained (Adam on fresh Sobol points, then an optional L-BFGS polish)."""
    t0 = time.perf_counter()
    model = _model(c, ctx, d, width, replicate, getattr(torch, c.ritz_dtype))
    out = deep_ritz(model, _problem(c, d), ctx, c.train, _test_points(c, ctx, d),
                    steps_per_epoch=c.ritz_steps_per_epoch, lbfgs_steps=c.ritz_lbfgs_steps,
                    lbfgs_points=c.ritz_lbfgs_points,
                    lbfgs_seed=derive_seed(ctx.runtime.seed, "pde", "lbfgs_points", d, replicate),
                    # the fit's name also seeds its Sobol batches (quadrun.training.fit)
                    name=f"deep_ritz/d{d}/w{width}/s{replicate}")
    return {**{k: out[k] for k in ("rel_l2", "rel_h1", "energy_gap", "steps", "status")},
            "seconds": time.perf_counter() - t0}

"""pde: nonlinear variational PDEs, two-layer networks vs the preconditioned-gradient reference.

Marwah, Lipton, Lu, Risteski (NOTES.md section 3): the minimiser of
E(u) = int |grad u|^2/2 + u^2/2 + phi(u) - f u on [0,1]^d is reached by preconditioned
gradient descent u <- u - eta (I - Laplace)^{-1} DE(u) at a geometric rate, which is why a
two-layer network of size polynomial in d can represent it. This experiment measures:

- the grid reference (d <= 3): the preconditioned iteration on a cell-centred grid,
  its energy gap per step (against Newton on the same grid) and its error against u*;
- random-feature Ritz (inner weights random, outer weights by Newton to round-off):
  error vs width for each d, i.e. the approximation error alone;
- Deep Ritz (all weights trained with Adam on fresh Sobol points, optional L-BFGS):
  error vs width with the optimisation error included.

Outputs: summary `results` (one row per solver, d, width, seed) and `reference`;
plots error_vs_width, width_for_target, reference_energy_gap; table.md.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import List

import torch
from omegaconf import OmegaConf

from quadrun.nn.ritz import (ACTIVATIONS, TwoLayer, deep_ritz, errors, random_feature_ritz,
                             sobol_points)
from quadrun.schema import ConfigError, TrainConfig, spec
from quadrun.solvers.pde import MAX_GRID_DIM, PHIS, SOLUTIONS, Problem, reference_solution
from quadrun.training import Interrupted

SOLVERS = ("random_features", "deep_ritz")


@dataclass
class Config:
    phi: str = spec("quartic", choices=list(PHIS), help="nonlinearity: none | u^4/4 | alpha log cosh u")
    alpha: float = spec(1.0, gt=0, help="coefficient of logcosh")
    solution: str = spec("cosine_sum", choices=list(SOLUTIONS), help="manufactured u*")
    activation: str = spec("tanh", choices=list(ACTIVATIONS))
    power: int = spec(3, ge=1, le=8, help="k of the relu_k activation (ReLU^k)")
    scale: float = spec(1.0, gt=0, help="inner weights w ~ N(0, scale^2/d I)")
    repeats: int = spec(1, ge=1, le=100, help="seeds per (solver, d, width): seed, seed+1, ...")
    test_points: int = spec(16384, ge=2, help="held-out Sobol points for the errors (power of 2)")
    target_error: float = spec(1e-2, gt=0, lt=1, help="rel. L2 target of the width-needed plot")
    # random-feature Ritz
    rf_dims: List[int] = spec([1, 2, 3, 5, 10], ge=1, le=1000, help="dimensions; [] skips")
    rf_widths: List[int] = spec([64, 256, 1024], ge=1, le=65536)
    rf_points: int = spec(16384, ge=2, help="Sobol quadrature points of the energy (power of 2)")
    rf_rcond: float = spec(1e-12, gt=0, lt=1, help="relative eigenvalue cut-off of the Newton solve")
    # Deep Ritz (steps: train.epochs x ritz_steps_per_epoch, batch: train.batch_size)
    ritz_dims: List[int] = spec([5], ge=1, le=1000, help="dimensions; [] skips")
    ritz_widths: List[int] = spec([64, 256], ge=1, le=65536)
    ritz_steps_per_epoch: int = spec(100, ge=1)
    ritz_lbfgs_steps: int = spec(0, ge=0, help="L-BFGS polish iterations after Adam; 0: none")
    ritz_lbfgs_points: int = spec(4096, ge=2, help="fixed Sobol points of the polish (power of 2)")
    ritz_dtype: str = spec("float32", choices=["float32", "float64"])
    # grid reference
    reference_d: int = spec(2, ge=0, le=MAX_GRID_DIM, help="dimension of the grid reference; 0 skips it")
    reference_grid: int = spec(64, ge=2, le=4096, help="cells per axis")
    pgd_steps: int = spec(40, ge=1, le=100000)
    pgd_eta: float = spec(0.0, ge=0, lt=2, help="PGD step size; 0 picks 2/(2 + max phi'')")


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def check(cfg) -> None:
    c = cfg.pde
    for key in ("test_points", "rf_points", "ritz_lbfgs_points"):
        if not _power_of_two(c[key]):
            raise ConfigError(f"pde.{key}: {c[key]} is not a power of two; Sobol points "
                              "keep their balance only in powers of two (e.g. 4096, 16384)")
    if c.ritz_dims and not _power_of_two(cfg.train.batch_size):
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is not a power of two; "
                          "Deep Ritz draws Sobol batches, use e.g. 512, 1024")
    if c.reference_d and c.reference_grid ** c.reference_d > 2 ** 24:
        raise ConfigError(f"pde.reference_grid: {c.reference_grid}^{c.reference_d} cells is too "
                          f"many; must be at most 2^24 cells in all")


def _problem(cfg, d: int) -> Problem:
    return Problem(d=d, phi=cfg.phi, solution=cfg.solution, alpha=cfg.alpha)


def _test_points(cfg, ctx, d: int) -> torch.Tensor:
    """Held-out points: one Sobol scramble per d shared by every solver (paired comparison),
    seeded apart from every training set."""
    return sobol_points(d, cfg.test_points, 10 ** 6 + int(ctx.cfg.seed) * 1000 + d,
                        dtype=torch.float64)


def _model(cfg, d: int, width: int, seed: int, dtype) -> TwoLayer:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + d * 1009 + width)
    return TwoLayer(d, width, cfg.activation, cfg.power, cfg.scale, generator=gen, dtype=dtype)


def _run_random_features(cfg, ctx, d: int, width: int, seed: int) -> dict:
    t0 = time.perf_counter()
    problem = _problem(cfg, d)
    model = _model(cfg, d, width, seed, torch.float64).to(ctx.device)
    x = sobol_points(d, cfg.rf_points, seed, ctx.device, torch.float64)
    info = random_feature_ritz(model, problem, x, rcond=cfg.rf_rcond)
    err = errors(model, problem, _test_points(cfg, ctx, d).to(ctx.device))
    return {"solver": "random_features", "d": d, "width": width, "seed": seed, **err,
            "steps": info["newton_iterations"], "converged": info["converged"],
            "status": "completed", "seconds": time.perf_counter() - t0}


def _run_deep_ritz(cfg, ctx, d: int, width: int, seed: int) -> dict:
    t0 = time.perf_counter()
    problem = _problem(cfg, d)
    dtype = getattr(torch, cfg.ritz_dtype)
    model = _model(cfg, d, width, seed, dtype)
    tc = OmegaConf.structured(TrainConfig(**OmegaConf.to_container(ctx.cfg.train, resolve=True)))
    out = deep_ritz(model, problem, ctx, tc, _test_points(cfg, ctx, d),
                    steps_per_epoch=cfg.ritz_steps_per_epoch, lbfgs_steps=cfg.ritz_lbfgs_steps,
                    lbfgs_points=cfg.ritz_lbfgs_points, seed=seed,
                    name=f"deep_ritz/d{d}/w{width}")
    return {"solver": "deep_ritz", "d": d, "width": width, "seed": seed,
            **{k: out[k] for k in ("rel_l2", "rel_h1", "energy_gap", "steps", "status")},
            "seconds": time.perf_counter() - t0}


def _run_reference(cfg, ctx) -> dict:
    problem = _problem(cfg, cfg.reference_d)

    def log_gap(step, gap):
        ctx.log(step, {"reference/energy_gap": gap})

    return reference_solution(problem, cfg.reference_grid, cfg.pgd_steps,
                              eta=cfg.pgd_eta or None, callback=log_gap)


def _stage(ctx, key: str, compute):
    if ctx.stop_requested:
        raise Interrupted(f"stopped before {key}; finished parts are kept in stages.json")
    return ctx.stage(key, compute)


def run(cfg, ctx) -> dict:
    seeds = [int(ctx.cfg.seed) + r for r in range(cfg.repeats)]
    reference = None
    if cfg.reference_d:
        key = f"reference/d{cfg.reference_d}/n{cfg.reference_grid}"
        reference = _stage(ctx, key, lambda: _run_reference(cfg, ctx))
    results = []
    plan = [("random_features", d, w) for d in cfg.rf_dims for w in cfg.rf_widths] + \
           [("deep_ritz", d, w) for d in cfg.ritz_dims for w in cfg.ritz_widths]
    solve = {"random_features": _run_random_features, "deep_ritz": _run_deep_ritz}
    for solver, d, width in plan:
        for seed in seeds:
            row = _stage(ctx, f"{solver}/d{d}/w{width}/s{seed}",
                         lambda: solve[solver](cfg, ctx, d, width, seed))
            results.append(row)
            ctx.log(len(results), {f"{solver}/d{d}/w{width}/rel_l2": row["rel_l2"]})

    widths = width_for_target(results, cfg.target_error)
    _plots(ctx, results, reference, widths, cfg.target_error)
    ctx.write_text("table.md", _table(results, reference, widths, cfg.target_error))
    summary = {"results": results, "target_error": cfg.target_error,
               "width_for_target": widths,
               "problem": {"phi": cfg.phi, "solution": cfg.solution, "alpha": cfg.alpha,
                           "activation": cfg.activation}}
    if reference is not None:
        summary["reference"] = {k: v for k, v in reference.items() if k != "energy_gaps"}
    if any(r.get("status") == "diverged" for r in results):
        summary["status"] = "diverged"
    return summary


# ----------------------------------------------------------------------------------------
# Aggregation, plots and the table
# ----------------------------------------------------------------------------------------
def _median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def median_errors(results) -> dict:
    """{(solver, d, width): median rel_l2 over seeds} (non-finite errors count as inf)."""
    groups: dict = {}
    for r in results:
        e = r["rel_l2"]
        e = e if isinstance(e, (int, float)) and math.isfinite(e) else math.inf
        groups.setdefault((r["solver"], r["d"], r["width"]), []).append(e)
    return {k: _median(v) for k, v in groups.items()}


def width_for_target(results, target: float) -> dict:
    """{solver: {d: smallest width whose median rel. L2 error is <= target, or None}}."""
    out: dict = {}
    for (solver, d, width), err in sorted(median_errors(results).items()):
        best = out.setdefault(solver, {}).setdefault(str(d), None)
        if err <= target and (best is None or width < best):
            out[solver][str(d)] = width
    return out


def _plots(ctx, results, reference, widths, target) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = median_errors(results)
    if med:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        dims = sorted({d for _, d, _ in med})
        colours = {d: plt.cm.viridis(i / max(1, len(dims) - 1)) for i, d in enumerate(dims)}
        styles = {"random_features": ("-", "o"), "deep_ritz": ("--", "s")}
        for solver in SOLVERS:
            for d in dims:
                pts = sorted((w, e) for (s, dd, w), e in med.items() if s == solver and dd == d)
                if pts:
                    ls, mk = styles[solver]
                    ax.loglog(*zip(*pts), ls, marker=mk, color=colours[d],
                              label=f"{solver.replace('_', ' ')}, d={d}")
        ax.axhline(target, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("width m")
        ax.set_ylabel("relative L2 error")
        ax.set_title("two-layer networks: error vs width")
        ax.set_xticks(sorted({w for _, _, w in med}), [str(w) for w in sorted({w for _, _, w in med})])
        ax.minorticks_off()
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        ctx.save_figure(fig, "error_vs_width")

        fig, ax = plt.subplots(figsize=(5, 4))
        all_widths = sorted({w for _, _, w in med})
        for solver, by_d in widths.items():
            pts = sorted((int(d), w) for d, w in by_d.items() if w is not None)
            missed = sorted(int(d) for d, w in by_d.items() if w is None)
            line = None
            if pts:
                (line,) = ax.semilogy(*zip(*pts), styles[solver][0], marker=styles[solver][1],
                                      label=solver.replace("_", " "))
            if missed:  # the target was not reached at any width tried: drawn above the top
                ax.semilogy(missed, [2 * all_widths[-1]] * len(missed), "x", ms=9,
                            color=line.get_color() if line else None,
                            label=f"{solver.replace('_', ' ')}: not reached")
        ax.set_yticks(all_widths, [str(w) for w in all_widths])
        ax.minorticks_off()
        ax.set_xlabel("dimension d")
        ax.set_ylabel(f"smallest width with rel. L2 <= {target:g}")
        ax.set_title("width needed for the target error")
        if ax.lines:
            ax.legend()
        ctx.save_figure(fig, "width_for_target")

    if reference is not None:
        fig, ax = plt.subplots(figsize=(5, 4))
        floor = 1e-17 * max(1.0, abs(reference["energy_gaps"][0]))
        gaps = [max(g, floor) if isinstance(g, (int, float)) else math.nan
                for g in reference["energy_gaps"]]
        ax.semilogy(range(len(gaps)), gaps, marker=".")
        ax.set_xlabel("iteration")
        ax.set_ylabel("energy gap E_h(u_t) - E_h(u_h)")
        ax.set_title(f"preconditioned GD, d={reference['d']}, {reference['grid']}^{reference['d']} "
                     f"grid (rate {reference['pgd_rate']:.3g})")
        ctx.save_figure(fig, "reference_energy_gap")


def _fmt(value, spec: str = ".3e") -> str:
    """A number for the table; '-' for a missing (e.g. non-finite, stored as null) one."""
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def _table(results, reference, widths, target) -> str:
    lines = ["| solver | d | width | seed | rel L2 | rel H1 | energy gap | steps | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['solver']} | {r['d']} | {r['width']} | {r['seed']} | "
                     f"{_fmt(r['rel_l2'])} | {_fmt(r['rel_h1'])} | {_fmt(r['energy_gap'])} | "
                     f"{r['steps']} | {r['seconds']:.1f} |")
    lines.append("")
    lines.append(f"Smallest width with rel. L2 <= {target:g}: " + "; ".join(
        f"{s}: " + ", ".join(f"d={d}: {w}" for d, w in by_d.items()) for s, by_d in widths.items()))
    if reference is not None:
        lines += ["", f"Grid reference (d={reference['d']}, {reference['grid']} cells per axis, "
                      f"{reference['steps']} PGD steps, eta {reference['eta']:.3g}): "
                      f"rel L2 {_fmt(reference['rel_l2'])} (Newton {_fmt(reference['newton_rel_l2'])}), "
                      f"energy gap {_fmt(reference['energy_gap'])}, "
                      f"rate {_fmt(reference['pgd_rate'], '.3f')} per step"]
    return "\n".join(lines) + "\n"

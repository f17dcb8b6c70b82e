"""dcdm: the deep conjugate direction method (Kaneda, Akar, Chen, Kala, Hyde, Teran, "A Deep
Conjugate Direction Method for Iteratively Solving Linear Systems", ICML 2023, arXiv
2205.10763) on MAC-grid pressure Poisson systems, against CG, Jacobi-PCG, IC(0)-PCG,
deflated PCG, AMG-PCG (pyamg, host) and geometric-multigrid PCG (mg, torch, on the device).

The protocol, for each dimension in `dims` (lab.py):
- {part: train, dim} (when "dcdm" is among the solvers): the training scene at train_n
  (and train_n/2, ... with train_sizes > 1), its Ritz vectors (cached under data_dir), the
  network trained through the core loop on random Ritz combinations with the
  scale-invariant loss, saved as checkpoints/model_<dim>d.pt. Record: sizes, ritz_vectors,
  status, steps, val_loss, parameters, train_seconds.
- {part: solve, dim, n, scene, solver, protocol} for n = train_n * factor, every
  evaluation scene and solver: one solve to the tolerance, set-up timed apart. Record:
  iterations (exact: the first iteration whose residual is below the target, whatever
  check_every is), iterations_run, converged, rel_residual (recomputed in float64),
  absolute_tol (whether this solver's tolerance was absolute), device, setup_s, solve_s
  and residuals, the history ||r_k|| / ||b|| (every iteration, or HISTORY of them evenly
  spaced when there are more).

`protocol`: "quadrun" (every solver to the relative tolerance) or "authors" (the baselines
as the authors' test script ran them: CG and deflated PCG to an ABSOLUTE tolerance, the
deflation from `deflate` Lanczos steps started at b plus Jacobi), to compare with the
paper's own columns; the records and the claims say which.

Claims (claims.py; the paper's abstract and results): DCDM reaches the tolerance in fewer
iterations than CG; its count grows less than CG's from n to 2n; it generalises to scenes
not seen in training; and its wall time to the tolerance (set-up + solve) against CG, MG
and AMG on the run's device. Figures (figures.py): the residual histories.
"""
from quadrun.experiments.dcdm.claims import claims, summarize
from quadrun.experiments.dcdm.config import POOL, VARIANTS, Config, check

__all__ = ["Config", "check", "VARIANTS", "POOL", "claims", "summarize", "cells", "measure",
           "figures"]


def cells(c) -> list:
    from quadrun.experiments.dcdm.lab import cells
    return cells(c)


def measure(c, cell, ctx) -> dict:
    from quadrun.experiments.dcdm.lab import measure
    return measure(c, cell, ctx)


def figures(records, c, save) -> None:
    from quadrun.experiments.dcdm.figures import figures
    figures(records, c, save)

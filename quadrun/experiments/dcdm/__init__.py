"""dcdm: the deep conjugate direction method (Kaneda, Akar, Chen, Kala, Hyde, Teran, "A Deep
Conjugate Direction Method for Iteratively Solving Linear Systems", ICML 2023, arXiv
2205.10763) on MAC-grid pressure Poisson systems, against CG, Jacobi-PCG, IC(0)-PCG,
deflated PCG, AMG-PCG (pyamg, host) and geometric-multigrid PCG (mg, torch, on the device).

The protocol, for each dimension in `dims` (lab.py):
- {part: train, dim, arch, net} for every arch in `archs` and net < `nets` (when "dcdm" is
  among the solvers): the training scene at train_n (and train_n/2, ... with
  train_sizes > 1), its Ritz vectors (cached under data_dir, shared by the nets), a network
  trained from its own seed (`train_seed`: initialisation, sample draws, batch order)
  through the core loop on random Ritz combinations with the scale-invariant loss, saved
  as checkpoints/model_<dim>d_<arch>_<net>.pt. Record: train_seed, sizes, ritz_vectors,
  status, steps, val_loss, parameters, train_seconds.
- {part: solve, dim, n, scene, solver, protocol} (and arch, net for dcdm) for
  n = train_n * factor up to max_n, every evaluation scene, solver and network: one solve
  to the tolerance, set-up timed apart. Record: iterations (exact: the first iteration
  whose residual is below the target, whatever check_every is), iterations_run, converged,
  rel_residual (recomputed in float64), absolute_tol (whether this solver's tolerance was
  absolute), device, setup_s, solve_s, residuals (the history ||r_k|| / ||b||, every
  iteration or HISTORY of them evenly spaced), train_seed (dcdm), and for the fixed maps
  (cg: the identity, jacobi, ic, mg, dcdm) cosines, the A-norm cosine of the map's
  direction with A^-1 r on the scene's test residuals, and cosine, their median.

`protocol`: "quadrun" (every solver to the relative tolerance) or "authors" (the baselines
as the authors' test script ran them: CG and deflated PCG to an ABSOLUTE tolerance, the
deflation from `deflate` Lanczos steps started at b plus Jacobi), to compare with the
paper's own columns; the records and the claims say which.

Claims (claims.py, evidence.py), one set per arch, each holding only if it holds for each
network: size independence as the paper states it (and the weaker "grows less than CG",
labelled as quadrun's), fewer iterations than CG, IC and deflated PCG, generalisation to
unseen scenes, less wall time than CG, IC and deflated PCG on the run's device (and
quadrun's extension: within 2x of multigrid), and the network as an approximate inverse
(its A-cosine above IC's). Figures (plots.py): residual histories, iterations against n.
"""
from quadrun.experiments.dcdm.claims import claims, summarize
from quadrun.experiments.dcdm.config import POOL, VARIANTS, Config, check, memory

__all__ = ["Config", "check", "memory", "VARIANTS", "POOL", "claims", "summarize", "cells", "measure",
           "figures"]


def cells(c) -> list:
    from quadrun.experiments.dcdm.lab import cells
    return cells(c)


def measure(c, cell, ctx) -> dict:
    from quadrun.experiments.dcdm.lab import measure
    return measure(c, cell, ctx)


def figures(records, c, save) -> None:
    from quadrun.experiments.dcdm.plots import figures
    figures(records, c, save)

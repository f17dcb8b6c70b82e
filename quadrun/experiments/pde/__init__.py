"""pde: nonlinear variational PDEs, two-layer networks and the preconditioned iteration.

Marwah, Lipton, Lu, Risteski, "Neural Network Approximations of PDEs Beyond Linearity: A
Representational Perspective" (ICML 2023, arXiv 2210.12101), a theory paper: the minimiser
of E(u) = int |grad u|^2/2 + u^2/2 + phi(u) - f u on [0,1]^d (Neumann boundary) is the limit
of preconditioned gradient descent u <- u - eta (I - Laplace)^{-1} DE(u), which converges
exponentially fast and raises the Barron norm by a bounded factor per step, so a two-layer
network of size polynomial in d approximates it. With a manufactured u*
(quadrun.solvers.manufactured: built-in or given in the config) this experiment
measures, one cell each (lab.py):

- `reference` (phi, d <= 3): the preconditioned iteration on a cell-centred grid, its
  energy gap per step against Newton on the same grid, the spectral Barron norm of every
  iterate, and its error against u*; `control`: the same without the preconditioner;
- `random_features` (d, width, replicate): inner weights random, outer weights by Newton
  to round-off (the energy is convex in them), so the error left is approximation error;
  its floor (quadrature and solver) is measured in the same cell;
- `deep_ritz` (d, width, replicate): every weight trained with Adam on fresh Sobol points
  (`pde.train`), then an optional L-BFGS polish: the error with the optimisation error.

config.py holds the section and its variants; claims.py declares the claims, decided on
evidence from reference.py (the iteration) and networks.py (the widths); rules.py has the
one rule of its own; plots.py draws the figures.
"""
from quadrun.experiments.pde.claims import claims, summarize
from quadrun.experiments.pde.config import POOL, VARIANTS, Config, check

__all__ = ["Config", "check", "VARIANTS", "POOL", "claims", "summarize", "cells", "measure",
           "figures"]


def cells(c) -> list:
    from quadrun.experiments.pde.lab import cells
    return cells(c)


def measure(c, cell, ctx) -> dict:
    from quadrun.experiments.pde.lab import measure
    return measure(c, cell, ctx)


def figures(records, c, save) -> None:
    from quadrun.experiments.pde.plots import figures
    figures(records, c, save)

"""Hierarchical polynomials (Wang, Nichani & Lee, "Learning Hierarchical Polynomials with
Three-Layer Neural Networks", ICLR 2024, arXiv 2311.13774): how many samples a learner
needs to learn h = g(p(x)), x ~ N(0, I_d), p of degree k, g of degree q, as d grows. The
paper: O~(d^k) for a three-layer network trained layerwise, Theta~(d^kq) for kernel methods,
and the initial stage recovers p itself with O~(d^k) samples.

The protocol, read in this package's order:
- config.py: the regimes, each its own target and grid (hierpoly.<regime>.*), run in the
  order of hierpoly.regimes:
  ``separation`` (k = 2, q = 2): both sample complexities inside a CPU's reach at small d;
  ``headline`` (k = 2, q = 3, the paper's cubic g): the layerwise network over d = 8 ... 64;
  ``paper``: the paper's Figure 2, p = sum_i lambda_i He_3(x_i), g = z^3, every layer
  trained jointly with Adam from a muP start (scale=paper, a GPU);
  and the learners: ``layerwise`` (the theorem's protocol: stage 1 ridge of h on the first
  layer's features, stage 2 the outer ReLU layer on fresh samples), ``hermite_kernel``
  (ridge on the Hermite features of degree <= kq: a rotation-invariant kernel whose span
  holds h), ``kernel`` (ReLU NTK ridge), ``joint`` (the paper's Adam training), ``relu2``
  (a two-layer ReLU network).
- lab.py: one cell per (regime, learner, d, replicate, n), n = ratio * d^k; a record is
  the test MSE relative to Var h, |corr(feature, p)| for the learners with a scalar
  feature, seconds, status and the replicate's stream_seed. The streamed learners solve
  every n of a (regime, d, replicate) from one pass over the largest n.
- curves.py and evidence.py: n*(d) where the median error over seeds reaches
  target_error (n_c(d) where the median corr reaches 0.9), its slope on log d with a
  bootstrap interval over seeds (resampled within each d, once per rate);
- claims.py: the claims and the rules that decide them (see its docstring);
- plots.py: error and corr against n/d^k per d, n* against d.

A sweep over d (one job per d) is one study: quadrun-report pools its jobs (POOL).
"""
from __future__ import annotations

from quadrun.experiments.hierpoly.claims import claims, summarize
from quadrun.experiments.hierpoly.config import POOL, VARIANTS, Config, check

__all__ = ["Config", "check", "VARIANTS", "POOL", "claims", "summarize", "cells", "measure",
           "figures"]


def cells(c) -> list:
    from quadrun.experiments.hierpoly.lab import cells
    return cells(c)


def measure(c, cell, ctx) -> dict:
    from quadrun.experiments.hierpoly.lab import measure
    return measure(c, cell, ctx)


def figures(records, c, save) -> None:
    from quadrun.experiments.hierpoly.plots import figures
    figures(records, c, save)

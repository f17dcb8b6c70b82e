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
- claims.py: n*(d) where the median error over seeds reaches target_error, its slope on
  log d with a bootstrap interval over seeds (resampled within each d), and the rules
  that decide the claims (see its docstring).
- figures.py: error and corr against n/d^k per d, n* against d.

A sweep over d (one job per d) is one study: quadrun-report pools its jobs (POOL).
"""
from __future__ import annotations

from quadrun.experiments.hierpoly.claims import claims, summarize  # noqa: F401
from quadrun.experiments.hierpoly.config import POOL, VARIANTS, Config, check  # noqa: F401
# torch-free, and matplotlib only when drawing; imported here, not inside a function, since
# importing a submodule later rebinds the package's name `figures` to the module
from quadrun.experiments.hierpoly.figures import figures  # noqa: F401


def cells(c) -> list:
    from quadrun.experiments.hierpoly.lab import cells
    return cells(c)


def measure(c, cell, ctx) -> dict:
    from quadrun.experiments.hierpoly.lab import measure
    return measure(c, cell, ctx)

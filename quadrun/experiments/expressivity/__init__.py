"""Expressivity of quadratic vs conventional networks (Fan, Li, Wang, Lai, Wang, "Expressivity
and trainability of quadratic networks", arXiv 2110.06081, IEEE TNNLS 2023: its two
expressivity theorems, one from algebraic geometry, one from spline theory).

The protocol, as three kinds of cells in one run (lab.py):

1. part="dimension", cells {widths, kind, bias}: with the activation x^2 every network is a
   polynomial map; for each width tuple, kind (`dimension_kinds`: conventional | quadratic
   | compact) and bias setting the record holds the dimension of the functional variety
   (`dim`: the exact generic rank of the parameters -> outputs Jacobian, computed modulo
   two primes, quadrun.nn.variety), the rank for each prime (`ranks`, `primes_agree`), its
   Schwartz-Zippel error bound, the float64 SVD cross-check (`float_dim`, None when float64
   cannot resolve it; `gap`; `agrees`, None when unresolved), the parameter count, the
   known parameter symmetries, the ambient dimension (monomials of the degrees the outputs
   can have: homogeneous ones for a conventional net without bias), `bound` = min(params -
   symmetries, ambient), the output degree, the number of random inputs and the seconds of
   the exact and float computations.
2. part="matched" (quadrun's extension, `equal_params`), cells {widths, kind, bias,
   matches}: for each width tuple `matches` with a hidden layer, the conventional x^2 net
   of the same depth, input and output widened to at least the quadratic net's parameter
   count (quadrun.nn.budget.widened); the same fields as part 1 and `quadratic_params`.
3. part="fit", cells {target, model, replicate}: one training of a conventional (ReLU, x^2,
   tanh) or quadratic (full or compact, ReLU) MLP at a matched parameter budget (every
   model within 5 % of `budget`) on a synthetic target on [-1, 1]^d (quadrun.data.targets).
   Each replicate draws its own training and test data (shared by the models of that
   replicate) and each model its own initialisation. The record holds the model's widths
   and parameter count, the training status (completed | diverged), the test and training
   MSE, and for replicate 0 the model's outputs on the plot grid (`plot`, a list the
   report's tables skip).

Claims (claims.py): the quadratic network's variety has a larger (exact) dimension than the
conventional one's of the same widths for every listed architecture (with and without
bias; the ratio per row); at equal budget the quadratic networks fit each of the four
targets better than the best conventional network (Welch interval over replicates, that
is over initialisations and data draws, on log10 test MSE); and, as a labelled extension,
the quadratic variety is still larger than that of a conventional net with at least as
many parameters.
"""
from quadrun.experiments.expressivity.claims import claims
from quadrun.experiments.expressivity.config import POOL, VARIANTS, Config, check, memory

__all__ = ["Config", "check", "memory", "VARIANTS", "POOL", "claims", "cells", "measure", "figures"]


def cells(c) -> list:
    from quadrun.experiments.expressivity.lab import cells
    return cells(c)


def measure(c, cell, ctx) -> dict:
    from quadrun.experiments.expressivity.lab import measure
    return measure(c, cell, ctx)


def figures(records, c, save) -> None:
    from quadrun.experiments.expressivity.plots import figures
    figures(records, c, save)

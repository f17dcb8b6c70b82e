"""ReLinear ablation: how to train quadratic ResNets without collapse.

Paper: Fan, Li, Wang, Lai, Wang, "Expressivity and trainability of quadratic networks",
IEEE TNNLS 2023 (arXiv 2110.06081). Plain backpropagation risks collapsing a quadratic
network; ReLinear (start each quadratic neuron as a conventional one, then regularise the
quadratic terms) avoids it, and with it the quadratic network beats the conventional
network of the same structure.

    quadrun experiment=relinear relinear.strategy=relinear_sg       # one run (one cell)
    quadrun -m experiment=relinear sweep=relinear_ablation          # strategies x seeds
    quadrun-report outputs/relinear/multirun/<sweep>                # claims and the table

Strategies (`relinear.strategy`; config.VARIANTS names the keys each one reads):
- conventional:    the plain CIFAR ResNet of the same depth.
- plain:           QResNet, every part randomly initialised, one learning rate.
- relinear_init:   QResNet with the ReLinear init (starts as the conventional net), one lr.
- relinear_sg:     ReLinear init + shrink gradients: the quadratic parameters (g and b parts)
                   get their own absolute lr `gamma` (reference 1e-5), decayed on the same
                   schedule as the base lr; `gamma=0` freezes them.
- relinear_sw:     ReLinear init + shrink weights: penalty alpha*|W|^2 + beta*|W|_1 on the
                   quadratic weights W_g, W_b (added to the loss); those parameters get no
                   weight decay, since alpha is their L2 term.
- relinear_rezero: relinear_sg + a ReZero scalar per block (init 0), gamma reference 1e-3.

A run is one cell, {strategy, depth, form}; a sweep over strategies (and seeds) is one
study (`POOL`), whose pooled records decide the claims (claims.py). Accuracy is measured
twice: in eval mode (BatchNorm running statistics, the usual test accuracy) and with batch
statistics, since what breaks in a collapsed quadratic net can be the running statistics,
amplified by the product and square terms, rather than the weights themselves. Both the
final accuracy (`test/acc`, what the claims and the strategies figure rank by) and the best
epoch's (`test/acc_best`, what the authors log) are recorded. The record's `seed` is the
run seed.

Collapse (`collapsed`): true when the training loss goes non-finite (at any epoch), or when
an eval-mode test accuracy from epoch `collapse_epochs` on is within `collapse_margin`
points of chance; false when the run trained at least `collapse_epochs` epochs and neither
happened; null (not judged, with the reason in `collapse_reason`) for a shorter run, whose
early epochs cannot tell a slow start from a collapse.

The defaults are the cpu scale: scikit-learn's bundled 8x8 digits with a small fixed
training split (so the conventional ResNet20 stays below the ceiling and the strategies
have room to differ), a narrow first stage, 30 epochs; `scale=paper` is the reference
recipe on CIFAR-10 (configs/sizes/relinear/).

Files: config.py (the section, VARIANTS, check, seeds and gammas), claims.py (the claims,
declared), evidence.py (their evidence from records), lab.py (cells and measure: models,
strategies, training, collapse), plots.py (the figures).
"""
from __future__ import annotations

from quadrun.experiments.relinear.claims import claims, summarize
from quadrun.experiments.relinear.config import POOL, VARIANTS, Config, check

__all__ = ["Config", "check", "VARIANTS", "POOL", "claims", "summarize", "cells", "measure",
           "figures"]


HEADLINE = ("test/acc", "collapsed")   # a job's line in a sweep, a run's row in --runs


def cells(c) -> list:
    from quadrun.experiments.relinear.lab import cells
    return cells(c)


def measure(c, cell, ctx) -> dict:
    from quadrun.experiments.relinear.lab import measure
    return measure(c, cell, ctx)


def figures(records, c, save) -> None:
    from quadrun.experiments.relinear.plots import figures
    figures(records, c, save)

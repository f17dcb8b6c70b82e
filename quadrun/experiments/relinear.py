"""ReLinear ablation: how to train quadratic ResNets without collapse.

Paper: Fan, Li, Wang, Lai, Wang, "Expressivity and trainability of quadratic networks",
IEEE TNNLS 2023 (arXiv 2110.06081). Plain backpropagation risks collapsing a quadratic
network; ReLinear (start each quadratic neuron as a conventional one, then regularise the
quadratic terms) avoids it, and with it the quadratic network beats the conventional
network of the same structure.

    quadrun experiment=relinear relinear.strategy=relinear_sg       # one run (one cell)
    quadrun -m experiment=relinear sweep=relinear_ablation          # strategies x seeds
    quadrun-report outputs/relinear/multirun/<sweep>                # claims and the table

Strategies (`relinear.strategy`):
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
study (`POOL`), whose pooled records decide the claims. Accuracy is measured twice: in eval
mode (BatchNorm running statistics, the usual test accuracy) and with batch statistics,
since what breaks in a collapsed quadratic net can be the running statistics, amplified by
the product and square terms, rather than the weights themselves. Both the final accuracy
(`test/acc`, what the claims and the strategies figure rank by) and the best epoch's
(`test/acc_best`, what the authors log) are recorded.

Collapse (`collapsed`): true when the training loss goes non-finite (at any epoch), or when
an eval-mode test accuracy from epoch `collapse_epochs` on is within `collapse_margin`
points of chance; false when the run trained at least `collapse_epochs` epochs and neither
happened; null (not judged, with the reason in `collapse_reason`) for a shorter run, whose
early epochs cannot tell a slow start from a collapse.

The defaults are the cpu scale: scikit-learn's bundled 8x8 digits with a small fixed
training split (so the conventional ResNet20 stays below the ceiling and the strategies
have room to differ), a narrow first stage, 30 epochs; `scale=paper` is the reference
recipe on CIFAR-10 (configs/sizes/relinear/).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from quadrun.claims import (FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, claim, fmt,
                            fmt_interval, t_interval, welch_interval)
from quadrun.schema import ConfigError, TrainConfig, spec, train_config

log = logging.getLogger("quadrun")

STRATEGIES = ("conventional", "plain", "relinear_init", "relinear_sg", "relinear_sw",
              "relinear_rezero")
REFERENCE_GAMMA = {"relinear_sg": 1e-5, "relinear_rezero": 1e-3}
QUAD_ROLES = ("quad_g", "quad_b")
# Kept here so the module imports without torch; tests check them against
# quadrun.data.images.DATASETS and quadrun.nn.resnet.BLOCKS.
DATASETS = ("cifar10", "digits", "synthetic")
DEPTHS = (20, 32, 44, 56, 110)

POOL = ("strategy",)    # runs that differ in the strategy are one study
ABLATION = "quadrun -m experiment=relinear sweep=relinear_ablation"
SOURCE = "Fan et al., TNNLS 2023 (arXiv 2110.06081): ReLinear, CIFAR-10 experiments"
LEVEL = 0.05            # the claims' significance level (95 % intervals)
# The ReLinear strategies (init + regularised quadratic terms) whose collapse rate is
# compared with plain training's, and those whose accuracy is compared with the
# conventional net's (the reference recipe's two shrink-gradient variants).
COLLAPSE_STRATEGIES = ("relinear_sg", "relinear_sw", "relinear_rezero")
ACCURACY_STRATEGIES = ("relinear_sg", "relinear_rezero")
DESCRIBED = {"relinear_sg": "shrunk gradients", "relinear_sw": "shrunk weights",
             "relinear_rezero": "shrunk gradients and ReZero"}
HISTORY_KEYS = ("epoch", "train/loss", "test/acc", "test/acc_batchstats", "norm/W_g",
                "norm/W_b")
RANKED_BY = "test/acc"  # the final eval-mode accuracy: what the claims and figures rank by


@dataclass
class Config:
    strategy: str = spec("relinear_sg", choices=list(STRATEGIES))
    depth: int = spec(20, choices=list(DEPTHS), help="CIFAR ResNet depth")
    form: str = spec("full", choices=["full", "compact"],
                     help="quadratic neuron form; full: r*g + b(x^2), compact: r + b(x^2) "
                          "(the authors' compact trainer freezes b: add relinear.gamma=0)")
    width: int = spec(8, ge=1, help="channels of the first stage (x2, x4 later); the "
                                    "reference ResNet has 16")
    dataset: str = spec("digits", choices=list(DATASETS),
                        help="digits: scikit-learn's bundled 8x8 digits (no download)")
    train_size: int = spec(200, ge=0, help="training images used (a fixed stratified "
                                           "subset); 0: the whole training split")
    test_size: int = spec(500, ge=0, help="test images used; 0: all")
    image_size: int = spec(8, ge=4, le=64, help="side of the generated images (synthetic)")
    split_seed: int = spec(0, ge=0, help="seed of the data split/subsample (same for all runs)")
    download: bool = spec(False, help="download the official CIFAR-10 archive (163 MB, "
                                      "checksum-verified) into data_dir when it is not "
                                      "there; data_dir is created only then")
    pad: int = spec(1, ge=0, le=16, help="pixels of padding for the random crop; 0: none")
    flip: bool = spec(False, help="random horizontal flips (digits are not mirror-symmetric)")
    gamma: Optional[float] = spec(None, ge=0, le=10,
                                  help="absolute lr of the quadratic parts W_g, b_g, W_b, c "
                                       "(relinear_sg, relinear_rezero), decayed with the "
                                       "base lr; null: the reference 1e-5 (sg) / 1e-3 "
                                       "(rezero); 0 freezes them, as the authors' compact "
                                       "trainer does by default (their compact variant: "
                                       "form=compact gamma=0 train.epochs=99)")
    alpha: float = spec(1e-3, ge=0, help="L2 penalty on W_g, W_b (relinear_sw)")
    beta: float = spec(1e-5, ge=0, help="L1 penalty on W_g, W_b (relinear_sw)")
    collapse_epochs: int = spec(10, ge=1, help="collapse is judged on the evaluations from "
                                               "this epoch on; a shorter run is not judged "
                                               "(collapsed: null); a non-finite loss is a "
                                               "collapse at any epoch")
    collapse_margin: float = spec(2.0, ge=0, le=100,
                                  help="an eval-mode test accuracy within this many points "
                                       "of chance is a collapse")
    eval_batch: int = spec(500, ge=1)
    batchstat_eval: bool = spec(True, help="also measure accuracy with batch statistics")
    channels_last: bool = spec(True, help="convs in channels_last memory format (faster on "
                                          "CUDA and on CPU; benchmarks/train.py)")
    # the reference recipe (SGD 0.1, momentum 0.9, weight decay 1e-4, lr x0.1 at the
    # milestones, every group's lr included) at the cpu scale's length and batch size
    train: TrainConfig = train_config(optimizer="sgd", lr=0.1, momentum=0.9,
                                      weight_decay=1e-4, batch_size=32, epochs=30,
                                      schedule="multistep", milestones=[15, 25],
                                      lr_decay=0.1, log_every=10)


def check(cfg) -> None:
    """Fail before anything is created when CIFAR-10 is not in data_dir and no download
    was asked for, or when a download could not write there."""
    from quadrun.data.cifar import ARCHIVE, FOLDER, META_FILE, TEST_FILE, TRAIN_FILES, available

    rc = cfg.relinear
    if rc.dataset != "cifar10" or available(cfg.data_dir):
        return
    where = os.path.abspath(cfg.data_dir)
    if not rc.download:
        raise ConfigError(
            f"data_dir: CIFAR-10 is not in {where} (expected the official {ARCHIVE}, or its "
            f"extracted {FOLDER}/ with {TRAIN_FILES[0]} ... {TRAIN_FILES[-1]}, {TEST_FILE}, "
            f"{META_FILE}); add relinear.download=true to download it there (163 MB), "
            "or set data_dir to the folder that has it")
    existing = Path(where)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"data_dir: cannot download CIFAR-10 into {where} ({existing} is "
                          "not a writable folder); give a writable data_dir")


def cells(c) -> list:
    return [{"strategy": c.strategy, "depth": c.depth, "form": c.form}]


def measure(c, cell, ctx) -> dict:
    """Train one (Q)ResNet with the strategy; its accuracies, collapse, norms and curves."""
    import torch
    import torch.nn.functional as F

    from quadrun.data.images import Augment, load_images
    from quadrun.devices import seeded
    from quadrun.nn.quadratic import role_norms
    from quadrun.nn.resnet import count_parameters
    from quadrun.training import TensorBatches, fit
    from quadrun.vocab import derive_seed

    tc, device = c.train, ctx.device
    data = load_images(c.dataset, ctx.data_dir, device, train_size=c.train_size,
                       test_size=c.test_size, download=c.download,
                       split_seed=c.split_seed, image_size=c.image_size,
                       channels_last=c.channels_last)
    with seeded(derive_seed(ctx.runtime.seed, "relinear", "model")):
        model = build_model(c, data)
    model = model.to(device)
    if c.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = count_parameters(model)
    log.info("relinear: %s %s%d (%s), %d parameters, %s %d train / %d test images",
             c.strategy, "ResNet" if c.strategy == "conventional" else "QResNet",
             c.depth, c.form, params, c.dataset, len(data.train_y), len(data.test_y))

    batches = TensorBatches([data.train_x, data.train_y], tc.batch_size,
                            transform=Augment(data, c.pad, c.flip))

    def evaluate(m):
        out = {"test/acc": accuracy(m, data, c.eval_batch)}
        if c.batchstat_eval:
            with batch_statistics(m):
                out["test/acc_batchstats"] = accuracy(m, data, c.eval_batch)
        return {**out, **quadratic_weight_norms(m)}

    def loss_fn(m, batch):
        x, y = batch
        return F.cross_entropy(m(x), y)

    penalty = shrink_penalty(c.alpha, c.beta) if c.strategy == "relinear_sw" else None
    res = fit(model, batches, loss_fn, ctx, tc, param_groups=strategy_groups(model, c, tc),
              evaluate=evaluate, monitor=("test/acc", "max"), penalty=penalty)

    final = dict(res.metrics)
    if res.status == "diverged":  # score what the diverged weights do, for the table
        model.eval()
        with torch.inference_mode():
            final = evaluate(model)
    chance = 100.0 / data.num_classes
    reached = math.ceil(res.step / len(batches))  # the last epoch begun
    collapsed, reason, at = collapse(res.history, res.status, reached, chance,
                                     c.collapse_epochs, c.collapse_margin)
    norms = role_norms(model)
    record = {
        "status": res.status, "seed": ctx.runtime.seed, "dataset": c.dataset,
        "train_images": len(data.train_y), "test_images": len(data.test_y),
        "test/acc": final.get("test/acc"), "test/acc_best": res.best.get("test/acc"),
        "best_epoch": res.best.get("epoch"),
        "test/acc_batchstats": final.get("test/acc_batchstats"),
        "collapsed": collapsed, "collapse_reason": reason, "collapse_epoch": at,
        "params": params, "quad_lr": quad_lr(c),
        "norm/linear": norms["linear"], "norm/quad_g": norms["quad_g"],
        "norm/quad_b": norms["quad_b"], **quadratic_weight_norms(model),
        "epochs": res.epoch, "steps": res.step,
        "train/images_per_s": res.samples / res.train_seconds if res.train_seconds > 0 else None,
        "history": [{k: h[k] for k in HISTORY_KEYS if k in h} for h in res.history],
    }
    log.info("relinear: %s test acc %.2f%% (best %s at epoch %s, batch-stats %s), "
             "collapsed: %s%s", c.strategy, _nan(record["test/acc"]), record["test/acc_best"],
             record["best_epoch"], record["test/acc_batchstats"],
             {True: "yes", False: "no", None: "not judged"}[collapsed],
             f" ({reason})" if reason else "")
    return record


def summarize(records, c) -> dict:
    """The run's status (its training's) and headline numbers at the top of summary.json."""
    r = records[0]
    return {k: v for k, v in r.items() if k != "history"}


def claims(records, c) -> list:
    """Collapse rate of each ReLinear strategy vs plain training's (one-sided Fisher exact
    test, Clopper-Pearson intervals of each rate); final accuracy of relinear_sg /
    relinear_rezero minus the conventional net's (Welch t interval over seeds; the best
    epoch's beside it). Records of one study: the same depth, form and data."""
    by = by_strategy(records)
    return [collapse_claim(s, by) for s in COLLAPSE_STRATEGIES] + \
        [accuracy_claim(s, by) for s in ACCURACY_STRATEGIES]


def figures(records, c, save) -> None:
    """Every run: `loss`, `accuracy` (eval mode and with batch statistics) and `norms`
    (W_g, W_b) against epoch, one panel per strategy and one line per run. With several
    strategies, `strategies`: accuracy by strategy (ranked by mean final accuracy, 95 % t
    intervals; best epoch and batch statistics beside it) and the collapse rate per
    strategy (95 % Clopper-Pearson intervals)."""
    import matplotlib.pyplot as plt

    curves = by_strategy([r for r in records if r.get("history")])
    if curves:
        for name, draw in (("loss", _draw_loss), ("accuracy", _draw_accuracy),
                           ("norms", _draw_norms)):
            fig, axes = _panels(len(curves))
            for ax, (strategy, runs) in zip(axes, curves.items()):
                caption = draw(ax, strategy, sorted(runs, key=_seed_order), c)
                ax.set_title(f"{strategy} ({len(runs)} run{'s' if len(runs) > 1 else ''})",
                             fontsize=9)
            first = next(iter(curves.values()))[0]
            fig.suptitle(f"relinear {name}: depth {first.get('depth')}, {first.get('form')}, "
                         f"{first.get('dataset')}\n{caption}", fontsize=9)
            fig.tight_layout()
            save(fig, name)

    by = by_strategy(records)
    if len(by) < 2:
        return
    ranked = sorted(by, key=lambda s: -(t_interval([r.get(RANKED_BY) for r in by[s]])[0]
                                        if _finite(r.get(RANKED_BY) for r in by[s]) else -math.inf))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, s in enumerate(ranked):
        accs = _finite(r.get("test/acc") for r in by[s])
        left.scatter([i - 0.12] * len(accs), accs, s=10, color="0.65", zorder=2)
        for offset, key, colour, label in ((-0.12, "test/acc", "C0", "final (ranked by)"),
                                           (0.12, "test/acc_best", "C2", "best epoch")):
            mean, lo, hi = t_interval([r.get(key) for r in by[s]])
            if mean is None:
                continue
            err = [[mean - lo], [hi - mean]] if lo is not None else None
            left.errorbar([i + offset], [mean], yerr=err, fmt="o", color=colour, capsize=4,
                          zorder=3, label=f"{label}, mean and 95 % interval" if i == 0 else None)
        stats_mean = t_interval([r.get("test/acc_batchstats") for r in by[s]])[0]
        if stats_mean is not None:
            left.scatter([i + 0.3], [stats_mean], marker="x", color="C1", zorder=3,
                         label="final, batch statistics (mean)" if i == 0 else None)
    left.axhline(100.0 / 10, color="0.5", ls=":", lw=1)
    left.set_xticks(range(len(ranked)), ranked, rotation=20, ha="right")
    left.set(ylabel="test accuracy (%), eval mode",
             title="accuracy by strategy, ranked by mean final accuracy")
    left.legend(fontsize=7, loc="lower left")
    names = list(by)
    for i, s in enumerate(names):
        k, n = collapse_counts(by[s])
        unjudged = sum(r.get("collapsed") is None for r in by[s])
        rate = k / n if n else 0.0
        lo, hi = clopper_pearson(k, n)
        right.bar(i, rate, color="C3", alpha=0.8)
        if n:
            right.errorbar([i], [rate], yerr=[[rate - lo], [hi - rate]], color="k", capsize=4)
        note = f"{k}/{n}" + (f"\n+{unjudged} not judged" if unjudged else "")
        right.text(i, min(1.05, (hi if n else 0) + 0.03), note, ha="center", fontsize=8)
    right.set_xticks(range(len(names)), names, rotation=20, ha="right")
    right.set(ylabel="collapse rate", ylim=(0, 1.2),
              title="collapsed runs per strategy (95 % Clopper-Pearson)")
    fig.tight_layout()
    save(fig, "strategies")


# -- claims ----------------------------------------------------------------------------------------
def by_strategy(records) -> dict:
    """strategy -> its records, in STRATEGIES order (unknown strategies last)."""
    out: dict = {}
    for r in records:
        out.setdefault(r.get("strategy"), []).append(r)
    order = {s: i for i, s in enumerate(STRATEGIES)}
    return {s: out[s] for s in sorted(out, key=lambda s: (order.get(s, len(order)), str(s)))}


def collapse_counts(records) -> tuple:
    """(collapsed, judged) over the records whose `collapsed` is true or false."""
    flags = [r.get("collapsed") for r in records if isinstance(r.get("collapsed"), bool)]
    return sum(flags), len(flags)


def clopper_pearson(k: int, n: int, level: float = 1 - LEVEL) -> tuple:
    """Exact (Clopper-Pearson) interval of a rate k/n; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def fisher_one_sided(k1: int, n1: int, k2: int, n2: int) -> tuple:
    """One-sided Fisher exact p-values for k1/n1 vs k2/n2: (p of k1/n1 being this low or
    lower, p of it being this high or higher) given the margins (hypergeometric tails)."""
    total, events = n1 + n2, k1 + k2
    denom = math.comb(total, n1)

    def pmf(x):
        return math.comb(events, x) * math.comb(total - events, n1 - x) / denom

    lo, hi = max(0, events - n2), min(events, n1)
    low = sum(pmf(x) for x in range(lo, k1 + 1))
    high = sum(pmf(x) for x in range(k1, hi + 1))
    return min(1.0, low), min(1.0, high)


def _rate(name: str, k: int, n: int, unjudged: int) -> str:
    lo, hi = clopper_pearson(k, n)
    extra = f", {unjudged} not judged" if unjudged else ""
    return f"{name} {k}/{n} [{fmt(lo, 2)}, {fmt(hi, 2)}]{extra}"


def collapse_claim(strategy: str, by: dict) -> dict:
    statement = (f"Quadratic ResNets trained with ReLinear ({DESCRIBED[strategy]}) collapse "
                 "less often than with plain training.")
    target = (f"one-sided Fisher exact test of fewer collapses in {strategy} than in plain: "
              f"p <= {LEVEL}")
    mine, plain = by.get(strategy, []), by.get("plain", [])
    k, n = collapse_counts(mine)
    k0, n0 = collapse_counts(plain)
    u = sum(r.get("collapsed") is None for r in mine)
    u0 = sum(r.get("collapsed") is None for r in plain)
    cid = f"collapse.{strategy}"
    rates = f"collapsed (95 % interval): {_rate(strategy, k, n, u)}; {_rate('plain', k0, n0, u0)}"
    if not n or not n0:
        missing = " and ".join(f"{s} ({'no runs' if not runs else 'none judged'})"
                               for s, m, runs in ((strategy, n, mine), ("plain", n0, plain)) if not m)
        short = any(r.get("collapsed") is None for r in mine + plain)
        hint = ("runs shorter than relinear.collapse_epochs are not judged; train longer "
                f"and run the ablation: {ABLATION}" if short else f"run the ablation: {ABLATION}")
        return claim(cid, statement, SOURCE, measured=rates, target=target,
                     verdict=NOT_MEASURED, why=f"no judged runs of {missing}; {hint}")
    p_fewer, p_more = fisher_one_sided(k, n, k0, n0)
    lo, hi = clopper_pearson(k, n)
    lo0, hi0 = clopper_pearson(k0, n0)
    values = {"collapsed": k, "runs": n, "not_judged": u, "rate_low": lo, "rate_high": hi,
              "plain_collapsed": k0, "plain_runs": n0, "plain_not_judged": u0,
              "plain_rate_low": lo0, "plain_rate_high": hi0,
              "p_fewer": p_fewer, "p_more": p_more}
    measured = f"{rates}; p(fewer) {fmt(p_fewer)}, p(more) {fmt(p_more)}"
    if p_fewer <= LEVEL:
        verdict, why = HOLDS, f"{strategy} collapsed significantly less often than plain"
    elif p_more <= LEVEL:
        verdict, why = FAILS, f"{strategy} collapsed significantly more often than plain"
    elif k0 == 0:
        verdict, why = INCONCLUSIVE, ("plain training did not collapse in these runs, so "
                                      "there was no collapse to prevent")
    else:
        verdict, why = INCONCLUSIVE, (f"the counts do not differ at the {LEVEL:g} level; "
                                      "more seeds per strategy would decide")
    return claim(cid, statement, SOURCE, measured=measured, target=target, verdict=verdict,
                 why=why, values=values)


def accuracy_claim(strategy: str, by: dict) -> dict:
    statement = (f"A quadratic ResNet trained with ReLinear ({DESCRIBED[strategy]}) is more "
                 "accurate than the conventional ResNet of the same structure.")
    target = (f"95 % Welch t interval over seeds of the final eval-mode test accuracy "
              f"(test/acc, the ranking metric), {strategy} minus conventional, above 0; "
              "the best epoch's (test/acc_best, which the authors log) is reported beside it")
    cid = f"accuracy.{strategy}"
    acc = _finite(r.get("test/acc") for r in by.get(strategy, []))
    ref = _finite(r.get("test/acc") for r in by.get("conventional", []))
    if not acc or not ref:
        missing = " and ".join(s for s, v in ((strategy, acc), ("conventional", ref)) if not v)
        return claim(cid, statement, SOURCE, measured=f"{len(acc)} {strategy} and {len(ref)} "
                     "conventional runs with an accuracy", target=target,
                     verdict=NOT_MEASURED,
                     why=f"no runs of {missing} here; run the ablation: {ABLATION}")
    diff, lo, hi = welch_interval(acc, ref, level=1 - LEVEL)
    best_acc = _finite(r.get("test/acc_best") for r in by.get(strategy, []))
    best_ref = _finite(r.get("test/acc_best") for r in by.get("conventional", []))
    best = welch_interval(best_acc, best_ref, level=1 - LEVEL)
    (m, _, _), (m0, _, _) = t_interval(acc), t_interval(ref)
    bm, bm0 = t_interval(best_acc)[0], t_interval(best_ref)[0]
    values = {"mean": m, "n": len(acc), "conventional_mean": m0, "conventional_n": len(ref),
              "difference": diff, "low": lo, "high": hi, "best_mean": bm,
              "best_conventional_mean": bm0, "best_difference": best[0], "best_low": best[1],
              "best_high": best[2]}
    measured = (f"final test/acc {strategy} {fmt(m)} (n={len(acc)}) vs conventional {fmt(m0)} "
                f"(n={len(ref)}): difference {fmt_interval(diff, lo, hi)} points; best epoch "
                f"{fmt(bm)} vs {fmt(bm0)}: {fmt_interval(*best)}")
    if lo is None:
        verdict, why = INCONCLUSIVE, ("fewer than 2 runs on a side give no interval; run "
                                      f"several seeds of both: {ABLATION}")
    elif lo > 0:
        verdict, why = HOLDS, "the whole interval of the difference is above 0"
    elif hi < 0:
        verdict, why = FAILS, "the whole interval of the difference is below 0"
    else:
        verdict, why = INCONCLUSIVE, ("the interval contains 0: the difference is within the "
                                      "seed-to-seed noise; more seeds would narrow it")
    return claim(cid, statement, SOURCE, measured=measured, target=target, verdict=verdict,
                 why=why, values=values)


def _finite(values) -> list:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)]


def _nan(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


# -- figures ---------------------------------------------------------------------------------------
def _seed_order(r) -> tuple:
    s = r.get("seed")
    return (0, s) if isinstance(s, int) else (1, str(s))


def _panels(n: int):
    import matplotlib.pyplot as plt

    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.3 * rows), squeeze=False,
                             sharex=True, sharey=True)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _label(r) -> str:
    mark = {True: " collapsed", None: " not judged"}.get(r.get("collapsed"), "")
    return f"seed {r.get('seed')}{mark}"


def _series(h: list, key: str) -> tuple:
    return [e["epoch"] for e in h], [_nan(e.get(key)) for e in h]


def _finish(ax, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)


def _draw_loss(ax, strategy, runs, c) -> str:
    for i, r in enumerate(runs):
        ax.plot(*_series(r["history"], "train/loss"), color=f"C{i % 10}", label=_label(r))
    ax.set_yscale("log")
    _finish(ax, "training loss (epoch mean)")
    return "mean training loss of each epoch (the penalty of relinear_sw included)"


def _draw_accuracy(ax, strategy, runs, c) -> str:
    for i, r in enumerate(runs):
        colour, h = f"C{i % 10}", r["history"]
        ax.plot(*_series(h, "test/acc"), color=colour, label=_label(r))
        if any("test/acc_batchstats" in e for e in h):
            ax.plot(*_series(h, "test/acc_batchstats"), "--", color=colour, lw=1)
        if r.get("collapsed") and r.get("collapse_epoch") is not None:
            at = [e for e in h if e["epoch"] == r["collapse_epoch"]]
            if at:
                ax.plot([at[0]["epoch"]], [_nan(at[0].get("test/acc"))], "x", color="k", ms=7)
    ax.axvspan(0, c.collapse_epochs - 0.5, color="0.92", zorder=0)   # epochs not judged
    ax.axhline(10.0 + c.collapse_margin, color="0.5", ls=":", lw=1)
    ax.set_ylim(0, 100)
    _finish(ax, "test accuracy (%)")
    return ("solid: eval mode, dashed: batch statistics, x: collapse; shaded: epochs before "
            f"collapse_epochs={c.collapse_epochs} (not judged); dotted: chance + "
            f"{c.collapse_margin:g} points")


def _draw_norms(ax, strategy, runs, c) -> str:
    drawn = False
    for i, r in enumerate(runs):
        for key, style in (("norm/W_g", "-"), ("norm/W_b", ":")):
            epochs, values = _series(r["history"], key)
            if any(math.isfinite(v) and v > 0 for v in values):
                ax.plot(epochs, values, style, color=f"C{i % 10}",
                        label=_label(r) if key == "norm/W_g" else None)
                drawn = True
    if drawn:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no quadratic weights" if strategy == "conventional" else
                "quadratic weights stayed 0", ha="center", transform=ax.transAxes)
    _finish(ax, "L2 norm")
    return "L2 norms of the quadratic weights: solid W_g, dotted W_b (biases left out)"


# -- model and optimiser set-up ----------------------------------------------------------------
def build_model(cfg, data):
    from quadrun.nn.resnet import qresnet, resnet

    kw = dict(num_classes=data.num_classes, in_channels=data.shape[0], width=cfg.width)
    if cfg.strategy == "conventional":
        return resnet(cfg.depth, **kw)
    init = "random" if cfg.strategy == "plain" else "relinear"
    return qresnet(cfg.depth, form=cfg.form, init=init,
                   rezero=cfg.strategy == "relinear_rezero", **kw)


def quad_lr(cfg) -> Optional[float]:
    """The quadratic parts' lr for the shrink-gradient strategies, else None."""
    if cfg.strategy not in REFERENCE_GAMMA:
        return None
    return REFERENCE_GAMMA[cfg.strategy] if cfg.gamma is None else float(cfg.gamma)


def strategy_groups(model, cfg, tc) -> list:
    """Optimiser groups by role (quadrun.nn.quadratic.param_groups) for the strategy."""
    from quadrun.nn.quadratic import param_groups

    gamma = quad_lr(cfg)
    role_lr = {r: gamma for r in QUAD_ROLES} if gamma is not None else None
    role_wd = {r: 0.0 for r in QUAD_ROLES} if cfg.strategy == "relinear_sw" else None
    return param_groups(model, tc.lr, tc.weight_decay, role_lr=role_lr, role_weight_decay=role_wd)


def shrink_penalty(alpha: float, beta: float):
    """alpha * sum W^2 + beta * sum |W| over the quadratic weights W_g, W_b."""
    from quadrun.nn.quadratic import QuadraticConv2d

    def penalty(model):
        total = 0.0
        for m in model.modules():
            if isinstance(m, QuadraticConv2d):
                for w in (m.weight_g, m.weight_b):
                    if w is not None:
                        total = total + alpha * w.square().sum() + beta * w.abs().sum()
        return total
    return penalty


def quadratic_weight_norms(model) -> dict:
    """L2 norms of the quadratic weights alone (W_g, W_b; biases left out, since b_g starts
    at 1): the collapse diagnostic compared across strategies."""
    import torch

    from quadrun.nn.quadratic import QuadraticConv2d

    sq = {"g": 0.0, "b": 0.0}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, QuadraticConv2d):
                for part, w in (("g", m.weight_g), ("b", m.weight_b)):
                    if w is not None:
                        sq[part] += float(w.float().square().sum())
    return {f"norm/W_{k}": math.sqrt(v) for k, v in sq.items()}


# -- evaluation -------------------------------------------------------------------------------
@contextlib.contextmanager
def batch_statistics(model):
    """BatchNorm layers normalise with each batch's own statistics (running ones untouched)."""
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in bns]
    for m in bns:
        m.train()
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m, (training, track) in zip(bns, saved):
            m.training, m.track_running_stats = training, track


def accuracy(model, data, batch_size: int) -> float:
    """Test accuracy in percent (non-finite logits count as wrong)."""
    import torch

    correct = torch.zeros((), device=data.test_y.device)
    for x, y in data.test_batches(batch_size):
        logits = model(x).float()
        ok = (logits.argmax(1) == y) & torch.isfinite(logits).all(1)
        correct += ok.sum()
    return 100.0 * float(correct) / len(data.test_y)


def collapse(history: list, status: str, epochs: int, chance: float, min_epochs: int = 10,
             margin: float = 2.0) -> tuple:
    """(collapsed, reason, epoch) of a run from its evaluations; `epochs` is the number of
    epochs the training reached (the last one begun: where a diverged run stopped).

    - a non-finite training loss (status "diverged"): (True, reason, epoch), at any epoch;
    - else, when the run trained fewer than `min_epochs` epochs: (None, why it is not
      judged, None), since its early evaluations cannot tell a slow start from a collapse;
    - else the first evaluation from epoch `min_epochs` on whose eval-mode accuracy is
      missing, non-finite or within `margin` points of chance: (True, reason, its epoch);
    - else (False, None, None)."""
    if status == "diverged":
        return True, f"non-finite training loss in epoch {epochs}", epochs
    if epochs < min_epochs:
        return None, (f"not judged: {epochs} epoch{'s' if epochs != 1 else ''} trained, fewer "
                      f"than relinear.collapse_epochs={min_epochs}"), None
    for h in history:
        acc = h.get("test/acc")
        if h["epoch"] >= min_epochs and (acc is None or not math.isfinite(acc)
                                         or acc <= chance + margin):
            shown = f"{acc:.1f}%" if acc is not None else "none"
            return True, (f"test accuracy {shown} at epoch {h['epoch']} (chance "
                          f"{chance:.1f}%, margin {margin:g})"), h["epoch"]
    return False, None, None

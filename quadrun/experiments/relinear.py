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
                   schedule as the base lr.
- relinear_sw:     ReLinear init + shrink weights: penalty alpha*|W|^2 + beta*|W|_1 on the
                   quadratic weights W_g, W_b (added to the loss); those parameters get no
                   weight decay, since alpha is their L2 term.
- relinear_rezero: relinear_sg + a ReZero scalar per block (init 0), gamma reference 1e-3.

A run is one cell, {strategy, depth, form}; a sweep over strategies (and seeds) is one
study (`POOL`), whose pooled records decide the claims. A run is `collapsed` when its loss
goes non-finite, or when any evaluation after the first 10% of training scores within 2
points of chance. Accuracy is measured twice: in eval mode (BatchNorm running statistics,
the usual test accuracy) and with batch statistics, since what breaks in a collapsed
quadratic net can be the running statistics, amplified by the product and square terms,
rather than the weights themselves.

The defaults are the cpu scale (scikit-learn's bundled 8x8 digits, a fixed 500/500 split,
30 epochs); `scale=paper` is the reference recipe on CIFAR-10 (configs/sizes/relinear/).
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
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


@dataclass
class Config:
    strategy: str = spec("relinear_sg", choices=list(STRATEGIES))
    depth: int = spec(20, choices=list(DEPTHS), help="CIFAR ResNet depth")
    form: str = spec("full", choices=["full", "compact"],
                     help="quadratic neuron form; full: r*g + b(x^2), compact: r + b(x^2)")
    width: int = spec(16, ge=1, help="channels of the first stage (x2, x4 later)")
    dataset: str = spec("digits", choices=list(DATASETS),
                        help="digits: scikit-learn's bundled 8x8 digits (no download)")
    train_size: int = spec(500, ge=0, help="training images used; 0: the whole training split")
    test_size: int = spec(500, ge=0, help="test images used; 0: all")
    image_size: int = spec(8, ge=4, le=64, help="side of the generated images (synthetic)")
    split_seed: int = spec(0, ge=0, help="seed of the data split/subsample (same for all runs)")
    download: bool = spec(True, help="fetch the official CIFAR-10 archive into data_dir "
                                     "when it is missing")
    pad: int = spec(1, ge=0, le=16, help="pixels of padding for the random crop; 0: none")
    flip: bool = spec(False, help="random horizontal flips (digits are not mirror-symmetric)")
    gamma: Optional[float] = spec(None, ge=0, le=10,
                                  help="absolute lr of the quadratic parts (sg, rezero); "
                                       "null: the reference 1e-5 (sg) / 1e-3 (rezero)")
    alpha: float = spec(1e-3, ge=0, help="L2 penalty on W_g, W_b (relinear_sw)")
    beta: float = spec(1e-5, ge=0, help="L1 penalty on W_g, W_b (relinear_sw)")
    eval_batch: int = spec(500, ge=1)
    batchstat_eval: bool = spec(True, help="also measure accuracy with batch statistics")
    channels_last: bool = spec(True, help="convs in channels_last memory format (faster on "
                                          "CUDA and on CPU; benchmarks/train.py)")
    # the reference recipe (SGD 0.1, momentum 0.9, weight decay 1e-4, lr x0.1 at the
    # milestones, every group's lr included) at the cpu scale's length and batch size
    train: TrainConfig = train_config(optimizer="sgd", lr=0.1, momentum=0.9,
                                      weight_decay=1e-4, batch_size=32, epochs=30,
                                      schedule="multistep", milestones=[15, 25],
                                      lr_decay=0.1, log_every=80)


def check(cfg) -> None:
    """Fail before the run folder exists when CIFAR-10 cannot be there."""
    from quadrun.data.cifar import available

    rc = cfg.relinear
    if rc.dataset == "cifar10" and not rc.download and not available(cfg.data_dir):
        raise ConfigError(f"data_dir: CIFAR-10 not found in {cfg.data_dir!r} (expected "
                          "cifar-10-batches-py/ or cifar-10-python.tar.gz) and "
                          "relinear.download=false; put the official archive there")


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
    reason = collapse(res.history, res.status, tc.epochs, chance)
    norms = role_norms(model)
    record = {
        "status": res.status, "seed": ctx.runtime.seed, "dataset": c.dataset,
        "collapsed": reason is not None, "collapse_reason": reason, "params": params,
        "quad_lr": quad_lr(c),
        "test/acc": final.get("test/acc"), "test/acc_best": res.best.get("test/acc"),
        "test/acc_batchstats": final.get("test/acc_batchstats"),
        "norm/linear": norms["linear"], "norm/quad_g": norms["quad_g"],
        "norm/quad_b": norms["quad_b"], **quadratic_weight_norms(model),
        "epochs": res.epoch, "steps": res.step,
        "train/images_per_s": res.samples / res.train_seconds if res.train_seconds > 0 else None,
        "history": [{k: h[k] for k in HISTORY_KEYS if k in h} for h in res.history],
    }
    log.info("relinear: %s test acc %.2f%% (best %s, batch-stats %s), collapsed: %s",
             c.strategy, record["test/acc"] or float("nan"), record["test/acc_best"],
             record["test/acc_batchstats"], reason or "no")
    return record


def summarize(records, c) -> dict:
    """The run's status (its training's) and headline numbers at the top of summary.json."""
    r = records[0]
    return {k: v for k, v in r.items() if k != "history"}


def claims(records, c) -> list:
    """Collapse rate of each ReLinear strategy vs plain training's (one-sided Fisher exact
    test); final accuracy of relinear_sg / relinear_rezero minus the conventional net's
    (Welch interval over seeds). Records of one study: the same depth, form and data."""
    by = by_strategy(records)
    return [collapse_claim(s, by) for s in COLLAPSE_STRATEGIES] + \
        [accuracy_claim(s, by) for s in ACCURACY_STRATEGIES]


def figures(records, c, save) -> None:
    """Training curves (loss, test accuracy in eval mode and with batch statistics, W_g and
    W_b norms vs epoch) per strategy, one line per run; with several strategies, accuracy
    by strategy with 95 % intervals and the collapse rate per strategy."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    by = by_strategy([r for r in records if r.get("history")])
    for strategy, runs in by.items():
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for i, r in enumerate(sorted(runs, key=lambda r: _finite([r.get("seed")]) or [math.inf])):
            colour = f"C{i % 10}"
            h = r["history"]
            epochs = [e["epoch"] for e in h]
            label = f"seed {r.get('seed')}" + (" (collapsed)" if r.get("collapsed") else "")
            axes[0].plot(epochs, [_nan(e.get("train/loss")) for e in h], color=colour, label=label)
            axes[1].plot(epochs, [_nan(e.get("test/acc")) for e in h], color=colour, label=label)
            if any("test/acc_batchstats" in e for e in h):
                axes[1].plot(epochs, [_nan(e.get("test/acc_batchstats")) for e in h], "--",
                             color=colour)
            for key, style in (("norm/W_g", "-"), ("norm/W_b", ":")):
                if any(key in e for e in h):
                    axes[2].plot(epochs, [_nan(e.get(key)) for e in h], style, color=colour)
        axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log")
        axes[1].set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(0, 100),
                    title="eval mode (solid), batch statistics (dashed)")
        axes[2].set(xlabel="epoch", ylabel="L2 norm", title="W_g (solid), W_b (dotted)")
        if strategy == "conventional":
            axes[2].text(0.5, 0.5, "no quadratic weights", ha="center", transform=axes[2].transAxes)
        else:
            axes[2].set_yscale("log", nonpositive="mask")
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in axes[:2]:
            ax.legend(fontsize=7)
        fig.suptitle(f"relinear: {strategy}, depth {runs[0].get('depth')}, "
                     f"{runs[0].get('dataset')}")
        fig.tight_layout()
        save(fig, f"curves_{strategy}")

    by = by_strategy(records)
    if len(by) < 2:
        return
    names = list(by)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for i, s in enumerate(names):
        accs = [r.get("test/acc") for r in by[s]]
        mean, lo, hi = t_interval(accs)
        left.scatter([i] * len(_finite(accs)), _finite(accs), s=12, color="0.6", zorder=2)
        if mean is not None:
            err = [[mean - lo], [hi - mean]] if lo is not None else None
            left.errorbar([i], [mean], yerr=err, fmt="o", color="C0", capsize=4, zorder=3,
                          label="final, eval mode (95 % interval)" if i == 0 else None)
        stats_mean = t_interval([r.get("test/acc_batchstats") for r in by[s]])[0]
        if stats_mean is not None:
            left.scatter([i + 0.15], [stats_mean], marker="x", color="C1", zorder=3,
                         label="batch statistics (mean)" if i == 0 else None)
        k, n = collapse_counts(by[s])
        right.bar(i, k / n if n else 0, color="C3")
        right.text(i, (k / n if n else 0) + 0.02, f"{k}/{n}", ha="center", fontsize=8)
    for ax in (left, right):
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    left.set(ylabel="test accuracy (%)", title="accuracy by strategy")
    left.legend(fontsize=7)
    right.set(ylabel="collapse rate", ylim=(0, 1.1), title="collapsed runs per strategy")
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


def collapse_claim(strategy: str, by: dict) -> dict:
    statement = (f"Quadratic ResNets trained with ReLinear ({DESCRIBED[strategy]}) collapse "
                 "less often than with plain training.")
    target = (f"one-sided Fisher exact test of fewer collapses in {strategy} than in plain: "
              f"p <= {LEVEL}")
    k, n = collapse_counts(by.get(strategy, []))
    k0, n0 = collapse_counts(by.get("plain", []))
    cid = f"collapse.{strategy}"
    if not n or not n0:
        missing = " and ".join(s for s, m in ((strategy, n), ("plain", n0)) if not m)
        return claim(cid, statement, SOURCE, measured=f"{strategy} {k}/{n}, plain {k0}/{n0} "
                     "collapsed", target=target, verdict=NOT_MEASURED,
                     why=f"no runs of {missing} here; run the ablation: {ABLATION}")
    p_fewer, p_more = fisher_one_sided(k, n, k0, n0)
    values = {"collapsed": k, "runs": n, "plain_collapsed": k0, "plain_runs": n0,
              "p_fewer": p_fewer, "p_more": p_more}
    measured = (f"collapsed: {strategy} {k}/{n}, plain {k0}/{n0}; p(fewer) {fmt(p_fewer)}, "
                f"p(more) {fmt(p_more)}")
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
    target = (f"95 % Welch interval over seeds of the final eval-mode test accuracy "
              f"(test/acc), {strategy} minus conventional, above 0")
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
    best = welch_interval(_finite(r.get("test/acc_best") for r in by.get(strategy, [])),
                          _finite(r.get("test/acc_best") for r in by.get("conventional", [])),
                          level=1 - LEVEL)
    (m, _, _), (m0, _, _) = t_interval(acc), t_interval(ref)
    values = {"mean": m, "n": len(acc), "conventional_mean": m0, "conventional_n": len(ref),
              "difference": diff, "low": lo, "high": hi,
              "best_difference": best[0], "best_low": best[1], "best_high": best[2]}
    measured = (f"test/acc {strategy} {fmt(m)} (n={len(acc)}) vs conventional {fmt(m0)} "
                f"(n={len(ref)}): difference {fmt_interval(diff, lo, hi)} points; "
                f"best epoch: {fmt_interval(*best)}")
    if lo is None:
        verdict, why = INCONCLUSIVE, ("fewer than 2 runs on a side give no interval; run "
                                      f"several seeds of both: {ABLATION}")
    elif lo > 0:
        verdict, why = HOLDS, "the whole interval of the difference is above 0"
    elif hi < 0:
        verdict, why = FAILS, "the whole interval of the difference is below 0"
    else:
        verdict, why = INCONCLUSIVE, ("the interval contains 0: the difference is within the "
                                      "seed-to-seed noise")
    return claim(cid, statement, SOURCE, measured=measured, target=target, verdict=verdict,
                 why=why, values=values)


def _finite(values) -> list:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)]


def _nan(v) -> float:
    return float(v) if isinstance(v, (int, float)) else float("nan")


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


def collapse(history: list, status: str, epochs: int, chance: float) -> Optional[str]:
    """Why the run collapsed (None if it did not): a non-finite loss, or an evaluation
    after the first 10% of training within 2 points of chance."""
    if status == "diverged":
        return "non-finite training loss"
    after = max(1.0, 0.1 * epochs)
    for h in history:
        acc = h.get("test/acc")
        if h["epoch"] >= after and (acc is None or not math.isfinite(acc) or acc <= chance + 2):
            shown = f"{acc:.1f}%" if acc is not None else "none"
            return f"test accuracy {shown} at epoch {h['epoch']} (chance {chance:.1f}%)"
    return None

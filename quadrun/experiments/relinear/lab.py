"""The protocol: one cell is one (Q)ResNet trained with one strategy on one dataset; its
accuracies (eval mode and with batch statistics), collapse, weight norms and curves."""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from quadrun.data import holdout
from quadrun.data.images import Augment, load_images
from quadrun.devices import seeded
from quadrun.errors import ConfigError
from quadrun.experiments.relinear.config import (HISTORY_KEYS, MATCH_TOLERANCE, QUAD_ROLES,
                                                 quad_lr)
from quadrun.nn.evaluation import accuracy, batch_statistics
from quadrun.nn.quadratic import QuadraticConv2d, param_groups, role_norms
from quadrun.nn.resnet import count_parameters, qresnet, resnet
from quadrun.training import TensorBatches, fit
from quadrun.vocab import derive_seed

log = logging.getLogger("quadrun")


def cells(c) -> list:
    return [{"strategy": c.strategy, "depth": c.depth, "form": c.form}]


def measure(c, cell, ctx) -> dict:
    """Train one (Q)ResNet with the strategy; its accuracies, collapse, norms and curves."""
    tc, device = c.train, ctx.device
    pool = c.train_size + c.val_size if c.train_size else 0   # 0: the whole training split
    data = load_images(c.dataset, ctx.data_dir, device, train_size=pool,
                       test_size=c.test_size, download=c.download,
                       split_seed=c.split_seed, image_size=c.image_size,
                       channels_last=c.channels_last)
    data, val_x, val_y = holdout.carve_validation(data, c.val_size, c.split_seed)
    width = matched_width(c, data) if c.strategy == "conventional_matched" else c.width
    with seeded(derive_seed(ctx.runtime.seed, "relinear", "model")):
        model = build_model(c, data, width)
    model = model.to(device)
    if c.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = count_parameters(model)
    log.info("relinear: %s %s%d (%s, width %d), %d parameters, %s %d train / %d validation "
             "/ %d test images", c.strategy,
             "ResNet" if c.strategy.startswith("conventional") else "QResNet", c.depth, c.form,
             width, params, c.dataset, len(data.train_y), len(val_y), len(data.test_y))

    batches = TensorBatches([data.train_x, data.train_y], tc.batch_size,
                            transform=Augment(data, c.pad, c.flip))

    def test_accuracy(m):
        return accuracy(m, data.test_batches(c.eval_batch), len(data.test_y))

    def evaluate(m):
        out = {"test/acc": test_accuracy(m)}
        if c.batchstat_eval:
            with batch_statistics(m):
                out["test/acc_batchstats"] = test_accuracy(m)
        return {**out, **quadratic_weight_norms(m)}

    def loss_fn(m, batch):
        x, y = batch
        return F.cross_entropy(m(x), y)

    penalty = shrink_penalty(c.alpha, c.beta) if c.strategy == "relinear_sw" else None
    res = fit(model, batches, loss_fn, ctx, tc, param_groups=strategy_groups(model, c, tc),
              evaluate=evaluate, monitor=("test/acc", "max"), penalty=penalty)

    final = dict(res.metrics)
    model.eval()
    with torch.inference_mode():
        if res.status == "diverged":  # score what the diverged weights do, for the table
            final = evaluate(model)
        val_acc = (accuracy(model, holdout.batches(data, val_x, val_y, c.eval_batch), len(val_y))
                   if len(val_y) else None)
    chance = 100.0 / data.num_classes
    reached = math.ceil(res.step / len(batches))  # the last epoch begun
    collapsed, reason, at = collapse(res.history, res.status, reached, chance,
                                     c.collapse_epochs, c.collapse_margin)
    norms = role_norms(model)
    record = {
        "status": res.status, "seed": ctx.runtime.seed, "dataset": c.dataset,
        "train_images": len(data.train_y), "val_images": len(val_y),
        "test_images": len(data.test_y), "width": width, "val/acc": val_acc,
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
    acc = record["test/acc"]
    log.info("relinear: %s test acc %.2f%% (best %s at epoch %s, batch-stats %s), "
             "collapsed: %s%s", c.strategy, acc if acc is not None else math.nan,
             record["test/acc_best"], record["best_epoch"], record["test/acc_batchstats"],
             {True: "yes", False: "no", None: "not judged"}[collapsed],
             f" ({reason})" if reason else "")
    return record


# -- the strategies: model, optimiser groups, penalty ------------------------------------------
def build_model(c, data, width=None):
    """The conventional ResNet (with ReZero scalars: conventional_rezero; at `width`:
    conventional_matched), or the QResNet with the strategy's init (plain: every part
    random; the others: ReLinear, each quadratic neuron starts as a conventional one)."""
    kw = dict(num_classes=data.num_classes, in_channels=data.shape[0],
              width=c.width if width is None else width)
    rezero = c.strategy.endswith("_rezero")
    if c.strategy.startswith("conventional"):
        return resnet(c.depth, rezero=rezero, **kw)
    init = "random" if c.strategy == "plain" else "relinear"
    return qresnet(c.depth, form=c.form, init=init, rezero=rezero, **kw)


def matched_width(c, data) -> int:
    """The first-stage width at which the conventional ResNet's parameter count is closest
    to the QResNet's (same depth, form, width; no ReZero); it must be within
    MATCH_TOLERANCE. Models are built under a forked RNG: nothing is drawn from the run's."""
    kw = dict(num_classes=data.num_classes, in_channels=data.shape[0])
    with torch.random.fork_rng(devices=[]):
        target = count_parameters(qresnet(c.depth, form=c.form, width=c.width, **kw))
        counts = {w: count_parameters(resnet(c.depth, width=w, **kw))
                  for w in range(c.width, 4 * c.width + 1)}
    best = min(counts, key=lambda w: (abs(counts[w] - target), w))
    if abs(counts[best] - target) > MATCH_TOLERANCE * target:
        raise ConfigError(f"relinear.width: no conventional ResNet{c.depth} width gives "
                          f"{target} parameters within {MATCH_TOLERANCE:.0%} (closest: width "
                          f"{best}, {counts[best]})")
    return best


def strategy_groups(model, c, tc) -> list:
    """Optimiser groups by role (quadrun.nn.quadratic.param_groups): the shrink-gradient
    strategies give the quadratic parts their own lr gamma; shrink-weights takes them out of
    weight decay (alpha is their L2 term)."""
    gamma = quad_lr(c)
    role_lr = {r: gamma for r in QUAD_ROLES} if gamma is not None else None
    role_wd = {r: 0.0 for r in QUAD_ROLES} if c.strategy == "relinear_sw" else None
    return param_groups(model, tc.lr, tc.weight_decay, role_lr=role_lr, role_weight_decay=role_wd)


def shrink_penalty(alpha: float, beta: float):
    """alpha * sum W^2 + beta * sum |W| over the quadratic weights W_g, W_b."""
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
    sq = {"g": 0.0, "b": 0.0}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, QuadraticConv2d):
                for part, w in (("g", m.weight_g), ("b", m.weight_b)):
                    if w is not None:
                        sq[part] += float(w.float().square().sum())
    return {f"norm/W_{k}": math.sqrt(v) for k, v in sq.items()}


# -- collapse ------------------------------------------------------------------------------------
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

"""ReLinear ablation (Fan et al., NOTES.md section 1): how to train quadratic ResNets.

    quadrun experiment=relinear relinear.strategy=relinear_sg
    quadrun -m experiment=relinear sweep=relinear_ablation          # strategies x seeds
    quadrun-report outputs/relinear/multirun/<sweep>                # the table

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

A run is `collapsed` when its loss goes non-finite, or when any evaluation after the first
10% of training scores within 2 points of chance. Accuracy is measured twice: in eval
mode (BatchNorm running statistics, the usual test accuracy) and with batch statistics;
a collapsed quadratic net often still scores well with batch statistics, because what
breaks is the running statistics amplified by the product and square terms (NOTES.md).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from quadrun.data.images import DATASETS, Augment, ImageData, load_images
from quadrun.nn.quadratic import QuadraticConv2d, param_groups, role_norms
from quadrun.nn.resnet import BLOCKS, count_parameters, qresnet, resnet
from quadrun.schema import ConfigError, spec
from quadrun.training import TensorBatches, fit

log = logging.getLogger("quadrun")

STRATEGIES = ("conventional", "plain", "relinear_init", "relinear_sg", "relinear_sw",
              "relinear_rezero")
REFERENCE_GAMMA = {"relinear_sg": 1e-5, "relinear_rezero": 1e-3}
QUAD_ROLES = ("quad_g", "quad_b")


@dataclass
class Config:
    strategy: str = spec("relinear_sg", choices=list(STRATEGIES))
    depth: int = spec(20, choices=sorted(BLOCKS), help="CIFAR ResNet depth")
    form: str = spec("full", choices=["full", "compact"], help="quadratic neuron form")
    width: int = spec(16, ge=1, help="channels of the first stage (x2, x4 later)")
    dataset: str = spec("cifar10", choices=list(DATASETS))
    train_size: int = spec(0, ge=0, help="training images used; 0: the whole training split")
    test_size: int = spec(0, ge=0, help="test images used; 0: all")
    image_size: int = spec(8, ge=4, le=64, help="side of the generated images (synthetic)")
    split_seed: int = spec(0, ge=0, help="seed of the data split/subsample (same for all runs)")
    download: bool = True
    pad: int = spec(4, ge=0, le=16, help="pixels of padding for the random crop; 0: none")
    flip: bool = True
    gamma: Optional[float] = spec(None, ge=0, le=10,
                                  help="absolute lr of the quadratic parts (sg, rezero); "
                                       "null: the reference 1e-5 (sg) / 1e-3 (rezero)")
    alpha: float = spec(1e-3, ge=0, help="L2 penalty on W_g, W_b (relinear_sw)")
    beta: float = spec(1e-5, ge=0, help="L1 penalty on W_g, W_b (relinear_sw)")
    eval_batch: int = spec(1000, ge=1)
    batchstat_eval: bool = True
    channels_last: bool = spec(True, help="convs in channels_last memory format (measured "
                                          "faster on CUDA and on CPU; benchmarks/train.py)")


def check(cfg) -> None:
    """Fail before the run folder exists when CIFAR-10 cannot be there."""
    from quadrun.data.cifar import available

    rc = cfg.relinear
    if rc.dataset == "cifar10" and not rc.download and not available(cfg.data_dir):
        raise ConfigError(f"data_dir: CIFAR-10 not found in {cfg.data_dir!r} (expected "
                          "cifar-10-batches-py/ or cifar-10-python.tar.gz) and "
                          "relinear.download=false; put the official archive there")


# -- model and optimiser set-up ----------------------------------------------------------------
def build_model(cfg, data: ImageData) -> nn.Module:
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


def strategy_groups(model: nn.Module, cfg, tc) -> list:
    """Optimiser groups by role (quadrun.nn.quadratic.param_groups) for the strategy."""
    gamma = quad_lr(cfg)
    role_lr = {r: gamma for r in QUAD_ROLES} if gamma is not None else None
    role_wd = {r: 0.0 for r in QUAD_ROLES} if cfg.strategy == "relinear_sw" else None
    return param_groups(model, tc.lr, tc.weight_decay, role_lr=role_lr, role_weight_decay=role_wd)


def shrink_penalty(alpha: float, beta: float):
    """alpha * sum W^2 + beta * sum |W| over the quadratic weights W_g, W_b."""
    def penalty(model: nn.Module) -> torch.Tensor:
        total = 0.0
        for m in model.modules():
            if isinstance(m, QuadraticConv2d):
                for w in (m.weight_g, m.weight_b):
                    if w is not None:
                        total = total + alpha * w.square().sum() + beta * w.abs().sum()
        return total
    return penalty


def quadratic_weight_norms(model: nn.Module) -> dict:
    """L2 norms of the quadratic weights alone (W_g, W_b; biases left out, since b_g starts
    at 1): the collapse diagnostic that NOTES.md compares across strategies."""
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
def batch_statistics(model: nn.Module):
    """BatchNorm layers normalise with each batch's own statistics (running ones untouched)."""
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


def accuracy(model: nn.Module, data: ImageData, batch_size: int) -> float:
    """Test accuracy in percent (non-finite logits count as wrong)."""
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


# -- the run ---------------------------------------------------------------------------------------
def run(cfg, ctx) -> dict:
    tc, device = ctx.cfg.train, ctx.device
    data = load_images(cfg.dataset, ctx.cfg.data_dir, device, train_size=cfg.train_size,
                       test_size=cfg.test_size, download=cfg.download,
                       split_seed=cfg.split_seed, image_size=cfg.image_size,
                       channels_last=cfg.channels_last)
    model = build_model(cfg, data).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = count_parameters(model)
    log.info("relinear: %s %s%d (%s), %d parameters, %s %d train / %d test images",
             cfg.strategy, "ResNet" if cfg.strategy == "conventional" else "QResNet",
             cfg.depth, cfg.form, params, cfg.dataset, len(data.train_y), len(data.test_y))

    batches = TensorBatches([data.train_x, data.train_y], tc.batch_size,
                            transform=Augment(data, cfg.pad, cfg.flip))
    eval_time = [0.0]

    def evaluate(m):
        t0 = time.perf_counter()
        out = {"test/acc": accuracy(m, data, cfg.eval_batch)}
        if cfg.batchstat_eval:
            with batch_statistics(m):
                out["test/acc_batchstats"] = accuracy(m, data, cfg.eval_batch)
        eval_time[0] += time.perf_counter() - t0
        return out

    def loss_fn(m, batch):
        x, y = batch
        return F.cross_entropy(m(x), y)

    penalty = shrink_penalty(cfg.alpha, cfg.beta) if cfg.strategy == "relinear_sw" else None
    t0 = time.perf_counter()
    res = fit(model, batches, loss_fn, ctx, tc, param_groups=strategy_groups(model, cfg, tc),
              evaluate=evaluate, monitor=("test/acc", "max"), penalty=penalty)
    train_time = time.perf_counter() - t0 - eval_time[0]

    final = dict(res.metrics)
    if res.status == "diverged":  # score what the diverged weights do, for the table
        model.eval()
        with torch.inference_mode():
            final = evaluate(model)
    chance = 100.0 / data.num_classes
    reason = collapse(res.history, res.status, tc.epochs, chance)
    norms = role_norms(model)
    summary = {
        "status": res.status, "strategy": cfg.strategy, "collapsed": reason is not None,
        "collapse_reason": reason, "params": params, "depth": cfg.depth, "form": cfg.form,
        "dataset": cfg.dataset, "quad_lr": quad_lr(cfg),
        "test/acc": final.get("test/acc"), "test/acc_best": res.best.get("test/acc"),
        "test/acc_batchstats": final.get("test/acc_batchstats"),
        "norm/linear": norms["linear"], "norm/quad_g": norms["quad_g"],
        "norm/quad_b": norms["quad_b"], **quadratic_weight_norms(model),
        "epochs": res.epoch, "steps": res.step,
        "train/images_per_s": res.step * batches.batch_size / max(train_time, 1e-9),
    }
    log.info("relinear: %s test acc %.2f%% (best %s, batch-stats %s), collapsed: %s",
             cfg.strategy, summary["test/acc"] or float("nan"), summary["test/acc_best"],
             summary["test/acc_batchstats"], reason or "no")
    return summary

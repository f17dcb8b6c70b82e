"""The lab: the grid of cells and one cell's measurement (targets, learners, scoring).

A cell is (regime, learner, d, replicate, n). Its replicate's `stream_seed` (derived from
the run seed, the regime and the replicate) seeds the target and the sample streams of
that (regime, d, replicate): train (stage 1 and the per-n learners), fresh (layerwise
stage 2) and test. The one-pass learners build every n of one (regime, d, replicate) in
the first of its cells and keep the result (ctx.latest) for the others.
"""
from __future__ import annotations

import math
import time
from typing import Optional

import torch

from quadrun.data.polynomials import HermiteFeatures, make_target
from quadrun.experiments.hierpoly.config import STREAMED, THREE_LAYER, grid, learner_dims, max_n
from quadrun.nn.hierarchical import SIGMA1 as ACT
from quadrun.nn.hierarchical import (StreamScore, ThreeLayerNet, init_mup, layerwise_path,
                                     mup_param_groups, outer_init, two_layer_relu)
from quadrun.nn.kernels import ntk_fit
from quadrun.nn.ridge import ridge_path
from quadrun.training import TensorBatches, fit
from quadrun.vocab import derive_seed


def cells(c) -> list:
    """(regime, learner, d, replicate, n) for every regime, d, replicate, learner and n =
    ratio * d^k, in that order: the cells of one (regime, d, replicate) are consecutive
    (they share the target), and those of one learner too (one pass serves its n); a
    learner gets no cell above its max_n, nor at a d above its max_d (or, for the Hermite
    kernel, with more than max_features features), nor beyond its max_seeds replicates."""
    out = []
    for name in dict.fromkeys(c.regimes):
        r = getattr(c, name)
        dims = list(dict.fromkeys(r.dims))
        at = {learner: set(learner_dims(c, r, learner)) for learner in r.learners}
        for d in dims:
            seeds = r.seeds_at_largest_d if (d == max(dims) and r.seeds_at_largest_d) else r.seeds
            for replicate in range(seeds):
                for learner in dict.fromkeys(r.learners):
                    most = getattr(getattr(c, learner), "max_seeds", 0)
                    if d in at[learner] and not (most and replicate >= most):
                        out += [{"regime": name, "learner": learner, "d": d, "replicate": replicate,
                                 "n": n} for n in grid(r, d) if n <= max_n(c, learner)]
    return out


def measure(c, cell, ctx) -> dict:
    """One learner at one (regime, d, replicate, n), scored on the streamed test set of that
    (regime, d, replicate): relative test MSE, |corr(feature, p)|, seconds, status."""
    name, learner, d, n = cell["regime"], cell["learner"], cell["d"], cell["n"]
    r = getattr(c, name)
    seed = derive_seed(ctx.runtime.seed, "hierpoly", name, "replicate", cell["replicate"])
    target = ctx.latest("target", (name, d, seed), lambda: make_target(
        r.inner, d, r.k, r.q, derive_seed(seed, "target", d), r.outer, r.spectrum))
    if learner in STREAMED:
        path = ctx.latest("path", (name, learner, d, seed),
                          lambda: PATHS[learner](c, r, d, target, seed, ctx))
        return {"stream_seed": seed, **path[n]}
    return {"stream_seed": seed, **_one_n(c, r, learner, d, n, target, seed, ctx, name)}


# ---- the one-pass learners ---------------------------------------------------------------------

def _streams(target, seed: int, d: int, chunk: int) -> dict:
    """The three sample streams of one (d, seed): train, fresh and test; each yields
    (x, p, h) pieces of rows [start, stop)."""
    seeds = {name: derive_seed(seed, name, d) for name in ("train", "fresh", "test")}
    return {name: (lambda a, b, s=s: target.stream(s, a, b, chunk)) for name, s in seeds.items()}


def _stop(ctx):
    return lambda: ctx.check_stop("inside a streamed pass")


def _layerwise_path(c, r, d, target, seed, ctx) -> dict:
    """The theorem's protocol at every n of the grid of one (regime, d, seed), one pass:
    stage 1 ridge of h on the first layer's features with n1 = n - n2 samples, stage 2 the
    outer ReLU layer on n2 = stage2_fraction * n fresh ones. {n: record}."""
    lc = c.layerwise
    ns = [n for n in grid(r, d) if n <= max_n(c, "layerwise")]
    points = [(n - n2, n2) for n in ns for n2 in [max(1, int(round(lc.stage2_fraction * n)))]]
    gen = torch.Generator().manual_seed(derive_seed(seed, "model", "layerwise", d))
    if lc.features == "hermite":      # the span of an infinitely wide first layer
        featurize = HermiteFeatures(d, r.k)
        features = featurize.count
    else:                             # sigma1(V x + s), V and s random and fixed
        features = lc.width1 or d ** r.k
        V = (torch.randn(features, d, generator=gen, dtype=torch.float64) / math.sqrt(d)).to(ctx.device)
        s = torch.randn(features, generator=gen, dtype=torch.float64).to(ctx.device)
        act = ACT[lc.sigma1]

        def featurize(x):
            return act(x @ V.T + s)
    a, b = outer_init(lc.width2, gen, lc.bias_range)
    st = _streams(target, seed, d, c.chunk)
    results = layerwise_path(
        featurize, features, points,
        stage1=lambda i, j: ((x, h) for x, _, h in st["train"](i, j)),
        stage2=lambda i, j: ((x, h) for x, _, h in st["fresh"](i, j)),
        test=lambda: st["test"](0, c.n_test), a=a, b=b, loo_rows=lc.loo_rows,
        device=ctx.device, stop=_stop(ctx), compute_dtype=getattr(torch, r.gram_dtype),
        method=c.solve)
    return {n: _record(res["test_mse"], res["corr"], res["seconds"])
            for n, res in zip(ns, results)}


def _hermite_kernel_path(c, r, d, target, seed, ctx) -> dict:
    """Ridge on the Hermite features of degree <= kq (the rotation-invariant kernel whose
    span holds every g(p)) at every n of the grid, one pass."""
    ns = [n for n in grid(r, d) if n <= max_n(c, "hermite_kernel")]
    phi = HermiteFeatures(d, r.k * r.q)
    st = _streams(target, seed, d, c.chunk)
    path = ridge_path(phi, lambda i, j: ((x, h) for x, _, h in st["train"](i, j)), ns, phi.count,
                      loo_rows=c.hermite_kernel.loo_rows, device=ctx.device,
                      compute_dtype=getattr(torch, r.gram_dtype), stop=_stop(ctx), method=c.solve)
    W = torch.stack([pt.fit.weights for pt in path], 1).to(ctx.device)
    t0 = time.perf_counter()
    scores = [StreamScore() for _ in ns]
    for x, p, h in st["test"](0, c.n_test):
        pred = phi(x.to(ctx.device)) @ W
        for s, sc in enumerate(scores):
            sc.add(pred[:, s], h)
    shared = (time.perf_counter() - t0) / len(ns)
    return {n: _record(sc.mse(), None, pt.seconds + shared) for n, sc, pt in zip(ns, scores, path)}


PATHS = {"layerwise": _layerwise_path, "hermite_kernel": _hermite_kernel_path}


def _record(mse: Optional[float], corr: Optional[float], seconds: float,
            status: str = "completed") -> dict:
    ok = status == "completed" and mse is not None and math.isfinite(mse)
    return {"test_mse": mse if ok else None,
            "corr": corr if (ok and corr is not None and math.isfinite(corr)) else None,
            "seconds": seconds, "status": status if ok or status != "completed" else "diverged"}


# ---- the learners trained once per n -----------------------------------------------------------

def _one_n(c, r, learner, d, n, target, seed, ctx, regime) -> dict:
    """A learner that trains once per n (kernel, joint, relu2): the first n samples of the
    train stream, scored on the streamed test set."""
    st = _streams(target, seed, d, c.chunk)
    data = target.sample(n, derive_seed(seed, "train", d))
    gen = torch.Generator().manual_seed(derive_seed(seed, "model", learner, d, n))
    t0 = time.perf_counter()
    predict, status = TRAIN[learner](c, d, data, gen, ctx, f"{regime}/{learner}/d{d}/n{n}/s{seed}")
    score = StreamScore()
    if status == "completed":
        with torch.no_grad():
            for x, p, h in st["test"](0, c.n_test):
                pred, feat = predict(x)
                score.add(pred, h, feat, p if feat is not None else None)
    seconds = time.perf_counter() - t0
    if status != "completed" or score.n == 0:
        return _record(None, None, seconds, status)
    return _record(score.mse(), score.corr() if learner in THREE_LAYER else None, seconds, status)


# each trains on `data` = (x, p, h) and returns (predict, fit status): predict(x) -> (test
# predictions, feature or None); `gen` seeds its random parts, `name` labels its training

def _kernel(c, d, data, gen, ctx, name):
    """ReLU NTK ridge: exact up to kernel.exact_max_n samples, NTK features beyond."""
    x, _, h = data
    predict, _ = ntk_fit(x.to(ctx.device), h.to(ctx.device), c.kernel.exact_max_n,
                         c.kernel.rf_features, gen)
    return (lambda xt: (predict(xt.to(ctx.device)), None)), "completed"


def _train(net, data, ctx, tc, name, groups=None) -> str:
    """Adam through the one loop on float32 copies of the data; returns the fit status."""
    x, _, h = data
    batches = TensorBatches([x.float().to(ctx.device), h.float().to(ctx.device)], tc.batch_size)
    res = fit(net, batches, lambda m, b: torch.mean((m(b[0]).reshape(-1) - b[1]) ** 2), ctx,
              tc, param_groups=groups, checkpoint=False, name=name)
    return res.status


def _joint(c, d, data, gen, ctx, name):
    """The paper's experiment: every layer of the three-layer net with Adam, muP start."""
    jc = c.joint
    net = ThreeLayerNet(d, jc.width1 or d * d, jc.width2, jc.sigma1)
    init_mup(net, gen)
    status = _train(net.to(ctx.device), data, ctx, jc.train, name,
                    mup_param_groups(net, jc.train.lr))

    def predict(xt):
        xt = xt.float().to(ctx.device)
        return net(xt), net.feature(xt)
    return predict, status


def _relu2(c, d, data, gen, ctx, name):
    """A two-layer ReLU network trained end to end with Adam."""
    rc = c.relu2
    net = two_layer_relu(d, rc.width, gen).to(ctx.device)
    status = _train(net, data, ctx, rc.train, name)
    return (lambda xt: (net(xt.float().to(ctx.device)).reshape(-1), None)), status


TRAIN = {"joint": _joint, "kernel": _kernel, "relu2": _relu2}

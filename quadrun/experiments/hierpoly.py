"""Hierarchical polynomials (Wang, Nichani & Lee, "Learning Hierarchical Polynomials with
Three-Layer Neural Networks", ICLR 2024, arXiv 2311.13774): how many samples a three-layer
network needs to learn h = g(p(x)), against kernel and two-layer baselines, as d grows.

Target h = g(p(x)), x ~ N(0, I_d), p of degree k, g of degree q (quadrun.data.polynomials).
One cell is (learner, d, replicate, n = ratio * d^k): the learner trains on the n samples of
that (d, replicate, n), shared by every learner, and is scored on the test set of that
(d, replicate), shared by every n:

- ``layerwise``: the theorem's protocol (quadrun.nn.hierarchical.fit_layerwise); its n
  samples are split into n1 (stage 1) and n2 = stage2_fraction * n fresh ones (stage 2);
- ``joint``: the paper's experiment, every layer trained with Adam from a muP start;
- ``kernel``: ReLU NTK ridge (exact up to kernel.exact_max_n samples, NTK features beyond);
- ``relu2``: a two-layer ReLU network trained end to end with Adam.

A record: test MSE relative to the test variance of h, |corr(feature, p)| for the learners
with a feature (its sign is arbitrary under joint training), seconds, status, and the
replicate's seed (derived from the run seed). Per learner, n*(d) is the smallest n at which
the seed-averaged error curve reaches `target_error` (interpolated linearly in log n vs log
error), and the slope of log n* against log d has a bootstrap interval over seeds. The
claims compare that slope with k (the paper's O(d^k)) and the kernel's slope with the
three-layer network's (kernels need ~d^{kq}). A sweep over d (one job per d) is one study:
`quadrun-report <sweep folder>` pools its jobs' records and fits the slope across them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from quadrun.claims import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, claim, fmt, fmt_interval
from quadrun.schema import ConfigError, TrainConfig, spec, train_config
from quadrun.vocab import derive_seed

LEARNERS = ("layerwise", "joint", "kernel", "relu2")
THREE_LAYER = ("layerwise", "joint")      # the learners the paper's claims are about
# the names quadrun.data.polynomials and quadrun.nn.hierarchical accept (both import torch)
INNER, OUTER, SPECTRA = ("quadratic", "hermite_sum"), ("power", "hermite"), ("goe", "flat", "decay")
SIGMA1 = ("cube", "relu", "square")
POOL = ("dims",)                          # a sweep over d extends one study

PAPER = "Wang, Nichani & Lee, ICLR 2024 (arXiv 2311.13774)"


@dataclass
class LayerwiseConfig:
    sigma1: str = spec("square", choices=list(SIGMA1), help="first-layer activation")
    width1: int = spec(0, ge=0, help="m1, features of the first layer; 0: d^k")
    width2: int = spec(1000, ge=1, help="m2, random ReLU units of the outer layer")
    stage2_fraction: float = spec(0.25, gt=0, lt=1, help="share of the n samples kept fresh for stage 2")
    bias_range: float = spec(4.0, gt=0, help="outer biases b_j ~ U(-range, range), g at unit variance")


@dataclass
class JointConfig:
    sigma1: str = spec("cube", choices=list(SIGMA1))
    width1: int = spec(0, ge=0, help="m1; 0: d^2 (the paper)")
    width2: int = spec(1000, ge=1, help="m2 (the paper: 1000)")
    max_n: int = spec(0, ge=0, help="no cell above this n (cost cap); 0: no cap")
    # Adam on every layer; train.lr is the input-like weights' lr, readouts get lr / width.
    # Only each training's last loss is logged (log_every).
    train: TrainConfig = train_config(epochs=50, batch_size=256, optimizer="adam", lr=1e-3,
                                      schedule="cosine", log_every=10 ** 9)


@dataclass
class Relu2Config:
    width: int = spec(512, ge=1)
    max_n: int = spec(16384, ge=0, help="no cell above this n (cost cap); 0: no cap")
    train: TrainConfig = train_config(epochs=50, batch_size=256, optimizer="adam", lr=3e-3,
                                      schedule="cosine", log_every=10 ** 9)


@dataclass
class KernelConfig:
    exact_max_n: int = spec(2048, ge=1, help="exact NTK ridge up to this n; NTK features beyond")
    rf_features: int = spec(2048, ge=4, help="width x (d + 2) of the random network's NTK features")
    max_n: int = spec(16384, ge=0, help="no cell above this n (cost cap); 0: no cap")


@dataclass
class Config:
    inner: str = spec("quadratic", choices=list(INNER),
                      help="p: quadratic x^T A x - tr A | hermite_sum sum_i lambda_i He_k(x_i)")
    k: int = spec(2, ge=1, le=8, help="degree of p (quadratic: 2)")
    spectrum: str = spec("goe", choices=list(SPECTRA), help="spectrum of A for the quadratic p")
    outer: str = spec("power", choices=list(OUTER), help="g(z) = z^q or He_q(z), normalised")
    q: int = spec(3, ge=1, le=8, help="degree of g")
    dims: List[int] = spec([8, 16, 32], ge=2)
    ratios: List[float] = spec([1, 2, 4, 8, 16, 32, 64], gt=0, help="n = ratio * d^k")
    replicates: int = spec(3, ge=1, help="seeds per (d, n), each derived from the run seed")
    n_test: int = spec(20000, ge=10)
    learners: List[str] = spec(["layerwise", "kernel", "relu2"], choices=list(LEARNERS))
    target_error: float = spec(0.2, gt=0, help="relative test MSE that defines n*(d)")
    bootstrap: int = spec(1000, ge=0, help="bootstrap resamples of the seeds for the slope interval")
    layerwise: LayerwiseConfig = field(default_factory=LayerwiseConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    relu2: Relu2Config = field(default_factory=Relu2Config)
    kernel: KernelConfig = field(default_factory=KernelConfig)


def check(cfg) -> None:
    c = cfg.hierpoly
    if c.inner == "quadratic" and c.k != 2:
        raise ConfigError(f"hierpoly.k: {c.k} with inner 'quadratic', which has degree 2; "
                          "use k=2 or inner=hermite_sum")
    if not c.learners:
        raise ConfigError("hierpoly.learners: empty; give at least one of " + ", ".join(LEARNERS))
    if not c.dims or not c.ratios:
        raise ConfigError("hierpoly.dims / hierpoly.ratios: must not be empty")


def cells(c) -> list:
    """(learner, d, replicate, n) for every d, replicate and n = ratio * d^k, in that order
    (so the shared test set and training sample of one (d, replicate[, n]) are used by
    consecutive cells); a learner gets no cell above its max_n."""
    out = []
    for d in c.dims:
        ns = list(dict.fromkeys(max(2, int(round(r * d ** c.k))) for r in c.ratios))
        for replicate in range(c.replicates):
            for n in ns:
                out += [{"learner": learner, "d": d, "replicate": replicate, "n": n}
                        for learner in c.learners if n <= _max_n(c, learner)]
    return out


def measure(c, cell, ctx) -> dict:
    """Train one learner on the (d, replicate, n) sample and score it on the (d, replicate)
    test set: relative MSE, |corr(feature, p)|, seconds."""
    import torch

    from quadrun.data.polynomials import make_target
    from quadrun.nn.hierarchical import correlation

    learner, d, n = cell["learner"], cell["d"], cell["n"]
    seed = derive_seed(ctx.runtime.seed, "hierpoly", "replicate", cell["replicate"])
    target = _latest(ctx, "target", (d, seed), lambda: make_target(
        c.inner, d, c.k, c.q, derive_seed(seed, "target", d), c.outer, c.spectrum))
    test = _latest(ctx, "test", (d, seed),
                   lambda: target.sample(c.n_test, derive_seed(seed, "test", d)))
    data = _latest(ctx, "train", (d, seed, n),
                   lambda: target.sample(n, derive_seed(seed, "train", d, n)))
    gen = torch.Generator().manual_seed(derive_seed(seed, "model", learner, d, n))
    name = f"{learner}/d{d}/n{n}/r{cell['replicate']}"
    t0 = time.perf_counter()
    pred, feat, status = TRAIN[learner](c, d, data, test, gen, ctx, name)
    seconds = time.perf_counter() - t0
    _, pt, ht = test
    pred = pred.double().cpu().reshape(-1)
    mse = float(((pred - ht) ** 2).mean() / ht.var())
    ok = status == "completed" and math.isfinite(mse)
    corr = abs(correlation(feat.cpu(), pt)) if (feat is not None and ok) else None
    return {"seed": seed, "test_mse": mse if ok else None, "corr": corr, "seconds": seconds,
            "status": status}


def summarize(records, c) -> dict:
    """n*(d) and the slope of log n* vs log d (with its bootstrap interval) per learner."""
    out = {"n_star": {}, "slope": {}, "target_error": c.target_error, "k": c.k}
    for learner in _learners(records):
        out["n_star"][learner], out["slope"][learner] = scaling(
            records, learner, c.target_error, c.bootstrap)
    return out


def claims(records, c) -> list:
    """layerwise_dk and kernel_more, decided on the three-layer learner the records have
    (layerwise, else joint: the paper's Figure 2 trains jointly) over the d of the records."""
    three = next((l for l in THREE_LAYER if any(r.get("learner") == l for r in records)), None)
    dims = sorted({r["d"] for r in records})
    net = _study(records, three, c, dims) if three else None
    kernel = _study(records, "kernel", c, dims)
    return [_claim_dk(net, three, c), _claim_kernel(net, kernel, three, c)]


def figures(records, c, save) -> None:
    """Error vs n/d^k per learner (one curve per d), and n* vs d (log-log) per learner."""
    import matplotlib.pyplot as plt

    learners, k, target = _learners(records), c.k, c.target_error
    if not learners:
        return
    fig, axes = plt.subplots(1, len(learners), figsize=(4.2 * len(learners), 3.6), squeeze=False)
    for ax, learner in zip(axes[0], learners):
        curves = _curves(records, learner)
        for d in sorted(curves):
            ns, errs = _mean_curve(curves[d], sorted(curves[d]))
            ax.plot([n / d ** k for n in ns], errs, "o-", label=f"d={d}")
        ax.axhline(target, color="grey", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", title=learner, xlabel=f"n / d^{k}",
               ylabel="test MSE / Var h")
        if curves:
            ax.legend(fontsize=8)
    save(fig, "error_vs_n_over_dk")

    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    for learner in learners:
        stars, slope = scaling(records, learner, target, bootstrap=0)
        ds = sorted(d for d, s in stars.items() if s is not None)
        if not ds:
            continue
        label = learner + (f" (slope {slope['value']:.2f})" if slope else "")
        ax.plot(ds, [stars[d] for d in ds], "o-", label=label)
    ax.set(xscale="log", yscale="log", xlabel="d", ylabel=f"n* (error {target})",
           title="samples needed vs dimension")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    save(fig, "nstar_vs_d")


# ---- n*(d) and the slope ------------------------------------------------------------------

def n_star(ns: List[float], errors: List[Optional[float]], target: float) -> Optional[float]:
    """Smallest n with error <= target on the grid, interpolated linearly in (log n,
    log error) between the last point above and the first point below; None if never.
    Already below at the first grid point: that n (an upper bound, the grid starts too late)."""
    errs = [e if e is not None and math.isfinite(e) else math.inf for e in errors]
    for i, e in enumerate(errs):
        if e <= target:
            if i == 0:
                return float(ns[0])
            e0, e1 = errs[i - 1], max(e, 1e-300)
            if not math.isfinite(e0):
                return float(ns[i])
            t = (math.log(target) - math.log(e0)) / (math.log(e1) - math.log(e0)) \
                if e1 != e0 else 1.0
            return float(math.exp(math.log(ns[i - 1]) + t * (math.log(ns[i]) - math.log(ns[i - 1]))))
    return None


def scaling(records: List[dict], learner: str, target: float, bootstrap: int,
            seed: int = 0) -> tuple:
    """(n_star {d: n* or None}, slope {"value", "low", "high"} or None) for one learner,
    from the seed-averaged error curves; the interval is the 2.5-97.5 % range of the slope
    over `bootstrap` resamples of the seeds (drawn with replacement, per d). Records of
    several runs pool, e.g. the jobs of a sweep over d."""
    curves = _curves(records, learner)
    dims = sorted(curves)
    stars = {d: n_star(*_mean_curve(curves[d], sorted(curves[d])), target) for d in dims}
    value = _slope(dims, [stars[d] for d in dims])
    if value is None:
        return stars, None
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        resampled = []
        for d in dims:
            seeds = sorted(curves[d])
            pick = [seeds[i] for i in rng.integers(0, len(seeds), len(seeds))]
            resampled.append(n_star(*_mean_curve(curves[d], pick), target))
        s = _slope(dims, resampled)
        if s is not None:
            draws.append(s)
    ok = bootstrap > 0 and len(draws) >= bootstrap / 2
    low, high = (float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))) if ok \
        else (None, None)
    return stars, {"value": value, "low": low, "high": high}


def _curves(records: List[dict], learner: str) -> Dict[int, Dict[int, Dict[int, Optional[float]]]]:
    """{d: {seed: {n: test_mse}}} for one learner."""
    out: dict = {}
    for r in records:
        if r.get("learner") == learner:
            out.setdefault(r["d"], {}).setdefault(r["seed"], {})[r["n"]] = r.get("test_mse")
    return out


def _mean_curve(per_seed: Dict[int, Dict[int, Optional[float]]], seeds: List[int]) -> tuple:
    ns = sorted(set.intersection(*(set(per_seed[s]) for s in seeds)))
    errs = []
    for n in ns:
        vals = [per_seed[s][n] for s in seeds]
        errs.append(math.inf if any(v is None for v in vals) else float(np.mean(vals)))
    return ns, errs


def _slope(dims: List[int], stars: List[Optional[float]]) -> Optional[float]:
    if len(dims) < 2 or any(s is None for s in stars):
        return None
    return float(np.polyfit(np.log(dims), np.log(stars), 1)[0])


# ---- the claims ------------------------------------------------------------------------------

def _study(records, learner: str, c, all_dims: List[int]) -> Optional[dict]:
    """What the claims need to know of one learner's records: n*(d), the slope and whether
    its interval can be trusted (every d of the records reached inside the learner's grid,
    not at its first point, at least 2 seeds per d). A d without cells of this learner
    (every n above its max_n) counts as not reached."""
    curves = _curves(records, learner)
    if not curves:
        return None
    stars, slope = scaling(records, learner, c.target_error, c.bootstrap)
    dims, edge, one_seed = sorted(curves), [], []
    unreached = {d: (None, None) for d in all_dims if d not in curves}
    for d in dims:
        ns, errs = _mean_curve(curves[d], sorted(curves[d]))
        if stars[d] is None:
            unreached[d] = (ns[-1], errs[-1]) if ns else (None, None)
        elif ns and stars[d] <= ns[0]:
            edge.append(d)
        if len(curves[d]) < 2:
            one_seed.append(d)
    problems = []
    if len(all_dims) < 2:
        problems.append(f"only d = {dims[0]} measured: a slope needs at least 2 dimensions "
                        "(pool a sweep over d with quadrun-report)")
    if unreached:
        problems.append("target not reached inside the grid at d = "
                        + ", ".join(str(d) for d in sorted(unreached)))
    if edge:
        problems.append("n* at the grid's first n (an upper bound) at d = "
                        + ", ".join(map(str, edge)) + ": start hierpoly.ratios lower")
    if one_seed and len(dims) >= 2 and not unreached:
        problems.append("one seed at d = " + ", ".join(map(str, one_seed))
                        + ": no spread for an interval (raise hierpoly.replicates)")
    if slope and (slope["low"] is None) and not problems:
        problems.append("no bootstrap interval (hierpoly.bootstrap = 0 or too few resamples "
                        "with n* reached)")
    return {"learner": learner, "dims": all_dims, "stars": stars, "slope": slope,
            "unreached": unreached, "problems": problems,
            "interval": (slope["low"], slope["high"]) if slope and not problems else None}


def _describe(s: dict, c) -> str:
    stars = ", ".join(f"d={d}: {fmt(s['stars'][d])}" for d in s["dims"] if s["stars"].get(d) is not None)
    text = f"{s['learner']}: n* {stars or '-'}"
    for d, (n, e) in sorted(s["unreached"].items()):
        text += (f"; d={d}: error {fmt(e)} at the largest n = {fmt(n)}" if n is not None
                 else f"; d={d}: no cells (every n above its max_n)")
    if s["slope"]:
        text += "; slope " + fmt_interval(s["slope"]["value"], s["slope"]["low"], s["slope"]["high"])
    return text


def _values(s: Optional[dict]) -> dict:
    if s is None:
        return {}
    return {"n_star": {str(d): v for d, v in s["stars"].items()}, "slope": s["slope"]}


def _claim_dk(net: Optional[dict], learner: Optional[str], c) -> dict:
    statement = (f"A three-layer network trained layerwise learns h = g(p(x)) with O(d^k) "
                 f"samples: n*(d) grows like d^{c.k}.")
    source = f"{PAPER}: main result (abstract); the experiment of Figure 2"
    target = (f"95 % bootstrap interval of the slope of log n* vs log d (n* at test MSE / Var h "
              f"= {fmt(c.target_error)}) contains k = {c.k}"
              + (f" and not kq = {c.k * c.q}" if c.q > 1 else ""))
    if net is None:
        return claim("layerwise_dk", statement, source, measured="no layerwise or joint records",
                     target=target, verdict=NOT_MEASURED,
                     why="add layerwise (or joint) to hierpoly.learners")
    measured = _describe(net, c)
    values = {"learner": learner, **_values(net)}
    if net["interval"] is None:
        not_reached = len(net["dims"]) < 2 or bool(net["unreached"])
        return claim("layerwise_dk", statement, source, measured=measured, target=target,
                     verdict=NOT_MEASURED if not_reached else INCONCLUSIVE,
                     why="; ".join(net["problems"]), values=values)
    low, high = net["interval"]
    kq = c.k * c.q
    if low <= c.k <= high and kq != c.k and low <= kq <= high:
        verdict, why = INCONCLUSIVE, (f"the interval [{fmt(low)}, {fmt(high)}] contains both "
                                      f"k = {c.k} and kq = {kq}: too wide to tell d^k from the "
                                      "kernels' d^kq (more seeds or a wider d range)")
    elif low <= c.k <= high:
        verdict, why = HOLDS, f"the interval [{fmt(low)}, {fmt(high)}] contains {c.k}"
    else:
        verdict, why = FAILS, (f"the interval [{fmt(low)}, {fmt(high)}] lies "
                               f"{'below' if high < c.k else 'above'} {c.k}")
    return claim("layerwise_dk", statement, source, measured=measured, target=target,
                 verdict=verdict, why=why, values=values)


def _claim_kernel(net: Optional[dict], kernel: Optional[dict], learner: Optional[str], c) -> dict:
    statement = (f"Kernel methods need more samples, ~d^(kq) = d^{c.k * c.q} against the "
                 f"three-layer network's d^{c.k}: the kernel's n*(d) grows faster.")
    source = f"{PAPER}: kernel methods require ~Theta(d^kq) samples (abstract)"
    target = "the kernel's slope interval lies wholly above the three-layer network's"
    missing = [name for name, s in (("layerwise or joint", net), ("kernel", kernel)) if s is None]
    if missing:
        return claim("kernel_more", statement, source, measured="no " + " or ".join(missing)
                     + " records", target=target, verdict=NOT_MEASURED,
                     why="add " + " and ".join(missing) + " to hierpoly.learners")
    measured = _describe(net, c) + " | " + _describe(kernel, c)
    values = {"learner": learner, learner: _values(net), "kernel": _values(kernel)}
    if net["interval"] is not None and kernel["interval"] is not None:
        (nl, nh), (kl, kh) = net["interval"], kernel["interval"]
        if kl > nh:
            return claim("kernel_more", statement, source, measured=measured, target=target,
                         verdict=HOLDS, values=values,
                         why=f"kernel [{fmt(kl)}, {fmt(kh)}] lies above {learner} "
                             f"[{fmt(nl)}, {fmt(nh)}]")
        if kh < nl:
            return claim("kernel_more", statement, source, measured=measured, target=target,
                         verdict=FAILS, values=values,
                         why=f"kernel [{fmt(kl)}, {fmt(kh)}] lies below {learner} "
                             f"[{fmt(nl)}, {fmt(nh)}]")
        return claim("kernel_more", statement, source, measured=measured, target=target,
                     verdict=INCONCLUSIVE, values=values,
                     why=f"the intervals overlap: kernel [{fmt(kl)}, {fmt(kh)}], {learner} "
                         f"[{fmt(nl)}, {fmt(nh)}]; more seeds or a wider d range would separate them")
    why = []
    if kernel["unreached"]:
        why.append("the kernel does not reach the target inside its grid at d = "
                   + ", ".join(map(str, sorted(kernel["unreached"])))
                   + " (evidence that it needs more samples, but no slope to compare)")
    why += [f"kernel: {p}" for p in kernel["problems"] if not p.startswith("target not reached")]
    why += [f"{learner}: {p}" for p in net["problems"]]
    if len(net["dims"]) < 2:
        return claim("kernel_more", statement, source, measured=measured, target=target,
                     verdict=NOT_MEASURED, values=values, why="; ".join(why))
    return claim("kernel_more", statement, source, measured=measured, target=target,
                 verdict=INCONCLUSIVE, values=values, why="; ".join(why))


# ---- learners: each trains on `data` and returns (test predictions, feature on the test set
# or None, fit status); `gen` seeds its random parts, `name` labels its training -------------

def _layerwise(c, d, data, test, gen, ctx, name):
    import torch

    from quadrun.nn.hierarchical import ThreeLayerNet, fit_layerwise, init_layerwise

    lc = c.layerwise
    x, _, h = (t.to(ctx.device) for t in data)
    n2 = max(1, int(round(lc.stage2_fraction * len(x))))
    net = ThreeLayerNet(d, lc.width1 or d ** c.k, lc.width2, lc.sigma1).double()
    init_layerwise(net, gen, lc.bias_range)
    net.to(ctx.device)
    fit_layerwise(net, x[:-n2], h[:-n2], x[-n2:], h[-n2:])
    xt = test[0].to(ctx.device)
    with torch.no_grad():
        return net(xt), net.feature(xt), "completed"


def _kernel(c, d, data, test, gen, ctx, name):
    from quadrun.nn.kernels import ntk_regression

    x, _, h = data
    pred, _ = ntk_regression(x.to(ctx.device), h.to(ctx.device), test[0].to(ctx.device),
                             c.kernel.exact_max_n, c.kernel.rf_features, gen)
    return pred, None, "completed"


def _train(net, data, ctx, tc, name, groups=None) -> str:
    """Adam through the one loop on float32 copies of the data; returns the fit status."""
    import torch

    from quadrun.training import TensorBatches, fit

    x, _, h = data
    batches = TensorBatches([x.float().to(ctx.device), h.float().to(ctx.device)], tc.batch_size)
    res = fit(net, batches, lambda m, b: torch.mean((m(b[0]).reshape(-1) - b[1]) ** 2), ctx,
              tc, param_groups=groups, checkpoint=False, name=name)
    return res.status


def _joint(c, d, data, test, gen, ctx, name):
    import torch

    from quadrun.nn.hierarchical import ThreeLayerNet, init_mup, mup_param_groups

    jc = c.joint
    net = ThreeLayerNet(d, jc.width1 or d * d, jc.width2, jc.sigma1)
    init_mup(net, gen)
    status = _train(net.to(ctx.device), data, ctx, jc.train, name,
                    mup_param_groups(net, jc.train.lr))
    xt = test[0].float().to(ctx.device)
    with torch.no_grad():
        return net(xt), net.feature(xt), status


def _relu2(c, d, data, test, gen, ctx, name):
    import torch

    from quadrun.nn.hierarchical import two_layer_relu

    rc = c.relu2
    net = two_layer_relu(d, rc.width, gen).to(ctx.device)
    status = _train(net, data, ctx, rc.train, name)
    with torch.no_grad():
        return net(test[0].float().to(ctx.device)).reshape(-1), None, status


TRAIN = {"layerwise": _layerwise, "joint": _joint, "kernel": _kernel, "relu2": _relu2}


def _max_n(c, learner: str) -> int:
    cap = {"joint": c.joint.max_n, "relu2": c.relu2.max_n, "kernel": c.kernel.max_n}.get(learner, 0)
    return cap or 2 ** 62


def _learners(records) -> list:
    present = {r.get("learner") for r in records}
    return [l for l in LEARNERS if l in present]


def _latest(ctx, kind: str, key: tuple, build):
    """ctx.shared for one kind of shared data (target, test set, training sample), keeping
    only the newest key of that kind in memory: cells run in (d, replicate, n) order, so an
    older one is never needed again."""
    full = ("hierpoly", kind) + key
    for old in [k for k in ctx.memo if isinstance(k, tuple) and k[:2] == full[:2] and k != full]:
        del ctx.memo[old]
    return ctx.shared(full, build)

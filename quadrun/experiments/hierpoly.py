"""Hierarchical polynomials (Wang, Nichani & Lee, "Learning Hierarchical Polynomials with
Three-Layer Neural Networks", ICLR 2024, arXiv 2311.13774): how many samples a three-layer
network needs to learn h = g(p(x)), x ~ N(0, I_d), p of degree k, g of degree q, against
kernel methods, as d grows. The paper: O(d^k) for the network trained layerwise, about
d^(kq) for kernels, and stage 1 recovers p itself with O(d^k) samples.

Three regimes, each a section of its own target and grid (hierpoly.<regime>.*), run in the
order of hierpoly.regimes:

- ``separation`` (k = 2, q = 2): both sample complexities inside a CPU's reach at small d,
  the layerwise network's ~d^2 and the kernel's ~d^4, measured on the same d;
- ``headline`` (k = 2, q = 3, the paper's cubic g): the layerwise network over d = 8 ... 64,
  wide enough to leave the pre-asymptotic range;
- ``paper``: the paper's own experiment (Figure 2): p = sum_i lambda_i He_3(x_i), g = z^3,
  every layer trained jointly with Adam from a muP start (scale=paper, a GPU).

Learners (hierpoly.<regime>.learners):
- ``layerwise``: the theorem's protocol (quadrun.nn.hierarchical.layerwise_path): stage 1
  ridge of h on the first layer's features (the orthonormal Hermite features of degree <=
  k: the span of an infinitely wide first layer) with n1 = n - n2 samples, stage 2 the
  outer ReLU layer on n2 = stage2_fraction * n fresh ones;
- ``hermite_kernel``: ridge on the Hermite features of degree <= kq, the kernel
  sum_{|alpha| <= kq} He_alpha(x) He_alpha(y) / alpha!: rotation invariant, so the paper's
  kernel lower bound applies, and the most sample-efficient kernel for this target (its
  span is exactly the polynomials h can be). It needs about C(d + kq, kq) samples;
- ``kernel``: ReLU NTK ridge (exact up to kernel.exact_max_n samples, NTK features beyond);
- ``joint``: the paper's experiment, all layers with Adam from a muP start;
- ``relu2``: a two-layer ReLU network trained end to end with Adam.

The streamed learners (layerwise, hermite_kernel) never hold the n x F design matrix:
normal equations are accumulated over chunks of a sample stream whose first n rows are the
same for every n (quadrun.data.polynomials), and solved at each n of the grid as one pass
over the largest n reaches it: a seed costs one pass, not one per n. The test set (n_test
points) is streamed the same way, for every learner.

Cells and records: one cell per (regime, learner, d, replicate, n), n = ratio * d^k. A
record stays one flat row per n, so the report's tables pool seeds per (regime, learner,
d, n) and a stopped run resumes at the first unfinished n; the one-pass learners build all
their n of one (regime, d, replicate) in the first of those cells (ctx.shared) and the
others read their n from it (a resume inside such a run of cells repeats that one pass).
A record: test MSE relative to the test set's variance of h, |corr(feature, p)| for the
learners with a scalar feature (its sign is arbitrary), seconds (for a one-pass learner,
that n's share of the pass), status, and the replicate's seed (derived from the run seed).

Statistics: the median over seeds at each (d, n); n*(d), the n where the median error
curve reaches target_error (interpolated in log n vs log error); the slope of log n* vs
log d by least squares, with a 95 % bootstrap interval over seeds (resampled per d). The
claims per regime: the three-layer slope interval contains k and excludes kq; the kernel's
lies above k and above the three-layer one's; the feature-correlation curves collapse on
n / d^k. A sweep over d (one job per d) is one study: quadrun-report pools its jobs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from quadrun.claims import (FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, above, bootstrap_interval,
                            claim, fmt, fmt_interval)
from quadrun.schema import ConfigError, TrainConfig, spec, train_config
from quadrun.vocab import derive_seed

REGIMES = ("separation", "headline", "paper")
LEARNERS = ("layerwise", "hermite_kernel", "joint", "kernel", "relu2")
THREE_LAYER = ("layerwise", "joint")      # the learners the paper's claims are about
KERNELS = ("hermite_kernel", "kernel")
STREAMED = ("layerwise", "hermite_kernel")  # one pass over the largest n serves every n
# the names quadrun.data.polynomials and quadrun.nn.hierarchical accept (both import torch)
INNER = ("quadratic", "hermite_sum")
OUTER = ("power", "hermite", "linear_hermite")
SPECTRA = ("goe", "flat", "decay", "projection")
SIGMA1 = ("cube", "relu", "square")
POOL = tuple(f"{r}.dims" for r in REGIMES)   # a sweep over d extends one study

PAPER = "Wang, Nichani & Lee, ICLR 2024 (arXiv 2311.13774)"


@dataclass
class RegimeConfig:
    """One target h = g(p(x)) and its grid of d and n."""
    inner: str = spec("quadratic", choices=list(INNER),
                      help="p: quadratic x^T A x - tr A | hermite_sum sum_i lambda_i He_k(x_i)")
    k: int = spec(2, ge=1, le=8, help="degree of p (quadratic: 2)")
    spectrum: str = spec("goe", choices=list(SPECTRA), help="spectrum of A for the quadratic p")
    outer: str = spec("power", choices=list(OUTER),
                      help="g: z^q | He_q(z) | He_1(z) + He_q(z)/sqrt(q!); normalised")
    q: int = spec(3, ge=1, le=8, help="degree of g")
    dims: List[int] = spec([8, 16, 32, 64], ge=2)
    ratios: List[float] = spec([2.0 ** j for j in range(9)], gt=0,
                               help="n = ratio * d^k (a nested grid: one pass serves all)")
    seeds: int = spec(5, ge=1, help="replicates per d, each seed derived from the run seed")
    seeds_at_largest_d: int = spec(0, ge=0, help="replicates at the largest d of this run's "
                                                  "dims (the costliest); 0: seeds")
    learners: List[str] = spec(["layerwise"], choices=list(LEARNERS))
    target_error: float = spec(0.2, gt=0, help="relative test MSE that defines n*(d)")


def _separation() -> RegimeConfig:
    # A projection spectrum (A^2 ~ A) makes the degree-2 part of g(p) exactly ~ p at every
    # d, and g = He_1 + He_2 / sqrt 2 has the linear Hermite coefficient the theorem's
    # stage 1 needs (with g = He_2 alone the degree-2 part of h vanishes as d grows).
    return RegimeConfig(spectrum="projection", outer="linear_hermite", q=2, dims=[6, 8, 10, 12],
                        ratios=[2.0 ** (j / 2) for j in range(-2, 13)],
                        learners=["layerwise", "hermite_kernel"])


def _headline() -> RegimeConfig:
    return RegimeConfig(seeds_at_largest_d=3)


def _paper() -> RegimeConfig:
    return RegimeConfig(inner="hermite_sum", k=3, q=3, dims=[16, 24, 32, 40],
                        ratios=[0.25, 0.5, 1.0, 2.0, 4.0, 8.0], seeds=3, learners=["joint", "kernel"])


@dataclass
class LayerwiseConfig:
    features: str = spec("hermite", choices=["hermite", "random"],
                         help="stage-1 features: Hermite of degree <= k | sigma1(V x + s), V random")
    sigma1: str = spec("square", choices=list(SIGMA1), help="first-layer activation (random features)")
    width1: int = spec(0, ge=0, help="m1 of the random features; 0: d^k")
    width2: int = spec(1000, ge=1, help="m2, random ReLU units of the outer layer")
    stage2_fraction: float = spec(0.25, gt=0, lt=1, help="share of the n samples kept fresh for stage 2")
    bias_range: float = spec(4.0, gt=0, help="outer biases b_j ~ U(-range, range), g at unit variance")
    loo_rows: int = spec(4096, ge=16, help="stage-1 samples whose leave-one-out error picks the ridge")
    max_features: int = spec(6000, ge=1, help="no more stage-1 features than this (memory: 8 F^2 bytes)")
    max_n: int = spec(2 ** 18, ge=0, help="no cell above this n (cost cap); 0: no cap")


@dataclass
class HermiteKernelConfig:
    loo_rows: int = spec(2048, ge=16, help="samples whose leave-one-out error picks the ridge")
    max_features: int = spec(4000, ge=1, help="no more features C(d + kq, kq) than this")
    max_n: int = spec(0, ge=0, help="no cell above this n (cost cap); 0: no cap")


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
    regimes: List[str] = spec(["separation", "headline"], choices=list(REGIMES))
    separation: RegimeConfig = field(default_factory=_separation)
    headline: RegimeConfig = field(default_factory=_headline)
    paper: RegimeConfig = field(default_factory=_paper)
    n_test: int = spec(100_000, ge=10, help="test points (streamed) per (regime, d, seed)")
    bootstrap: int = spec(1000, ge=0, help="bootstrap resamples of the seeds for the intervals")
    collapse_bound: float = spec(0.1, gt=0, le=1,
                                 help="largest spread across d of the median corr(feature, p) "
                                      "at equal n/d^k for the curves to count as collapsed")
    chunk: int = spec(4096, ge=16, help="rows per streamed chunk")
    gram_dtype: str = spec("float64", choices=["float64", "float32"],
                           help="dtype of each chunk's Phi^T Phi in the streamed ridges (sums "
                                "stay float64); float32 is about twice as fast")
    layerwise: LayerwiseConfig = field(default_factory=LayerwiseConfig)
    hermite_kernel: HermiteKernelConfig = field(default_factory=HermiteKernelConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    relu2: Relu2Config = field(default_factory=Relu2Config)
    kernel: KernelConfig = field(default_factory=KernelConfig)


def check(cfg) -> None:
    c = cfg.hierpoly
    if not c.regimes:
        raise ConfigError("hierpoly.regimes: empty; give at least one of " + ", ".join(REGIMES))
    for name in c.regimes:
        r, key = c[name], f"hierpoly.{name}"
        if r.inner == "quadratic" and r.k != 2:
            raise ConfigError(f"{key}.k: {r.k} with inner 'quadratic', which has degree 2; "
                              "use k=2 or inner=hermite_sum")
        if not r.learners:
            raise ConfigError(f"{key}.learners: empty; give at least one of " + ", ".join(LEARNERS))
        if not r.dims or not r.ratios:
            raise ConfigError(f"{key}.dims / {key}.ratios: must not be empty")
        for learner, degree, limit in (("layerwise", r.k, c.layerwise.max_features),
                                       ("hermite_kernel", r.k * r.q, c.hermite_kernel.max_features)):
            if learner not in r.learners or (learner == "layerwise" and c.layerwise.features != "hermite"):
                continue
            d = max(r.dims)
            count = math.comb(d + degree, degree)
            if count > limit:
                raise ConfigError(f"{key}.dims: {learner} at d = {d} needs C({d} + {degree}, {degree}) "
                                  f"= {count} features, above hierpoly.{learner}.max_features = "
                                  f"{limit}; use smaller d or raise the limit")


def cells(c) -> list:
    """(regime, learner, d, replicate, n) for every regime, d, replicate, learner and n =
    ratio * d^k, in that order: the cells of one (regime, d, replicate) are consecutive
    (they share the target), and those of one learner too (one pass serves its n); a
    learner gets no cell above its max_n."""
    out = []
    for name in dict.fromkeys(c.regimes):
        r = getattr(c, name)
        dims = list(dict.fromkeys(r.dims))
        for d in dims:
            seeds = r.seeds_at_largest_d if (d == max(dims) and r.seeds_at_largest_d) else r.seeds
            for replicate in range(seeds):
                for learner in dict.fromkeys(r.learners):
                    out += [{"regime": name, "learner": learner, "d": d, "replicate": replicate,
                             "n": n} for n in grid(r, d) if n <= _max_n(c, learner)]
    return out


def measure(c, cell, ctx) -> dict:
    """One learner at one (regime, d, replicate, n), scored on the streamed test set of that
    (regime, d, replicate): relative MSE, |corr(feature, p)|, seconds, status."""
    from quadrun.data.polynomials import make_target

    name, learner, d, n = cell["regime"], cell["learner"], cell["d"], cell["n"]
    r = getattr(c, name)
    seed = derive_seed(ctx.runtime.seed, "hierpoly", name, "replicate", cell["replicate"])
    target = _latest(ctx, "target", (name, d, seed), lambda: make_target(
        r.inner, d, r.k, r.q, derive_seed(seed, "target", d), r.outer, r.spectrum))
    if learner in STREAMED:
        path = _latest(ctx, "path", (name, learner, d, seed),
                       lambda: PATHS[learner](c, r, d, target, seed, ctx))
        return {"seed": seed, **path[n]}
    return {"seed": seed, **_one_n(c, r, learner, d, n, target, seed, ctx, name)}


def summarize(records, c) -> dict:
    """Per regime and learner: n*(d) on the median curve and the slope of log n* vs log d
    with its bootstrap interval."""
    out: dict = {"target_error": {}, "regimes": {}}
    for name in _regimes(records, c):
        r = getattr(c, name)
        out["target_error"][name] = r.target_error
        out["regimes"][name] = {}
        for learner in _learners(records, name):
            stars, slope = scaling(records, name, learner, r.target_error, c.bootstrap)
            out["regimes"][name][learner] = {"n_star": stars, "slope": slope}
    return out


def claims(records, c) -> list:
    """Per regime of hierpoly.regimes: layerwise_dk, kernel_slope and kernel_more (where the
    regime has a kernel learner, and always for the separation regime), feature_collapse.
    The three-layer learner is layerwise, else joint (the paper's Figure 2 trains jointly)."""
    out = []
    for name in _regimes(records, c):
        r = getattr(c, name)
        mine = [x for x in records if x.get("regime", name) == name]
        dims = sorted({x["d"] for x in mine})
        three = next((l for l in THREE_LAYER if any(x.get("learner") == l for x in mine)), None)
        net = _study(mine, name, three, r, c, dims) if three else None
        out.append(_claim_dk(net, three, name, r))
        kernels = [l for l in KERNELS if any(x.get("learner") == l for x in mine)]
        for kernel in kernels or (["hermite_kernel"] if name == "separation" else []):
            study = _study(mine, name, kernel, r, c, dims)
            suffix = "" if len(kernels) <= 1 else f"[{kernel}]"
            out.append(_claim_kernel_slope(study, kernel, name, r, suffix))
            out.append(_claim_kernel_more(net, study, three, kernel, name, r, suffix))
        out.append(_claim_collapse(mine, three, name, r, c))
    return out


def figures(records, c, save) -> None:
    """Per regime: median error vs n/d^k (one panel per learner, one curve per d, bootstrap
    band), median corr(feature, p) vs n/d^k, and n* vs d (log-log) with the fitted lines
    and the reference slopes k and kq."""
    import matplotlib.pyplot as plt

    for name in _regimes(records, c):
        r = getattr(c, name)
        learners = _learners(records, name)
        if not learners:
            continue
        k, target = r.k, r.target_error
        fig, axes = plt.subplots(1, len(learners), figsize=(4.2 * len(learners), 3.6), squeeze=False)
        for ax, learner in zip(axes[0], learners):
            _median_panel(ax, curves(records, name, learner), k, math.inf)
            ax.axhline(target, color="grey", ls=":", lw=1)
            ax.set(xscale="log", yscale="log", title=f"{name}: {learner}", xlabel=f"n / d^{k}",
                   ylabel="test MSE / Var h (median over seeds)")
            ax.set_ylim(bottom=max(1e-3, ax.get_ylim()[0]))    # an interpolating kernel: ~1e-14
        save(fig, f"{name}_error_vs_n_over_dk")

        featured = [l for l in learners if l in THREE_LAYER]
        if featured:
            fig, axes = plt.subplots(1, len(featured), figsize=(4.2 * len(featured), 3.6),
                                     squeeze=False)
            for ax, learner in zip(axes[0], featured):
                _median_panel(ax, curves(records, name, learner, "corr"), k, 0.0)
                ax.set(xscale="log", title=f"{name}: {learner}", xlabel=f"n / d^{k}",
                       ylabel="|corr(feature, p)| (median)", ylim=(0, 1.02))
            save(fig, f"{name}_corr_vs_n_over_dk")

        fig, ax = plt.subplots(figsize=(4.8, 3.8))
        anchor = None
        for learner in learners:
            stars, slope = scaling(records, name, learner, target, bootstrap=min(c.bootstrap, 200))
            ds = sorted(d for d, s in stars.items() if s is not None)
            if not ds:
                continue
            ys = [stars[d] for d in ds]
            bars = slope["n_star_interval"] if slope else {}
            lo = [min(y, bars[d][0]) if bars.get(d, [None])[0] is not None else y for d, y in zip(ds, ys)]
            hi = [min(10 * y, max(y, bars[d][1])) if bars.get(d, [None, None])[1] is not None else y
                  for d, y in zip(ds, ys)]                      # an open end drawn at 10 n*
            err = [[y - l for y, l in zip(ys, lo)], [h - y for y, h in zip(ys, hi)]]
            line = ax.errorbar(ds, ys, yerr=err, fmt="o", capsize=3, label=f"{learner} n* (95 %)").lines[0]
            if slope:
                fit = np.polyfit(np.log(ds), np.log(ys), 1)
                xs = np.array([min(ds), max(ds)], float)
                ax.plot(xs, np.exp(np.polyval(fit, np.log(xs))), "-", color=line.get_color(),
                        label=f"{learner} fit: slope {slope['value']:.2f}")
            if anchor is None:
                anchor = (float(np.exp(np.mean(np.log(ds)))), float(np.exp(np.mean(np.log(ys)))), ds)
        if anchor is not None:
            x0, y0, ds = anchor
            xs = np.array([min(ds), max(ds)], float)
            for slope, style in ((k, "--"), (k * r.q, ":")):
                ax.plot(xs, y0 * (xs / x0) ** slope, style, color="grey", lw=1,
                        label=f"reference d^{slope}")
        ax.set(xscale="log", yscale="log", xlabel="d", ylabel=f"n* (median error {target})",
               title=f"{name}: samples needed vs dimension")
        dims = sorted({x["d"] for x in records if x.get("regime", name) == name})
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        save(fig, f"{name}_nstar_vs_d")


# ---- the grid, n*(d) and the slope -----------------------------------------------------------

def grid(r, d: int) -> List[int]:
    """The n of one d: round(ratio * d^k) for every ratio, at least 2, sorted, no repeats."""
    return sorted(dict.fromkeys(max(2, int(round(x * d ** r.k))) for x in r.ratios))


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


def curves(records: List[dict], regime: str, learner: str,
           key: str = "test_mse") -> Dict[int, Dict[int, Dict[int, Optional[float]]]]:
    """{d: {seed: {n: value}}} of one regime and learner (records without a regime field,
    from before there were regimes, count as the asked one)."""
    out: dict = {}
    for r in records:
        if r.get("learner") == learner and r.get("regime", regime) == regime:
            out.setdefault(r["d"], {}).setdefault(r["seed"], {})[r["n"]] = r.get(key)
    return out


def median_curve(per_seed: Dict[int, Dict[int, Optional[float]]], seeds: List[int],
                 missing: float = math.inf) -> tuple:
    """(ns, medians over `seeds` (repeats allowed) at every n all of them have); a missing
    or non-finite value counts as `missing` (an error: inf; a correlation: 0)."""
    ns = sorted(set.intersection(*(set(per_seed[s]) for s in seeds)))
    meds = []
    for n in ns:
        vals = [per_seed[s][n] for s in seeds]
        vals = [v if v is not None and math.isfinite(v) else missing for v in vals]
        meds.append(float(np.median(vals)))
    return ns, meds


def scaling(records: List[dict], regime: str, learner: str, target: float, bootstrap: int,
            seed: int = 0) -> tuple:
    """(n_star {d: n* or None}, slope or None) for one regime and learner, n* on the median
    error curve over seeds. slope = {"value", "low", "high", "local", "censored"}: the
    least-squares slope of log n* vs log d; its 95 % interval is the 2.5-97.5 % range over
    `bootstrap` resamples of the seeds (with replacement, per d); a resample whose median
    curve misses the target at some d counts as +inf (that d in the upper half of the dims)
    or -inf (lower half), `censored` of them; `local`: the slopes between consecutive d;
    `n_star_interval`: {d: [low, high]}, the same resamples' 95 % range of n*(d) (inf: missed).
    Records of several runs pool, e.g. the jobs of a sweep over d."""
    cur = curves(records, regime, learner)
    dims = sorted(cur)
    stars = {d: n_star(*median_curve(cur[d], sorted(cur[d])), target) for d in dims}
    value = _slope(dims, [stars[d] for d in dims])
    if value is None:
        return stars, None
    local = [_slope([a, b], [stars[a], stars[b]]) for a, b in zip(dims, dims[1:])]
    rng = np.random.default_rng(seed)
    draws, censored, per_d = [], 0, {d: [] for d in dims}
    for _ in range(bootstrap):
        resampled = []
        for d in dims:
            seeds = sorted(cur[d])
            pick = [seeds[i] for i in rng.integers(0, len(seeds), len(seeds))]
            resampled.append(n_star(*median_curve(cur[d], pick), target))
            per_d[d].append(math.inf if resampled[-1] is None else resampled[-1])
        s = _slope(dims, resampled)
        if s is None:
            censored += 1
            upper = [d for d, v in zip(dims, resampled) if v is None]
            s = math.inf if max(upper) > float(np.median(dims)) else -math.inf
        draws.append(s)
    low, high = _percentiles(draws)
    return stars, {"value": value, "low": low, "high": high, "local": local, "censored": censored,
                   "n_star_interval": {d: list(_percentiles(v)) for d, v in per_d.items()}}


def _percentiles(draws: List[float]) -> tuple:
    """(2.5 %, 97.5 %) order statistics of the draws, taken outwards (they may be +-inf);
    (None, None) without draws."""
    if not draws:
        return None, None
    return (float(np.percentile(draws, 2.5, method="lower")),
            float(np.percentile(draws, 97.5, method="higher")))


def _slope(dims: List[int], stars: List[Optional[float]]) -> Optional[float]:
    if len(dims) < 2 or any(s is None for s in stars):
        return None
    return float(np.polyfit(np.log(dims), np.log(stars), 1)[0])


def collapse(records: List[dict], regime: str, learner: str, r, bootstrap: int,
             seed: int = 0) -> Optional[dict]:
    """How far the median corr(feature, p) curves of different d lie apart at equal
    n / d^k: at each ratio of the grid that every d has, the spread max_d - min_d of the
    median over seeds; the statistic is the largest spread, with a 95 % bootstrap interval
    over seeds (resampled per d). None when fewer than 2 d share a ratio."""
    cur = curves(records, regime, learner, "corr")
    dims = sorted(cur)
    if len(dims) < 2:
        return None

    def at_ratio(d, seeds):
        ns, meds = median_curve(cur[d], seeds, missing=0.0)
        return {_ratio_index(n, d, r): m for n, m in zip(ns, meds)}

    def spread(per_d):
        shared = set.intersection(*(set(v) for v in per_d.values()))
        if not shared:
            return None, {}
        by = {i: max(v[i] for v in per_d.values()) - min(v[i] for v in per_d.values())
              for i in sorted(shared)}
        return max(by.values()), by

    value, by = spread({d: at_ratio(d, sorted(cur[d])) for d in dims})
    if value is None:
        return None
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        per_d = {}
        for d in dims:
            seeds = sorted(cur[d])
            per_d[d] = at_ratio(d, [seeds[i] for i in rng.integers(0, len(seeds), len(seeds))])
        s, _ = spread(per_d)
        if s is not None:
            draws.append(s)
    low, high = _percentiles(draws)
    worst = max(by, key=by.get)
    return {"value": value, "low": low, "high": high, "dims": dims,
            "at_ratio": {fmt(r.ratios[i]): v for i, v in by.items()}, "worst_ratio": r.ratios[worst]}


def _ratio_index(n: int, d: int, r) -> int:
    """The grid ratio a record's n came from (the nearest in log n / d^k)."""
    x = math.log(n / d ** r.k)
    return min(range(len(r.ratios)), key=lambda i: abs(math.log(r.ratios[i]) - x))


# ---- the claims ------------------------------------------------------------------------------

def _study(records, regime: str, learner: str, r, c, all_dims: List[int]) -> Optional[dict]:
    """What the claims need to know of one learner's records: n*(d), the slope and whether
    its interval can be trusted (every d of the records reached inside the learner's grid,
    not at its first point, at least 2 seeds per d). A d without cells of this learner
    (every n above its max_n) counts as not reached."""
    cur = curves(records, regime, learner)
    if not cur:
        return None
    stars, slope = scaling(records, regime, learner, r.target_error, c.bootstrap)
    dims, edge, one_seed = sorted(cur), [], []
    unreached = {d: (None, None) for d in all_dims if d not in cur}
    for d in dims:
        ns, errs = median_curve(cur[d], sorted(cur[d]))
        if stars[d] is None:
            unreached[d] = (ns[-1], errs[-1]) if ns else (None, None)
        elif ns and stars[d] <= ns[0]:
            edge.append(d)
        if len(cur[d]) < 2:
            one_seed.append(d)
    problems = []
    if len(all_dims) < 2:
        problems.append(f"only d = {all_dims[0] if all_dims else '-'} measured: a slope needs at "
                        "least 2 dimensions (pool a sweep over d with quadrun-report)")
    if unreached:
        problems.append("target not reached inside the grid at d = "
                        + ", ".join(str(d) for d in sorted(unreached)))
    if edge:
        problems.append("n* at the grid's first n (an upper bound) at d = "
                        + ", ".join(map(str, edge)) + f": start hierpoly.{regime}.ratios lower")
    if one_seed and len(dims) >= 2 and not unreached:
        problems.append("one seed at d = " + ", ".join(map(str, one_seed))
                        + f": no spread for an interval (raise hierpoly.{regime}.seeds)")
    if slope and (slope["low"] is None) and not problems:
        problems.append("no bootstrap interval (hierpoly.bootstrap = 0)")
    return {"learner": learner, "dims": all_dims, "stars": stars, "slope": slope,
            "unreached": unreached, "problems": problems,
            "interval": (slope["low"], slope["high"]) if slope and not problems else None}


def _describe(s: dict) -> str:
    stars = ", ".join(f"d={d}: {fmt(s['stars'][d])}" for d in s["dims"] if s["stars"].get(d) is not None)
    text = f"{s['learner']}: n* {stars or '-'}"
    for d, (n, e) in sorted(s["unreached"].items()):
        text += (f"; d={d}: median error {fmt(e)} at the largest n = {fmt(n)}" if n is not None
                 else f"; d={d}: no cells (every n above its max_n)")
    if s["slope"]:
        sl = s["slope"]
        text += "; slope " + fmt_interval(sl["value"], sl["low"], sl["high"])
        if len(sl["local"]) > 1:
            text += " (between consecutive d: " + ", ".join(fmt(v, 2) for v in sl["local"]) + ")"
        if sl["censored"]:
            text += f"; {sl['censored']} resamples miss the target somewhere"
    return text


def _values(s: Optional[dict]) -> dict:
    if s is None:
        return {}
    return {"n_star": {str(d): v for d, v in s["stars"].items()}, "slope": s["slope"]}


def _no_slope(curve: dict, cid, statement, source, measured, target, values) -> dict:
    """The claim of a learner whose slope has no interval: not measured when n* was reached
    at fewer than two d (or missed at some), inconclusive otherwise; why lists the problems."""
    not_reached = len(curve["dims"]) < 2 or bool(curve["unreached"])
    return claim(cid, statement, source, measured=measured, target=target,
                 verdict=NOT_MEASURED if not_reached else INCONCLUSIVE,
                 why="; ".join(curve["problems"]), values=values)


def _claim_dk(net: Optional[dict], learner: Optional[str], regime: str, r) -> dict:
    kq = r.k * r.q
    cid = f"{regime}.layerwise_dk"
    statement = (f"A three-layer network trained layerwise learns h = g(p(x)) (k = {r.k}, "
                 f"q = {r.q}) with O(d^k) samples: n*(d) grows like d^{r.k}, not d^{kq}.")
    source = f"{PAPER}: main result (abstract); the experiment of Figure 2"
    target = (f"95 % bootstrap interval of the slope of log n* vs log d (n* at median test MSE "
              f"/ Var h = {fmt(r.target_error)}) contains k = {r.k}"
              + (f" and excludes kq = {kq}" if kq != r.k else ""))
    if net is None:
        return claim(cid, statement, source, measured="no layerwise or joint records",
                     target=target, verdict=NOT_MEASURED,
                     why=f"add layerwise (or joint) to hierpoly.{regime}.learners")
    measured = _describe(net)
    values = {"learner": learner, **_values(net)}
    if net["interval"] is None:
        return _no_slope(net, cid, statement, source, measured, target, values)
    low, high = net["interval"]
    span = f"[{fmt(low)}, {fmt(high)}]"
    if low <= r.k <= high and kq != r.k and low <= kq <= high:
        verdict, why = INCONCLUSIVE, (f"the interval {span} contains both k = {r.k} and kq = "
                                      f"{kq}: too wide to tell d^k from d^kq (more seeds or a "
                                      "wider d range)")
    elif low <= r.k <= high:
        verdict, why = HOLDS, f"the interval {span} contains {r.k} and excludes {kq}"
    else:
        verdict, why = FAILS, (f"the interval {span} lies {'below' if high < r.k else 'above'} "
                               f"k = {r.k}")
    return claim(cid, statement, source, measured=measured, target=target, verdict=verdict,
                 why=why, values=values)


def _claim_kernel_slope(kernel: Optional[dict], learner: str, regime: str, r, suffix: str) -> dict:
    cid = f"{regime}.kernel_slope{suffix}"
    statement = (f"Kernel methods need ~d^(kq) = d^{r.k * r.q} samples: the kernel's n*(d) grows "
                 f"faster than d^k = d^{r.k}.")
    source = f"{PAPER}: kernel methods require ~Theta(d^kq) samples (abstract)"
    target = f"95 % bootstrap interval of the kernel's slope lies above k = {r.k}"
    if kernel is None:
        return claim(cid, statement, source, measured=f"no {learner} records", target=target,
                     verdict=NOT_MEASURED, why=f"add {learner} to hierpoly.{regime}.learners")
    measured, values = _describe(kernel), {"learner": learner, **_values(kernel)}
    if kernel["interval"] is None:
        return _no_slope(kernel, cid, statement, source, measured, target, values)
    low, high = kernel["interval"]
    verdict = above(low, high, r.k)
    why = {HOLDS: f"the interval [{fmt(low)}, {fmt(high)}] lies above {r.k}",
           FAILS: f"the interval [{fmt(low)}, {fmt(high)}] lies below {r.k}",
           INCONCLUSIVE: f"the interval [{fmt(low)}, {fmt(high)}] contains {r.k}"}[verdict]
    return claim(cid, statement, source, measured=measured, target=target, verdict=verdict,
                 why=why, values=values)


def _claim_kernel_more(net: Optional[dict], kernel: Optional[dict], three: Optional[str],
                       learner: str, regime: str, r, suffix: str) -> dict:
    cid = f"{regime}.kernel_more{suffix}"
    statement = (f"Kernel methods need more samples than the three-layer network: the kernel's "
                 f"n*(d) grows faster (d^{r.k * r.q} against d^{r.k}).")
    source = f"{PAPER}: a strict improvement over kernel methods (abstract)"
    target = "the kernel's slope interval lies wholly above the three-layer network's"
    missing = [name for name, s in (("layerwise or joint", net), (learner, kernel)) if s is None]
    if missing:
        return claim(cid, statement, source, measured="no " + " or ".join(missing) + " records",
                     target=target, verdict=NOT_MEASURED,
                     why="add " + " and ".join(missing) + f" to hierpoly.{regime}.learners")
    measured = _describe(net) + " | " + _describe(kernel)
    values = {"learner": three, three: _values(net), learner: _values(kernel)}
    if net["interval"] is not None and kernel["interval"] is not None:
        (nl, nh), (kl, kh) = net["interval"], kernel["interval"]
        spans = f"{learner} [{fmt(kl)}, {fmt(kh)}], {three} [{fmt(nl)}, {fmt(nh)}]"
        if kl > nh:
            verdict, why = HOLDS, f"the kernel's interval lies above: {spans}"
        elif kh < nl:
            verdict, why = FAILS, f"the kernel's interval lies below: {spans}"
        else:
            verdict, why = INCONCLUSIVE, (f"the intervals overlap: {spans}; more seeds or a wider "
                                          "d range would separate them")
        return claim(cid, statement, source, measured=measured, target=target, verdict=verdict,
                     why=why, values=values)
    why = []
    if kernel["unreached"]:
        why.append(f"{learner} does not reach the target inside its grid at d = "
                   + ", ".join(map(str, sorted(kernel["unreached"])))
                   + " (evidence that it needs more samples, but no slope to compare)")
    why += [f"{learner}: {p}" for p in kernel["problems"] if not p.startswith("target not reached")]
    why += [f"{three}: {p}" for p in net["problems"]]
    verdict = NOT_MEASURED if len(net["dims"]) < 2 else INCONCLUSIVE
    return claim(cid, statement, source, measured=measured, target=target, verdict=verdict,
                 values=values, why="; ".join(why))


def _claim_collapse(records, three: Optional[str], regime: str, r, c) -> dict:
    cid = f"{regime}.feature_collapse"
    statement = (f"Stage 1 recovers the feature p with O(d^k) samples: corr(learned feature, p) "
                 f"depends on n only through n/d^{r.k}, so its curves for different d collapse.")
    source = f"{PAPER}: proof outline (abstract: the initial stage recovers p with O(d^k) samples)"
    target = (f"largest spread across d of the median |corr(feature, p)| at equal n/d^{r.k} "
              f"below {fmt(c.collapse_bound)} (95 % bootstrap interval)")
    if three is None:
        return claim(cid, statement, source, measured="no layerwise or joint records",
                     target=target, verdict=NOT_MEASURED,
                     why=f"add layerwise (or joint) to hierpoly.{regime}.learners")
    s = collapse(records, regime, three, r, c.bootstrap)
    if s is None:
        return claim(cid, statement, source, measured=f"{three}: fewer than 2 d share a ratio",
                     target=target, verdict=NOT_MEASURED,
                     why="collapse needs at least 2 dimensions on the same n/d^k grid")
    spreads = ", ".join(f"{k}: {fmt(v, 2)}" for k, v in s["at_ratio"].items())
    measured = (f"{three}, d = {', '.join(map(str, s['dims']))}: largest spread "
                f"{fmt_interval(s['value'], s['low'], s['high'])} at n/d^{r.k} = "
                f"{fmt(s['worst_ratio'])}; spread per n/d^{r.k}: {spreads}")
    bound = c.collapse_bound
    if s["low"] is None:
        verdict, why = INCONCLUSIVE, "no bootstrap interval (hierpoly.bootstrap = 0)"
    elif s["high"] < bound:
        verdict, why = HOLDS, f"the interval [{fmt(s['low'])}, {fmt(s['high'])}] lies below {fmt(bound)}"
    elif s["low"] > bound:
        verdict, why = FAILS, (f"the interval [{fmt(s['low'])}, {fmt(s['high'])}] lies above "
                               f"{fmt(bound)}: at n/d^{r.k} = {fmt(s['worst_ratio'])} the curves differ")
    else:
        verdict, why = INCONCLUSIVE, (f"the interval [{fmt(s['low'])}, {fmt(s['high'])}] contains "
                                      f"{fmt(bound)} (more seeds would decide)")
    return claim(cid, statement, source, measured=measured, target=target, verdict=verdict,
                 why=why, values={"learner": three, **s})


# ---- learners --------------------------------------------------------------------------------

def _streams(target, seed: int, d: int, chunk: int) -> dict:
    """The three sample streams of one (d, seed): train (stage 1, and every per-n learner),
    fresh (layerwise stage 2) and test; each yields (x, p, h) pieces of rows [start, stop)."""
    seeds = {name: derive_seed(seed, name, d) for name in ("train", "fresh", "test")}
    return {name: (lambda a, b, s=s: target.stream(s, a, b, chunk)) for name, s in seeds.items()}


def _stopper(ctx):
    from quadrun.training import Interrupted

    def stop():
        if ctx.stop_requested:
            raise Interrupted("stopped inside a streamed pass; finished cells are kept")
    return stop


def _layerwise_path(c, r, d, target, seed, ctx) -> dict:
    """Every n of the layerwise grid of one (regime, d, seed) from one pass: {n: record}."""
    import torch

    from quadrun.data.polynomials import HermiteFeatures
    from quadrun.nn.hierarchical import SIGMA1 as ACT, layerwise_path, outer_init

    lc = c.layerwise
    ns = [n for n in grid(r, d) if n <= _max_n(c, "layerwise")]
    points = [(n - n2, n2) for n in ns for n2 in [max(1, int(round(lc.stage2_fraction * n)))]]
    gen = torch.Generator().manual_seed(derive_seed(seed, "model", "layerwise", d))
    if lc.features == "hermite":
        featurize = HermiteFeatures(d, r.k)
        features = featurize.count
    else:
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
        device=ctx.device, stop=_stopper(ctx), compute_dtype=getattr(torch, c.gram_dtype))
    return {n: _record(res["test_mse"], res["corr"], res["seconds"])
            for n, res in zip(ns, results)}


def _hermite_kernel_path(c, r, d, target, seed, ctx) -> dict:
    """Ridge on the Hermite features of degree <= kq at every n of the grid, one pass."""
    import torch

    from quadrun.data.polynomials import HermiteFeatures
    from quadrun.nn.hierarchical import StreamScore
    from quadrun.nn.ridge import ridge_path

    ns = [n for n in grid(r, d) if n <= _max_n(c, "hermite_kernel")]
    phi = HermiteFeatures(d, r.k * r.q)
    st = _streams(target, seed, d, c.chunk)
    path = ridge_path(phi, lambda i, j: ((x, h) for x, _, h in st["train"](i, j)), ns, phi.count,
                      loo_rows=c.hermite_kernel.loo_rows, device=ctx.device,
                      compute_dtype=getattr(torch, c.gram_dtype), stop=_stopper(ctx))
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


def _record(mse: float, corr: Optional[float], seconds: float, status: str = "completed") -> dict:
    ok = status == "completed" and mse is not None and math.isfinite(mse)
    return {"test_mse": mse if ok else None,
            "corr": corr if (ok and corr is not None and math.isfinite(corr)) else None,
            "seconds": seconds, "status": status if ok or status != "completed" else "diverged"}


def _one_n(c, r, learner, d, n, target, seed, ctx, regime) -> dict:
    """A learner that trains once per n (kernel, joint, relu2): the first n samples of the
    train stream, scored on the streamed test set."""
    import torch

    from quadrun.nn.hierarchical import StreamScore

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
    has_feature = learner in THREE_LAYER
    if status != "completed" or score.n == 0:
        return _record(None, None, seconds, status)
    return _record(score.mse(), score.corr() if has_feature else None, seconds, status)


# each trains on `data` = (x, p, h) and returns (predict, fit status): predict(x) -> (test
# predictions, feature or None); `gen` seeds its random parts, `name` labels its training

def _kernel(c, d, data, gen, ctx, name):
    from quadrun.nn.kernels import ntk_fit

    x, _, h = data
    predict, _ = ntk_fit(x.to(ctx.device), h.to(ctx.device), c.kernel.exact_max_n,
                         c.kernel.rf_features, gen)
    return (lambda xt: (predict(xt.to(ctx.device)), None)), "completed"


def _train(net, data, ctx, tc, name, groups=None) -> str:
    """Adam through the one loop on float32 copies of the data; returns the fit status."""
    import torch

    from quadrun.training import TensorBatches, fit

    x, _, h = data
    batches = TensorBatches([x.float().to(ctx.device), h.float().to(ctx.device)], tc.batch_size)
    res = fit(net, batches, lambda m, b: torch.mean((m(b[0]).reshape(-1) - b[1]) ** 2), ctx,
              tc, param_groups=groups, checkpoint=False, name=name)
    return res.status


def _joint(c, d, data, gen, ctx, name):
    from quadrun.nn.hierarchical import ThreeLayerNet, init_mup, mup_param_groups

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
    from quadrun.nn.hierarchical import two_layer_relu

    rc = c.relu2
    net = two_layer_relu(d, rc.width, gen).to(ctx.device)
    status = _train(net, data, ctx, rc.train, name)
    return (lambda xt: (net(xt.float().to(ctx.device)).reshape(-1), None)), status


TRAIN = {"joint": _joint, "kernel": _kernel, "relu2": _relu2}


def _max_n(c, learner: str) -> int:
    cap = {"layerwise": c.layerwise.max_n, "hermite_kernel": c.hermite_kernel.max_n,
           "joint": c.joint.max_n, "relu2": c.relu2.max_n, "kernel": c.kernel.max_n}[learner]
    return cap or 2 ** 62


def _regimes(records, c) -> list:
    """The configured regimes, then any other regime the records hold (pooled runs)."""
    found = [r.get("regime") for r in records if r.get("regime") in REGIMES]
    return list(dict.fromkeys(list(c.regimes) + found))


def _learners(records, regime: str) -> list:
    present = {r.get("learner") for r in records if r.get("regime", regime) == regime}
    return [l for l in LEARNERS if l in present]


def _median_panel(ax, cur, k, missing) -> None:
    """Median over seeds vs n/d^k, one curve per d, with a 95 % bootstrap band."""
    for d in sorted(cur):
        seeds = sorted(cur[d])
        ns, meds = median_curve(cur[d], seeds, missing)
        lows, highs = [], []
        for n in ns:
            vals = [cur[d][s][n] for s in seeds]
            vals = [v if v is not None and math.isfinite(v) else missing for v in vals]
            _, lo, hi = bootstrap_interval(vals, n=200)
            lows.append(lo if lo is not None else np.nan)
            highs.append(hi if hi is not None else np.nan)
        xs = [n / d ** k for n in ns]
        line, = ax.plot(xs, meds, "o-", ms=3, label=f"d={d} ({len(seeds)} seeds)")
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, lw=0)
    if cur:
        ax.legend(fontsize=7)


def _latest(ctx, kind: str, key: tuple, build):
    """ctx.shared for one kind of shared object (a target, a one-pass learner's results),
    keeping only the newest key of that kind in memory: cells run in (regime, d,
    replicate, learner, n) order, so an older one is never needed again."""
    full = ("hierpoly", kind) + key
    for old in [k for k in ctx.memo if isinstance(k, tuple) and k[:2] == full[:2] and k != full]:
        del ctx.memo[old]
    return ctx.shared(full, build)

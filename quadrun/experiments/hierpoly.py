"""Hierarchical polynomials (Wang, Nichani & Lee, ICLR 2024): sample complexity of a
three-layer network trained layerwise (or jointly) against kernel and two-layer baselines.

Target h = g(p(x)), x ~ N(0, I_d), p of degree k, g of degree q (quadrun.data.polynomials).
For every (d, replicate seed, n = ratio * d^k) each learner trains on the same n samples
and is scored on a big fresh test set:

- ``layerwise``: the theorem's protocol (quadrun.nn.hierarchical.fit_layerwise); its n
  samples are split into n1 (stage 1) and n2 = stage2_fraction * n fresh ones (stage 2);
- ``joint``: the paper's protocol, every layer trained with Adam from a muP start;
- ``kernel``: ReLU NTK ridge (exact up to kernel.exact_max_n samples, NTK features beyond);
- ``relu2``: a two-layer ReLU network trained end to end with Adam.

Per point: test MSE relative to the test variance of h, |corr(feature, p)| for the learners
with a feature (sign is arbitrary under joint training), seconds. Per learner: n*(d), the
smallest n at which the seed-averaged error curve reaches `target_error` (interpolated
linearly in log n vs log error), and the log-log slope of n* against d with a bootstrap
interval over seeds; null where the target is not reached for every d.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from quadrun.data.polynomials import INNER, OUTER, SPECTRA, make_target
from quadrun.nn.hierarchical import (SIGMA1, ThreeLayerNet, correlation, fit_layerwise,
                                     init_layerwise, init_mup, mup_param_groups, two_layer_relu)
from quadrun.nn.kernels import ntk_regression
from quadrun.schema import ConfigError, TrainConfig, spec
from quadrun.training import Interrupted, TensorBatches, fit

LEARNERS = ("layerwise", "joint", "kernel", "relu2")


@dataclass
class LayerwiseConfig:
    sigma1: str = spec("square", choices=sorted(SIGMA1), help="first-layer activation")
    width1: int = spec(0, ge=0, help="m1, features of the first layer; 0: d^k")
    width2: int = spec(1000, ge=1, help="m2, random ReLU units of the outer layer")
    stage2_fraction: float = spec(0.25, gt=0, lt=1, help="share of the n samples kept fresh for stage 2")
    bias_range: float = spec(4.0, gt=0, help="outer biases b_j ~ U(-range, range), g at unit variance")


@dataclass
class JointConfig:
    sigma1: str = spec("cube", choices=sorted(SIGMA1))
    width1: int = spec(0, ge=0, help="m1; 0: d^2 (the paper)")
    width2: int = spec(1000, ge=1, help="m2 (the paper: 1000)")
    epochs: int = spec(50, ge=1)
    batch_size: int = spec(256, ge=1)
    lr: float = spec(1e-3, gt=0, le=10, help="Adam lr of the input-like weights; readouts get lr/width")
    weight_decay: float = spec(0.0, ge=0, le=1)
    max_n: int = spec(0, ge=0, help="skip larger n (cost cap); 0: no cap")


@dataclass
class Relu2Config:
    width: int = spec(512, ge=1)
    epochs: int = spec(50, ge=1)
    batch_size: int = spec(256, ge=1)
    lr: float = spec(1e-3, gt=0, le=10)
    weight_decay: float = spec(0.0, ge=0, le=1)
    max_n: int = spec(0, ge=0, help="skip larger n (cost cap); 0: no cap")


@dataclass
class KernelConfig:
    exact_max_n: int = spec(2048, ge=1, help="exact NTK ridge up to this n; NTK features beyond")
    rf_features: int = spec(2048, ge=4, help="width x (d + 2) of the random network's NTK features")
    max_n: int = spec(0, ge=0, help="skip larger n (cost cap); 0: no cap")


@dataclass
class Config:
    inner: str = spec("quadratic", choices=list(INNER), help="inner polynomial p")
    k: int = spec(2, ge=1, le=8, help="degree of p (quadratic: 2)")
    spectrum: str = spec("goe", choices=list(SPECTRA), help="spectrum of A for the quadratic p")
    outer: str = spec("power", choices=list(OUTER), help="g(z) = z^q or He_q(z), normalised")
    q: int = spec(3, ge=1, le=8, help="degree of g")
    dims: List[int] = spec([8, 16, 32], ge=2)
    ratios: List[float] = spec([1, 2, 4, 8, 16, 32, 64], gt=0, help="n = ratio * d^k")
    replicates: int = spec(3, ge=1, help="seeds per (d, n); a replicate's seed is 1000*seed + r")
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


def _seed(*parts) -> int:
    """A stable 31-bit seed from any tuple of names and numbers."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def _train_config(c, epochs: int) -> "TrainConfig":
    return OmegaConf.structured(TrainConfig(
        epochs=epochs, batch_size=c.batch_size, optimizer="adam", lr=c.lr,
        weight_decay=c.weight_decay, schedule="cosine", eval_every=epochs, log_every=10 ** 9))


# ---- learners: each trains on `data` and returns (test predictions, feature on the test set
# or None, fit status); `gen` seeds its random parts, `name` labels its training in the log --

def _layerwise(c, d, data, test, gen, ctx, name):
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
    x, _, h = data
    pred, _ = ntk_regression(x.to(ctx.device), h.to(ctx.device), test[0].to(ctx.device),
                             c.kernel.exact_max_n, c.kernel.rf_features, gen)
    return pred, None, "completed"


def _train(net, data, ctx, c, name, groups=None) -> str:
    """Adam through the one loop on float32 copies of the data; returns the fit status."""
    x, _, h = data
    batches = TensorBatches([x.float().to(ctx.device), h.float().to(ctx.device)], c.batch_size)
    res = fit(net, batches, lambda m, b: torch.mean((m(b[0]).reshape(-1) - b[1]) ** 2), ctx,
              _train_config(c, c.epochs), param_groups=groups, checkpoint=False, name=name)
    return res.status


def _joint(c, d, data, test, gen, ctx, name):
    jc = c.joint
    net = ThreeLayerNet(d, jc.width1 or d * d, jc.width2, jc.sigma1)
    init_mup(net, gen)
    status = _train(net.to(ctx.device), data, ctx, jc, name, mup_param_groups(net, jc.lr))
    xt = test[0].float().to(ctx.device)
    with torch.no_grad():
        return net(xt), net.feature(xt), status


def _relu2(c, d, data, test, gen, ctx, name):
    rc = c.relu2
    net = two_layer_relu(d, rc.width, gen).to(ctx.device)
    status = _train(net, data, ctx, rc, name)
    with torch.no_grad():
        return net(test[0].float().to(ctx.device)).reshape(-1), None, status


TRAIN = {"layerwise": _layerwise, "joint": _joint, "kernel": _kernel, "relu2": _relu2}


def _max_n(c, learner: str) -> int:
    cap = {"joint": c.joint.max_n, "relu2": c.relu2.max_n, "kernel": c.kernel.max_n}.get(learner, 0)
    return cap or 2 ** 62


def evaluate_point(c, learner: str, d: int, data, test, gen, ctx, name: str) -> dict:
    """Train one learner on `data` and score it on `test`: relative MSE, |corr|, seconds."""
    t0 = time.perf_counter()
    pred, feat, status = TRAIN[learner](c, d, data, test, gen, ctx, name)
    seconds = time.perf_counter() - t0
    _, pt, ht = test
    pred = pred.double().cpu()
    mse = float(((pred - ht) ** 2).mean() / ht.var())
    ok = status == "completed" and math.isfinite(mse)
    corr = abs(correlation(feat.cpu(), pt)) if (feat is not None and ok) else None
    return {"test_mse": mse if ok else None, "corr": corr, "seconds": seconds, "status": status}


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


def _curves(points: List[dict], learner: str) -> Dict[int, Dict[int, Dict[int, Optional[float]]]]:
    """{d: {seed: {n: test_mse}}} for one learner."""
    out: dict = {}
    for p in points:
        if p["learner"] == learner:
            out.setdefault(p["d"], {}).setdefault(p["seed"], {})[p["n"]] = p["test_mse"]
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


def scaling(points: List[dict], learner: str, target: float, bootstrap: int,
            seed: int = 0) -> tuple:
    """(n_star {d: n* or None}, slope {"value", "low", "high"} or None) for one learner,
    from the seed-averaged error curves; the interval is the 2.5-97.5 % range of the slope
    over `bootstrap` resamples of the seeds (drawn with replacement, per d). Usable on the
    points of several runs at once, e.g. the jobs of a sweep over d."""
    curves = _curves(points, learner)
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


# ---- plots and table ---------------------------------------------------------------------

def _plots(ctx, points, learners, k, target, stars, slopes):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(learners), figsize=(4.2 * len(learners), 3.6), squeeze=False)
    for ax, learner in zip(axes[0], learners):
        curves = _curves(points, learner)
        for d in sorted(curves):
            ns, errs = _mean_curve(curves[d], sorted(curves[d]))
            ax.plot([n / d ** k for n in ns], errs, "o-", label=f"d={d}")
        ax.axhline(target, color="grey", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", title=learner, xlabel=f"n / d^{k}",
               ylabel="test MSE / Var h")
        if curves:
            ax.legend(fontsize=8)
    ctx.save_figure(fig, "error_vs_n_over_dk")

    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    for learner in learners:
        ds = [d for d, s in stars[learner].items() if s is not None]
        if not ds:
            continue
        ys = [stars[learner][d] for d in ds]
        sl = slopes[learner]
        label = learner + (f" (slope {sl['value']:.2f})" if sl else "")
        ax.plot(ds, ys, "o-", label=label)
    ax.set(xscale="log", yscale="log", xlabel="d", ylabel=f"n* (error {target})",
           title="samples needed vs dimension")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ctx.save_figure(fig, "nstar_vs_d")


def _table(points, results, learners, k) -> str:
    lines = [f"| learner | d | n | n/d^{k} | test MSE / Var h (mean ± sd) | corr(feature, p) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for learner in learners:
        rows: dict = {}
        for p, r in zip(points, results):
            if p["learner"] == learner:
                rows.setdefault((p["d"], p["n"]), []).append((p, r))
        for (d, n), group in sorted(rows.items()):
            mses = [p["test_mse"] for p, _ in group if p["test_mse"] is not None]
            corrs = [p["corr"] for p, _ in group if p["corr"] is not None]
            secs = np.mean([r["seconds"] for _, r in group])
            mse = f"{np.mean(mses):.3f} ± {np.std(mses):.3f}" if mses else "diverged"
            corr = f"{np.mean(corrs):.3f}" if corrs else "-"
            lines.append(f"| {learner} | {d} | {n} | {n / d ** k:g} | {mse} | {corr} | {secs:.2f} |")
    return "\n".join(lines) + "\n"


# ---- the run -------------------------------------------------------------------------------

def run(cfg, ctx) -> dict:
    c = cfg
    points, results = [], []
    for d in c.dims:
        for r in range(c.replicates):
            seed = 1000 * int(ctx.cfg.seed) + r
            target = make_target(c.inner, d, c.k, c.q, _seed("target", d, seed), c.outer, c.spectrum)
            test = target.sample(c.n_test, _seed("test", d, seed))
            for ratio in c.ratios:
                n = max(2, int(round(ratio * d ** c.k)))
                cache: dict = {}

                def data():  # drawn only when some learner still needs it (resume)
                    if "xy" not in cache:
                        cache["xy"] = target.sample(n, _seed("train", d, seed, n))
                    return cache["xy"]

                for learner in c.learners:
                    if n > _max_n(c, learner):
                        continue
                    if ctx.stop_requested:
                        raise Interrupted(f"stopped before {learner} d={d} n={n} seed={seed}")
                    key = f"{learner}/d{d}/n{n}/seed{seed}"
                    gen = torch.Generator().manual_seed(_seed("model", learner, d, n, seed))
                    res = ctx.stage(key, lambda: evaluate_point(c, learner, d, data(), test, gen,
                                                                ctx, key))
                    point = {"learner": learner, "d": d, "n": n, "seed": seed,
                             "test_mse": res["test_mse"], "corr": res["corr"]}
                    points.append(point)
                    results.append(res)
                    ctx.log(len(points), {"point/test_mse": res["test_mse"], "point/corr": res["corr"],
                                          "point/seconds": res["seconds"], "point/d": d,
                                          "point/n": n, "point/learner": learner})
    learners = list(c.learners)
    stars, slopes = {}, {}
    for learner in learners:
        stars[learner], slopes[learner] = scaling(points, learner, c.target_error, c.bootstrap,
                                                  seed=int(ctx.cfg.seed))
    _plots(ctx, points, learners, c.k, c.target_error, stars, slopes)
    ctx.write_text("table.md", _table(points, results, learners, c.k))
    seconds = {l: float(sum(r["seconds"] for p, r in zip(points, results) if p["learner"] == l))
               for l in learners}
    diverged = sum(r["status"] != "completed" for r in results)
    return {"points": points, "slope": slopes, "n_star": stars, "target_error": c.target_error,
            "k": c.k, "seconds": seconds, "diverged_points": diverged}


# ---- pooling the jobs of a sweep over d ------------------------------------------------------

def combine(folder) -> dict:
    """Pool the `points` of every completed run under `folder` (e.g. the paper sweep, one
    job per d) and return {"n_star", "slope", "runs"} computed across all of them."""
    import json
    from pathlib import Path

    points, runs, meta = [], 0, {}
    for path in sorted(Path(folder).rglob("summary.json")):
        s = json.loads(path.read_text())
        if s.get("experiment") != "hierpoly" or s.get("status") != "completed":
            continue
        runs += 1
        points += s.get("points", [])
        meta = {"target_error": s.get("target_error"), "k": s.get("k")}
    if not runs:
        raise SystemExit(f"no completed hierpoly runs under {folder}")
    target = meta["target_error"]
    out = {"runs": runs, "target_error": target, "n_star": {}, "slope": {}}
    for learner in sorted({p["learner"] for p in points}):
        out["n_star"][learner], out["slope"][learner] = scaling(points, learner, target, 1000)
    return out


def main(argv=None) -> None:
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m quadrun.experiments.hierpoly SWEEP_FOLDER", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(combine(args[0]), indent=2))


if __name__ == "__main__":
    main()

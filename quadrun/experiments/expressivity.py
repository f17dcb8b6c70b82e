"""Expressivity of quadratic vs conventional networks (Fan, Li, Wang, Lai, Wang, "Expressivity
and trainability of quadratic networks", arXiv 2110.06081, IEEE TNNLS 2023: its two
expressivity theorems, one from algebraic geometry, one from spline theory).

Two parts, as two kinds of cells in one run:

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
2. part="fit", cells {target, model, seed}: one training of a conventional (ReLU, x^2, tanh)
   or quadratic (full or compact, ReLU) MLP at a matched parameter budget (every model within
   5 % of `budget`) on a synthetic target on [-1, 1]^d; `seed` is the initialisation
   replicate. The record holds the model's widths and parameter count, the training status
   (completed | diverged), the test and training MSE, and for seed 0 the model's outputs on
   the plot grid (`plot`, a list the report's tables skip).

Claims: the quadratic network's variety has a larger (exact) dimension than the
conventional one's for every listed architecture (with and without bias; the ratio per
row), and at equal budget the quadratic networks fit the spline and radial targets better
than the best conventional network (Welch interval over seeds on log10 test MSE).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List

from quadrun.claims import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, claim, fmt, welch_interval
from quadrun.nn.modular import PRIMES, check_prime
from quadrun.schema import ConfigError, TrainConfig, spec, train_config
from quadrun.vocab import derive_seed

# Targets on [-1, 1]^d: name -> input dimension (the functions are `_target_fn`'s).
TARGET_DIMS = {
    "radial": 2,        # cos(pi ||x||^2)
    "product": 3,       # x1 x2 x3
    "spline": 1,        # piecewise quadratic, 4 knots
    "oscillatory": 2,   # sin(pi x1) cos(pi x2)
}
SPLINE_KNOTS = (-0.6, -0.2, 0.2, 0.6)
SPLINE_CURVATURE = 50.0

MODELS = {  # name -> (layer kind, activation)
    "relu_mlp": ("conventional", "relu"),
    "square_mlp": ("conventional", "square"),
    "tanh_mlp": ("conventional", "tanh"),
    "quad_relu": ("quadratic", "relu"),
    "compact_relu": ("compact", "relu"),
}
CONVENTIONAL = tuple(m for m, (kind, _) in MODELS.items() if kind == "conventional")
QUADRATIC = ("quad_relu", "compact_relu")
CLAIMED_TARGETS = ("spline", "radial")  # the targets of the fit claims

DIMENSION_KINDS = ("conventional", "quadratic", "compact")

SOURCE_DIM = ("Fan et al. 2023 (arXiv 2110.06081), expressivity theorem via the dimension "
              "of the functional variety (algebraic geometry)")
SOURCE_FIT = ("Fan et al. 2023 (arXiv 2110.06081), expressivity theorem via spline theory "
              "(quadratic ReLU networks are piecewise polynomial)")


@dataclass
class Config:
    # part 1: algebraic dimension
    widths: List[List[int]] = spec([[2, 2, 1], [2, 3, 1], [2, 4, 1], [3, 2, 1], [3, 3, 1],
                                    [4, 2, 1], [3, 3, 2], [2, 2, 2, 1], [3, 2, 2, 1],
                                    [3, 3, 3, 1], [2, 2, 2, 2, 1]], ge=1, le=64,
                                   help="width tuples [d0, ..., dL] for the dimension table")
    biases: List[bool] = spec([False, True], help="bias settings for the dimension table")
    dimension_kinds: List[str] = spec(["conventional", "quadratic"], choices=list(DIMENSION_KINDS),
                                      help="layer kinds of the dimension table (x^2 activation)")
    points_factor: float = spec(2.0, ge=1, le=100, help="random inputs = max(params, "
                                "points_factor * params / outputs)")
    primes: List[int] = spec(list(PRIMES), gt=2, lt=2 ** 31,
                             help="primes of the exact rank (each below 2^31); dim is the "
                                  "largest rank over them")
    float_check: bool = spec(True, help="also compute the float64 SVD rank (float_dim, gap, "
                                        "agrees) as a cross-check of the exact one")
    rtol: float = spec(1e-8, gt=0, lt=1, help="float check: singular values below rtol * s_max "
                                              "may be cut")
    min_gap: float = spec(1e6, gt=1, help="float check: smallest rank gap s_r/s_r+1 accepted; "
                                          "below it float_dim is null (unresolved)")
    # part 2: function fitting
    targets: List[str] = spec(list(TARGET_DIMS), choices=list(TARGET_DIMS))
    models: List[str] = spec(["relu_mlp", "square_mlp", "quad_relu", "compact_relu"],
                             choices=list(MODELS))
    budget: int = spec(300, ge=10, le=10_000_000, help="parameters per model (matched within 5%)")
    depth: int = spec(2, ge=1, le=16, help="hidden layers of every fitted model")
    seeds: int = spec(5, ge=1, le=100, help="initialisations per (target, model)")
    n_train: int = spec(1024, ge=1)
    n_test: int = spec(4096, ge=1)
    quad_init: str = spec("relinear", choices=["relinear", "random"])
    quad_lr_factor: float = spec(1.0, gt=0, le=100,
                                 help="lr of the quadratic parts (g, b) relative to train.lr")
    plot_grid: int = spec(24, ge=4, le=128,
                          help="seed 0's outputs are kept on plot_grid^2 inputs for the fit "
                               "plots: a plot_grid x plot_grid grid (2-D, and the 3-D slice "
                               "x3 = 0.5), a line of plot_grid^2 points (1-D)")
    # each fit (target x model x seed) trains with these; the test MSE is evaluated every
    # eval_every epochs and at the end (eval_every = epochs: at the end only)
    train: TrainConfig = train_config(optimizer="adam", lr=0.005, weight_decay=0.0,
                                      schedule="cosine", epochs=120, batch_size=128,
                                      eval_every=120, log_every=1000)


def check(cfg) -> None:
    """Widths tuples need an input and an output; every model must fit the budget."""
    from quadrun.nn.mlp import widths_for_budget

    c = cfg.expressivity
    for i, p in enumerate(c.primes):
        try:
            check_prime(p)
        except ValueError as exc:
            raise ConfigError(f"expressivity.primes[{i}]: {exc}")
    if not c.primes or len(set(c.primes)) != len(c.primes):
        raise ConfigError("expressivity.primes: give at least one prime below 2^31, each "
                          f"once, e.g. {list(PRIMES)}; got {list(c.primes)}")
    for i, w in enumerate(c.widths):
        if len(w) < 2:
            raise ConfigError(f"expressivity.widths[{i}]: {list(w)} needs at least an input "
                              "and an output width, e.g. [2, 3, 1]")
    for name in c.models:
        for target in c.targets:
            try:
                widths_for_budget(MODELS[name][0], TARGET_DIMS[target], 1, c.depth, c.budget)
            except ValueError as exc:
                raise ConfigError(f"expressivity.budget: {exc}; choose another budget or depth")


def cells(c) -> list:
    out = [{"part": "dimension", "widths": [int(w) for w in widths], "kind": kind,
            "bias": bool(bias)}
           for widths in c.widths for kind in c.dimension_kinds for bias in c.biases]
    out += [{"part": "fit", "target": target, "model": model, "seed": seed}
            for target in c.targets for model in c.models for seed in range(c.seeds)]
    return out


def measure(c, cell, ctx) -> dict:
    if cell["part"] == "dimension":
        return _measure_dimension(c, cell, ctx)
    return _measure_fit(c, cell, ctx)


def claims(records, c) -> list:
    out = [_dimension_claim(records, c, bias) for bias in (False, True)]
    out += [_fit_claim(records, c, target, quad) for target in CLAIMED_TARGETS
            for quad in QUADRATIC]
    return out


def figures(records, c, save) -> None:
    """fit_mse: test MSE per target and model (mean ± std over seeds); fit_<target>: the
    seed-0 fits against the target (from the records' `plot` values)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fits = [r for r in records if r.get("part") == "fit"]
    if not fits:
        return
    targets = _ordered([r["target"] for r in fits], c.targets)
    models = _ordered([r["model"] for r in fits], c.models)

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(models)
    for j, name in enumerate(models):
        means, stds = [], []
        for t in targets:
            mses = [_number(r.get("test_mse")) for r in fits
                    if r["target"] == t and r["model"] == name and r.get("status") == "completed"]
            mses = [m for m in mses if math.isfinite(m)]
            means.append(float(np.mean(mses)) if mses else math.nan)
            stds.append(float(np.std(mses, ddof=1)) if len(mses) > 1 else 0.0)
        ax.bar(np.arange(len(targets)) + j * width, means, width, yerr=stds, label=name)
    ax.set_xticks(np.arange(len(targets)) + 0.4 - width / 2, targets)
    ax.set_yscale("log")
    ax.set_ylabel("test MSE")
    ax.legend()
    save(fig, "fit_mse")

    for target in targets:
        plots = {}
        for r in fits:  # the first seed-0 record of each model (a sweep pools several)
            if r["target"] == target and isinstance(r.get("plot"), list):
                plots.setdefault(r["model"], np.asarray(r["plot"], dtype=float))
        if plots:
            _plot_fit(target, [m for m in models if m in plots], plots, save)


# -- targets and data ----------------------------------------------------------------------------

def _radial(x):
    import torch

    return torch.cos(math.pi * (x * x).sum(1))


def _product(x):
    return x[:, 0] * x[:, 1] * x[:, 2]


def _spline(x):
    """C^1 piecewise quadratic with knots SPLINE_KNOTS: the second derivative alternates
    +a, -a, +a, -a, +a on the five pieces, a wave between -1 and 1 (zeros at -1, -0.6, ...):
    a/2 (x+1)^2 - a/5 (x+1) + sum_k (-1)^(k+1) a relu(x - t_k)^2."""
    import torch

    t = x[:, 0]
    a = SPLINE_CURVATURE
    out = a / 2 * (t + 1) ** 2 - a / 5 * (t + 1)
    for k, knot in enumerate(SPLINE_KNOTS):
        out = out + (-1) ** (k + 1) * a * torch.relu(t - knot) ** 2
    return out


def _oscillatory(x):
    import torch

    return torch.sin(math.pi * x[:, 0]) * torch.cos(math.pi * x[:, 1])


def _target_fn(target: str):
    """The target as a function of x [N, d] (torch) -> [N]."""
    return {"radial": _radial, "product": _product, "spline": _spline,
            "oscillatory": _oscillatory}[target]


def make_data(target: str, n_train: int, n_test: int, seed: int):
    """(x_train, y_train, x_test, y_test), uniform on [-1, 1]^d, noise-free, drawn from a
    generator seeded with `seed`."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, TARGET_DIMS[target], generator=gen) * 2 - 1
    y = _target_fn(target)(x).unsqueeze(1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def plot_inputs(target: str, n: int):
    """Inputs of the fit plots: a line of n^2 points (1-D), an n x n grid (2-D), the same grid
    in the slice x3 = 0.5 (3-D)."""
    import torch

    d = TARGET_DIMS[target]
    if d == 1:
        return torch.linspace(-1, 1, n * n).unsqueeze(1)
    t = torch.linspace(-1, 1, n)
    a, b = torch.meshgrid(t, t, indexing="xy")
    x = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    if d > 2:
        x = torch.cat([x, torch.full((x.shape[0], d - 2), 0.5)], 1)
    return x


# -- measuring -----------------------------------------------------------------------------------

def _measure_dimension(c, cell, ctx) -> dict:
    import logging

    from quadrun.nn.variety import variety_dimension

    widths, kind, bias = cell["widths"], cell["kind"], cell["bias"]
    res = variety_dimension(widths, kind, bias, points_factor=c.points_factor,
                            seed=derive_seed(ctx.runtime.seed, "variety", *widths, kind, bias),
                            rtol=c.rtol, min_gap=c.min_gap, primes=c.primes,
                            float_check=c.float_check)
    log = logging.getLogger("quadrun")
    if not res["primes_agree"]:
        log.warning("exact rank of %s %s bias=%s differs between the primes %s: %s (dim is "
                    "the largest; a rank mod p can only be too small)", widths, kind, bias,
                    list(c.primes), res["ranks"])
    if c.float_check and res["agrees"] is not True:
        log.info("float64 rank of %s %s bias=%s is %s (gap %.1e), the exact rank %d",
                 widths, kind, bias, res["float_dim"], res["gap"], res["dim"])
    gap = res["gap"]
    return {"params": res["params"], "dim": res["dim"], "ranks": res["ranks"],
            "primes_agree": res["primes_agree"], "error_bound": res["error_bound"],
            "float_dim": res["float_dim"],
            # s_r / s_r+1; None for full column rank (nothing below rtol) or no float check
            "gap": gap if gap is not None and math.isfinite(gap) else None,
            "agrees": res["agrees"], "ambient": res["ambient"], "degree": res["degree"],
            "symmetries": res["symmetries"], "bound": res["bound"], "points": res["points"],
            "exact_s": round(res["exact_s"], 4),
            "float_s": None if res["float_s"] is None else round(res["float_s"], 4)}


def _measure_fit(c, cell, ctx) -> dict:
    """Train one model from init replicate `seed`; test and train MSE, seed 0's plot values."""
    import torch
    from torch.nn.functional import mse_loss

    from quadrun.devices import seeded
    from quadrun.nn.mlp import count_params, mlp, widths_for_budget
    from quadrun.nn.quadratic import param_groups
    from quadrun.training import TensorBatches, fit

    target, name, seed = cell["target"], cell["model"], cell["seed"]
    tc = c.train
    kind, activation = MODELS[name]
    widths = widths_for_budget(kind, TARGET_DIMS[target], 1, c.depth, c.budget)
    x_tr, y_tr, x_te, y_te = ctx.shared(("expressivity-data", target), lambda: tuple(
        t.to(ctx.device) for t in make_data(target, c.n_train, c.n_test,
                                            derive_seed(ctx.runtime.seed, "data", target))))
    with seeded(derive_seed(ctx.runtime.seed, "init", target, name, seed)):
        model = mlp(widths, kind=kind, activation=activation, init=c.quad_init)
    model = model.to(ctx.device)
    groups = param_groups(model, tc.lr, tc.weight_decay,
                          role_lr={"quad_g": tc.lr * c.quad_lr_factor,
                                   "quad_b": tc.lr * c.quad_lr_factor})

    def loss_fn(m, batch):
        xb, yb = batch
        return mse_loss(m(xb), yb)

    def evaluate(m):
        return {"test/mse": mse_loss(m(x_te), y_te)}

    res = fit(model, TensorBatches([x_tr, y_tr], tc.batch_size), loss_fn, ctx, tc,
              param_groups=groups, evaluate=evaluate, checkpoint=False,
              name=f"{target}/{name}/seed{seed}")
    model.eval()
    with torch.no_grad():
        test_mse = float(mse_loss(model(x_te), y_te))
        train_mse = float(mse_loss(model(x_tr), y_tr))
        out = {"model_widths": widths, "params": count_params(model), "status": res.status,
               # a diverged fit has no test MSE (its status says why)
               "test_mse": test_mse if res.status == "completed" and math.isfinite(test_mse)
               else None,
               "train_mse": train_mse if math.isfinite(train_mse) else None}
        if seed == 0:
            values = model(plot_inputs(target, c.plot_grid).to(ctx.device)).flatten().cpu()
            out["plot"] = [float(f"{v:.4g}") if math.isfinite(v) else None
                           for v in values.tolist()]
    return out


# -- claims --------------------------------------------------------------------------------------

def _dimension_claim(records, c, bias: bool) -> dict:
    label = "with bias" if bias else "without bias"
    cid = "dimension_bias" if bias else "dimension_no_bias"
    statement = ("A quadratic network has a functional variety of larger dimension than the "
                 f"conventional network of the same widths (both with x^2 activation), {label}.")
    target = ("exact dim(quadratic) > dim(conventional) for every architecture in "
              "expressivity.widths")

    def done(verdict, measured, why, values=None):
        return claim(cid, statement, SOURCE_DIM, measured=measured, target=target,
                     verdict=verdict, why=why, values=values)

    listed = [tuple(int(w) for w in widths) for widths in c.widths]
    kinds = [k for k in ("quadratic", "conventional") if k not in c.dimension_kinds]
    if bias not in [bool(b) for b in c.biases] or not listed or kinds:
        return done(NOT_MEASURED, "no dimension cells",
                    f"expressivity.biases or expressivity.widths has no {label} architecture"
                    if not kinds else "expressivity.dimension_kinds lacks " + " and ".join(kinds))
    dims: dict = {}  # (widths, kind) -> [dim or None], over the pooled records
    for r in records:
        if r.get("part") == "dimension" and bool(r.get("bias")) == bias:
            # a row whose primes disagree is unresolved (a rank mod p can only be too small)
            dim = r.get("dim") if r.get("primes_agree", True) is not False else None
            dims.setdefault((tuple(r["widths"]), r["kind"]), []).append(dim)
    if not dims:
        return done(NOT_MEASURED, "no dimension records", f"no dimension record {label}")
    rows, texts, bad, open_ = [], [], [], []
    for widths in listed:
        quad, conv = (_resolved(dims.get((widths, k))) for k in ("quadratic", "conventional"))
        name = "[" + ",".join(map(str, widths)) + "]"
        ratio = quad / conv if quad is not None and conv is not None and conv > 0 else None
        rows.append({"widths": list(widths), "quadratic": quad, "conventional": conv,
                     "ratio": ratio})
        if quad is None or conv is None:
            open_.append(name)
            texts.append(f"{name} {_dim_text(dims.get((widths, 'quadratic')))}/"
                         f"{_dim_text(dims.get((widths, 'conventional')))}")
            continue
        texts.append(f"{name} {quad}/{conv} = {fmt(ratio)}")
        if quad <= conv:
            bad.append(name)
    ratios = [row["ratio"] for row in rows if row["ratio"] is not None]
    measured = "quad/conv dim: " + "; ".join(texts) \
        + (f" (ratio {fmt(min(ratios))} to {fmt(max(ratios))})" if ratios else "")
    values = {"rows": rows, "min_ratio": min(ratios) if ratios else None}
    if bad:
        return done(FAILS, measured, "the quadratic dimension is not larger for "
                    + ", ".join(bad), values)
    if open_:
        return done(INCONCLUSIVE, measured,
                    "missing dimensions, or ranks that differ between the primes or between "
                    "pooled runs, for " + ", ".join(open_) + " (rerunning those rows with "
                    "another seed would decide)", values)
    return done(HOLDS, measured, f"the exact quadratic dimension is larger for all "
                f"{len(listed)} architectures", values)


def _resolved(dims) -> "int | None":
    """The one dimension all records of a row agree on; None if any is unresolved or missing,
    or if they disagree."""
    if not dims or any(d is None for d in dims) or len(set(dims)) != 1:
        return None
    return int(dims[0])


def _dim_text(dims) -> str:
    if not dims:
        return "missing"
    return "|".join("?" if d is None else str(d) for d in dict.fromkeys(dims))


def _fit_claim(records, c, target: str, quad: str) -> dict:
    cid = f"fit_{target}_{quad}"
    statement = (f"At an equal parameter budget, the {'full' if quad == 'quad_relu' else 'compact'}"
                 f" quadratic ReLU network ({quad}) fits the {target} target with a lower test MSE"
                 " than the best conventional network.")
    goal = (f"test MSE ratio {quad} / best conventional < 1, its 95 % interval over seeds "
            "(Welch, log10 MSE) below 1")

    def done(verdict, measured, why, values=None):
        return claim(cid, statement, SOURCE_FIT, measured=measured, target=goal,
                     verdict=verdict, why=why, values=values)

    conventional = [m for m in c.models if m in CONVENTIONAL]
    missing = ([f"target {target!r} (expressivity.targets)"] if target not in c.targets else []) \
        + ([f"model {quad!r} (expressivity.models)"] if quad not in c.models else []) \
        + (["a conventional model (expressivity.models)"] if not conventional else [])
    if missing:
        return done(NOT_MEASURED, "not in this run's config",
                    "the config has no " + " and no ".join(missing))
    fits = [r for r in records if r.get("part") == "fit" and r.get("target") == target]
    by_model = {m: _log_mses(fits, m) for m in [quad] + conventional}
    have = [m for m in conventional if by_model[m][1]]
    if not by_model[quad][1] or not have:
        return done(NOT_MEASURED, "no fit records",
                    f"no records of {quad} or of a conventional model on {target}")
    # best conventional: fewest non-completed fits, then the lowest mean log10 MSE
    best = min(have, key=lambda m: (by_model[m][1] - len(by_model[m][0]),
                                    _mean(by_model[m][0])))
    (q_logs, q_n), (b_logs, b_n) = by_model[quad], by_model[best]
    q_bad, b_bad = q_n - len(q_logs), b_n - len(b_logs)
    diff, lo, hi = welch_interval(q_logs, b_logs)
    ratio = [None if v is None else 10 ** v for v in (diff, lo, hi)]
    measured = (f"{quad} {_geo(q_logs)} ({len(q_logs)}/{q_n} fits) vs {best} {_geo(b_logs)} "
                f"({len(b_logs)}/{b_n}); ratio {fmt(ratio[0])} "
                + (f"[{fmt(ratio[1])}, {fmt(ratio[2])}]" if lo is not None else "(no interval)"))
    values = {"quadratic": quad, "best_conventional": best, "log10_ratio": diff,
              "log10_ratio_low": lo, "log10_ratio_high": hi, "quadratic_fits": q_n,
              "quadratic_not_completed": q_bad, "conventional_fits": b_n,
              "conventional_not_completed": b_bad}
    if not q_logs and b_logs:
        return done(FAILS, measured, f"every {quad} fit diverged, {best} did not", values)
    if lo is None:
        return done(INCONCLUSIVE, measured, "fewer than 2 completed fits on a side; more "
                    "seeds (expressivity.seeds) would decide", values)
    if lo > 0:
        return done(FAILS, measured, f"{quad}'s test MSE is higher than {best}'s, the interval "
                    "excluding equality", values)
    if hi < 0 and q_bad == 0:
        return done(HOLDS, measured, f"{quad}'s test MSE is lower than {best}'s, the interval "
                    "excluding equality", values)
    if hi < 0:
        return done(INCONCLUSIVE, measured, f"{quad} is lower on its completed fits, but "
                    f"{q_bad} of {q_n} diverged", values)
    return done(INCONCLUSIVE, measured, "the interval contains equal MSE; more seeds or "
                "longer training would decide", values)


def _log_mses(fits, model: str) -> tuple:
    """(log10 test MSE of the completed fits of `model`, number of its fits)."""
    mine = [r for r in fits if r.get("model") == model]
    logs = [math.log10(m) for m in (_number(r.get("test_mse")) for r in mine
                                     if r.get("status", "completed") == "completed")
            if math.isfinite(m) and m > 0]
    return logs, len(mine)


def _mean(xs) -> float:
    return sum(xs) / len(xs) if xs else math.inf


def _geo(logs) -> str:
    """The geometric mean MSE of a list of log10 MSEs, as text."""
    return fmt(10 ** _mean(logs)) if logs else "-"


# -- figures -------------------------------------------------------------------------------------

def _plot_fit(target: str, models: list, plots: dict, save) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    d = TARGET_DIMS[target]
    n = int(round(math.sqrt(len(next(iter(plots.values()))))))  # plot_grid: n^2 values
    x = plot_inputs(target, n)
    truth = _target_fn(target)(x).numpy()
    if d == 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(x[:, 0].numpy(), truth, "k-", lw=3, alpha=0.4, label="target")
        for name in models:
            ax.plot(x[:, 0].numpy(), plots[name], label=name)
        ax.set_xlabel("x")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    else:
        panels = [("target", truth)] + [(m, plots[m]) for m in models]
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3))
        lo, hi = float(truth.min()), float(truth.max())
        for ax, (title, values) in zip(np.atleast_1d(axes), panels):
            ax.imshow(np.asarray(values, dtype=float).reshape(n, n), origin="lower",
                      extent=(-1, 1, -1, 1), vmin=lo, vmax=hi, cmap="viridis")
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{target} (seed 0)" + (", slice x3 = 0.5" if d > 2 else ""))
    save(fig, f"fit_{target}")


def _ordered(seen: list, preferred: list) -> list:
    """The distinct values of `seen`, in the config's order first."""
    seen = list(dict.fromkeys(seen))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


def _number(value) -> float:
    """A float from a record value (JSON keeps inf as "inf" and NaN as null)."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan

"""Expressivity of quadratic vs conventional networks (Fan et al., NOTES.md section 1).

Two parts in one run:

1. Algebraic dimension. With the activation x^2 every network is a polynomial map; for
   each width tuple, kind (conventional | quadratic) and bias setting we report the
   parameter count, the dimension of the functional variety (numerical rank of the
   parameters -> outputs Jacobian, quadrun.nn.variety) and the ambient dimension
   (monomials up to the output degree).
2. Function fitting at matched parameter budgets (every model within 5% of `budget`):
   conventional ReLU and x^2 MLPs against full and compact quadratic MLPs with ReLU, on
   synthetic targets, several seeds each, trained through quadrun.training.fit. Reports
   the test MSE mean and std over seeds and plots the fits.

summary.json: `dimension` (list of {widths, kind, bias, params, dim, ambient}) and `fit`
(list of {target, model, params, seeds, test_mse_mean, test_mse_std}); tables.md holds both
as markdown tables. Every dimension case and every (target, model, seed) fit is a stage, so
a resumed run skips what is done.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import List

import numpy as np
import torch
from omegaconf import OmegaConf

from quadrun.nn.mlp import count_params, mlp, widths_for_budget
from quadrun.nn.quadratic import param_groups
from quadrun.nn.variety import variety_dimension
from quadrun.schema import ConfigError, TrainConfig, spec
from quadrun.training import Interrupted, TensorBatches, fit

log = logging.getLogger("quadrun")


# -- targets on [-1, 1]^d ------------------------------------------------------------------------

def _radial(x):
    return torch.cos(math.pi * (x * x).sum(1))


def _product(x):
    return x[:, 0] * x[:, 1] * x[:, 2]


SPLINE_KNOTS = (-0.6, -0.2, 0.2, 0.6)
SPLINE_CURVATURE = 50.0


def _spline(x):
    """C^1 piecewise quadratic with knots SPLINE_KNOTS: the second derivative alternates
    +a, -a, +a, -a, +a on the five pieces, a wave between -1 and 1 (zeros at -1, -0.6, ...):
    a/2 (x+1)^2 - a/5 (x+1) + sum_k (-1)^(k+1) a relu(x - t_k)^2."""
    t = x[:, 0]
    a = SPLINE_CURVATURE
    out = a / 2 * (t + 1) ** 2 - a / 5 * (t + 1)
    for k, knot in enumerate(SPLINE_KNOTS):
        out = out + (-1) ** (k + 1) * a * torch.relu(t - knot) ** 2
    return out


def _oscillatory(x):
    return torch.sin(math.pi * x[:, 0]) * torch.cos(math.pi * x[:, 1])


TARGETS = {  # name -> (input dimension, function of x [N, d] -> [N])
    "radial": (2, _radial),            # cos(pi ||x||^2)
    "product": (3, _product),          # x1 x2 x3
    "spline": (1, _spline),            # piecewise quadratic, 4 knots
    "oscillatory": (2, _oscillatory),  # sin(pi x1) cos(pi x2)
}

MODELS = {  # name -> (layer kind, activation)
    "relu_mlp": ("conventional", "relu"),
    "square_mlp": ("conventional", "square"),
    "tanh_mlp": ("conventional", "tanh"),
    "quad_relu": ("quadratic", "relu"),
    "compact_relu": ("compact", "relu"),
}

DIMENSION_KINDS = ("conventional", "quadratic")


@dataclass
class Config:
    # part 1: algebraic dimension
    widths: List[List[int]] = spec([[2, 2, 1], [2, 3, 1], [3, 2, 1], [3, 3, 1], [2, 2, 2, 1],
                                    [3, 3, 3, 1]], ge=1, le=64,
                                   help="width tuples [d0, ..., dL] for the dimension table")
    biases: List[bool] = spec([False, True], help="bias settings for the dimension table")
    points_factor: float = spec(2.0, ge=1, le=100,
                                help="random inputs = points_factor * params / outputs")
    rtol: float = spec(1e-8, gt=0, lt=1, help="singular values below rtol * s_max may be cut")
    min_gap: float = spec(1e6, gt=1, help="smallest rank gap s_r/s_r+1 accepted; below it "
                                          "dim is reported as null (unresolved)")
    # part 2: function fitting
    targets: List[str] = spec(list(TARGETS), choices=list(TARGETS))
    models: List[str] = spec(["relu_mlp", "square_mlp", "quad_relu", "compact_relu"],
                             choices=list(MODELS))
    budget: int = spec(300, ge=10, le=10_000_000, help="parameters per model (matched within 5%)")
    depth: int = spec(2, ge=1, le=16, help="hidden layers of every fitted model")
    seeds: int = spec(3, ge=1, le=100, help="initialisations per (target, model)")
    n_train: int = spec(1024, ge=1)
    n_test: int = spec(4096, ge=1)
    quad_init: str = spec("relinear", choices=["relinear", "random"])
    quad_lr_factor: float = spec(1.0, gt=0, le=100,
                                 help="lr of the quadratic parts (g, b) relative to train.lr")
    plot_grid: int = spec(48, ge=4, le=512, help="grid points per axis in the fit plots")


def check(cfg) -> None:
    """Widths tuples need an input and an output; every model must fit the budget."""
    c = cfg.expressivity
    for i, w in enumerate(c.widths):
        if len(w) < 2:
            raise ConfigError(f"expressivity.widths[{i}]: {list(w)} needs at least an input "
                              "and an output width, e.g. [2, 3, 1]")
    for name in c.models:
        for target in c.targets:
            try:
                widths_for_budget(MODELS[name][0], TARGETS[target][0], 1, c.depth, c.budget)
            except ValueError as exc:
                raise ConfigError(f"expressivity.budget: {exc}; choose another budget or depth")


# -- part 1 --------------------------------------------------------------------------------------

def dimension_table(cfg, ctx) -> list:
    rows = []
    for widths in cfg.widths:
        widths = [int(w) for w in widths]
        for kind in DIMENSION_KINDS:
            for bias in cfg.biases:
                if ctx.stop_requested:
                    raise Interrupted("stopped during the dimension table; finished cases kept")
                key = f"dimension/{'-'.join(map(str, widths))}/{kind}/bias={bool(bias)}"
                res = ctx.stage(key, lambda: variety_dimension(
                    widths, kind, bool(bias), points_factor=cfg.points_factor,
                    seed=int(ctx.cfg.seed), rtol=cfg.rtol, min_gap=cfg.min_gap))
                if res["dim"] is None:
                    log.warning("dimension of %s %s bias=%s unresolved in float64 (rank gap "
                                "%.1e < min_gap %.1e)", widths, kind, bool(bias), res["gap"],
                                cfg.min_gap)
                rows.append({"widths": widths, "kind": kind, "bias": bool(bias), **res})
    return rows


# -- part 2 --------------------------------------------------------------------------------------

def make_data(target: str, n_train: int, n_test: int, seed: int):
    """(x_train, y_train, x_test, y_test), uniform on [-1, 1]^d, noise-free."""
    d, f = TARGETS[target]
    gen = torch.Generator().manual_seed(seed * 7919 + list(TARGETS).index(target))
    x = torch.rand(n_train + n_test, d, generator=gen) * 2 - 1
    y = f(x).unsqueeze(1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def plot_inputs(target: str, n: int) -> torch.Tensor:
    """Inputs of the fit plots: a line (1-D), a grid (2-D), the slice x3 = 0.5 (3-D)."""
    d = TARGETS[target][0]
    t = torch.linspace(-1, 1, n)
    if d == 1:
        return t.unsqueeze(1)
    a, b = torch.meshgrid(t, t, indexing="xy")
    x = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    if d > 2:
        x = torch.cat([x, torch.full((x.shape[0], d - 2), 0.5)], 1)
    return x


def train_config(ctx) -> TrainConfig:
    """The per-fit training settings: the run's `train:` section, with checkpoints off
    (each fit is short and its result is a stage) and evaluation at the end only."""
    tc = TrainConfig(**OmegaConf.to_container(ctx.cfg.train, resolve=True))
    return OmegaConf.structured(dataclasses.replace(tc, eval_every=tc.epochs))


def fit_one(cfg, ctx, tc, target: str, model_name: str, seed: int, data) -> dict:
    """Train one model from init seed `seed`; test MSE and (seed 0) the plot values."""
    kind, activation = MODELS[model_name]
    widths = widths_for_budget(kind, TARGETS[target][0], 1, cfg.depth, cfg.budget)
    torch.manual_seed(int(ctx.cfg.seed) * 1_000_003 + seed)
    model = mlp(widths, kind=kind, activation=activation, init=cfg.quad_init).to(ctx.device)
    x_tr, y_tr, x_te, y_te = (t.to(ctx.device) for t in data)
    groups = param_groups(model, tc.lr, tc.weight_decay,
                          role_lr={"quad_g": tc.lr * cfg.quad_lr_factor,
                                   "quad_b": tc.lr * cfg.quad_lr_factor})

    def loss_fn(m, batch):
        xb, yb = batch
        return torch.nn.functional.mse_loss(m(xb), yb)

    def evaluate(m):
        return {"test/mse": torch.nn.functional.mse_loss(m(x_te), y_te)}

    res = fit(model, TensorBatches([x_tr, y_tr], tc.batch_size), loss_fn, ctx, tc,
              param_groups=groups, evaluate=evaluate, checkpoint=False,
              name=f"{target}/{model_name}/seed{seed}")
    model.eval()
    with torch.no_grad():
        test_mse = float(torch.nn.functional.mse_loss(model(x_te), y_te))
        train_mse = float(torch.nn.functional.mse_loss(model(x_tr), y_tr))
        out = {"widths": widths, "params": count_params(model), "status": res.status,
               "test_mse": test_mse if res.status == "completed" else math.inf,
               "train_mse": train_mse}
        if seed == 0:
            out["plot"] = model(plot_inputs(target, cfg.plot_grid).to(ctx.device)).flatten().cpu()
    return out


def _number(value) -> float:
    """A float from a stage result (JSON keeps inf as "inf" and NaN as null)."""
    return math.nan if value is None else float(value)


def fit_table(cfg, ctx) -> tuple[list, dict]:
    """One row per (target, model): mean and std of the test MSE over seeds."""
    tc = train_config(ctx)
    rows, plots = [], {}
    for target in cfg.targets:
        data = make_data(target, cfg.n_train, cfg.n_test, int(ctx.cfg.seed))
        for name in cfg.models:
            runs = [ctx.stage(f"fit/{target}/{name}/seed{s}",
                              lambda s=s: fit_one(cfg, ctx, tc, target, name, s, data))
                    for s in range(cfg.seeds)]
            mses = np.array([_number(r["test_mse"]) for r in runs])
            rows.append({"target": target, "model": name, "params": runs[0]["params"],
                         "seeds": cfg.seeds, "test_mse_mean": float(mses.mean()),
                         "test_mse_std": float(mses.std()),
                         "widths": runs[0]["widths"],
                         "diverged": sum(r["status"] != "completed" for r in runs),
                         "train_mse_mean": float(np.mean([_number(r["train_mse"]) for r in runs]))})
            plots[(target, name)] = runs[0]["plot"]
    return rows, plots


# -- output --------------------------------------------------------------------------------------

def markdown_tables(dims: list, fits: list, budget: int) -> str:
    lines = ["## Dimension of the functional variety (activation x^2)", "",
             "Numerical rank of the float64 Jacobian parameters -> outputs at random parameters "
             "and 2x enough random inputs (gap rule: quadrun.nn.variety). `ambient`: monomials "
             "up to the output degree. Quadratic layers without bias keep the gate offset b_g. "
             "`unresolved`: the rank gap was below min_gap, float64 cannot tell the rank.",
             "", "| widths | kind | bias | params | dim | ambient | degree | gap s_r/s_r+1 |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in dims:
        dim = "unresolved" if r["dim"] is None else r["dim"]
        lines.append(f"| {r['widths']} | {r['kind']} | {r['bias']} | {r['params']} | {dim} "
                     f"| {r['ambient']} | {r['degree']} | {float(r['gap']):.1e} |")
    lines += ["", f"## Function fitting at a budget of {budget} parameters (within 5%)", "",
              "| target | model | widths | params | seeds | test MSE mean | test MSE std "
              "| train MSE mean | diverged |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in fits:
        lines.append(f"| {r['target']} | {r['model']} | {r['widths']} | {r['params']} "
                     f"| {r['seeds']} | {r['test_mse_mean']:.3e} | {r['test_mse_std']:.2e} "
                     f"| {r['train_mse_mean']:.3e} | {r['diverged']} |")
    return "\n".join(lines) + "\n"


def plot_fits(cfg, ctx, plots: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for target in cfg.targets:
        d, f = TARGETS[target]
        x = plot_inputs(target, cfg.plot_grid)
        truth = f(x).numpy()
        if d == 1:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(x[:, 0], truth, "k-", lw=3, alpha=0.4, label="target")
            for name in cfg.models:
                ax.plot(x[:, 0], np.asarray(plots[(target, name)]), label=name)
            ax.set_xlabel("x")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        else:
            n = cfg.plot_grid
            panels = [("target", truth)] + [(m, np.asarray(plots[(target, m)])) for m in cfg.models]
            fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3))
            lo, hi = float(truth.min()), float(truth.max())
            for ax, (title, values) in zip(np.atleast_1d(axes), panels):
                ax.imshow(values.reshape(n, n), origin="lower", extent=(-1, 1, -1, 1),
                          vmin=lo, vmax=hi, cmap="viridis")
                ax.set_title(title)
                ax.set_xticks([])
                ax.set_yticks([])
        fig.suptitle(f"{target} (seed 0)" + (", slice x3 = 0.5" if d > 2 else ""))
        ctx.save_figure(fig, f"fit_{target}")


def plot_mse(cfg, ctx, fits: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(cfg.models)
    for j, name in enumerate(cfg.models):
        rows = [next(r for r in fits if r["target"] == t and r["model"] == name)
                for t in cfg.targets]
        ax.bar(np.arange(len(cfg.targets)) + j * width, [r["test_mse_mean"] for r in rows],
               width, yerr=[r["test_mse_std"] for r in rows], label=name)
    ax.set_xticks(np.arange(len(cfg.targets)) + 0.4 - width / 2, list(cfg.targets))
    ax.set_yscale("log")
    ax.set_ylabel("test MSE")
    ax.legend()
    ctx.save_figure(fig, "fit_mse")


def run(cfg, ctx) -> dict:
    dims = dimension_table(cfg, ctx)
    fits, plots = fit_table(cfg, ctx)
    ctx.write_text("tables.md", markdown_tables(dims, fits, cfg.budget))
    plot_fits(cfg, ctx, plots)
    plot_mse(cfg, ctx, fits)
    dim_keys = ("widths", "kind", "bias", "params", "dim", "ambient")
    fit_keys = ("target", "model", "params", "seeds", "test_mse_mean", "test_mse_std")
    return {"dimension": [{k: r[k] for k in dim_keys} for r in dims],
            "fit": [{k: r[k] for k in fit_keys} for r in fits]}

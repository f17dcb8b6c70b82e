"""expressivity's cells and measurements: the variety dimension of each architecture (and of
its conventional net widened to the quadratic net's parameter count), and one training per
(target, model, replicate)."""
from __future__ import annotations

import logging
import math

import torch
from torch.nn.functional import mse_loss

from quadrun.data.targets import DIMS, plot_inputs, sample
from quadrun.devices import seeded
from quadrun.experiments.expressivity.config import MODELS
from quadrun.nn.budget import param_count, widened
from quadrun.nn.mlp import count_params, mlp, widths_for_budget
from quadrun.nn.quadratic import param_groups
from quadrun.nn.variety import variety_dimension
from quadrun.training import TensorBatches, fit
from quadrun.vocab import derive_seed

log = logging.getLogger("quadrun")


def cells(c) -> list:
    """The dimension table (widths x kind x bias); the extension's conventional nets at the
    quadratic nets' parameter counts (widths x bias: `matches` is the quadratic net's
    widths); then the fits (target x model x replicate)."""
    out = [{"part": "dimension", "widths": [int(w) for w in widths], "kind": kind,
            "bias": bool(bias)}
           for widths in c.widths for kind in c.dimension_kinds for bias in c.biases]
    if c.equal_params and {"quadratic", "conventional"} <= set(c.dimension_kinds):
        out += [{"part": "matched", "widths": matched(widths, bias), "kind": "conventional",
                 "bias": bool(bias), "matches": [int(w) for w in widths]}
                for widths in c.widths if len(widths) > 2 for bias in c.biases]
    out += [{"part": "fit", "target": target, "model": model, "replicate": r}
            for target in c.targets for model in c.models for r in range(c.replicates)]
    return out


def measure(c, cell, ctx) -> dict:
    if cell["part"] == "dimension":
        return measure_dimension(c, cell, ctx)
    if cell["part"] == "matched":
        return {"quadratic_params": param_count(cell["matches"], "quadratic", cell["bias"]),
                **measure_dimension(c, cell, ctx)}
    return measure_fit(c, cell, ctx)


# -- part 1: the dimension of the functional variety ----------------------------------------------
def matched(widths, bias: bool) -> list:
    """The conventional net of the same depth, input and output as `widths`, its hidden
    layers widened to at least the parameters of the quadratic net of `widths`."""
    widths = [int(w) for w in widths]
    return widened(widths, "conventional", param_count(widths, "quadratic", bias), bias)


def measure_dimension(c, cell, ctx) -> dict:
    """The exact dimension (rank of the parameter Jacobian mod each prime), its bounds, and
    the float64 cross-check (quadrun.nn.variety)."""
    widths, kind, bias = cell["widths"], cell["kind"], cell["bias"]
    res = variety_dimension(widths, kind, bias, points_factor=c.points_factor,
                            seed=derive_seed(ctx.runtime.seed, "variety", *widths, kind, bias),
                            rtol=c.rtol, min_gap=c.min_gap, primes=c.primes,
                            float_check=c.float_check)
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


# -- part 2: fitting a target at a matched parameter budget -------------------------------------
def measure_fit(c, cell, ctx) -> dict:
    """Train one model on its replicate's draw of the data (shared by every model of that
    replicate) from its own initialisation; test and train MSE, and replicate 0's outputs
    on the plot grid."""
    target, name, r = cell["target"], cell["model"], cell["replicate"]
    tc = c.train
    kind, activation = MODELS[name]
    widths = widths_for_budget(kind, DIMS[target], 1, c.depth, c.budget)
    data = sample(target, c.n_train, c.n_test,
                  derive_seed(ctx.runtime.seed, "replicate-data", target, r))
    x_tr, y_tr, x_te, y_te = (t.to(ctx.device) for t in data)
    with seeded(derive_seed(ctx.runtime.seed, "replicate-init", target, name, r)):
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

    # the fit's name seeds its batch order (quadrun.training)
    res = fit(model, TensorBatches([x_tr, y_tr], tc.batch_size), loss_fn, ctx, tc,
              param_groups=groups, evaluate=evaluate, checkpoint=False,
              name=f"{target}/{name}/replicate{r}")
    model.eval()
    with torch.no_grad():
        test_mse = float(mse_loss(model(x_te), y_te))
        train_mse = float(mse_loss(model(x_tr), y_tr))
        out = {"model_widths": widths, "params": count_params(model), "status": res.status,
               # a diverged fit has no test MSE (its status says why)
               "test_mse": test_mse if res.status == "completed" and math.isfinite(test_mse)
               else None,
               "train_mse": train_mse if math.isfinite(train_mse) else None}
        if r == 0:
            values = model(plot_inputs(target, c.plot_grid).to(ctx.device)).flatten().cpu()
            out["plot"] = [float(f"{v:.4g}") if math.isfinite(v) else None
                           for v in values.tolist()]
    return out

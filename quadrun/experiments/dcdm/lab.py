"""dcdm's lab: the cells (train a network per dim, then solve every scene at every size
with every solver) and how one cell is measured."""
from __future__ import annotations

import logging

import torch

from quadrun.experiments.dcdm.config import kept
from quadrun.solvers import krylov
from quadrun.solvers.lanczos import training_basis, training_coefficients, training_samples
from quadrun.solvers.poisson import build_system, scene
from quadrun.vocab import derive_seed

log = logging.getLogger("quadrun")


def cells(c) -> list:
    out = []
    for i, dim in enumerate(c.dims):
        if "dcdm" in c.solvers:
            out.append({"part": "train", "dim": dim})
        for factor in c.eval_factors:
            for name in c.eval_scenes:
                for solver in c.solvers:
                    out.append({"part": "solve", "dim": dim, "n": c.train_n[i] * factor,
                                "scene": name, "solver": solver, "protocol": c.protocol})
    return out


def measure(c, cell, ctx) -> dict:
    if cell["part"] == "train":
        return train(c, ctx, cell["dim"])
    return solve(c, ctx, cell["dim"], cell["n"], cell["scene"], cell["solver"])


# -- training -----------------------------------------------------------------------------
def scene_seed(seed: int, name: str, dim: int, n: int) -> int:
    """One scene's seed (random solids, right-hand side): the training scene's domain at
    train_n is the evaluation scene of the same name and size."""
    return derive_seed(seed, "scene", name, dim, n)


def network(c, dim: int, seed: int):
    from quadrun.devices import seeded
    from quadrun.nn.dcdm_net import build

    with seeded(derive_seed(seed, "init", dim)):
        return build(c.arch, dim, c.width, c.blocks, c.coarsest, c.max_levels)


class TrainingSize:
    """One training grid: its system, Ritz basis (cached), coefficients and loss."""

    def __init__(self, c, ctx, i: int, dim: int, n: int):
        seed = ctx.runtime.seed
        self.n = n
        self.system = build_system(c.train_scene, n, dim, scene_seed(seed, c.train_scene, dim, n))
        basis = training_basis(self.system, c.ritz_m[i], derive_seed(seed, "ritz", dim, n),
                               ctx.data_dir, ctx.device)
        self.vectors = basis["vectors"].to(ctx.device)
        k, low = len(self.vectors), c.ritz_m[i] // 2 + c.ritz_theta[i]
        self.coeff = training_coefficients(k, c.samples[i], low, derive_seed(
            seed, "train_samples", dim, n)).to(ctx.device)
        self.val = training_samples(self.vectors, training_coefficients(
            k, c.val_samples, low, derive_seed(seed, "val_samples", dim, n)).to(ctx.device))
        self.A = self.system.matrix(ctx.device, torch.float32)

    def loss(self, model, b):
        from quadrun.nn.dcdm_net import scale_invariant_loss

        q = self.system.from_grid(model(self.system.to_grid(b)[:, None])[:, 0])
        return scale_invariant_loss(q, b, self.A)


def train(c, ctx, dim: int) -> dict:
    """Train the network for `dim` at train_n (and the smaller train_sizes) and save it."""
    from quadrun.training import TensorBatches, fit

    i = list(c.dims).index(dim)
    n = c.train_n[i]
    model = network(c, dim, ctx.runtime.seed)
    parts = [TrainingSize(c, ctx, i, dim, n // 2 ** j) for j in range(c.train_sizes)
             if n // 2 ** j >= 4]
    coeff = torch.cat([p.coeff for p in parts], 1)       # one row: every size's weights
    widths = [p.coeff.shape[1] for p in parts]

    def samples(batch):
        chunks = batch[0].split(widths, 1)
        return tuple(training_samples(p.vectors, w) for p, w in zip(parts, chunks))

    def loss_fn(m, batch):
        return sum(p.loss(m, b) for p, b in zip(parts, batch)) / len(parts)

    def evaluate(m):
        out = {f"val/loss_{dim}d_n{p.n}": p.loss(m, p.val) for p in parts}
        out[f"val/loss_{dim}d"] = out[f"val/loss_{dim}d_n{n}"]
        return out

    data = TensorBatches([coeff], c.train.batch_size, transform=samples)
    result = fit(model, data, loss_fn, ctx, c.train, evaluate=evaluate,
                 monitor=(f"val/loss_{dim}d", "min"), name=f"train_{dim}d")
    ctx.save_model(f"model_{dim}d", model, status=result.status)
    return {"sizes": [p.n for p in parts], "ritz_vectors": [len(p.vectors) for p in parts],
            "status": result.status, "steps": result.step,
            "val_loss": result.metrics.get(f"val/loss_{dim}d"),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": result.train_seconds}


def load_model(c, ctx, dim: int):
    """(model, training status) from checkpoints/model_<dim>d.pt, written by the train cell."""
    model = network(c, dim, ctx.runtime.seed).to(ctx.device)
    rest = ctx.load_model(f"model_{dim}d", model, made_by=f"part=train/dim={dim}")
    return model, rest.get("status", "completed")


# -- solving ------------------------------------------------------------------------------
def solve(c, ctx, dim: int, n: int, name: str, solver: str) -> dict:
    model = None
    if solver == "dcdm":
        model, status = ctx.shared(("model", dim), lambda: load_model(c, ctx, dim))
        if status == "diverged":
            log.warning("dcdm: %dD %s n=%d: the training diverged; no DCDM solve", dim, name, n)
            return {"iterations": None, "iterations_run": None, "converged": False,
                    "rel_residual": None, "absolute_tol": False,
                    "device": device_name(ctx.device), "setup_s": None, "solve_s": None,
                    "status": "diverged"}
    # one scene serves the consecutive cells of its solvers; only the latest is kept in
    # memory, since large 3-D systems take gigabytes
    system, b = ctx.latest("scene", (name, n, dim), lambda: scene(
        name, n, dim, scene_seed(ctx.runtime.seed, name, dim, n)))
    rt = ctx.runtime
    rec = krylov.solve(solver, system, b, device=ctx.device, tol=c.tol,
                       maxiter=c.dcdm_maxiter if solver == "dcdm" else c.maxiter,
                       check_every=c.check_every, protocol=c.protocol, model=model, amg=c.amg,
                       deflate=c.deflate, mg_smoother=c.mg_smoother, mg_sweeps=c.mg_sweeps,
                       mg_interpolation=c.mg_interpolation, precision=rt.precision,
                       graphs=rt.cuda_graphs,
                       seed=derive_seed(rt.seed, "setup", solver, name, dim, n))
    log.info("dcdm: %dD n=%d %s %s: %d iterations (%.2g), setup %.2fs solve %.2fs",
             dim, n, name, solver, rec["iterations"], rec["rel_residual"],
             rec["setup_s"], rec["solve_s"])
    history = rec["residuals"]
    return {**{k: rec[k] for k in ("iterations", "iterations_run", "converged", "rel_residual")},
            "absolute_tol": rec["tolerance"] == "absolute", "device": device_name(ctx.device),
            "setup_s": rec["setup_s"], "solve_s": rec["solve_s"],
            "residuals": [history[k] for k in kept(len(history) - 1)]}


def device_name(device) -> str:
    """"cpu" or "cuda (<GPU name>)": where the solve's timings were taken."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type

"""dcdm's lab: the cells (per dim, `nets` networks of each arch trained on the training
scene, then every evaluation scene solved at every size by every solver and network) and
how one cell is measured."""
from __future__ import annotations

import logging

import torch

from quadrun.experiments.dcdm.config import abs_cosine, eval_sizes, kept
from quadrun.solvers import inverse, krylov
from quadrun.solvers.lanczos import training_basis, training_coefficients, training_samples
from quadrun.solvers.poisson import build_system, scene
from quadrun.vocab import derive_seed

log = logging.getLogger("quadrun")

INVERSE_SOLVERS = ("cg", "jacobi", "ic", "mg", "dcdm")   # fixed maps: their A-cosine (cg: r)


def cells(c) -> list:
    networks = [(a, k) for a in c.archs for k in range(c.nets)] if "dcdm" in c.solvers else []
    out = []
    for i, dim in enumerate(c.dims):
        out += [{"part": "train", "dim": dim, "arch": a, "net": k} for a, k in networks]
        for n in eval_sizes(c, i):
            for name in c.eval_scenes:
                for solver in c.solvers:
                    cell = {"part": "solve", "dim": dim, "n": n, "scene": name, "solver": solver}
                    if solver == "dcdm":
                        out += [{**cell, "arch": a, "net": k, "protocol": c.protocol}
                                for a, k in networks]
                    else:
                        out.append({**cell, "protocol": c.protocol})
    return out


def measure(c, cell, ctx) -> dict:
    if cell["part"] == "train":
        return train(c, ctx, cell["dim"], cell["arch"], cell["net"])
    return solve(c, ctx, cell)


# -- training -----------------------------------------------------------------------------
def scene_seed(seed: int, name: str, dim: int, n: int) -> int:
    """One scene's seed (random solids, right-hand side): the training scene's domain at
    train_n is the evaluation scene of the same name and size."""
    return derive_seed(seed, "scene", name, dim, n)


def train_seed(seed: int, dim: int, arch: str, net: int) -> int:
    """The seed of one network's training: its initialisation and sample draws."""
    return derive_seed(seed, "net", dim, arch, net)


def network(c, dim: int, arch: str, seed: int):
    from quadrun.devices import seeded
    from quadrun.nn.dcdm_net import build

    with seeded(derive_seed(seed, "init")):
        return build(arch, dim, c.width, c.blocks, c.coarsest, c.max_levels)


class TrainingSize:
    """One training grid: its system, Ritz basis (cached on disk) and validation samples,
    shared by every network trained on it."""

    def __init__(self, c, ctx, i: int, dim: int, n: int):
        seed = ctx.runtime.seed
        self.n, self.i = n, i
        self.system = build_system(c.train_scene, n, dim, scene_seed(seed, c.train_scene, dim, n))
        basis = training_basis(self.system, c.ritz_m[i], derive_seed(seed, "ritz", dim, n),
                               ctx.data_dir, ctx.device)
        self.vectors = basis["vectors"].to(ctx.device)
        self.k, self.low = len(self.vectors), c.ritz_m[i] // 2 + c.ritz_theta[i]
        val = training_coefficients(self.k, c.val_samples, self.low,
                                    derive_seed(seed, "val_samples", dim, n))
        self.val = training_samples(self.vectors, val.to(ctx.device))
        self.A = self.system.matrix(ctx.device, torch.float32)

    def coefficients(self, count: int, seed: int) -> torch.Tensor:
        return training_coefficients(self.k, count, self.low, derive_seed(
            seed, "train_samples", self.n))

    def loss(self, model, b):
        from quadrun.nn.dcdm_net import scale_invariant_loss

        q = self.system.from_grid(model(self.system.to_grid(b)[:, None])[:, 0])
        return scale_invariant_loss(q, b, self.A)


def train(c, ctx, dim: int, arch: str, net: int) -> dict:
    """Train network `net` of `arch` for `dim` at train_n (and the smaller train_sizes) and
    save it as checkpoints/model_<dim>d_<arch>_<net>.pt."""
    from quadrun.training import TensorBatches, fit

    i = list(c.dims).index(dim)
    n = c.train_n[i]
    seed = train_seed(ctx.runtime.seed, dim, arch, net)
    model = network(c, dim, arch, seed)
    sizes = tuple(n // 2 ** j for j in range(c.train_sizes) if n // 2 ** j >= 4)
    parts = ctx.latest("training grids", (dim, sizes),
                       lambda: [TrainingSize(c, ctx, i, dim, m) for m in sizes])
    coeff = torch.cat([p.coefficients(c.samples[i], seed).to(ctx.device) for p in parts], 1)
    widths = [p.k for p in parts]

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
                 monitor=(f"val/loss_{dim}d", "min"), name=f"train_{dim}d_{arch}_{net}")
    ctx.save_model(f"model_{dim}d_{arch}_{net}", model, status=result.status)
    return {"train_seed": seed, "sizes": list(sizes),
            "ritz_vectors": [len(p.vectors) for p in parts], "status": result.status,
            "steps": result.step, "val_loss": result.metrics.get(f"val/loss_{dim}d"),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": result.train_seconds}


def load_model(c, ctx, dim: int, arch: str, net: int):
    """(model, training status) of a network saved by its train cell."""
    model = network(c, dim, arch, train_seed(ctx.runtime.seed, dim, arch, net)).to(ctx.device)
    rest = ctx.load_model(f"model_{dim}d_{arch}_{net}", model,
                          made_by=f"part=train/dim={dim}/arch={arch}/net={net}")
    return model, rest.get("status", "completed")


# -- solving ------------------------------------------------------------------------------
def solve(c, ctx, cell: dict) -> dict:
    dim, n, name, solver = cell["dim"], cell["n"], cell["scene"], cell["solver"]
    model, net = None, {}
    if solver == "dcdm":
        arch, k = cell["arch"], cell["net"]
        net = {"train_seed": train_seed(ctx.runtime.seed, dim, arch, k)}
        model, status = ctx.shared(("model", dim, arch, k),
                                   lambda: load_model(c, ctx, dim, arch, k))
        if status == "diverged":
            log.warning("dcdm: %dD %s n=%d: %s net %d diverged in training; no DCDM solve",
                        dim, name, n, arch, k)
            return {**net, "iterations": None, "iterations_run": None, "converged": False,
                    "rel_residual": None, "absolute_tol": False,
                    "device": device_name(ctx.device), "setup_s": None, "solve_s": None,
                    "status": "diverged"}
    # one scene serves the consecutive cells of its solvers; only the latest is kept in
    # memory, since large 3-D systems take gigabytes
    system, b = ctx.latest("scene", (name, n, dim), lambda: scene(
        name, n, dim, scene_seed(ctx.runtime.seed, name, dim, n)))
    rt = ctx.runtime
    options = dict(model=model, amg=c.amg, deflate=c.deflate, mg_smoother=c.mg_smoother,
                   mg_sweeps=c.mg_sweeps, mg_interpolation=c.mg_interpolation,
                   precision=rt.precision, graphs=rt.cuda_graphs,
                   seed=derive_seed(rt.seed, "setup", solver, name, dim, n))
    rec = krylov.solve(solver, system, b, device=ctx.device, tol=c.tol,
                       maxiter=c.dcdm_maxiter if solver == "dcdm" else c.maxiter,
                       check_every=c.check_every, protocol=c.protocol, **options)
    log.info("dcdm: %dD n=%d %s %s%s: %d iterations (%.2g), setup %.2fs solve %.2fs",
             dim, n, name, solver, f" {cell['arch']} net {cell['net']}" if net else "",
             rec["iterations"], rec["rel_residual"], rec["setup_s"], rec["solve_s"])
    history = rec["residuals"]
    out = {**net, **{k: rec[k] for k in ("iterations", "iterations_run", "converged",
                                         "rel_residual")},
           "absolute_tol": rec["tolerance"] == "absolute", "device": device_name(ctx.device),
           "setup_s": rec["setup_s"], "solve_s": rec["solve_s"],
           "residuals": [history[k] for k in kept(len(history) - 1)]}
    if solver in INVERSE_SOLVERS:
        pairs = ctx.latest("test residuals", (name, n, dim), lambda: inverse.test_residuals(
            system, b, c.inverse_residuals, ctx.device, c.tol))
        out["cosines"] = approximate_inverse(system, solver, pairs, options, ctx.device)
        out["cosine"] = abs_cosine(out["cosines"])
    return out


def approximate_inverse(system, solver: str, pairs: list, options: dict, device) -> list:
    """The A-cosine between the solver's direction map (CG's: the identity) and A^-1 on
    the scene's test residuals (quadrun.solvers.inverse)."""
    A = system.matrix(device, torch.float64)
    M = krylov.get(solver).setup(system, A, b=pairs[0][0], **options).get("M")
    return inverse.cosines(A, M, pairs)


def device_name(device) -> str:
    """"cpu" or "cuda (<GPU name>)": where the solve's timings were taken."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type

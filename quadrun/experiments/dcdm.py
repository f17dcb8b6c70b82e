"""dcdm: the deep conjugate direction method (Kaneda et al., ICML 2023) on MAC-grid
pressure Poisson systems, against CG, Jacobi-PCG, IC(0)-PCG, deflated PCG and AMG-PCG.

For each dimension in `dims`: build the training scene at `train_n`, compute (or reuse
from the cache under data_dir) its Ritz vectors, train the network on random Ritz
combinations with the scale-invariant loss through the core loop, then solve every
evaluation scene at n = train_n * factor with every solver (same relative tolerance),
timing set-up apart from the solve. Summary: `solves` (one record per solver, scene, dim,
n) and `targets` (DCDM vs CG on `target_scene`, a scene not used in training).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List

import torch

from quadrun.artifacts import CheckpointError, load_checkpoint
from quadrun.nn.dcdm_net import ARCHS, build, scale_invariant_loss
from quadrun.schema import ConfigError, spec
from quadrun.solvers import krylov
from quadrun.solvers.lanczos import training_basis, training_coefficients, training_samples
from quadrun.solvers.poisson import SCENES, build_system, scene
from quadrun.training import Interrupted, TensorBatches, fit

log = logging.getLogger("quadrun")

SCENE_NAMES = list(SCENES)
SOLVER_NAMES = list(krylov.SOLVERS)
RECORD_KEYS = ("solver", "scene", "dim", "n", "iterations", "converged", "rel_residual",
               "setup_s", "solve_s")


@dataclass
class Config:
    dims: List[int] = spec([2, 3], choices=[2, 3], help="grid dimensions to run")
    train_n: List[int] = spec([64, 16], ge=4, help="training grid size, one per dim")
    samples: List[int] = spec([5000, 1000], ge=1, help="training samples, one per dim")
    eval_factors: List[int] = spec([1, 2], ge=1, help="evaluate at n = train_n * factor")
    train_scene: str = spec("box", choices=SCENE_NAMES)
    eval_scenes: List[str] = spec(["box", "two_obstacles", "sphere", "plume_sphere"],
                                  choices=SCENE_NAMES)
    target_scene: str = spec("two_obstacles", choices=SCENE_NAMES,
                             help="obstacle scene (not the training one) for the targets")
    solvers: List[str] = spec(SOLVER_NAMES, choices=SOLVER_NAMES)
    arch: str = spec("paper", choices=list(ARCHS), help="paper: the published net; "
                     "multilevel: a weight-shared V-cycle; additive: a learned SPD "
                     "multilevel (BPX-like) preconditioner, the cpu-scale choice")
    width: int = spec(16, ge=1)
    blocks: int = spec(2, ge=1, help="residual blocks per stage (additive: convolutions in K)")
    coarsest: int = spec(8, ge=2, help="multilevel, additive: halve the grid until it is "
                         "this wide")
    max_levels: int = spec(0, ge=0, help="multilevel: cap on pooling levels; 0: no cap")
    train_sizes: int = spec(1, ge=1, le=4, help="train on train_n, train_n/2, ... together "
                            "(each with its own Ritz vectors): the shared multilevel weights "
                            "then see several depths")
    ritz_m: List[int] = spec([1000, 1000], ge=2, help="Lanczos steps (Ritz vectors), per dim")
    ritz_theta: List[int] = spec([50, 50], ge=0, help="lowest m/2 + theta modes weighted 9x")
    val_samples: int = spec(64, ge=1)
    tol: float = spec(1e-4, gt=0, lt=1, help="relative tolerance for every solver")
    maxiter: int = spec(2000, ge=1, help="iteration cap of the classical solvers")
    dcdm_maxiter: int = spec(300, ge=1, help="iteration cap of DCDM (the paper: 100)")
    check_every: int = spec(1, ge=1, help="iterations between host convergence checks")
    deflate: int = spec(16, ge=1, help="Ritz vectors for deflated PCG")
    amg: str = spec("smoothed_aggregation", choices=["smoothed_aggregation", "ruge_stuben"])


def check(cfg) -> None:
    c = cfg.dcdm
    for key in ("train_n", "samples", "ritz_m", "ritz_theta"):
        if len(c[key]) < len(c.dims):
            raise ConfigError(f"dcdm.{key}: needs one value per entry of dcdm.dims "
                              f"({len(c.dims)}); got {len(c[key])}")
    if "dcdm" in c.solvers and c.target_scene == c.train_scene:
        raise ConfigError(f"dcdm.target_scene: must differ from dcdm.train_scene "
                          f"({c.train_scene!r}): the targets are on an unseen scene")


# -- training -----------------------------------------------------------------------------
class _TrainingSize:
    """One training grid: its system, Ritz basis (cached), coefficients and loss."""

    def __init__(self, cfg, ctx, i: int, dim: int, n: int):
        seed = ctx.cfg.seed + n            # other sizes get other coefficients
        self.n = n
        self.system = build_system(cfg.train_scene, n, dim, ctx.cfg.seed)
        basis = training_basis(self.system, cfg.ritz_m[i], ctx.cfg.seed, ctx.cfg.data_dir,
                               ctx.device)
        self.vectors = basis["vectors"].to(ctx.device)
        k, low = len(self.vectors), cfg.ritz_m[i] // 2 + cfg.ritz_theta[i]
        self.coeff = training_coefficients(k, cfg.samples[i], low, seed).to(ctx.device)
        self.val = training_samples(self.vectors, training_coefficients(
            k, cfg.val_samples, low, seed + 1).to(ctx.device))
        self.A = self.system.matrix(ctx.device, torch.float32)

    def loss(self, model, b):
        q = self.system.from_grid(model(self.system.to_grid(b)[:, None])[:, 0])
        return scale_invariant_loss(q, b, self.A)


def train(cfg, ctx, i: int, dim: int):
    """The network for `dim`, trained at train_n[i] (or loaded when this run already did)."""
    n = cfg.train_n[i]
    model = build(cfg.arch, dim, cfg.width, cfg.blocks, cfg.coarsest, cfg.max_levels)
    done = ctx.checkpoint_path(f"model_{dim}d")
    if done.exists():
        try:
            model.load_state_dict(load_checkpoint(done)["model"])
            log.info("dcdm: %dD model from %s", dim, done)
            return model.to(ctx.device), {}
        except (CheckpointError, KeyError, RuntimeError) as exc:
            log.warning("dcdm: %s unusable (%s); training again", done, exc)
    parts = [_TrainingSize(cfg, ctx, i, dim, n // 2 ** j) for j in range(cfg.train_sizes)
             if n // 2 ** j >= 4]
    coeff = torch.cat([p.coeff for p in parts], 1)       # one row: every size's weights
    widths = [p.coeff.shape[1] for p in parts]

    def samples(batch):
        chunks = batch[0].split(widths, 1)
        return tuple(training_samples(p.vectors, c) for p, c in zip(parts, chunks))

    def loss_fn(m, batch):
        return sum(p.loss(m, b) for p, b in zip(parts, batch)) / len(parts)

    def evaluate(m):
        out = {f"val/loss_{dim}d_n{p.n}": p.loss(m, p.val) for p in parts}
        out[f"val/loss_{dim}d"] = out[f"val/loss_{dim}d_n{n}"]
        return out

    data = TensorBatches([coeff], ctx.cfg.train.batch_size, transform=samples)
    result = fit(model, data, loss_fn, ctx, ctx.cfg.train, evaluate=evaluate,
                 monitor=(f"val/loss_{dim}d", "min"), name=f"train_{dim}d")
    ctx.save_checkpoint({"model": model.state_dict()}, f"model_{dim}d")
    info = {"sizes": [p.n for p in parts], "ritz_vectors": [len(p.vectors) for p in parts],
            "status": result.status, "steps": result.step,
            "val_loss": result.metrics.get(f"val/loss_{dim}d"),
            "parameters": sum(p.numel() for p in model.parameters())}
    return model, info


# -- evaluation ---------------------------------------------------------------------------
def evaluate_scene(cfg, ctx, model, dim: int, name: str, n: int) -> list:
    """Every solver on one scene and size: records (with residual histories)."""
    system, b = scene(name, n, dim, ctx.cfg.seed)
    out = []
    for solver in cfg.solvers:
        rec = krylov.solve(solver, system, b, device=ctx.device, tol=cfg.tol,
                           maxiter=cfg.dcdm_maxiter if solver == "dcdm" else cfg.maxiter,
                           check_every=cfg.check_every,
                           model=model, amg=cfg.amg, deflate=cfg.deflate, seed=ctx.cfg.seed)
        rec.pop("x")
        out.append({**{k: rec[k] for k in ("solver", "iterations", "converged",
                                           "rel_residual", "setup_s", "solve_s")},
                    "scene": name, "dim": dim, "n": n, "residuals": rec["residuals"]})
        log.info("dcdm: %dD n=%d %s %s: %d iterations (%.2g), setup %.2fs solve %.2fs",
                 dim, n, name, solver, rec["iterations"], rec["rel_residual"],
                 rec["setup_s"], rec["solve_s"])
    return out


def plot_histories(ctx, records: list, dim: int, tol: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in records if r["dim"] == dim]
    scenes = list(dict.fromkeys(r["scene"] for r in recs))
    sizes = sorted({r["n"] for r in recs})
    fig, axes = plt.subplots(len(sizes), len(scenes), squeeze=False,
                             figsize=(3.6 * len(scenes), 3.0 * len(sizes)))
    for r in recs:
        ax = axes[sizes.index(r["n"])][scenes.index(r["scene"])]
        ax.semilogy(r["residuals"], label=r["solver"])
        ax.set_title(f"{r['scene']} {r['n']}^{dim}", fontsize=9)
    for ax in axes.ravel():
        ax.axhline(tol, color="k", lw=0.5, ls=":")
        ax.set_xlabel("iteration", fontsize=8)
    axes[0][0].set_ylabel("||r|| / ||b||")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    ctx.save_figure(fig, f"residuals_{dim}d")


def table(records: list) -> str:
    lines = ["| dim | n | scene | solver | iterations | converged | rel. residual | setup s | solve s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['dim']} | {r['n']} | {r['scene']} | {r['solver']} | "
                     f"{r['iterations']} | {r['converged']} | {r['rel_residual']:.2e} | "
                     f"{r['setup_s']:.3f} | {r['solve_s']:.3f} |")
    return "\n".join(lines) + "\n"


def targets(cfg, records: list, dim: int) -> dict:
    """DCDM vs CG on the target scene: iteration ratio at train_n, growth n -> 2n."""
    n0 = cfg.train_n[list(cfg.dims).index(dim)]
    its = {(r["solver"], r["n"]): r["iterations"] for r in records
           if r["dim"] == dim and r["scene"] == cfg.target_scene and r["converged"]}
    out = {"scene": cfg.target_scene, "n": n0}
    if ("dcdm", n0) in its and ("cg", n0) in its:
        out["dcdm_over_cg"] = its[("dcdm", n0)] / max(its[("cg", n0)], 1)
        out["dcdm_over_cg_ok"] = out["dcdm_over_cg"] <= 1 / 3
    for s in ("dcdm", "cg"):
        if (s, n0) in its and (s, 2 * n0) in its:
            out[f"{s}_growth_2n"] = its[(s, 2 * n0)] / max(its[(s, n0)], 1)
    if "dcdm_growth_2n" in out:
        out["dcdm_growth_ok"] = out["dcdm_growth_2n"] <= 1.5
    return out


def run(cfg, ctx) -> dict:
    records, training, goals = [], {}, {}
    for i, dim in enumerate(cfg.dims):
        model = None
        if "dcdm" in cfg.solvers:
            model, info = train(cfg, ctx, i, dim)
            training[f"{dim}d"] = ctx.stage(f"train_{dim}d", lambda: info)
            if training[f"{dim}d"].get("status") == "diverged":
                return {"status": "diverged", "training": training, "solves": []}
        for factor in cfg.eval_factors:
            n = cfg.train_n[i] * factor
            for name in cfg.eval_scenes:
                if ctx.stop_requested:
                    raise Interrupted(f"stopped before {dim}D {name} n={n}")
                records += ctx.stage(f"solve_{dim}d_{name}_{n}",
                                     lambda: evaluate_scene(cfg, ctx, model, dim, name, n))
        plot_histories(ctx, records, dim, cfg.tol)
        goals[f"{dim}d"] = targets(cfg, records, dim)
    ctx.write_text("table.md", table(records))
    return {"solves": [{k: r[k] for k in RECORD_KEYS} for r in records],
            "targets": goals, "training": training}

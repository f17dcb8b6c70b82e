"""dcdm: the deep conjugate direction method (Kaneda, Akar, Chen, Kala, Hyde, Teran, "A Deep
Conjugate Direction Method for Iteratively Solving Linear Systems", ICML 2023, arXiv
2205.10763) on MAC-grid pressure Poisson systems, against CG, Jacobi-PCG, IC(0)-PCG,
deflated PCG, AMG-PCG (pyamg, host) and geometric-multigrid PCG (mg, torch, on the device).

Cells, for each dimension in `dims`:
- {part: train, dim} (when "dcdm" is among the solvers): the training scene at train_n
  (and train_n/2, ... with train_sizes > 1), its Ritz vectors (cached under data_dir), the
  network trained through the core loop on random Ritz combinations with the
  scale-invariant loss, saved as checkpoints/model_<dim>d.pt. Record: sizes, Ritz vectors,
  status, steps, validation loss, parameters, training seconds.
- {part: solve, dim, n, scene, solver, protocol} for n = train_n * factor, every
  evaluation scene and solver: one solve to the tolerance, set-up timed apart. Record:
  iterations (exact: the first iteration whose residual is below the target, whatever
  check_every is), iterations_run, converged, rel_residual (recomputed in float64),
  absolute_tol (whether this solver's tolerance was absolute), device, setup_s, solve_s
  and the residual history ||r_k|| / ||b|| (every iteration, or HISTORY of them evenly
  spaced when there are more).

`protocol`: "quadrun" (every solver to the relative tolerance) or "authors" (the baselines
as the authors' test script ran them: CG and deflated PCG to an ABSOLUTE tolerance, the
deflation from `deflate` Lanczos steps started at b plus Jacobi), to compare with the
paper's own columns; the records and the claims say which.

Claims (the paper's abstract and results): DCDM reaches the tolerance in fewer iterations
than CG; its count grows less than CG's from n to 2n; it generalises to scenes not seen in
training; and its wall time to the tolerance (set-up + solve) against CG, MG and AMG on
the run's device (target: below CG's and within 2x of MG's, at the largest n of each dim).
An iteration count is deterministic given the seed, so those claims carry no interval; the
seeds a sweep pools are combined by their median. A timing within TIME_NOISE of its bound
is undecided (inconclusive).
"""
from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from typing import List

from quadrun.claims import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, claim, fmt
from quadrun.schema import ConfigError, TrainConfig, spec, train_config
from quadrun.vocab import derive_seed

log = logging.getLogger("quadrun")

# torch-free copies of quadrun.solvers.poisson.SCENES, krylov.SOLVERS and
# nn.dcdm_net.ARCHS (tests/test_dcdm.py checks that they agree)
SCENE_NAMES = ["box", "box_obstacle", "sphere", "two_obstacles", "random_solids", "cavities",
               "plume", "plume_sphere"]
SOLVER_NAMES = ["cg", "jacobi", "ic", "deflated", "amg", "mg", "dcdm"]
ARCH_NAMES = ["paper", "paper128", "resnet", "multilevel", "additive"]
PROTOCOLS = ["quadrun", "authors"]

HISTORY = 256              # residual-history points kept in a record, at most
UNSEEN_FACTOR = 2.0        # claim "unseen": iterations within this factor of the training scene
MG_FACTOR = 2.0            # claim "walltime": DCDM's time within this factor of MG's
TIME_NOISE = 0.1           # claim "walltime": a time ratio within 10 % of its bound is undecided
SOURCE = "Kaneda et al. 2023 (ICML), abstract and results"
TIME_SOURCE = ("Kaneda et al. 2023 (ICML), timings; the MG and AMG comparison: quadrun "
               "issue 17")


@dataclass
class Config:
    dims: List[int] = spec([2, 3], choices=[2, 3], help="grid dimensions to run")
    train_n: List[int] = spec([64, 16], ge=4, help="training grid size, one per dim")
    samples: List[int] = spec([2000, 600], ge=1, help="training samples, one per dim")
    eval_factors: List[int] = spec([1, 2], ge=1, help="evaluate at n = train_n * factor")
    train_scene: str = spec("box", choices=SCENE_NAMES)
    eval_scenes: List[str] = spec(["box", "two_obstacles", "sphere", "plume_sphere"],
                                  choices=SCENE_NAMES)
    target_scene: str = spec("two_obstacles", choices=SCENE_NAMES,
                             help="obstacle scene (not the training one) for the targets")
    solvers: List[str] = spec(SOLVER_NAMES, choices=SOLVER_NAMES)
    arch: str = spec("additive", choices=ARCH_NAMES, help="additive: a learned SPD "
                     "multilevel (BPX-like) preconditioner whose depth follows the grid; "
                     "paper, paper128: the authors' N=64 and N=128 nets exactly; resnet: "
                     "quadrun's first paper-shaped net; multilevel: a weight-shared V-cycle")
    width: int = spec(16, ge=1)
    blocks: int = spec(2, ge=1, help="residual blocks per stage (resnet, multilevel; "
                       "additive: convolutions in K; paper, paper128: fixed, not used)")
    coarsest: int = spec(4, ge=2, help="multilevel, additive: halve the grid until it is "
                         "this wide")
    max_levels: int = spec(0, ge=0, help="multilevel: cap on pooling levels; 0: no cap")
    train_sizes: int = spec(1, ge=1, le=4, help="train on train_n, train_n/2, ... together "
                            "(each with its own Ritz vectors): the shared multilevel weights "
                            "then see several depths")
    ritz_m: List[int] = spec([1000, 1000], ge=2, help="Lanczos steps (Ritz vectors), per dim")
    ritz_theta: List[int] = spec([50, 50], ge=0, help="lowest m/2 + theta modes weighted 9x")
    val_samples: int = spec(64, ge=1)
    tol: float = spec(1e-4, gt=0, lt=1, help="tolerance of every solver, relative (absolute "
                      "for CG and deflated PCG under protocol=authors)")
    maxiter: int = spec(2000, ge=1, help="iteration cap of the classical solvers")
    dcdm_maxiter: int = spec(300, ge=1, help="iteration cap of DCDM (the paper: 100)")
    check_every: int = spec(1, ge=1, help="iterations between host convergence checks (the "
                            "counts stay exact; a solve runs up to check_every - 1 more)")
    protocol: str = spec("quadrun", choices=PROTOCOLS, help="quadrun: every solver to the "
                         "relative tol; authors: CG and deflated PCG to an absolute tol, "
                         "deflation from `deflate` Lanczos steps at b plus Jacobi")
    deflate: int = spec(16, ge=1, help="Ritz vectors for deflated PCG")
    amg: str = spec("smoothed_aggregation", choices=["smoothed_aggregation", "ruge_stuben"])
    mg_smoother: str = spec("rbgs", choices=["rbgs", "jacobi"], help="multigrid smoother: "
                            "red-black Gauss-Seidel or weighted Jacobi")
    mg_sweeps: int = spec(2, ge=1, help="multigrid smoothing sweeps before and after")
    mg_interpolation: str = spec("constant", choices=["constant", "linear"],
                                 help="multigrid transfers (R = P^T)")
    # the paper: Adam, lr 1e-4, batch 10; at cpu scale 1e-4 learns too slowly for minutes of
    # training, so 1e-3 with a cosine decay (benchmarks/results/dcdm_notes.md)
    train: TrainConfig = train_config(optimizer="adam", lr=1e-3, batch_size=10, epochs=2,
                                      schedule="cosine")


def check(cfg) -> None:
    c = cfg.dcdm
    for key in ("train_n", "samples", "ritz_m", "ritz_theta"):
        if len(c[key]) < len(c.dims):
            raise ConfigError(f"dcdm.{key}: needs one value per entry of dcdm.dims "
                              f"({len(c.dims)}); got {len(c[key])}")
    if "dcdm" in c.solvers and c.target_scene == c.train_scene:
        raise ConfigError(f"dcdm.target_scene: must differ from dcdm.train_scene "
                          f"({c.train_scene!r}): the targets are on an unseen scene")


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
        return _train(c, ctx, cell["dim"])
    return _solve(c, ctx, cell["dim"], cell["n"], cell["scene"], cell["solver"])


def summarize(records, c) -> dict:
    """`targets`: DCDM vs CG on `target_scene` per dim (iteration ratio at train_n, growth
    n -> 2n); status diverged when a training diverged."""
    solves = [r for r in records if r.get("part") == "solve"]
    out = {"targets": {f"{dim}d": _targets(c, solves, dim) for dim in c.dims}}
    if any(r.get("part") == "train" and r.get("status") == "diverged" for r in records):
        out["status"] = "diverged"
    return out


def claims(records, c) -> list:
    its = _medians(records)
    seeds = max((len(v) for v in its.values()), default=0)
    pooled = f"; median over {seeds} seeds" if seeds > 1 else ""
    protocols = sorted({r.get("protocol", "quadrun") for r in records if r.get("part") == "solve"})
    if protocols != ["quadrun"] and protocols:
        pooled += f"; protocol {'+'.join(protocols)}" + (
            " (CG and deflated PCG to an absolute tol)" if "authors" in protocols else "")
    return [_claim_fewer(its, c, pooled), _claim_growth(its, c, pooled),
            _claim_unseen(its, c, pooled), _claim_walltime(_times(records), c, pooled,
                                                           _devices(records))]


def figures(records, c, save) -> None:
    solves = [r for r in records if r.get("part") == "solve" and r.get("residuals")]
    for dim in dict.fromkeys(r["dim"] for r in solves):
        save(_plot_histories(solves, dim, c.tol), f"residuals_{dim}d")


# -- training -----------------------------------------------------------------------------
def _scene_seed(seed: int, name: str, dim: int, n: int) -> int:
    """One scene's seed (random solids, right-hand side): the training scene's domain at
    train_n is the evaluation scene of the same name and size."""
    return derive_seed(seed, "scene", name, dim, n)


def _network(c, dim: int, seed: int):
    from quadrun.devices import seeded
    from quadrun.nn.dcdm_net import build

    with seeded(derive_seed(seed, "init", dim)):
        return build(c.arch, dim, c.width, c.blocks, c.coarsest, c.max_levels)


class _TrainingSize:
    """One training grid: its system, Ritz basis (cached), coefficients and loss."""

    def __init__(self, c, ctx, i: int, dim: int, n: int):
        import torch

        from quadrun.solvers.lanczos import (training_basis, training_coefficients,
                                             training_samples)
        from quadrun.solvers.poisson import build_system

        seed = ctx.runtime.seed
        self.n = n
        self.system = build_system(c.train_scene, n, dim, _scene_seed(seed, c.train_scene, dim, n))
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


def _train(c, ctx, dim: int) -> dict:
    """Train the network for `dim` at train_n (and the smaller train_sizes) and save it."""
    import torch

    from quadrun.solvers.lanczos import training_samples
    from quadrun.training import TensorBatches, fit

    i = list(c.dims).index(dim)
    n = c.train_n[i]
    model = _network(c, dim, ctx.runtime.seed)
    parts = [_TrainingSize(c, ctx, i, dim, n // 2 ** j) for j in range(c.train_sizes)
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
    ctx.save_checkpoint({"model": model.state_dict(), "status": result.status}, f"model_{dim}d")
    return {"sizes": [p.n for p in parts], "ritz_vectors": [len(p.vectors) for p in parts],
            "status": result.status, "steps": result.step,
            "val_loss": result.metrics.get(f"val/loss_{dim}d"),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": result.train_seconds}


def _load_model(c, ctx, dim: int):
    """(model, training status) from checkpoints/model_<dim>d.pt, written by the train cell."""
    from quadrun.artifacts import CheckpointError, load_checkpoint

    path = ctx.checkpoint_path(f"model_{dim}d")
    if not path.exists():
        raise CheckpointError(f"{path} is missing: the {dim}-D network is saved there by the "
                              f"cell part=train/dim={dim}; start a new run folder")
    state = load_checkpoint(path)
    if state.get("fingerprint") != ctx.fingerprint or "model" not in state:
        raise CheckpointError(f"{path} belongs to another config; start a new run folder")
    model = _network(c, dim, ctx.runtime.seed)
    model.load_state_dict(state["model"])
    return model.to(ctx.device), state.get("status", "completed")


# -- solving ------------------------------------------------------------------------------
def _scene(ctx, name: str, n: int, dim: int):
    """(system, b) of one scene, kept in memory while consecutive cells (one per solver)
    use it; only the latest is kept, since large 3-D systems take gigabytes."""
    from quadrun.solvers.poisson import scene

    key = (name, n, dim)
    held = ctx.memo.get("dcdm_scene")
    if held is None or held[0] != key:
        ctx.memo["dcdm_scene"] = held = (key, scene(name, n, dim,
                                                    _scene_seed(ctx.runtime.seed, name, dim, n)))
    return held[1]


def _solve(c, ctx, dim: int, n: int, name: str, solver: str) -> dict:
    from quadrun.solvers import krylov

    model = None
    if solver == "dcdm":
        model, status = ctx.shared(("model", dim), lambda: _load_model(c, ctx, dim))
        if status == "diverged":
            log.warning("dcdm: %dD %s n=%d: the training diverged; no DCDM solve", dim, name, n)
            return {"iterations": None, "iterations_run": None, "converged": False,
                    "rel_residual": None, "absolute_tol": False,
                    "device": _device_name(ctx.device), "setup_s": None, "solve_s": None,
                    "status": "diverged"}
    system, b = _scene(ctx, name, n, dim)
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
            "absolute_tol": rec["tolerance"] == "absolute", "device": _device_name(ctx.device),
            "setup_s": rec["setup_s"], "solve_s": rec["solve_s"],
            "residuals": [history[k] for k in _kept(len(history) - 1)]}


def _device_name(device) -> str:
    """"cpu" or "cuda (<GPU name>)": where the solve's timings were taken."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def _kept(iterations: int) -> list:
    """The iterations whose residual a record keeps: all, or HISTORY evenly spaced ones
    (the first and the last among them)."""
    count = min(iterations + 1, HISTORY)
    if count == iterations + 1:
        return list(range(count))
    return [round(k * iterations / (count - 1)) for k in range(count)]


def _targets(c, records: list, dim: int) -> dict:
    """DCDM vs CG on the target scene: iteration ratio at train_n, growth n -> 2n."""
    n0 = c.train_n[list(c.dims).index(dim)]
    its = {(r["solver"], r["n"]): r["iterations"] for r in records
           if r["dim"] == dim and r["scene"] == c.target_scene and r["converged"]}
    out = {"scene": c.target_scene, "n": n0}
    if ("dcdm", n0) in its and ("cg", n0) in its:
        out["dcdm_over_cg"] = its[("dcdm", n0)] / max(its[("cg", n0)], 1)
        out["dcdm_over_cg_ok"] = out["dcdm_over_cg"] <= 1 / 3
    for s in ("dcdm", "cg"):
        if (s, n0) in its and (s, 2 * n0) in its:
            out[f"{s}_growth_2n"] = its[(s, 2 * n0)] / max(its[(s, n0)], 1)
    if "dcdm_growth_2n" in out:
        out["dcdm_growth_ok"] = out["dcdm_growth_2n"] <= 1.5
    return out


# -- claims -------------------------------------------------------------------------------
def _medians(records) -> dict:
    """(dim, n, scene, solver) -> iterations to the tolerance of each pooled record
    (inf where the solve did not converge or did not run)."""
    out: dict = {}
    for r in records:
        if r.get("part") != "solve":
            continue
        its = r.get("iterations")
        ok = r.get("converged") is True and isinstance(its, (int, float)) and math.isfinite(its)
        out.setdefault((r["dim"], r["n"], r["scene"], r["solver"]), []).append(
            float(its) if ok else math.inf)
    return out


def _median(values: list) -> float:
    return float(statistics.median(values))


def _count(x: float) -> str:
    return "not converged" if math.isinf(x) else fmt(x)


def _json(x: float):
    return None if math.isinf(x) else x


def _ratio(a: float, b: float) -> float:
    """a / b for ordering cases: inf when only b is finite, 0 when only a is, -1 when
    neither is (such a case is undecided, never the worst)."""
    if math.isinf(a) and math.isinf(b):
        return -1.0
    if math.isinf(b):
        return 0.0
    return math.inf if math.isinf(a) else a / b


def _verdict(states: list, what: str) -> tuple:
    """(verdict, why) from per-case states ok | bad | open (undecided)."""
    bad, open_ = states.count("bad"), states.count("open")
    if bad:
        return FAILS, f"{bad} of {len(states)} {what} contradict it"
    if open_:
        return INCONCLUSIVE, (f"{open_} of {len(states)} {what} cannot decide it (neither "
                              "solve reached the tolerance); higher iteration caps would")
    return HOLDS, f"all {len(states)} {what} agree"


def _claim_fewer(its: dict, c, pooled: str) -> dict:
    statement = "DCDM reduces the residual to the tolerance in fewer iterations than CG."
    target = "DCDM's iterations to tol below CG's on every evaluated (dim, n, scene)"
    cases = {}
    for (dim, n, name, solver), values in its.items():
        if solver == "dcdm" and (dim, n, name, "cg") in its:
            d, g = _median(values), _median(its[(dim, n, name, "cg")])
            state = "open" if math.isinf(d) and math.isinf(g) else ("ok" if d < g else "bad")
            cases[f"{dim}D n={n} {name}"] = (d, g, state)
    if not cases:
        return claim("fewer", statement, SOURCE, measured="no DCDM and CG solves of one scene",
                     target=target, verdict=NOT_MEASURED,
                     why="needs both dcdm and cg in dcdm.solvers")
    verdict, why = _verdict([s for _, _, s in cases.values()], "(dim, n, scene)")
    ratios = [d / g for d, g, _ in cases.values() if math.isfinite(d) and math.isfinite(g)]
    worst = max(cases, key=lambda k: _ratio(*cases[k][:2]))
    d, g, _ = cases[worst]
    span = f"DCDM/CG {fmt(min(ratios))}-{fmt(max(ratios))}x; " if ratios else ""
    measured = (f"fewer on {sum(s == 'ok' for *_, s in cases.values())}/{len(cases)}; {span}"
                f"worst {worst}: DCDM {_count(d)} vs CG {_count(g)}{pooled}")
    return claim("fewer", statement, SOURCE, measured=measured, target=target,
                 verdict=verdict, why=why,
                 values={k: {"dcdm": _json(d), "cg": _json(g)} for k, (d, g, _) in cases.items()})


def _growth(its: dict, dim: int, n: int, name: str, solver: str):
    """its(2n) / its(n); inf when only n converged; None when n did not."""
    a, b = _median(its[(dim, n, name, solver)]), _median(its[(dim, 2 * n, name, solver)])
    if math.isinf(a):
        return None
    return b / a


def _claim_growth(its: dict, c, pooled: str) -> dict:
    statement = ("DCDM's iteration count grows less than CG's with the problem size "
                 "(the paper: independent of it).")
    target = "its(2n)/its(n) of DCDM below CG's on every (dim, scene) evaluated at n and 2n"
    cases = {}
    for (dim, n, name, solver) in its:
        if solver == "dcdm" and all(k in its for k in [(dim, 2 * n, name, "dcdm"),
                                                       (dim, n, name, "cg"),
                                                       (dim, 2 * n, name, "cg")]):
            gd, gc = _growth(its, dim, n, name, "dcdm"), _growth(its, dim, n, name, "cg")
            if gd is None or gc is None or (math.isinf(gd) and math.isinf(gc)):
                state = "open"
            else:
                state = "ok" if gd < gc else "bad"
            cases[f"{dim}D {name} {n}->{2 * n}"] = (gd, gc, state)
    if not cases:
        why = ("needs both dcdm and cg in dcdm.solvers" if not any(
            k[3] == "dcdm" for k in its) or not any(k[3] == "cg" for k in its)
            else "needs sizes n and 2n (dcdm.eval_factors with a factor and its double)")
        return claim("growth", statement, SOURCE, measured="no scene solved at n and 2n by "
                     "DCDM and CG", target=target, verdict=NOT_MEASURED, why=why)
    verdict, why = _verdict([s for *_, s in cases.values()], "(dim, scene, n->2n)")

    def span(values):
        xs = [x for x in values if x is not None and math.isfinite(x)]
        return f"{fmt(min(xs))}-{fmt(max(xs))}x" if xs else "-"

    measured = (f"DCDM {span(g for g, _, _ in cases.values())} vs CG "
                f"{span(g for _, g, _ in cases.values())} per doubling; below CG's on "
                f"{sum(s == 'ok' for *_, s in cases.values())}/{len(cases)}{pooled}")
    return claim("growth", statement, SOURCE, measured=measured, target=target,
                 verdict=verdict, why=why,
                 values={k: {"dcdm": None if g is None else _json(g),
                             "cg": None if h is None else _json(h)}
                         for k, (g, h, _) in cases.items()})


def _claim_unseen(its: dict, c, pooled: str) -> dict:
    statement = "DCDM generalises to systems not seen in training."
    target = (f"DCDM's iterations on every unseen scene <= {fmt(UNSEEN_FACTOR)}x those on "
              f"the training scene ({c.train_scene}) at the same dim and n")
    cases = {}
    for (dim, n, name, solver), values in its.items():
        base = its.get((dim, n, c.train_scene, "dcdm"))
        if solver == "dcdm" and name != c.train_scene and base is not None:
            s, t = _median(values), _median(base)
            if math.isinf(t):
                state = "open" if math.isinf(s) else "ok"
            else:
                state = "ok" if s <= UNSEEN_FACTOR * t else "bad"
            cases[f"{dim}D n={n} {name}"] = (s, t, state)
    if not cases:
        why = ("needs dcdm in dcdm.solvers" if not any(k[3] == "dcdm" for k in its) else
               f"needs the training scene ({c.train_scene}) and another among dcdm.eval_scenes")
        return claim("unseen", statement, SOURCE, measured="no DCDM solve of the training "
                     "scene beside an unseen one", target=target, verdict=NOT_MEASURED, why=why)
    verdict, why = _verdict([s for *_, s in cases.values()], "(dim, n, unseen scene)")
    ratios = [s / t for s, t, _ in cases.values() if math.isfinite(s) and math.isfinite(t)]
    worst = max(cases, key=lambda k: _ratio(*cases[k][:2]))
    s, t, _ = cases[worst]
    span = f"unseen/training {fmt(min(ratios))}-{fmt(max(ratios))}x; " if ratios else ""
    measured = f"{span}worst {worst}: {_count(s)} vs {_count(t)} on {c.train_scene}{pooled}"
    return claim("unseen", statement, SOURCE, measured=measured, target=target,
                 verdict=verdict, why=why,
                 values={k: {"unseen": _json(s), "training": _json(t)}
                         for k, (s, t, _) in cases.items()})


def _times(records) -> dict:
    """(dim, n, scene, solver) -> time to the tolerance, set-up + solve seconds, of each
    pooled record (inf where the solve did not converge or did not run)."""
    out: dict = {}
    for r in records:
        if r.get("part") != "solve":
            continue
        t = [r.get("setup_s"), r.get("solve_s")]
        ok = r.get("converged") is True and all(
            isinstance(x, (int, float)) and math.isfinite(x) for x in t)
        out.setdefault((r["dim"], r["n"], r["scene"], r["solver"]), []).append(
            float(sum(t)) if ok else math.inf)
    return out


def _devices(records) -> str:
    names = sorted({str(r.get("device")) for r in records
                    if r.get("part") == "solve" and r.get("device")})
    return ", ".join(names) or "unknown device"


def _bound(ratio: float, bound: float) -> str:
    """ok | bad | open: a time ratio against its bound, undecided within TIME_NOISE."""
    if ratio < bound * (1 - TIME_NOISE):
        return "ok"
    if ratio > bound * (1 + TIME_NOISE):
        return "bad"
    return "open"


def _claim_walltime(times: dict, c, pooled: str, device: str) -> dict:
    statement = ("DCDM reaches the tolerance in less wall time than CG, and within "
                 f"{fmt(MG_FACTOR)}x of geometric multigrid (MG), with AMG beside them.")
    target = (f"DCDM's set-up + solve time below CG's and <= {fmt(MG_FACTOR)}x MG's on every "
              f"scene at the largest n of each dim (ratios within {fmt(100 * TIME_NOISE)} % "
              f"of a bound: undecided); on {device}")
    largest = {}
    for (dim, n, _, solver) in times:
        if solver == "dcdm":
            largest[dim] = max(n, largest.get(dim, n))
    cases = {}
    for (dim, n, name, solver), values in times.items():
        if solver != "dcdm" or n != largest[dim] or not all(
                (dim, n, name, s) in times for s in ("cg", "mg")):
            continue
        d = _median(values)
        g, m = _median(times[(dim, n, name, "cg")]), _median(times[(dim, n, name, "mg")])
        a = times.get((dim, n, name, "amg"))
        a = None if a is None else _median(a)
        if math.isinf(d):
            state = "bad"
        elif math.isinf(m):
            state = _bound(d / g, 1.0) if math.isfinite(g) else "ok"
        else:
            parts = [_bound(d / g, 1.0) if math.isfinite(g) else "ok", _bound(d / m, MG_FACTOR)]
            state = "bad" if "bad" in parts else ("open" if "open" in parts else "ok")
        cases[f"{dim}D n={n} {name}"] = (d, g, m, a, state)
    if not cases:
        return claim("walltime", statement, TIME_SOURCE, measured="no DCDM, CG and MG solves "
                     "of one scene", target=target, verdict=NOT_MEASURED,
                     why="needs dcdm, cg and mg in dcdm.solvers")
    states = [x[-1] for x in cases.values()]
    bad, open_ = states.count("bad"), states.count("open")
    if bad:
        verdict, why = FAILS, f"{bad} of {len(states)} (dim, n, scene) contradict it"
    elif open_:
        verdict, why = INCONCLUSIVE, (f"{open_} of {len(states)} (dim, n, scene) lie within "
                                      f"{fmt(100 * TIME_NOISE)} % of a bound; repeated "
                                      "timings on an unloaded device would decide them")
    else:
        verdict, why = HOLDS, f"all {len(states)} (dim, n, scene) agree"

    def ratio(x, y):
        return "-" if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)) \
            else f"{fmt(x / y)}x"

    parts = []
    for key, (d, g, m, a, _) in cases.items():
        amg = f", AMG {ratio(d, a)}" if a is not None else ""
        parts.append(f"{key}: DCDM {fmt(d) if math.isfinite(d) else 'not converged'} s = "
                     f"CG {ratio(d, g)}, MG {ratio(d, m)}{amg}")
    measured = "; ".join(parts) + f" (set-up + solve; {device}{pooled})"
    return claim("walltime", statement, TIME_SOURCE, measured=measured, target=target,
                 verdict=verdict, why=why,
                 values={k: {"dcdm_s": _json(d), "cg_s": _json(g), "mg_s": _json(m),
                             "amg_s": None if a is None else _json(a)}
                         for k, (d, g, m, a, _) in cases.items()})


# -- figures ------------------------------------------------------------------------------
def _plot_histories(records: list, dim: int, tol: float):
    """||r_k|| / ||b|| against k, one panel per (n, scene), one curve per solver (and seed)."""
    import matplotlib.pyplot as plt

    recs = [r for r in records if r["dim"] == dim]
    scenes = list(dict.fromkeys(r["scene"] for r in recs))
    sizes = sorted({r["n"] for r in recs})
    solvers = list(dict.fromkeys(r["solver"] for r in recs))
    colours = {s: f"C{i}" for i, s in enumerate(solvers)}
    fig, axes = plt.subplots(len(sizes), len(scenes), squeeze=False,
                             figsize=(3.6 * len(scenes), 3.0 * len(sizes)))
    labelled = set()
    for r in recs:
        ax = axes[sizes.index(r["n"])][scenes.index(r["scene"])]
        first = (id(ax), r["solver"]) not in labelled
        labelled.add((id(ax), r["solver"]))
        ax.semilogy(_kept(r["iterations"]), r["residuals"], color=colours[r["solver"]],
                    label=r["solver"] if first else None)
        ax.set_title(f"{r['scene']} {r['n']}^{dim}", fontsize=9)
    for ax in axes.ravel():
        ax.axhline(tol, color="k", lw=0.5, ls=":")
        ax.set_xlabel("iteration", fontsize=8)
    axes[0][0].set_ylabel("||r|| / ||b||")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig

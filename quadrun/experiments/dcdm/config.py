"""dcdm's configuration: the section's defaults (the cpu scale), its checks, the table of
variants (which keys each arch and each solver reads) and the protocol's constants.
Torch-free."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from quadrun.errors import ConfigError
from quadrun.stats import median
from quadrun.schema import TrainConfig, Variants, spec, train_config

# torch-free copies of quadrun.solvers.poisson.SCENES, krylov.SOLVERS and
# nn.dcdm_net.ARCHS (tests/test_dcdm.py checks that they agree)
SCENE_NAMES = ["box", "box_obstacle", "sphere", "two_obstacles", "random_solids", "cavities",
               "plume", "plume_sphere"]
SOLVER_NAMES = ["cg", "jacobi", "ic", "deflated", "amg", "mg", "dcdm"]
ARCH_NAMES = ["paper", "paper128", "resnet", "multilevel", "additive"]
PROTOCOLS = ["quadrun", "authors"]

HISTORY = 256              # residual-history points kept in a record, at most


@dataclass
class Config:
    dims: List[int] = spec([2, 3], choices=[2, 3], nonempty=True, help="grid dimensions to run")
    train_n: List[int] = spec([64, 8], ge=4, help="training grid size, one per dim")
    samples: List[int] = spec([2000, 600], ge=1, help="training samples, one per dim")
    eval_factors: List[int] = spec([1, 2, 4], ge=1, help="evaluate at n = train_n * factor")
    max_n: List[int] = spec([256, 16], ge=4, help="largest n evaluated, one per dim: the "
                            "sizes train_n * factor above it are skipped")
    train_scene: str = spec("box", choices=SCENE_NAMES)
    eval_scenes: List[str] = spec(["box", "two_obstacles", "sphere", "plume_sphere"],
                                  choices=SCENE_NAMES)
    solvers: List[str] = spec(SOLVER_NAMES, choices=SOLVER_NAMES, nonempty=True)
    archs: List[str] = spec(["additive", "paper"], choices=ARCH_NAMES, help="the networks "
                            "trained and evaluated, each with its own claims. additive: a "
                            "learned SPD multilevel (BPX-like) preconditioner whose depth "
                            "follows the grid; paper, paper128: the authors' N=64 and N=128 "
                            "nets exactly; resnet: quadrun's first paper-shaped net; "
                            "multilevel: a weight-shared V-cycle")
    nets: int = spec(3, ge=1, help="networks trained per arch and dim, each from its own "
                     "seed (initialisation, sample draws, batch order); a claim holds only "
                     "if it holds for each")
    width: int = spec(16, ge=1, help="channels of every arch (the authors' nets: 16)")
    blocks: int = spec(2, ge=1, help="residual blocks per stage (resnet, multilevel; "
                       "additive: convolutions in K; paper, paper128: fixed, not used)")
    coarsest: int = spec(4, ge=2, help="multilevel, additive: halve the grid until it is "
                         "this wide")
    max_levels: int = spec(0, ge=0, help="multilevel: cap on pooling levels; 0: no cap")
    train_sizes: int = spec(1, ge=1, le=4, help="train on train_n, train_n/2, ... together "
                            "(each with its own Ritz vectors): the shared multilevel weights "
                            "then see several depths")
    ritz_m: List[int] = spec([1000, 200], ge=2, help="Lanczos steps (Ritz vectors), per dim "
                             "(at most the fluid cells of the training grid)")
    ritz_theta: List[int] = spec([50, 10], ge=0, help="lowest m/2 + theta modes weighted 9x")
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
    inverse_residuals: int = spec(4, ge=1, help="test residuals per scene for the "
                                  "approximate-inverse cosine: b and CG's residuals at evenly "
                                  "spaced fractions of its iterations")
    # the paper: Adam, lr 1e-4, batch 10; at cpu scale 1e-4 learns too slowly for minutes of
    # training, so 1e-3 with a cosine decay (benchmarks/results/dcdm_notes.md)
    train: TrainConfig = train_config(optimizer="adam", lr=1e-3, batch_size=10, epochs=2,
                                      schedule="cosine")


def check(cfg) -> None:
    c = cfg.dcdm
    for key in ("train_n", "samples", "ritz_m", "ritz_theta", "max_n"):
        if len(c[key]) < len(c.dims):
            raise ConfigError(f"dcdm.{key}: needs one value per entry of dcdm.dims "
                              f"({len(c.dims)}); got {len(c[key])}")
    for i, dim in enumerate(c.dims):
        if not eval_sizes(c, i):
            raise ConfigError(f"dcdm.max_n: {c.max_n[i]} leaves no size to evaluate in "
                              f"{dim}-D (train_n {c.train_n[i]} x eval_factors "
                              f"{list(c.eval_factors)}); allowed: at least "
                              f"{c.train_n[i] * min(c.eval_factors)}")


def memory(c) -> tuple:
    """(bytes, key, what) of the costliest cell, from the config alone: the Lanczos basis of
    the training grid (ritz_m float64 vectors of n^dim cells, with a float32 copy and work
    space), the network's training (about 40 saved activations of batch x width x n^dim
    float32), or a solve at the largest evaluated n (the preconditioners' factors and
    hierarchies, about 60 float64 values per cell)."""
    worst = (0, "dcdm.train_n", "nothing")
    trains = "dcdm" in c.solvers
    for i, dim in enumerate(c.dims):
        cells = c.train_n[i] ** dim
        if trains:
            lanczos = 2.5 * 8 * c.ritz_m[i] * cells
            worst = max(worst, (lanczos, "dcdm.train_n", f"{c.ritz_m[i]} Ritz vectors of the "
                                f"{c.train_n[i]}^{dim} training grid"))
            training = 40 * 4 * c.train.batch_size * c.width * cells * c.train_sizes
            worst = max(worst, (training, "dcdm.train_n", f"training at {c.train_n[i]}^{dim}, "
                                f"batch {c.train.batch_size}, width {c.width}"))
        sizes = eval_sizes(c, i) if i < len(c.max_n) else []
        if sizes:
            n = max(sizes)
            worst = max(worst, (60 * 8 * n ** dim, "dcdm.max_n", f"solves at {n}^{dim}"))
    return int(worst[0]), worst[1], worst[2]


def eval_sizes(c, i: int) -> list:
    """The grid sizes evaluated for the i-th dim: train_n * factor, at most max_n."""
    return [c.train_n[i] * f for f in c.eval_factors if c.train_n[i] * f <= c.max_n[i]]


def _archs_in_use(c) -> list:
    """The archs, when networks are trained at all (dcdm among the solvers)."""
    return list(c["archs"]) if "dcdm" in c["solvers"] else []


CLASSICAL = ("cg", "jacobi", "ic", "deflated", "amg", "mg")
VARIANTS = (
    # the network and its training exist only when DCDM is among the solvers; each
    # classical solver reads its own options
    Variants("solvers", {
        "dcdm": ("archs", "nets", "train_scene", "samples", "ritz_m", "ritz_theta",
                 "val_samples", "train_sizes", "train", "dcdm_maxiter"),
        **{s: ("maxiter",) for s in CLASSICAL},
        "deflated": ("maxiter", "deflate"), "amg": ("maxiter", "amg"),
        "mg": ("maxiter", "mg_smoother", "mg_sweeps", "mg_interpolation")}),
    # the authors' nets have a fixed wiring: only their width (16 filters) is theirs to set
    Variants(_archs_in_use, {
        "paper": ("width",), "paper128": ("width",), "resnet": ("width", "blocks"),
        "multilevel": ("width", "blocks", "coarsest", "max_levels"),
        "additive": ("width", "blocks", "coarsest")}, name="arch"),
)
POOL = ()


def kept(iterations: int) -> list:
    """The iterations whose residual a record keeps: all, or HISTORY evenly spaced ones
    (the first and the last among them)."""
    count = min(iterations + 1, HISTORY)
    if count == iterations + 1:
        return list(range(count))
    return [round(k * iterations / (count - 1)) for k in range(count)]


def abs_cosine(cosines) -> float:
    """A map's quality as an approximate inverse on a scene: the median over its test
    residuals of |cos_A(M r, A^-1 r)| (quadrun.solvers.inverse). The absolute value: "up to
    a constant" of either sign, since DCDM's step (q.r)/(q.A q) and its training loss take
    q's sign as it comes (a network may learn -c A^-1)."""
    return median(abs(x) for x in cosines if x is not None)

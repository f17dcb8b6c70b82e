"""pde's config section (the cpu scale is its defaults), its checks and its variants.

Torch-free: the CLI validates and prints help without importing the lab."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from quadrun.errors import ConfigError
from quadrun.schema import TrainConfig, Variants, spec, train_config
from quadrun.solvers.manufactured import MAX_BUMP_WIDTH, SOLUTIONS
from quadrun.solvers.pde import MAX_GRID_DIM, PHIS

SOLVERS = ("random_features", "deep_ritz")
SHORT = {"random_features": "rf", "deep_ritz": "ritz"}           # in claim ids
NAMES = {"random_features": "random features", "deep_ritz": "Deep Ritz"}
ACTIVATIONS = ("tanh", "softplus", "relu_k")   # quadrun.nn.ritz.ACTIVATIONS (a test checks)
PAPER = "Marwah, Lipton, Lu, Risteski (ICML 2023)"
# the nonlinearities whose curvature phi'' is bounded by one constant for every u, so the
# theorem's smoothness constant, the step size and the rate bound are the same at every d;
# quartic's phi'' = 3u^2 grows with max|u*|, which is sqrt(d) for the cosine sum
BOUNDED_CURVATURE = ("logcosh",)


@dataclass
class Config:
    phi: str = spec("quartic", choices=list(PHIS),
                    help="the networks' nonlinearity: none | u^4/4 | alpha log cosh u")
    alpha: float = spec(1.0, gt=0, help="coefficient of logcosh")
    solution: str = spec("cosine_sum", choices=list(SOLUTIONS),
                         help="manufactured u*: d^-1/2 sum cos(pi x_i) | prod cos(pi x_i) | "
                              "A prod cos(pi k_i x_i) | A prod Gaussian(x_i), mirrored")
    amplitude: float = spec(1.0, gt=0, help="A of cosines and gaussian_bump")
    frequencies: List[int] = spec([1, 2], ge=0, le=64, help="k_i of cosines, cycled over the axes")
    bump_width: float = spec(0.25, gt=0, le=MAX_BUMP_WIDTH, help="standard deviation of gaussian_bump")
    bump_centre: List[float] = spec([0.5], ge=0, le=1, help="centre of gaussian_bump per axis, cycled")
    activation: str = spec("tanh", choices=list(ACTIVATIONS), help="relu_k: ReLU^power")
    power: int = spec(3, ge=1, le=8, help="k of the relu_k activation (ReLU^k)")
    scale: float = spec(1.0, gt=0, help="inner weights w ~ N(0, scale^2/d I)")
    repeats: int = spec(3, ge=1, le=100,
                        help="replicates per (part, d, width): cells replicate=0..repeats-1")
    test_points: int = spec(16384, ge=2, help="held-out Sobol points for the errors (power of 2)")
    target_error: float = spec(1e-2, gt=0, lt=1, help="rel. L2 error of the width-needed claim")
    # random-feature Ritz; widths: one list per d of rf_dims, or one list for every d
    rf_dims: List[int] = spec([1, 2, 3, 5, 10], ge=1, le=1000, help="dimensions; [] skips")
    rf_widths: List[List[int]] = spec(
        [[4, 8, 16, 32, 64], [4, 8, 16, 32, 64, 128], [8, 16, 32, 64, 128, 256],
         [8, 16, 32, 64, 128, 256], [8, 16, 32, 64, 128, 256, 512]], ge=1, le=65536,
        help="widths per d (in rf_dims order), or one list for every d")
    rf_points: int = spec(1024, ge=2, help="least Sobol quadrature points of the energy (power of 2)")
    rf_points_per_width: int = spec(64, ge=0, le=4096,
                                    help="quadrature points per unit of width, rounded up to a "
                                         "power of 2 (at least rf_points); 0: rf_points always")
    rf_rcond: float = spec(1e-12, gt=0, lt=1, help="relative eigenvalue cut-off of the Newton solve")
    # Deep Ritz: train.epochs x ritz_steps_per_epoch Adam steps on train.batch_size points
    ritz_dims: List[int] = spec([2, 5, 10], ge=1, le=1000, help="dimensions; [] skips")
    ritz_widths: List[List[int]] = spec([[8, 32, 128]], ge=1, le=65536,
                                        help="widths per d (in ritz_dims order), or one list for every d")
    ritz_steps_per_epoch: int = spec(100, ge=1)
    ritz_lbfgs_steps: int = spec(0, ge=0, help="L-BFGS polish iterations after Adam; 0: none")
    ritz_lbfgs_points: int = spec(4096, ge=2, help="fixed Sobol points of the polish (power of 2)")
    ritz_dtype: str = spec("float32", choices=["float32", "float64"])
    train: TrainConfig = train_config(optimizer="adam", lr=0.01, schedule="cosine",
                                      batch_size=1024, epochs=10, eval_every=10, log_every=100)
    # the grid reference and the proof's mechanism: PGD at each (phi, d)
    reference_dims: List[int] = spec([1, 2, 3], ge=1, le=MAX_GRID_DIM,
                                     help="dimensions of the grid reference; [] skips it")
    reference_phis: List[str] = spec(["none", "logcosh", "quartic"], choices=list(PHIS),
                                     help="nonlinearities of the reference (the networks use pde.phi)")
    reference_grid: int = spec(64, ge=4, le=4096, help="cells per axis")
    pgd_steps: int = spec(40, ge=3, le=100000)
    pgd_eta: float = spec(0.0, ge=0, lt=2, help="PGD step size; 0 picks 2/(2 + max phi'')")
    control_grid: int = spec(8, ge=2, le=256, help="cells per axis of the unpreconditioned control")
    control_steps: int = spec(400, ge=0, le=100000,
                              help="gradient descent steps without the preconditioner at each "
                                   "reference d, for the bounded-curvature phis; 0 skips it")


def widths_for(widths, dims, d: int) -> list:
    """The width grid of dimension d: widths[i] for d = dims[i], or widths[0] for every d."""
    lists = [list(w) for w in widths]
    return lists[0] if len(lists) == 1 else lists[list(dims).index(d)]


def _get(section, key):
    return section.get(key) if isinstance(section, dict) else getattr(section, key)


def control_phis(section) -> list:
    return [p for p in _get(section, "reference_phis") if p in BOUNDED_CURVATURE]


def parts_run(section) -> list:
    """The parts this config runs: reference (reference_dims not empty), control (its steps
    > 0 and a bounded-curvature phi in the reference), random_features and deep_ritz (their
    dimension lists not empty), and the L-BFGS polish of Deep Ritz."""
    out = ["reference"] if _get(section, "reference_dims") else []
    if out and _get(section, "control_steps") and control_phis(section):
        out.append("control")
    out += [p for p, key in (("random_features", "rf_dims"), ("deep_ritz", "ritz_dims"))
            if _get(section, key)]
    if "deep_ritz" in out and _get(section, "ritz_lbfgs_steps") > 0:
        out.append("lbfgs_polish")
    return out


def _networks(section) -> bool:
    return any(p in SOLVERS for p in parts_run(section))


def phis_run(section) -> list:
    """The nonlinearities some part solves: pde.phi for the networks, the reference's."""
    out = [_get(section, "phi")] if _networks(section) else []
    return out + (list(_get(section, "reference_phis")) if _get(section, "reference_dims") else [])


# The keys each variant reads; an override that the chosen variants ignore is reported and
# left out of the fingerprint (e.g. pde.alpha when no part solves with logcosh).
VARIANTS = (
    Variants(phis_run, {"none": (), "quartic": (), "logcosh": ("alpha",)}, name="phi"),
    Variants("solution", {"cosine_sum": (), "cosine_product": (),
                          "cosines": ("frequencies", "amplitude"),
                          "gaussian_bump": ("bump_width", "bump_centre", "amplitude")}),
    Variants(lambda s: [_get(s, "activation")] if _networks(s) else [],
             {"tanh": (), "softplus": (), "relu_k": ("power",)}, name="activation"),
    Variants(parts_run, {
        "reference": ("reference_phis", "reference_grid", "pgd_steps", "pgd_eta",
                      "control_steps"),
        "control": ("control_grid",),
        "random_features": ("rf_widths", "rf_points", "rf_points_per_width", "rf_rcond"),
        "deep_ritz": ("ritz_widths", "ritz_steps_per_epoch", "ritz_lbfgs_steps", "ritz_dtype",
                      "train"),
        "lbfgs_polish": ("ritz_lbfgs_points",),
    }, name="parts"),
)
POOL = ()


def check(cfg) -> None:
    c = cfg.pde
    for key in ("test_points", "rf_points", "ritz_lbfgs_points"):
        if not _power_of_two(c[key]):
            raise ConfigError(f"pde.{key}: {c[key]} is not a power of two; Sobol points "
                              "keep their balance only in powers of two (e.g. 4096, 16384)")
    if c.ritz_dims and not _power_of_two(c.train.batch_size):
        raise ConfigError(f"pde.train.batch_size: {c.train.batch_size} is not a power of two; "
                          "Deep Ritz draws Sobol batches, use e.g. 512, 1024")
    top = max(c.reference_dims, default=0)
    if top and c.reference_grid ** top > 2 ** 24:
        raise ConfigError(f"pde.reference_grid: {c.reference_grid}^{top} cells is too "
                          f"many; must be at most 2^24 cells in all")
    for part in ("rf", "ritz"):
        dims, widths = c[f"{part}_dims"], c[f"{part}_widths"]
        if len(set(dims)) != len(dims):
            raise ConfigError(f"pde.{part}_dims: {list(dims)} lists a dimension twice; list each once")
        if dims and len(widths) not in (1, len(dims)):
            raise ConfigError(f"pde.{part}_widths: {len(widths)} width lists for {len(dims)} "
                              f"dimensions; must be one list per d of pde.{part}_dims, or one "
                              f"list for every d")
        if dims and any(len(w) == 0 for w in widths):
            raise ConfigError(f"pde.{part}_widths: an empty width list; give at least one width")


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0

"""pde's config section (the cpu scale is its defaults), its checks and its variants.

Torch-free: the CLI validates and prints help without importing the lab."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from quadrun.errors import ConfigError
from quadrun.schema import TrainConfig, Variants, spec, train_config
from quadrun.solvers.pde import MAX_GRID_DIM, PHIS, SOLUTIONS

SOLVERS = ("random_features", "deep_ritz")
SHORT = {"random_features": "rf", "deep_ritz": "ritz"}           # in claim ids
NAMES = {"random_features": "random features", "deep_ritz": "Deep Ritz"}
ACTIVATIONS = ("tanh", "softplus", "relu_k")   # quadrun.nn.ritz.ACTIVATIONS (a test checks)
PAPER = "Marwah, Lipton, Lu, Risteski (ICML 2023)"


@dataclass
class Config:
    phi: str = spec("quartic", choices=list(PHIS), help="nonlinearity: none | u^4/4 | alpha log cosh u")
    alpha: float = spec(1.0, gt=0, help="coefficient of logcosh")
    solution: str = spec("cosine_sum", choices=list(SOLUTIONS),
                         help="manufactured u*: d^-1/2 sum cos(pi x_i) | prod cos(pi x_i)")
    activation: str = spec("tanh", choices=list(ACTIVATIONS), help="relu_k: ReLU^power")
    power: int = spec(3, ge=1, le=8, help="k of the relu_k activation (ReLU^k)")
    scale: float = spec(1.0, gt=0, help="inner weights w ~ N(0, scale^2/d I)")
    repeats: int = spec(1, ge=1, le=100,
                        help="replicates per (part, d, width): cells replicate=0..repeats-1")
    test_points: int = spec(16384, ge=2, help="held-out Sobol points for the errors (power of 2)")
    target_error: float = spec(1e-2, gt=0, lt=1, help="rel. L2 error of the width-needed claim and plot")
    # random-feature Ritz
    rf_dims: List[int] = spec([1, 2, 3, 5, 10], ge=1, le=1000, help="dimensions; [] skips")
    rf_widths: List[int] = spec([64, 128, 256, 512, 1024], ge=1, le=65536)
    rf_points: int = spec(16384, ge=2, help="Sobol quadrature points of the energy (power of 2)")
    rf_rcond: float = spec(1e-12, gt=0, lt=1, help="relative eigenvalue cut-off of the Newton solve")
    # Deep Ritz: train.epochs x ritz_steps_per_epoch Adam steps on train.batch_size points
    ritz_dims: List[int] = spec([2, 5, 10], ge=1, le=1000, help="dimensions; [] skips")
    ritz_widths: List[int] = spec([64, 256], ge=1, le=65536)
    ritz_steps_per_epoch: int = spec(100, ge=1)
    ritz_lbfgs_steps: int = spec(0, ge=0, help="L-BFGS polish iterations after Adam; 0: none")
    ritz_lbfgs_points: int = spec(4096, ge=2, help="fixed Sobol points of the polish (power of 2)")
    ritz_dtype: str = spec("float32", choices=["float32", "float64"])
    train: TrainConfig = train_config(optimizer="adam", lr=0.01, schedule="cosine",
                                      batch_size=1024, epochs=20, eval_every=10, log_every=100)
    # grid reference
    reference_d: int = spec(2, ge=0, le=MAX_GRID_DIM, help="dimension of the grid reference; 0 skips it")
    reference_grid: int = spec(64, ge=2, le=4096, help="cells per axis")
    pgd_steps: int = spec(40, ge=1, le=100000)
    pgd_eta: float = spec(0.0, ge=0, lt=2, help="PGD step size; 0 picks 2/(2 + max phi'')")


def _get(section, key):
    return section.get(key) if isinstance(section, dict) else getattr(section, key)


def parts_run(section) -> list:
    """The parts this config runs: reference (reference_d > 0), random_features and
    deep_ritz (their dimension lists not empty), and the L-BFGS polish of Deep Ritz."""
    out = ["reference"] if _get(section, "reference_d") else []
    out += [p for p, key in (("random_features", "rf_dims"), ("deep_ritz", "ritz_dims"))
            if _get(section, key)]
    if "deep_ritz" in out and _get(section, "ritz_lbfgs_steps") > 0:
        out.append("lbfgs_polish")
    return out


def _networks(section) -> list:
    """The activation, when a network runs at all."""
    nets = any(p in SOLVERS for p in parts_run(section))
    return [_get(section, "activation")] if nets else []


# The keys each variant reads; an override that the chosen variants ignore is reported and
# left out of the fingerprint (e.g. pde.phi=quartic pde.alpha=5).
VARIANTS = (
    Variants("phi", {"none": (), "quartic": (), "logcosh": ("alpha",)}),
    Variants(_networks, {"tanh": (), "softplus": (), "relu_k": ("power",)}, name="activation"),
    Variants(parts_run, {
        "reference": ("reference_grid", "pgd_steps", "pgd_eta"),
        "random_features": ("rf_widths", "rf_points", "rf_rcond"),
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
    if c.reference_d and c.reference_grid ** c.reference_d > 2 ** 24:
        raise ConfigError(f"pde.reference_grid: {c.reference_grid}^{c.reference_d} cells is too "
                          f"many; must be at most 2^24 cells in all")


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0

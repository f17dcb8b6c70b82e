"""hierpoly's section: the regimes (a target h = g(p(x)) and its grid of d and n each), the
learners' settings, the checks of a whole config and the variants table. Torch-free: the
CLI validates and prints help without torch."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List

from quadrun.errors import ConfigError
from quadrun.schema import TrainConfig, Variants, spec, train_config

REGIMES = ("separation", "control", "headline", "paper")
LEARNERS = ("layerwise", "hermite_kernel", "joint", "kernel", "relu2")
THREE_LAYER = ("layerwise", "joint")      # the learners the paper's claims are about
KERNELS = ("hermite_kernel", "kernel")
STREAMED = ("layerwise", "hermite_kernel")  # one pass over the largest n serves every n
# the names quadrun.data.polynomials and quadrun.nn.hierarchical accept (both import torch)
INNER = ("quadratic", "hermite_sum")
OUTER = ("power", "hermite", "linear_hermite")
SPECTRA = ("goe", "flat", "decay", "projection")
SIGMA1 = ("cube", "relu", "square")
POOL = tuple(f"{r}.dims" for r in REGIMES)   # a sweep over d extends one study

PAPER = "Wang, Nichani & Lee, ICLR 2024 (arXiv 2311.13774)"


@dataclass
class RegimeConfig:
    """One target h = g(p(x)) and its grid of d and n."""
    inner: str = spec("quadratic", choices=list(INNER),
                      help="p: quadratic x^T A x - tr A | hermite_sum sum_i lambda_i He_k(x_i)")
    k: int = spec(2, ge=1, le=8, help="degree of p (quadratic: 2)")
    spectrum: str = spec("goe", choices=list(SPECTRA), help="spectrum of A for the quadratic p")
    outer: str = spec("power", choices=list(OUTER),
                      help="g: z^q | He_q(z) | He_1(z) + He_q(z)/sqrt(q!); normalised")
    q: int = spec(3, ge=1, le=8, help="degree of g")
    dims: List[int] = spec([8, 16, 32, 64], ge=2)
    ratios: List[float] = spec([2.0 ** j for j in range(9)], gt=0,
                               help="n = ratio * d^k (a nested grid: one pass serves all)")
    seeds: int = spec(5, ge=1, help="replicates per d, each seed derived from the run seed")
    seeds_at_largest_d: int = spec(0, ge=0, help="replicates at the largest d of this run's "
                                                  "dims (the costliest); 0: seeds")
    learners: List[str] = spec(["layerwise"], choices=list(LEARNERS))
    target_error: float = spec(0.2, gt=0, help="relative test MSE that defines n*(d)")
    gram_dtype: str = spec("float64", choices=["float64", "float32"],
                           help="dtype of each chunk's Phi^T Phi in the streamed ridges and of "
                                "the factorisations that choose the ridge (sums and the chosen "
                                "solve stay float64); float32 is about twice as fast")


def _separation() -> RegimeConfig:
    # A projection spectrum (A^2 ~ A) makes the degree-2 part of g(p) exactly ~ p at every
    # d, and g = He_1 + He_2 / sqrt 2 has the linear Hermite coefficient the theorem's
    # stage 1 needs (with g = He_2 alone the degree-2 part of h vanishes as d grows: the
    # control regime measures it). The kernels run as far as their cost allows (their
    # max_features / max_d), the network over the whole range.
    return RegimeConfig(spectrum="projection", outer="linear_hermite", q=2,
                        dims=[6, 8, 12, 16, 24, 32], ratios=[2.0 ** (j / 2) for j in range(-2, 13)],
                        seeds=10, learners=["layerwise", "hermite_kernel", "kernel", "relu2"])


def _control() -> RegimeConfig:
    # The negative control: g = He_2 has no linear Hermite coefficient (E[g'(p)] = 0), so
    # the degree-2 part of h is not p (for a GOE spectrum it is ~ x^T A^2 x - tr A^2, nearly
    # orthogonal to p) and stage 1 has nothing to recover.
    return RegimeConfig(spectrum="goe", outer="hermite", q=2, dims=[8, 16, 32],
                        ratios=[2.0 ** j for j in range(7)], seeds=5)


def _headline() -> RegimeConfig:
    return RegimeConfig(seeds_at_largest_d=3, gram_dtype="float32")


def _paper() -> RegimeConfig:
    return RegimeConfig(inner="hermite_sum", k=3, q=3, dims=[16, 24, 32, 40],
                        ratios=[0.25, 0.5, 1.0, 2.0, 4.0, 8.0], seeds=3, learners=["joint", "kernel"])


@dataclass
class LayerwiseConfig:
    features: str = spec("hermite", choices=["hermite", "random"],
                         help="stage-1 features: Hermite of degree <= k | sigma1(V x + s), V random")
    sigma1: str = spec("square", choices=list(SIGMA1), help="first-layer activation (random features)")
    width1: int = spec(0, ge=0, help="m1 of the random features; 0: d^k")
    width2: int = spec(1000, ge=1, help="m2, random ReLU units of the outer layer")
    stage2_fraction: float = spec(0.25, gt=0, lt=1, help="share of the n samples kept fresh for stage 2")
    bias_range: float = spec(4.0, gt=0, help="outer biases b_j ~ U(-range, range), g at unit variance")
    loo_rows: int = spec(4096, ge=16, help="stage-1 samples whose leave-one-out error picks the ridge")
    max_features: int = spec(9000, ge=1, help="no more stage-1 features than this (memory: "
                                              "8 F^2 bytes; d = 128 has 8,385)")
    max_n: int = spec(2 ** 18, ge=0, help="no cell above this n (cost cap); 0: no cap")
    max_d: int = spec(0, ge=0, help="no cells above this d (cost cap); 0: no cap")


@dataclass
class HermiteKernelConfig:
    loo_rows: int = spec(2048, ge=16, help="samples whose leave-one-out error picks the ridge")
    max_features: int = spec(4000, ge=1, help="no cells at a d whose C(d + kq, kq) features "
                                              "exceed this (the kernel runs as far as it allows)")
    max_n: int = spec(0, ge=0, help="no cell above this n (cost cap); 0: no cap")
    max_d: int = spec(0, ge=0, help="no cells above this d (cost cap); 0: no cap")


@dataclass
class JointConfig:
    sigma1: str = spec("cube", choices=list(SIGMA1))
    width1: int = spec(0, ge=0, help="m1; 0: d^2 (the paper)")
    width2: int = spec(1000, ge=1, help="m2 (the paper: 1000)")
    max_n: int = spec(0, ge=0, help="no cell above this n (cost cap); 0: no cap")
    max_d: int = spec(0, ge=0, help="no cells above this d (cost cap); 0: no cap")
    max_seeds: int = spec(0, ge=0, help="at most this many of a regime's replicates; 0: all")
    # Adam on every layer; train.lr is the input-like weights' lr, readouts get lr / width.
    # Only each training's last loss is logged (log_every).
    train: TrainConfig = train_config(epochs=50, batch_size=256, optimizer="adam", lr=1e-3,
                                      schedule="cosine", log_every=10 ** 9)


@dataclass
class Relu2Config:
    width: int = spec(512, ge=1)
    max_n: int = spec(16384, ge=0, help="no cell above this n (cost cap); 0: no cap")
    max_d: int = spec(12, ge=0, help="no cells above this d (cost cap); 0: no cap")
    max_seeds: int = spec(5, ge=0, help="at most this many of a regime's replicates; 0: all")
    train: TrainConfig = train_config(epochs=50, batch_size=256, optimizer="adam", lr=3e-3,
                                      schedule="cosine", log_every=10 ** 9)


@dataclass
class KernelConfig:
    exact_max_n: int = spec(2048, ge=1, help="exact NTK ridge up to this n; NTK features beyond")
    rf_features: int = spec(2048, ge=4, help="width x (d + 2) of the random network's NTK features")
    max_n: int = spec(2048, ge=0, help="no cell above this n (cost cap: the exact kernel's "
                                        "n^3); 0: no cap")
    max_d: int = spec(8, ge=0, help="no cells above this d (cost cap); 0: no cap")
    max_seeds: int = spec(3, ge=0, help="at most this many of a regime's replicates; 0: all")


@dataclass
class Config:
    regimes: List[str] = spec(["separation", "control", "headline"], choices=list(REGIMES))
    separation: RegimeConfig = field(default_factory=_separation)
    control: RegimeConfig = field(default_factory=_control)
    headline: RegimeConfig = field(default_factory=_headline)
    paper: RegimeConfig = field(default_factory=_paper)
    n_test: int = spec(100_000, ge=10, le=10 ** 8, help="test points (streamed) per (regime, d, "
                       "seed)")
    bootstrap: int = spec(1000, ge=0, le=100_000, help="bootstrap resamples of the seeds for "
                          "the intervals")
    chunk: int = spec(4096, ge=16, help="rows per streamed chunk")
    solve: str = spec("cholesky", choices=["cholesky", "eigh"],
                      help="the streamed ridges' solve at each n: a walk of Cholesky "
                           "factorisations along the ridge grid | one eigendecomposition")
    layerwise: LayerwiseConfig = field(default_factory=LayerwiseConfig)
    hermite_kernel: HermiteKernelConfig = field(default_factory=HermiteKernelConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    relu2: Relu2Config = field(default_factory=Relu2Config)
    kernel: KernelConfig = field(default_factory=KernelConfig)


def _get(section, key):
    return section.get(key) if isinstance(section, dict) else getattr(section, key)


def chosen_learners(section) -> list:
    """The learners some chosen regime lists (the section as a Config or a plain dict)."""
    regimes = _get(section, "regimes") or []
    return list(dict.fromkeys(l for name in regimes for l in (_get(_get(section, name), "learners") or [])))


# The keys each variant reads: a regime's section only when hierpoly.regimes lists it, a
# learner's section only when some chosen regime lists that learner, the random first
# layer's keys only with layerwise.features=random.
VARIANTS = (
    Variants("regimes", {name: (name,) for name in REGIMES}),
    Variants(chosen_learners, {name: (name,) for name in LEARNERS}, name="learners"),
    Variants("layerwise.features", {"hermite": (), "random": ("layerwise.sigma1", "layerwise.width1")}),
)


def check(cfg) -> None:
    c = cfg.hierpoly
    if not c.regimes:
        raise ConfigError("hierpoly.regimes: empty; give at least one of " + ", ".join(REGIMES))
    for name in c.regimes:
        r, key = c[name], f"hierpoly.{name}"
        if r.inner == "quadratic" and r.k != 2:
            raise ConfigError(f"{key}.k: {r.k} with inner 'quadratic', which has degree 2; "
                              "use k=2 or inner=hermite_sum")
        if not r.learners:
            raise ConfigError(f"{key}.learners: empty; give at least one of " + ", ".join(LEARNERS))
        if not r.dims or not r.ratios:
            raise ConfigError(f"{key}.dims / {key}.ratios: must not be empty")
        dims = learner_dims(c, r, "layerwise")
        if "layerwise" in r.learners and c.layerwise.features == "hermite" and dims:
            d = max(dims)
            count = math.comb(d + r.k, r.k)
            if count > c.layerwise.max_features:
                raise ConfigError(f"{key}.dims: layerwise at d = {d} needs C({d} + {r.k}, {r.k}) "
                                  f"= {count} features, above hierpoly.layerwise.max_features = "
                                  f"{c.layerwise.max_features}; use smaller d or raise the limit")
        if "hermite_kernel" in r.learners and not learner_dims(c, r, "hermite_kernel"):
            raise ConfigError(f"{key}.dims: hermite_kernel needs C(d + {r.k * r.q}, {r.k * r.q}) <= "
                              f"hierpoly.hermite_kernel.max_features = "
                              f"{c.hermite_kernel.max_features} at some d; none of {list(r.dims)} has")


def grid(r, d: int) -> List[int]:
    """The n of one d: round(ratio * d^k) for every ratio, at least 2, sorted, no repeats."""
    return sorted(dict.fromkeys(max(2, int(round(x * d ** r.k))) for x in r.ratios))


def max_n(c, learner: str) -> int:
    """A learner's cap on n (no cap: a huge number)."""
    return getattr(c, learner).max_n or 2 ** 62


def learner_dims(c, r, learner: str) -> List[int]:
    """The d of a regime at which a learner gets cells: at most its max_d, and for the
    Hermite kernel at most hermite_kernel.max_features features C(d + kq, kq)."""
    lc = getattr(c, learner)
    out = [d for d in dict.fromkeys(r.dims) if not lc.max_d or d <= lc.max_d]
    if learner == "hermite_kernel":
        out = [d for d in out if math.comb(d + r.k * r.q, r.k * r.q) <= lc.max_features]
    return out

"""expressivity's config section, its checks and its variants (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from quadrun.data.targets import DIMS as TARGET_DIMS
from quadrun.errors import ConfigError
from quadrun.nn.budget import widths_for_budget
from quadrun.nn.modular import PRIMES, check_prime
from quadrun.schema import TrainConfig, Variants, spec, train_config

MODELS = {  # the fitted models: name -> (layer kind, activation)
    "relu_mlp": ("conventional", "relu"),
    "square_mlp": ("conventional", "square"),
    "tanh_mlp": ("conventional", "tanh"),
    "quad_relu": ("quadratic", "relu"),
    "compact_relu": ("compact", "relu"),
}
CONVENTIONAL = tuple(m for m, (kind, _) in MODELS.items() if kind == "conventional")
QUADRATIC = tuple(m for m, (kind, _) in MODELS.items() if kind != "conventional")
DIMENSION_KINDS = ("conventional", "quadratic", "compact")


@dataclass
class Config:
    # part 1: algebraic dimension
    widths: List[List[int]] = spec([[2, 2, 1], [2, 3, 1], [2, 4, 1], [3, 2, 1], [3, 3, 1],
                                    [4, 2, 1], [3, 3, 2], [2, 2, 2, 1], [3, 2, 2, 1],
                                    [3, 3, 3, 1], [2, 2, 2, 2, 1]], ge=1, le=64,
                                   help="width tuples [d0, ..., dL] for the dimension table")
    biases: List[bool] = spec([False, True], help="bias settings for the dimension table")
    dimension_kinds: List[str] = spec(["conventional", "quadratic"], choices=list(DIMENSION_KINDS),
                                      help="layer kinds of the dimension table (x^2 activation)")
    points_factor: float = spec(2.0, ge=1, le=100, help="random inputs = max(params, "
                                "points_factor * params / outputs)")
    primes: List[int] = spec(list(PRIMES), gt=2, lt=2 ** 31,
                             help="primes of the exact rank (each below 2^31); dim is the "
                                  "largest rank over them")
    float_check: bool = spec(True, help="also compute the float64 SVD rank (float_dim, gap, "
                                        "agrees) as a cross-check of the exact one")
    rtol: float = spec(1e-8, gt=0, lt=1, help="float check: singular values below rtol * s_max "
                                              "may be cut")
    min_gap: float = spec(1e6, gt=1, help="float check: smallest rank gap s_r/s_r+1 accepted; "
                                          "below it float_dim is null (unresolved)")
    equal_params: bool = spec(True, help="extension: also the dimension of each architecture's "
                                         "conventional net widened to the quadratic net's "
                                         "parameter count (part=matched)")
    # part 2: function fitting
    targets: List[str] = spec(list(TARGET_DIMS), choices=list(TARGET_DIMS))
    models: List[str] = spec(["relu_mlp", "square_mlp", "quad_relu", "compact_relu"],
                             choices=list(MODELS))
    budget: int = spec(300, ge=10, le=10_000_000, help="parameters per model (matched within 5%)")
    depth: int = spec(2, ge=1, le=16, help="hidden layers of every fitted model")
    replicates: int = spec(20, ge=1, le=100, help="replicates per (target, model), each with "
                                                  "its own initialisation and its own draw of "
                                                  "the data: the records' `replicate` 0, 1, ...")
    n_train: int = spec(1024, ge=1)
    n_test: int = spec(4096, ge=1)
    quad_init: str = spec("relinear", choices=["relinear", "random"],
                          help="initialisation of the quadratic and compact models")
    quad_lr_factor: float = spec(1.0, gt=0, le=100,
                                 help="lr of the quadratic parts (g, b) relative to train.lr")
    plot_grid: int = spec(24, ge=4, le=128,
                          help="replicate 0's outputs are kept on plot_grid^2 inputs for the "
                               "fit plots: a plot_grid x plot_grid grid (2-D, and the 3-D "
                               "slice x3 = 0.5), a line of plot_grid^2 points (1-D)")
    # each fit (target x model x replicate) trains with these; the test MSE is evaluated
    # every eval_every epochs and at the end (eval_every = epochs: at the end only)
    train: TrainConfig = train_config(optimizer="adam", lr=0.005, weight_decay=0.0,
                                      schedule="cosine", epochs=120, batch_size=128,
                                      eval_every=120, log_every=1000)


def _get(section, key):
    return section[key] if isinstance(section, dict) else getattr(section, key)


def parts(section) -> set:
    """The parts a config can measure: "dimension" when it lists a width tuple, a kind and a
    bias setting, "matched" (the extension, if equal_params) when the kinds include both
    quadratic and conventional, "fit" when it lists a target and a model."""
    out = set()
    if all(_get(section, k) for k in ("widths", "dimension_kinds", "biases")):
        out.add("dimension")
        if {"quadratic", "conventional"} <= set(_get(section, "dimension_kinds")):
            out.add("matched")
    if _get(section, "targets") and _get(section, "models"):
        out.add("fit")
    return out


def fitted_models(section) -> set:
    """The models that are trained: those of `models` when the config fits anything."""
    return set(_get(section, "models")) if "fit" in parts(section) else set()


# The keys that choose (widths, dimension_kinds, biases, targets, models) are always read:
# emptying one of them changes what is measured.
QUADRATIC_KEYS = ("quad_init", "quad_lr_factor")
VARIANTS = (
    Variants(parts, {"dimension": ("points_factor", "primes", "float_check", "rtol", "min_gap"),
                     "matched": ("equal_params",),
                     "fit": ("budget", "depth", "replicates", "n_train", "n_test", "plot_grid",
                             "train")}, name="part"),
    Variants(fitted_models, {m: QUADRATIC_KEYS if m in QUADRATIC else () for m in MODELS},
             name="models"),
)
POOL = ()   # a sweep over a key of this section is another study


def memory(c) -> tuple:
    """(bytes, key, what) of the largest dimension cell: the exact rank keeps a few arrays of
    forward-mode derivatives, points x width x params int64 (quadrun.nn.modular), and the
    float cross-check a points x outputs x params float64 Jacobian and its SVD."""
    import math

    from quadrun.nn.modular import param_count

    kinds = [k for k in c.dimension_kinds] + (["conventional"] if c.equal_params else [])
    worst = (0, None)
    for widths in c.widths:
        for kind in dict.fromkeys(kinds):
            for bias in c.biases:
                params = param_count(widths, kind, bias)
                points = max(params, math.ceil(c.points_factor * params / widths[-1]), 1)
                need = 6 * 8 * points * max(widths) * params
                if c.float_check:
                    need = max(need, 3 * 8 * points * widths[-1] * params)
                worst = max(worst, (need, (list(widths), kind, bias, params, points)))
    need, which = worst
    if which is None:
        return 0, "expressivity.widths", "no dimension cell"
    widths, kind, bias, params, points = which
    return need, "expressivity.widths", (f"the {kind} net {widths}{' with bias' if bias else ''}: "
                                         f"{params} parameters at {points} points")


def check(cfg) -> None:
    """Primes below 2^31, width tuples with an input and an output, and every fitted model
    within 5 % of the budget: before anything is created, without torch."""
    c = cfg.expressivity
    for i, p in enumerate(c.primes):
        try:
            check_prime(p)
        except ValueError as exc:
            raise ConfigError(f"expressivity.primes[{i}]: {exc}")
    if not c.primes or len(set(c.primes)) != len(c.primes):
        raise ConfigError("expressivity.primes: give at least one prime below 2^31, each "
                          f"once, e.g. {list(PRIMES)}; got {list(c.primes)}")
    for i, w in enumerate(c.widths):
        if len(w) < 2:
            raise ConfigError(f"expressivity.widths[{i}]: {list(w)} needs at least an input "
                              "and an output width, e.g. [2, 3, 1]")
    for name in c.models:
        for target in c.targets:
            try:
                widths_for_budget(MODELS[name][0], TARGET_DIMS[target], 1, c.depth, c.budget)
            except ValueError as exc:
                raise ConfigError(f"expressivity.budget: {exc}; choose another budget or depth")

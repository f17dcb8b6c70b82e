"""Synthetic regression targets on [-1, 1]^d, noise-free.

    DIMS["radial"]                        # 2: the target's input dimension
    x_tr, y_tr, x_te, y_te = sample("spline", n_train=1024, n_test=4096, seed=7)
    y = TARGETS["product"](x)             # x: a torch tensor [N, d] -> [N]

The functions use tensor methods only, so this module imports without torch (a config
check reads DIMS); `sample` and `plot_inputs` import it when called.
"""
from __future__ import annotations

import math

SPLINE_KNOTS = (-0.6, -0.2, 0.2, 0.6)
SPLINE_CURVATURE = 50.0


def radial(x):
    """cos(pi ||x||^2)."""
    return (math.pi * (x * x).sum(1)).cos()


def product(x):
    """x1 x2 x3."""
    return x[:, 0] * x[:, 1] * x[:, 2]


def spline(x):
    """C^1 piecewise quadratic with knots SPLINE_KNOTS: the second derivative alternates
    +a, -a, +a, -a, +a on the five pieces, a wave between -1 and 1 (zeros at -1, -0.6, ...):
    a/2 (x+1)^2 - a/5 (x+1) + sum_k (-1)^(k+1) a relu(x - t_k)^2."""
    t = x[:, 0]
    a = SPLINE_CURVATURE
    out = a / 2 * (t + 1) ** 2 - a / 5 * (t + 1)
    for k, knot in enumerate(SPLINE_KNOTS):
        out = out + (-1) ** (k + 1) * a * (t - knot).relu() ** 2
    return out


def oscillatory(x):
    """sin(pi x1) cos(pi x2)."""
    return (math.pi * x[:, 0]).sin() * (math.pi * x[:, 1]).cos()


TARGETS = {"radial": radial, "product": product, "spline": spline, "oscillatory": oscillatory}
DIMS = {"radial": 2, "product": 3, "spline": 1, "oscillatory": 2}


def sample(target: str, n_train: int, n_test: int, seed: int):
    """(x_train, y_train [n, 1], x_test, y_test), uniform on [-1, 1]^d, from a generator
    seeded with `seed` (the training points first, then the test points)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, DIMS[target], generator=gen) * 2 - 1
    y = TARGETS[target](x).unsqueeze(1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def plot_inputs(target: str, n: int):
    """n^2 inputs for a picture of the target: a line (1-D), an n x n grid (2-D), the same
    grid in the slice x3 = 0.5 (3-D)."""
    import torch

    d = DIMS[target]
    if d == 1:
        return torch.linspace(-1, 1, n * n).unsqueeze(1)
    t = torch.linspace(-1, 1, n)
    a, b = torch.meshgrid(t, t, indexing="xy")
    x = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    if d > 2:
        x = torch.cat([x, torch.full((x.shape[0], d - 2), 0.5)], 1)
    return x

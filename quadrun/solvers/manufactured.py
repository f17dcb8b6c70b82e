"""Manufactured solutions on [0,1]^d with a zero normal derivative on every face.

A variational problem with the natural (Neumann) boundary condition has u* as its exact
minimiser only when du*/dn = 0 on the boundary; then f = -Laplace u* + u* + phi'(u*) makes
u* the minimiser of int |grad u|^2/2 + u^2/2 + phi(u) - f u. Each solution here gives its
value, gradient and Laplacian in closed form, for numpy arrays and torch tensors alike:

- `cosine_sum`       d^{-1/2} sum_i cos(pi x_i)                (amplitude: max sqrt(d))
- `cosine_product`   prod_i cos(pi x_i)
- `cosines`          A prod_i cos(pi k_i x_i), k_i = frequencies[i mod len(frequencies)]
- `gaussian_bump`    A prod_i g(x_i), g the Gaussian exp(-(t - c_i)^2 / (2 s^2)) plus its
                     mirror images in the faces t = 0 and t = 1 (centres +-c_i + 2k): the
                     method of images, so g'(0) = g'(1) = 0 exactly (up to the images left
                     out, below e^-50 = 2e-22 for s <= 0.5); c_i = centre[i mod len(centre)].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

SOLUTIONS = ("cosine_sum", "cosine_product", "cosines", "gaussian_bump")
IMAGES = 2               # mirror images k = -IMAGES..IMAGES on each side
MAX_BUMP_WIDTH = 0.5


def lib(x):
    """numpy or torch, whichever `x` belongs to (the formulas below work with both)."""
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np
    import torch

    return torch


def _others(values, lib_):
    """[prod_{j != i} values_j for each i], shape (..., d), without dividing."""
    d = values.shape[-1]
    ones = values[..., :1] * 0 + 1
    cols = [(values[..., :i].prod(-1) if i else ones[..., 0]) *
            (values[..., i + 1:].prod(-1) if i + 1 < d else ones[..., 0]) for i in range(d)]
    return lib_.stack(cols, -1)


@dataclass(frozen=True)
class Manufactured:
    """u*(x), grad u*(x), Laplace u*(x) for points x of shape (..., d)."""
    d: int
    name: str = "cosine_sum"
    amplitude: float = 1.0
    frequencies: Tuple[int, ...] = (1,)
    width: float = 0.25
    centre: Tuple[float, ...] = (0.5,)

    def __post_init__(self):
        if self.name not in SOLUTIONS:
            raise ValueError(f"solution must be one of {SOLUTIONS}, not {self.name!r}")
        if not 0 < self.width <= MAX_BUMP_WIDTH:
            raise ValueError(f"bump width must be in (0, {MAX_BUMP_WIDTH}], not {self.width}")
        if not self.frequencies or any(k < 0 for k in self.frequencies):
            raise ValueError(f"frequencies must be integers >= 0, not {self.frequencies}")
        if not self.centre or any(not 0 <= c <= 1 for c in self.centre):
            raise ValueError(f"bump centres must lie in [0, 1], not {self.centre}")

    # -- per-axis pieces ------------------------------------------------------------------
    def _k(self) -> np.ndarray:
        if self.name in ("cosine_sum", "cosine_product"):
            return np.ones(self.d)
        return np.array([self.frequencies[i % len(self.frequencies)] for i in range(self.d)], float)

    def _axes(self, x):
        """(g, g', g'') per axis, each of shape (..., d)."""
        L = lib(x)
        if self.name != "gaussian_bump":
            k = self._k() * math.pi
            k = k if L is np else L.as_tensor(k, dtype=x.dtype, device=x.device)
            return L.cos(k * x), -k * L.sin(k * x), -k * k * L.cos(k * x)
        c = np.array([self.centre[i % len(self.centre)] for i in range(self.d)], float)
        s2 = self.width ** 2
        g = dg = d2g = 0
        for j in range(-IMAGES, IMAGES + 1):
            for m in (c + 2 * j, -c + 2 * j):
                m = m if L is np else L.as_tensor(m, dtype=x.dtype, device=x.device)
                t = x - m
                e = L.exp(-t * t / (2 * s2))
                g, dg, d2g = g + e, dg - t / s2 * e, d2g + (t * t / s2 ** 2 - 1 / s2) * e
        return g, dg, d2g

    def _scale(self) -> float:
        if self.name == "cosine_sum":
            return 1 / math.sqrt(self.d)
        return 1.0 if self.name == "cosine_product" else self.amplitude

    # -- the solution -----------------------------------------------------------------------
    def value(self, x):
        g, _, _ = self._axes(x)
        if self.name == "cosine_sum":
            return g.sum(-1) * self._scale()
        return g.prod(-1) * self._scale()

    def grad(self, x):
        g, dg, _ = self._axes(x)
        if self.name == "cosine_sum":
            return dg * self._scale()
        return dg * _others(g, lib(x)) * self._scale()

    def laplacian(self, x):
        g, _, d2g = self._axes(x)
        if self.name == "cosine_sum":
            return d2g.sum(-1) * self._scale()
        return (d2g * _others(g, lib(x))).sum(-1) * self._scale()

    def max_abs(self) -> float:
        """max |u*| over the cube (the step size of PGD needs it)."""
        if self.name == "cosine_sum":
            return math.sqrt(self.d)
        if self.name != "gaussian_bump":
            return abs(self._scale())
        g, _, _ = self._axes(np.array([self.centre[i % len(self.centre)] for i in range(self.d)]))
        return abs(self.amplitude) * float(np.prod(g))

    def barron_norm(self) -> float:
        """Closed form of sum_xi |xi| |coefficient| in the cosine basis (cosine family);
        NaN for the Gaussian bump (infinitely many modes)."""
        if self.name == "cosine_sum":
            return math.pi * math.sqrt(self.d)          # d modes of |xi| = pi, coefficient d^-1/2
        if self.name == "gaussian_bump":
            return math.nan
        return abs(self._scale()) * math.pi * float(np.linalg.norm(self._k()))

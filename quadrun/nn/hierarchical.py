"""The three-layer network for hierarchical polynomials, and its two training protocols.

    g(x)   = u . sigma1(V x + s)                         the learned feature (bottleneck 1)
    f(x)   = sum_j c_j relu(a_j g(x) + b_j) + w g(x) + c0   outer ReLU layer plus a skip path

- `fit_layerwise` (the theorem's protocol): V, s random and fixed; stage 1 fits u by ridge
  regression of h on sigma1(V x + s) with n1 samples (this finds the best low-degree fit of
  h, which is p up to scale); stage 2 freezes g, rescales it to unit variance and fits the
  outer layer (c, w, c0) by ridge on random ReLU features relu(a_j g + b_j) of n2 fresh samples.
- `init_mup` + `quadrun.training.fit` (the paper's experiment): every layer trained jointly
  with Adam from a muP-style start; `mup_param_groups` gives each layer its learning rate.
- `two_layer_relu`: the end-to-end baseline f(x) = c . relu(W x + b) + c0.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from quadrun.nn.kernels import DEFAULT_LAMBDAS, feature_ridge

SIGMA1 = {
    "square": lambda z: z * z,
    "cube": lambda z: z * z * z,
    "relu": torch.relu,
}


class ThreeLayerNet(nn.Module):
    """f(x) = c . relu(a g(x) + b) + w g(x) + c0 with g(x) = u . sigma1(V x + s)."""

    def __init__(self, d: int, m1: int, m2: int, sigma1: str = "cube"):
        super().__init__()
        if sigma1 not in SIGMA1:
            raise ValueError(f"sigma1 must be one of {sorted(SIGMA1)}, got {sigma1!r}")
        self.d, self.m1, self.m2, self.sigma1 = d, m1, m2, sigma1
        self.V = nn.Parameter(torch.zeros(m1, d))
        self.s = nn.Parameter(torch.zeros(m1))
        self.u = nn.Parameter(torch.zeros(m1))
        self.a = nn.Parameter(torch.zeros(m2))
        self.b = nn.Parameter(torch.zeros(m2))
        self.c = nn.Parameter(torch.zeros(m2))
        self.w = nn.Parameter(torch.zeros(()))     # skip path g -> output
        self.c0 = nn.Parameter(torch.zeros(()))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """sigma1(V x + s): the first layer's m1 features."""
        return SIGMA1[self.sigma1](x @ self.V.T + self.s)

    def feature(self, x: torch.Tensor) -> torch.Tensor:
        """g(x), the scalar bottleneck that should learn p."""
        return self.hidden(x) @ self.u

    def outer(self, g: torch.Tensor) -> torch.Tensor:
        """The outer ReLU features relu(a_j g + b_j), an (n, m2) matrix."""
        return torch.relu(g[:, None] * self.a + self.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.feature(x)
        return self.outer(g) @ self.c + self.w * g + self.c0


@torch.no_grad()
def init_layerwise(net: ThreeLayerNet, gen: torch.Generator, bias_range: float = 4.0) -> None:
    """Random fixed parts for the layerwise protocol: rows of V ~ N(0, I/d) (so v.x ~ N(0,1)),
    s ~ N(0, 1), a_j = +-1, b_j ~ U(-bias_range, bias_range) (g is rescaled to unit variance
    before stage 2, so the kinks of relu(a g + b) cover its range); u, c, w, c0 = 0."""
    _fill(net, gen, V=torch.randn(net.m1, net.d, generator=gen) / math.sqrt(net.d),
          s=torch.randn(net.m1, generator=gen),
          a=torch.randint(0, 2, (net.m2,), generator=gen).float() * 2 - 1,
          b=(torch.rand(net.m2, generator=gen) * 2 - 1) * bias_range)


@torch.no_grad()
def init_mup(net: ThreeLayerNet, gen: torch.Generator) -> None:
    """muP-style start: input-like weights of order 1 per unit (V ~ N(0, I/d), s, a, b ~
    N(0, 1)), readout-like weights of variance 1/width^2 (u ~ N(0, 1/m1^2), c ~ N(0, 1/m2^2)),
    so g and f start at o(1) and every layer moves by order 1 under `mup_param_groups`."""
    _fill(net, gen, V=torch.randn(net.m1, net.d, generator=gen) / math.sqrt(net.d),
          s=torch.randn(net.m1, generator=gen),
          u=torch.randn(net.m1, generator=gen) / net.m1,
          a=torch.randn(net.m2, generator=gen),
          b=torch.randn(net.m2, generator=gen),
          c=torch.randn(net.m2, generator=gen) / net.m2)
    net.w.zero_()
    net.c0.zero_()


def _fill(net: nn.Module, gen: torch.Generator, **values) -> None:
    for name, value in values.items():
        getattr(net, name).copy_(value)


def mup_param_groups(net: ThreeLayerNet, lr: float) -> list:
    """Adam learning rates in the muP style: `lr` for the input-like weights (V, s, a, b) and
    the scalars (w, c0), lr/m1 for u and lr/m2 for c, the readouts of the two wide layers."""
    return [
        {"params": [net.V, net.s, net.a, net.b, net.w, net.c0], "lr": lr},
        {"params": [net.u], "lr": lr / net.m1},
        {"params": [net.c], "lr": lr / net.m2},
    ]


@torch.no_grad()
def fit_layerwise(net: ThreeLayerNet, x1: torch.Tensor, h1: torch.Tensor, x2: torch.Tensor,
                  h2: torch.Tensor, lambdas: Sequence[float] = DEFAULT_LAMBDAS) -> dict:
    """Train `net` (already `init_layerwise`-ed) layer by layer; returns the chosen ridge
    strengths. Stage 1 on (x1, h1), stage 2 on the fresh (x2, h2). Solves run in the
    dtype of x1 (float64 recommended) and the result is copied into the parameters."""
    dtype = x1.dtype
    V, s = net.V.detach().to(dtype), net.s.detach().to(dtype)
    act = SIGMA1[net.sigma1]
    stage1 = feature_ridge(lambda xb: act(xb @ V.T + s), x1, h1, lambdas)
    u = stage1.weights
    g2 = act(x2 @ V.T + s) @ u
    sd = g2.std()
    u = u / (sd if sd > 0 else 1.0)                 # g to unit variance on stage-2 data
    g2 = g2 / (sd if sd > 0 else 1.0)
    a, b = net.a.detach().to(dtype), net.b.detach().to(dtype)

    def outer_features(g):
        return torch.cat([torch.relu(g[:, None] * a + b), g[:, None], torch.ones_like(g)[:, None]], 1)

    stage2 = feature_ridge(outer_features, g2, h2, lambdas)
    coef = stage2.weights
    net.u.copy_(u)
    net.c.copy_(coef[:-2])
    net.w.copy_(coef[-2])
    net.c0.copy_(coef[-1])
    return {"stage1_lambda": stage1.lam, "stage2_lambda": stage2.lam}


def two_layer_relu(d: int, width: int, gen: torch.Generator) -> nn.Sequential:
    """The end-to-end baseline c . relu(W x + b) + c0 with W ~ N(0, I/d), b ~ N(0, 1) and
    c ~ N(0, 1/width^2) (a mean-field-like readout, as in `init_mup`)."""
    net = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(width, d, generator=gen) / math.sqrt(d))
        net[0].bias.copy_(torch.randn(width, generator=gen))
        net[2].weight.copy_(torch.randn(1, width, generator=gen) / width)
        net[2].bias.zero_()
    return net


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two vectors (0 when one is constant)."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else 0.0

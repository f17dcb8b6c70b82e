"""The three-layer network for hierarchical polynomials, and its two training protocols.

    g(x)   = u . sigma1(V x + s)                         the learned feature (bottleneck 1)
    f(x)   = sum_j c_j relu(a_j g(x) + b_j) + w g(x) + c0   outer ReLU layer plus a skip path

- `fit_layerwise` (the theorem's protocol): V, s random and fixed; stage 1 fits u by ridge
  regression of h on sigma1(V x + s) with n1 samples (this finds the best low-degree fit of
  h, which is p up to scale); stage 2 freezes g, rescales it to unit variance and fits the
  outer layer (c, w, c0) by ridge on random ReLU features relu(a_j g + b_j) of n2 fresh samples.
- `layerwise_path`: the same protocol streamed, for every n of a nested grid from one pass:
  stage 1 on any first-layer feature map (the orthonormal Hermite features of degree <= k,
  the infinitely wide first layer's span, or sigma1(V x + s)), its normal equations solved
  at each grid point (quadrun.nn.ridge.ridge_path); stage 2 and the test set streamed too,
  the outer layer evaluated as the piecewise-linear function of g it is (`hinge_eval`).
- `init_mup` + `quadrun.training.fit` (the paper's experiment): every layer trained jointly
  with Adam from a muP-style start; `mup_param_groups` gives each layer its learning rate.
- `two_layer_relu`: the end-to-end baseline f(x) = c . relu(W x + b) + c0.
"""
from __future__ import annotations

import math
import time
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from quadrun.nn.kernels import feature_ridge
from quadrun.nn.ridge import DEFAULT_LAMBDAS, ridge_path

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
    V = torch.randn(net.m1, net.d, generator=gen) / math.sqrt(net.d)
    s = torch.randn(net.m1, generator=gen)
    a, b = outer_init(net.m2, gen, bias_range)
    _fill(net, gen, V=V, s=s, a=a, b=b)


def outer_init(m2: int, gen: torch.Generator, bias_range: float = 4.0) -> tuple:
    """The layerwise protocol's fixed outer units: a_j = +-1, b_j ~ U(-bias_range, bias_range)
    (float64)."""
    a = torch.randint(0, 2, (m2,), generator=gen).double() * 2 - 1
    b = (torch.rand(m2, generator=gen, dtype=torch.float64) * 2 - 1) * bias_range
    return a, b


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
    a, b = net.a.detach().to(dtype), net.b.detach().to(dtype)
    stage2 = fit_outer(act(x2 @ V.T + s) @ u, h2, a, b, lambdas)
    net.u.copy_(u / stage2["scale"])                 # g to unit variance on stage-2 data
    net.c.copy_(stage2["c"])
    net.w.copy_(stage2["w"])
    net.c0.copy_(stage2["c0"])
    return {"stage1_lambda": stage1.lam, "stage2_lambda": stage2["lam"]}


def outer_features(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[relu(a_j g + b_j) for j, g, 1]: the outer layer's features of a scalar feature g."""
    return torch.cat([torch.relu(g[:, None] * a + b), g[:, None], torch.ones_like(g)[:, None]], 1)


@torch.no_grad()
def fit_outer(g: torch.Tensor, h: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
              lambdas: Sequence[float] = DEFAULT_LAMBDAS, loo_rows: int = 8192) -> dict:
    """Stage 2: g rescaled to unit variance (`scale` = its std on these samples), then ridge
    of h on outer_features(g / scale); returns {c, w, c0, scale, lam}."""
    sd = float(g.std()) if len(g) > 1 else 0.0
    scale = sd if sd > 0 and math.isfinite(sd) else 1.0
    g = g / scale
    fit = feature_ridge(lambda gb: outer_features(gb, a, b), g, h, lambdas, loo_rows=loo_rows)
    coef = fit.weights
    return {"c": coef[:-2], "w": coef[-2], "c0": coef[-1], "scale": scale, "lam": fit.lam}


def hinge_eval(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
               w=0.0, c0=0.0) -> torch.Tensor:
    """sum_j c_j relu(a_j g + b_j) + w g + c0 without the (n, m) feature matrix: it is a
    piecewise-linear function of g with a kink at each -b_j / a_j, so sort the kinks once
    and read the slope and intercept of g's interval from cumulative sums (O(n log m))."""
    g = g.reshape(-1)
    a, b, c = a.to(g), b.to(g), c.to(g)
    flat = a == 0
    const = float((c[flat] * torch.relu(b[flat])).sum()) + float(c0)
    a, b, c = a[~flat], b[~flat], c[~flat]
    knots = -b / a
    order = torch.argsort(knots)
    knots, a, b, c = knots[order], a[order], b[order], c[order]
    zeros = torch.zeros(1, dtype=g.dtype, device=g.device)
    pos, neg = a > 0, a < 0
    # active at g: a_j > 0 with knot_j < g (a prefix of the sorted knots), a_j < 0 with
    # knot_j > g (a suffix); slope and intercept of the sum over the active units
    up_s = torch.cat([zeros, torch.cumsum(torch.where(pos, c * a, 0.0), 0)])
    up_i = torch.cat([zeros, torch.cumsum(torch.where(pos, c * b, 0.0), 0)])
    dn_s = torch.cat([zeros, torch.cumsum(torch.where(neg, c * a, 0.0), 0)])
    dn_i = torch.cat([zeros, torch.cumsum(torch.where(neg, c * b, 0.0), 0)])
    i = torch.searchsorted(knots.contiguous(), g.contiguous())   # knots below g: [0, i)
    slope = up_s[i] + (dn_s[-1] - dn_s[i]) + w
    intercept = up_i[i] + (dn_i[-1] - dn_i[i]) + const
    return slope * g + intercept


class StreamScore:
    """Streamed test statistics: relative MSE (over the test set's own variance of h) and
    the Pearson correlation of a feature with p, accumulated chunk by chunk."""

    def __init__(self):
        self.n = 0
        self.sums = dict.fromkeys(("err2", "h", "h2", "f", "f2", "p", "p2", "fp"), 0.0)

    def add(self, pred: torch.Tensor, h: torch.Tensor, feature: Optional[torch.Tensor] = None,
            p: Optional[torch.Tensor] = None) -> None:
        pred, h = pred.double().reshape(-1).cpu(), h.double().reshape(-1).cpu()
        s = self.sums
        s["err2"] += float(((pred - h) ** 2).sum())
        s["h"] += float(h.sum())
        s["h2"] += float((h * h).sum())
        if feature is not None:
            f, p = feature.double().reshape(-1).cpu(), p.double().reshape(-1).cpu()
            s["f"] += float(f.sum())
            s["f2"] += float((f * f).sum())
            s["p"] += float(p.sum())
            s["p2"] += float((p * p).sum())
            s["fp"] += float((f * p).sum())
        self.n += len(h)

    def mse(self) -> float:
        """Mean squared error / empirical variance of h on the test set (nan if not finite)."""
        n, s = self.n, self.sums
        var = s["h2"] / n - (s["h"] / n) ** 2
        out = s["err2"] / n / var if var > 0 else float("nan")
        return out if math.isfinite(out) else float("nan")

    def corr(self) -> float:
        """|corr(feature, p)| (the feature's sign is arbitrary); 0 for a constant feature."""
        n, s = self.n, self.sums
        cov = s["fp"] / n - s["f"] * s["p"] / n ** 2
        vf, vp = s["f2"] / n - (s["f"] / n) ** 2, s["p2"] / n - (s["p"] / n) ** 2
        out = abs(cov) / math.sqrt(vf * vp) if vf > 0 and vp > 0 else 0.0
        return out if math.isfinite(out) else float("nan")


@torch.no_grad()
def layerwise_path(featurize: Callable, features: int, grid: Sequence[tuple], stage1: Callable,
                   stage2: Callable, test: Callable, a: torch.Tensor, b: torch.Tensor,
                   lambdas: Sequence[float] = DEFAULT_LAMBDAS, loo_rows: int = 4096,
                   device="cpu", stop: Optional[Callable[[], None]] = None,
                   compute_dtype=torch.float64, method: str = "eigh") -> List[dict]:
    """The layerwise protocol at every point (n1, n2) of an increasing grid, from one pass
    over each stream: `stage1(start, stop)` / `stage2(start, stop)` yield (x, h) pieces of
    rows [start, stop) of two independent sample streams, `test()` yields (x, p, h) pieces
    of the test set. Stage 1 is ridge of h on featurize(x) (`features` columns) on the first
    n1 samples (one pass, solved at every n1); stage 2 fits the outer layer relu(a g + b)
    on the first n2 fresh samples; the test set is read once for all grid points. Returns
    per grid point {test_mse, corr, seconds, stage1_lambda, stage2_lambda}; `seconds` is
    that point's share (its stretch of the stage-1 stream and its solves, its stage 2, an
    equal share of the stage-2 and test passes). `compute_dtype`: see NormalEquations;
    `method`: its solve (quadrun.nn.ridge)."""
    grid = [(int(n1), int(n2)) for n1, n2 in grid]
    path = ridge_path(featurize, stage1, [n1 for n1, _ in grid], features, lambdas, loo_rows,
                      device, compute_dtype, stop=stop, method=method)
    U = torch.stack([pt.fit.weights for pt in path], 1).to(device)          # (F, S)
    t0 = time.perf_counter()
    n2max = max(n2 for _, n2 in grid)
    g2, h2 = [], []
    for x, h in stage2(0, n2max):
        if stop is not None:
            stop()
        g2.append(featurize(x.to(device)).to(torch.float64) @ U)
        h2.append(h.to(device, torch.float64))
    g2, h2 = torch.cat(g2), torch.cat(h2)
    shared = time.perf_counter() - t0
    outers, own = [], []
    a, b = a.to(device, torch.float64), b.to(device, torch.float64)
    for s, (_, n2) in enumerate(grid):
        t1 = time.perf_counter()
        outers.append(fit_outer(g2[:n2, s], h2[:n2], a, b, lambdas))
        own.append(time.perf_counter() - t1)
    t0 = time.perf_counter()
    scores = [StreamScore() for _ in grid]
    for x, p, h in test():
        if stop is not None:
            stop()
        G = featurize(x.to(device)).to(torch.float64) @ U
        for s, o in enumerate(outers):
            g = G[:, s] / o["scale"]
            scores[s].add(hinge_eval(g, a, b, o["c"], o["w"], o["c0"]), h, G[:, s], p)
    shared += time.perf_counter() - t0
    return [{"test_mse": sc.mse(), "corr": sc.corr(),
             "seconds": pt.seconds + own[s] + shared / len(grid),
             "stage1_lambda": pt.fit.lam, "stage2_lambda": o["lam"]}
            for s, (pt, o, sc) in enumerate(zip(path, outers, scores))]


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

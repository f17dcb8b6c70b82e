"""ReLU kernels and ridge regression: the kernel baselines of the hierpoly experiment.

The network behind the kernels is the two-layer ReLU net on x~ = (x, 1) / sqrt(d + 1),

    f(x) = (1 / sqrt m) sum_j a_j relu(w_j . x~),   w_j ~ N(0, I), a_j ~ N(0, 1).

Its neural tangent kernel (both layers trained) as m -> infinity is, in closed form with the
arc-cosine expectations (Cho & Saul), theta the angle between x~ and y~:

    E[relu(w.x~) relu(w.y~)] = |x~||y~| (sin theta + (pi - theta) cos theta) / (2 pi)
    E[1{w.x~ > 0} 1{w.y~ > 0}] = (pi - theta) / (2 pi)
    NTK(x, y) = E[relu relu] + (x~ . y~) E[1 1]

`ntk_features` is the finite-width network's gradient feature map, whose inner products are
the empirical NTK; beyond `exact_max_n` samples the kernel learner ridges on those.
Ridge strengths are chosen on a log grid by the exact leave-one-out error, from one
eigendecomposition (no held-out split, no refit per strength; quadrun.nn.ridge).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from quadrun.nn.ridge import DEFAULT_LAMBDAS, NormalEquations, RidgeFit, eigh, loo_sums, pick


def augment(x: torch.Tensor) -> torch.Tensor:
    """x~ = (x, 1) / sqrt(d + 1): the bias as a constant input, inputs of norm ~ 1."""
    ones = torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)
    return torch.cat([x, ones], -1) / math.sqrt(x.shape[-1] + 1)


def _relu_expectations(x: torch.Tensor, y: torch.Tensor) -> tuple:
    """(E[relu relu], E[1 1], x~ . y~) for all pairs of rows of x and y."""
    xa, ya = augment(x), augment(y)
    nx, ny = xa.norm(dim=-1), ya.norm(dim=-1)
    dot = xa @ ya.T
    theta = torch.arccos((dot / (nx[:, None] * ny[None, :])).clamp(-1.0, 1.0))
    both = nx[:, None] * ny[None, :] * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) \
        / (2 * math.pi)
    step = (math.pi - theta) / (2 * math.pi)
    return both, step, dot


def relu_ntk(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The two-layer ReLU NTK (see the module docstring), an (n_x, n_y) matrix."""
    both, step, dot = _relu_expectations(x, y)
    return both + dot * step


def random_network(d: int, m: int, gen: torch.Generator, dtype=torch.float64) -> tuple:
    """(W, a) of the width-m network above: W (m, d + 1), a (m,), standard Gaussian."""
    W = torch.randn(m, d + 1, generator=gen, dtype=dtype)
    a = torch.randn(m, generator=gen, dtype=dtype)
    return W, a


def ntk_features(x: torch.Tensor, W: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Gradient of f(x) with respect to (a, W): an (n, m + m (d + 1)) feature matrix whose
    Gram matrix is the empirical NTK of the finite network (W, a)."""
    m = W.shape[0]
    xa = augment(x)
    pre = xa @ W.T
    grad_a = torch.relu(pre)
    grad_w = (a * (pre > 0).to(x.dtype))[:, :, None] * xa[:, None, :]
    return torch.cat([grad_a, grad_w.reshape(len(x), -1)], 1) / math.sqrt(m)


# ---- ridge regression with leave-one-out selection of the strength (quadrun.nn.ridge) -------

def feature_ridge(featurize: Callable, x: torch.Tensor, y: torch.Tensor,
                  lambdas: Sequence[float] = DEFAULT_LAMBDAS, chunk: int = 8192,
                  loo_rows: int = 8192) -> RidgeFit:
    """Primal ridge min ||phi w - y||^2 + lam ||w||^2 with phi = featurize(x), the strength
    chosen by the exact leave-one-out error averaged over the first `loo_rows` samples (an
    unbiased estimate of the full average for i.i.d. rows, at a fraction of the cost).
    phi is made chunk by chunk into streamed normal equations, so the (n, features) matrix
    never exists whole."""
    ne, keep = None, []
    rows = min(len(x), loo_rows)
    for i in range(0, len(x), chunk):
        block = featurize(x[i:i + chunk])
        if ne is None:
            ne = NormalEquations(block.shape[1], block.device)
        ne.add(block, y[i:i + chunk])
        if i < rows:
            keep.append(block[:rows - i].to(torch.float64))
    return ne.solve(lambdas, torch.cat(keep), y[:rows].to(torch.float64))


def kernel_ridge(K: torch.Tensor, y: torch.Tensor,
                 lambdas: Sequence[float] = DEFAULT_LAMBDAS) -> RidgeFit:
    """Dual ridge alpha = (K + lam I)^-1 y, strength by exact leave-one-out error;
    predictions are K(test, train) @ alpha."""
    eig, vec = eigh(K)
    eig, vec = eig.to(K), vec.to(K)
    eig = eig.clamp(min=0)
    scale = float(eig.mean()) or 1.0
    lams = [rel * scale for rel in lambdas]
    b = vec.T @ y
    rel, lam, err = pick(loo_sums(vec, y, eig, b, lams, True), lambdas, scale, len(y))
    return RidgeFit(vec @ (b / (eig + lam)), rel, err)


def ntk_fit(x: torch.Tensor, y: torch.Tensor, exact_max_n: int, rf_features: int,
            gen: torch.Generator, lambdas: Sequence[float] = DEFAULT_LAMBDAS) -> tuple:
    """Ridge regression with the ReLU NTK: exact kernel ridge when n <= exact_max_n, else
    ridge on the NTK features of a random network with about `rf_features` features.
    Returns (predict, "exact" | "features"), predict mapping test inputs (in chunks) to
    predictions, so a test set can be streamed."""
    if len(x) <= exact_max_n:
        fit = kernel_ridge(relu_ntk(x, x), y, lambdas)
        return (lambda xt: _chunked(lambda xb: relu_ntk(xb, x) @ fit.weights, xt)), "exact"
    m = max(1, rf_features // (x.shape[1] + 2))
    W, a = random_network(x.shape[1], m, gen, x.dtype)
    W, a = W.to(x.device), a.to(x.device)
    fit = feature_ridge(lambda xb: ntk_features(xb, W, a), x, y, lambdas)
    return (lambda xt: _chunked(lambda xb: ntk_features(xb, W, a) @ fit.weights, xt)), "features"


def ntk_regression(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, exact_max_n: int,
                   rf_features: int, gen: torch.Generator,
                   lambdas: Sequence[float] = DEFAULT_LAMBDAS) -> tuple:
    """Predictions on x_test of `ntk_fit`'s regression: (predictions, "exact" | "features")."""
    predict, kind = ntk_fit(x, y, exact_max_n, rf_features, gen, lambdas)
    return predict(x_test), kind


def _chunked(fn, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    return torch.cat([fn(x[i:i + chunk]) for i in range(0, len(x), chunk)])

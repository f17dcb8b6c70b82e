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
eigendecomposition (no held-out split, no refit per strength). Leave-one-out rather than
GCV because the targets are heavy-tailed: GCV averages the leverage and lets the fit chase
isolated extreme samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

DEFAULT_LAMBDAS = tuple(10.0 ** e for e in range(-8, 3))


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


def relu_nngp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """E_w[relu(w.x~) relu(w.y~)], w ~ N(0, I): half the arc-cosine kernel of degree 1."""
    return _relu_expectations(x, y)[0]


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


# ---- ridge regression with leave-one-out selection of the strength ------------------------

@dataclass
class RidgeFit:
    """A ridge solve: `weights` (primal: feature weights; dual: kernel coefficients), the
    chosen strength `lam` relative to the mean eigenvalue, and its leave-one-out error."""
    weights: torch.Tensor
    lam: float
    loo: float

    def predict(self, feats_or_kernel: torch.Tensor) -> torch.Tensor:
        return feats_or_kernel @ self.weights


def _loo_sums(P: torch.Tensor, y: torch.Tensor, eig: torch.Tensor, b: torch.Tensor,
              lams: Sequence[float], dual: bool) -> torch.Tensor:
    """Sum of squared exact leave-one-out residuals (y_i - yhat_i) / (1 - H_ii) for each
    strength, for the rows of P = (eigenvector coordinates of the samples).

    Primal (P = phi V, b = V^T phi^T y): yhat = P (b / (e + lam)), H_ii = P_i^2 . 1/(e + lam).
    Dual (P = V, b = V^T y):             yhat = P (e b / (e + lam)), H_ii = P_i^2 . e/(e + lam)."""
    P2 = P * P
    out = []
    for lam in lams:
        inv = 1.0 / (eig + lam)
        coef, lev = (eig * b * inv, eig * inv) if dual else (b * inv, inv)
        res = (y - P @ coef) / (1 - P2 @ lev).clamp(min=1e-12)
        out.append((res ** 2).sum())
    return torch.stack(out)


def _pick(loo: torch.Tensor, lambdas: Sequence[float], scale: float, n: int) -> tuple:
    i = int(torch.nan_to_num(loo, nan=float("inf")).argmin())
    return lambdas[i], lambdas[i] * scale, float(loo[i]) / n


def feature_ridge(featurize: Callable, x: torch.Tensor, y: torch.Tensor,
                  lambdas: Sequence[float] = DEFAULT_LAMBDAS, chunk: int = 8192,
                  loo_rows: int = 8192) -> RidgeFit:
    """Primal ridge min ||phi w - y||^2 + lam ||w||^2 with phi = featurize(x), the strength
    chosen by the exact leave-one-out error averaged over the first `loo_rows` samples (an
    unbiased estimate of the full average for i.i.d. rows, at a fraction of the cost).
    phi is made chunk by chunk, so the (n, features) matrix never exists whole."""
    gram = rhs = None
    for i in range(0, len(x), chunk):
        block = featurize(x[i:i + chunk])
        if gram is None:
            gram = torch.zeros(block.shape[1], block.shape[1], dtype=block.dtype, device=block.device)
            rhs = torch.zeros(block.shape[1], dtype=block.dtype, device=block.device)
        gram += block.T @ block
        rhs += block.T @ y[i:i + chunk]
    eig, vec = torch.linalg.eigh(gram)
    eig = eig.clamp(min=0)
    scale = float(eig.mean()) or 1.0
    lams = [rel * scale for rel in lambdas]
    b = vec.T @ rhs
    rows = min(len(x), loo_rows)
    loo = sum(_loo_sums(featurize(x[i:min(i + chunk, rows)]) @ vec, y[i:min(i + chunk, rows)],
                        eig, b, lams, False) for i in range(0, rows, chunk))
    rel, lam, err = _pick(loo, lambdas, scale, rows)
    return RidgeFit(vec @ (b / (eig + lam)), rel, err)


def kernel_ridge(K: torch.Tensor, y: torch.Tensor,
                 lambdas: Sequence[float] = DEFAULT_LAMBDAS) -> RidgeFit:
    """Dual ridge alpha = (K + lam I)^-1 y, strength by exact leave-one-out error;
    predictions are K(test, train) @ alpha."""
    eig, vec = torch.linalg.eigh(K)
    eig = eig.clamp(min=0)
    scale = float(eig.mean()) or 1.0
    lams = [rel * scale for rel in lambdas]
    b = vec.T @ y
    rel, lam, err = _pick(_loo_sums(vec, y, eig, b, lams, True), lambdas, scale, len(y))
    return RidgeFit(vec @ (b / (eig + lam)), rel, err)


def ntk_regression(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, exact_max_n: int,
                   rf_features: int, gen: torch.Generator,
                   lambdas: Sequence[float] = DEFAULT_LAMBDAS) -> tuple:
    """Predictions on x_test of ridge regression with the ReLU NTK: exact kernel ridge when
    n <= exact_max_n, else ridge on the NTK features of a random network with about
    `rf_features` features. Returns (predictions, "exact" | "features")."""
    if len(x) <= exact_max_n:
        fit = kernel_ridge(relu_ntk(x, x), y, lambdas)
        return _chunked(lambda xb: relu_ntk(xb, x) @ fit.weights, x_test), "exact"
    m = max(1, rf_features // (x.shape[1] + 2))
    W, a = random_network(x.shape[1], m, gen, x.dtype)
    W, a = W.to(x.device), a.to(x.device)
    fit = feature_ridge(lambda xb: ntk_features(xb, W, a), x, y, lambdas)
    return _chunked(lambda xb: ntk_features(xb, W, a) @ fit.weights, x_test), "features"


def _chunked(fn, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    return torch.cat([fn(x[i:i + chunk]) for i in range(0, len(x), chunk)])

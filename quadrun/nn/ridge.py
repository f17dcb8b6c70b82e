"""Ridge regression from streamed normal equations, with leave-one-out choice of the strength.

    ne = NormalEquations(features=2145)
    for x, y in chunks:                        # any number of samples, one chunk in memory
        ne.add(phi(x), y)
    fit = ne.solve(lambdas, loo_phi, loo_y)    # w minimising ||Phi w - y||^2 + lam ||w||^2

The design matrix Phi (n x F) never exists whole: the sums Phi^T Phi, Phi^T y, y^T y and n
are enough to solve, and `copy()` keeps them at a point of a nested grid of n, so one pass
over the largest n gives the fit at every smaller n (`ridge_path`).

The strength is chosen on a log grid, relative to the mean eigenvalue of Phi^T Phi, by
the exact leave-one-out error of the rows given to `solve` (rows that are among the summed
samples, e.g. the first few thousand: an unbiased estimate of the full average for i.i.d.
rows). Leave-one-out rather than GCV because the targets are heavy-tailed: GCV averages
the leverage and lets the fit chase isolated extreme samples. One eigendecomposition serves
every strength.

On a CPU the sums and the eigendecomposition go through numpy (OpenBLAS), measured about
twice as fast as torch's CPU kernels on the same machine for these shapes; on CUDA they
stay in torch. Sums are float64; `compute_dtype=torch.float32` makes each chunk's product
in float32 (about twice as fast again) before it is added.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence

import numpy as np
import torch

DEFAULT_LAMBDAS = tuple(10.0 ** e for e in range(-8, 3))


@dataclass
class RidgeFit:
    """A ridge solve: `weights` (primal: feature weights; dual: kernel coefficients), the
    chosen strength `lam` relative to the mean eigenvalue, and its leave-one-out error."""
    weights: torch.Tensor
    lam: float
    loo: float

    def predict(self, feats_or_kernel: torch.Tensor) -> torch.Tensor:
        return feats_or_kernel @ self.weights


class NormalEquations:
    """Running sums over samples: G = Phi^T Phi, b = Phi^T y, yy = y^T y, n."""

    def __init__(self, features: int, device="cpu", compute_dtype=torch.float64,
                 backend: str = "auto"):
        if backend not in ("auto", "numpy", "torch"):
            raise ValueError(f"backend must be auto, numpy or torch, got {backend!r}")
        self.features, self.device, self.compute_dtype = features, torch.device(device), compute_dtype
        # auto: numpy's BLAS on a CPU, torch elsewhere (the torch path is the CUDA one)
        self.numpy = backend == "numpy" or (backend == "auto" and self.device.type == "cpu")
        self.G = torch.zeros(features, features, dtype=torch.float64, device=self.device)
        self.b = torch.zeros(features, dtype=torch.float64, device=self.device)
        self.yy = 0.0
        self.n = 0

    def add(self, phi: torch.Tensor, y: torch.Tensor) -> None:
        """Add the rows of one chunk (phi: (m, F), y: (m,))."""
        phi, y = phi.to(self.device, torch.float64), y.to(self.device, torch.float64)
        p = phi.to(self.compute_dtype)
        if self.numpy:
            pn = p.numpy()
            self.G.numpy()[...] += (pn.T @ pn)
        else:
            self.G += (p.T @ p).to(torch.float64)
        self.b += phi.T @ y
        self.yy += float(y @ y)
        self.n += len(y)

    def copy(self) -> "NormalEquations":
        out = NormalEquations.__new__(NormalEquations)
        out.__dict__.update(self.__dict__)
        out.G, out.b = self.G.clone(), self.b.clone()
        return out

    def solve(self, lambdas: Sequence[float] = DEFAULT_LAMBDAS, loo_phi: Optional[torch.Tensor] = None,
              loo_y: Optional[torch.Tensor] = None) -> RidgeFit:
        """The ridge weights at the strength (relative to the mean eigenvalue of G) with the
        smallest exact leave-one-out error over the rows (loo_phi, loo_y), which must be
        among the summed samples; without rows, the first strength. When the rows are all
        n samples and n < F the same solve runs in the dual (an n x n eigendecomposition
        instead of F x F): same weights, strengths and leave-one-out errors."""
        backend = "numpy" if self.numpy else "torch"
        if loo_phi is not None and len(loo_y) == self.n and self.n < self.features:
            return dual_solve(loo_phi.to(self.device, torch.float64),
                              loo_y.to(self.device, torch.float64), lambdas, backend)
        eig, vec = eigh(self.G, backend)
        eig = eig.clamp(min=0)
        scale = float(eig.mean()) or 1.0
        lams = [rel * scale for rel in lambdas]
        bv = vec.T @ self.b
        if loo_phi is None or len(lambdas) == 1:
            return RidgeFit(vec @ (bv / (eig + lams[0])), lambdas[0], float("nan"))
        P = loo_phi.to(self.device, torch.float64) @ vec
        loo = loo_sums(P, loo_y.to(self.device, torch.float64), eig, bv, lams, dual=False)
        rel, lam, err = pick(loo, lambdas, scale, len(loo_y))
        return RidgeFit(vec @ (bv / (eig + lam)), rel, err)


def dual_solve(phi: torch.Tensor, y: torch.Tensor, lambdas: Sequence[float] = DEFAULT_LAMBDAS,
               backend: str = "auto") -> RidgeFit:
    """Primal ridge on all rows phi (n x F, n < F) through K = phi phi^T: strengths
    relative to the mean eigenvalue of phi^T phi (tr K / F), exact leave-one-out over the
    n rows, weights phi^T (K + lam)^-1 y."""
    eig, vec = eigh(phi @ phi.T, backend)
    eig, vec = eig.to(phi).clamp(min=0), vec.to(phi)
    scale = float(eig.sum()) / phi.shape[1] or 1.0
    lams = [rel * scale for rel in lambdas]
    bv = vec.T @ y
    rel, lam, err = pick(loo_sums(vec, y, eig, bv, lams, dual=True), lambdas, scale, len(y))
    return RidgeFit(phi.T @ (vec @ (bv / (eig + lam))), rel, err)


def eigh(G: torch.Tensor, backend: str = "auto") -> tuple:
    """(eigenvalues, eigenvectors) of a symmetric matrix; numpy's LAPACK on a CPU (auto)."""
    if backend == "numpy" or (backend == "auto" and G.device.type == "cpu"):
        e, v = np.linalg.eigh(G.numpy())
        return torch.from_numpy(e), torch.from_numpy(v)
    return torch.linalg.eigh(G)


def loo_sums(P: torch.Tensor, y: torch.Tensor, eig: torch.Tensor, b: torch.Tensor,
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


def pick(loo: torch.Tensor, lambdas: Sequence[float], scale: float, n: int) -> tuple:
    """(relative strength, absolute strength, mean LOO error) of the smallest LOO sum."""
    i = int(torch.nan_to_num(loo, nan=float("inf")).argmin())
    return lambdas[i], lambdas[i] * scale, float(loo[i]) / n


@dataclass
class PathPoint:
    """One grid point of `ridge_path`: the fit on the first `n` samples and the seconds the
    pass spent on it (its share of the stream plus its solve)."""
    n: int
    fit: RidgeFit
    seconds: float


def ridge_path(featurize: Callable, chunks: Callable[[int, int], Iterable], grid: Sequence[int],
               features: int, lambdas: Sequence[float] = DEFAULT_LAMBDAS, loo_rows: int = 4096,
               device="cpu", compute_dtype=torch.float64,
               stop: Optional[Callable[[], None]] = None) -> List[PathPoint]:
    """Ridge fits on the first n samples for every n of the non-decreasing `grid`, from one pass
    over max(grid) samples: `chunks(start, stop)` yields (x, y) pieces of rows [start, stop)
    of a fixed stream; the normal equations are solved at each grid point as the pass
    reaches it. The leave-one-out rows are the first min(n, loo_rows) samples (their
    features are kept). `stop()` is called between chunks (it may raise to end the pass)."""
    grid = list(grid)
    if any(b < a for a, b in zip(grid, grid[1:])) or not grid or grid[0] < 1:
        raise ValueError(f"grid must be non-decreasing positive sample counts, got {grid}")
    ne = NormalEquations(features, device, compute_dtype)
    keep_phi: list = []
    keep_y: list = []
    kept, start, out = 0, 0, []
    for n in grid:
        if out and n == out[-1].n:                   # a repeated grid point: the same fit
            out.append(PathPoint(n, out[-1].fit, 0.0))
            continue
        t0 = time.perf_counter()
        for x, y in chunks(start, n):
            if stop is not None:
                stop()
            phi = featurize(x.to(device)).to(torch.float64)
            y = y.to(device, torch.float64)
            ne.add(phi, y)
            if kept < loo_rows:
                take = min(loo_rows - kept, len(y))
                keep_phi.append(phi[:take].clone())
                keep_y.append(y[:take].clone())
                kept += take
        start = n
        rows = min(n, loo_rows)
        loo_phi, loo_y = torch.cat(keep_phi)[:rows], torch.cat(keep_y)[:rows]
        out.append(PathPoint(n, ne.solve(lambdas, loo_phi, loo_y), time.perf_counter() - t0))
    return out

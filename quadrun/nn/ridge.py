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
the leverage and lets the fit chase isolated extreme samples. Two solves:
- ``eigh``: one eigendecomposition of Phi^T Phi serves every strength of the grid;
- ``cholesky``: a walk along the grid from a starting strength (the previous grid point's
  choice in `ridge_path`, else the one nearest F / n) to the first strength whose
  neighbours both have a larger leave-one-out error, one Cholesky factorisation of
  Phi^T Phi + lam I per strength tried (usually 3); the factorisations run in
  `compute_dtype` (float32 halves their cost) and the chosen strength's weights are
  refined to float64 accuracy (iterative refinement: float64 residuals, corrections
  through the float32 factor). The same choice as ``eigh``
  wherever the leave-one-out error is unimodal on the grid; at F = 8,385 features an
  eigendecomposition costs about 30 Cholesky factorisations
  (benchmarks/hierpoly_stage1.py measures both).

On a CPU the sums and the eigendecomposition go through numpy (OpenBLAS), measured about
twice as fast as torch's CPU kernels on the same machine for these shapes; on CUDA they
stay in torch. Sums are float64; `compute_dtype=torch.float32` makes each chunk's product
in float32 (about twice as fast again) before it is added.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence

import numpy as np
import scipy.linalg
import torch

DEFAULT_LAMBDAS = tuple(10.0 ** e for e in range(-8, 3))


@dataclass
class RidgeFit:
    """A ridge solve: `weights` (primal: feature weights; dual: kernel coefficients), the
    chosen strength `lam` relative to the mean eigenvalue, and its leave-one-out error."""
    weights: torch.Tensor
    lam: float
    loo: float
    index: int = -1           # the position of `lam` in the grid (cholesky solves)

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
              loo_y: Optional[torch.Tensor] = None, method: str = "eigh",
              start: Optional[int] = None) -> RidgeFit:
        """The ridge weights at the strength (relative to the mean eigenvalue of G) with the
        smallest exact leave-one-out error over the rows (loo_phi, loo_y), which must be
        among the summed samples; without rows, the first strength. When the rows are all
        n samples and n < F the same solve runs in the dual (an n x n eigendecomposition
        instead of F x F): same weights, strengths and leave-one-out errors. `method`:
        eigh (every strength of the grid) or cholesky (a walk from `start`, by default the
        middle of the grid, to a local minimum; see the module docstring)."""
        backend = "numpy" if self.numpy else "torch"
        if method not in ("eigh", "cholesky"):
            raise ValueError(f"method must be eigh or cholesky, got {method!r}")
        if loo_phi is not None and len(loo_y) == self.n and self.n < self.features:
            return dual_solve(loo_phi.to(self.device, torch.float64),
                              loo_y.to(self.device, torch.float64), lambdas, backend)
        if method == "cholesky" and loo_phi is not None and len(lambdas) > 1:
            return self._cholesky_walk(lambdas, loo_phi.to(self.device, torch.float64),
                                       loo_y.to(self.device, torch.float64), start)
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
        return RidgeFit(vec @ (bv / (eig + lam)), rel, err, index=list(lambdas).index(rel))


    def _cholesky_walk(self, lambdas, P: torch.Tensor, y: torch.Tensor, start) -> RidgeFit:
        scale = float(torch.trace(self.G)) / self.features or 1.0     # the mean eigenvalue
        tried: dict = {}
        best: dict = {}

        def loo(i: int) -> float:
            if i not in tried:
                factor = cholesky(self.G, lambdas[i] * scale, self.compute_dtype, self.numpy)
                value = float("inf") if factor is None else \
                    float(loo_with_factor(factor, self.b, P, y, self.numpy))
                tried[i] = value if math.isfinite(value) else float("inf")
                if factor is not None and tried[i] < best.get("loo", float("inf")):
                    best.update(loo=tried[i], index=i, factor=factor)
            return tried[i]

        if start is None or not 0 <= start < len(lambdas):
            # no previous choice: the strength nearest F / n (the relative ridge that balances
            # a noise of the target's own size against n samples)
            guess = math.log10(self.features / max(self.n, 1))
            start = min(range(len(lambdas)), key=lambda j: abs(math.log10(lambdas[j]) - guess))
        i = start
        while loo(i) == float("inf") and i + 1 < len(lambdas):   # too small to factor
            i += 1
        while True:
            if i > 0 and loo(i - 1) < loo(i):
                i -= 1
            elif i + 1 < len(lambdas) and loo(i + 1) < loo(i):
                i += 1
            else:
                break
        lam = lambdas[i] * scale
        w = None
        if best.get("index") == i:
            w = refine(self.G, self.b, lam, best["factor"], self.numpy)
        while w is None:                      # not positive definite in the search's dtype
            factor = cholesky(self.G, lam, torch.float64, self.numpy)
            w = None if factor is None else factor_solve(factor, self.b, self.numpy)
            lam = lam * 10 if lam > 0 else scale
        return RidgeFit(w, lambdas[i], tried[i] / len(y), index=i)


def refine(G: torch.Tensor, b: torch.Tensor, lam: float, L, numpy_backend: bool,
           steps: int = 10, tol: float = 1e-13):
    """(G + lam I)^-1 b in float64 from a Cholesky factor L of lower precision: iterative
    refinement (residuals in float64, corrections through L); None when it does not
    converge (then a float64 factorisation is needed)."""
    w = factor_solve(L, b, numpy_backend)
    if L.dtype in (np.float64, torch.float64):
        return w
    Gm = G.numpy() if numpy_backend else G
    wm = w.numpy() if numpy_backend else w
    size = float(abs(b).max()) or 1.0
    for _ in range(steps):
        r = (b.numpy() if numpy_backend else b) - (Gm @ wm + lam * wm)
        if float(abs(r).max()) <= tol * size:
            break
        dw = factor_solve(L, torch.from_numpy(r) if numpy_backend else r, numpy_backend)
        wm = wm + (dw.numpy() if numpy_backend else dw)
    else:
        return None
    return torch.from_numpy(np.asarray(wm)) if numpy_backend else wm


def cholesky(G: torch.Tensor, lam: float, dtype, numpy_backend: bool):
    """The lower Cholesky factor of G + lam I in `dtype` (scipy on a CPU, torch otherwise),
    or None when it is not positive definite in that precision."""
    if numpy_backend:
        A = G.numpy().astype(np.float32 if dtype == torch.float32 else np.float64)
        A[np.diag_indices_from(A)] += lam
        try:
            return scipy.linalg.cholesky(A, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None
    A = G.to(dtype)
    A.diagonal().add_(lam)
    L, info = torch.linalg.cholesky_ex(A)
    return None if int(info) != 0 or not bool(torch.isfinite(L.diagonal()).all()) else L


def factor_solve(L, b: torch.Tensor, numpy_backend: bool) -> torch.Tensor:
    """(L L^T)^-1 b in float64 (the factor's dtype for the triangular solves)."""
    if numpy_backend:
        w = scipy.linalg.cho_solve((L, True), b.numpy().astype(L.dtype), check_finite=False)
        return torch.from_numpy(np.asarray(w, np.float64))
    return torch.cholesky_solve(b.to(L.dtype)[:, None], L)[:, 0].to(torch.float64)


def loo_with_factor(L, b: torch.Tensor, P: torch.Tensor, y: torch.Tensor,
                    numpy_backend: bool) -> float:
    """Sum of squared exact leave-one-out residuals of the rows P (their features) with
    targets y, for the ridge whose G + lam I = L L^T: H_ii = |L^-1 p_i|^2."""
    w = factor_solve(L, b, numpy_backend).to(P)
    if numpy_backend:
        Z = scipy.linalg.solve_triangular(L, P.numpy().T.astype(L.dtype), lower=True,
                                          check_finite=False)
        lev = torch.from_numpy(np.einsum("ij,ij->j", Z, Z).astype(np.float64))
    else:
        Z = torch.linalg.solve_triangular(L, P.T.to(L.dtype), upper=False)
        lev = (Z * Z).sum(0).to(torch.float64)
    res = (y - P @ w) / (1 - lev).clamp(min=1e-12)
    return float((res ** 2).sum())


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
    return RidgeFit(phi.T @ (vec @ (bv / (eig + lam))), rel, err, index=list(lambdas).index(rel))


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
               stop: Optional[Callable[[], None]] = None, method: str = "eigh") -> List[PathPoint]:
    """Ridge fits on the first n samples for every n of the non-decreasing `grid`, from one pass
    over max(grid) samples: `chunks(start, stop)` yields (x, y) pieces of rows [start, stop)
    of a fixed stream; the normal equations are solved at each grid point as the pass
    reaches it. The leave-one-out rows are the first min(n, loo_rows) samples (their
    features are kept). `stop()` is called between chunks (it may raise to end the pass).
    `method`: NormalEquations.solve's; a cholesky walk starts at the previous point's
    strength."""
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
        begin = out[-1].fit.index if out and out[-1].fit.index >= 0 else None
        out.append(PathPoint(n, ne.solve(lambdas, loo_phi, loo_y, method, begin),
                             time.perf_counter() - t0))
    return out

"""Lanczos with full re-orthogonalisation, Ritz vectors, and DCDM's training set.

    V, alpha, beta = lanczos(A, v0, m)    # A V_m = V_m T_m + beta[m-1] v_{m+1} e_m^T
    values, vectors = ritz(A, m, seed)    # ascending Ritz pairs, zero modes dropped
    data = training_basis(system, m, seed, data_dir)   # cached by a content hash
    b = training_samples(data["vectors"], coeff)       # normalised right-hand sides

The start vector is A * randn: it lies in A's range, so the Krylov space avoids the
null space (the constants on each fluid region) and the Ritz values that round-off still
puts near zero are dropped. DCDM trains on random combinations of the Ritz vectors with
the lowest m/2 + theta weighted 9x: the smooth, slowly converging modes CG struggles with.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

log = logging.getLogger("quadrun")

CACHE_VERSION = "1"


def lanczos(A, v0: torch.Tensor, m: int):
    """m steps of Lanczos on the symmetric operator A (anything with `A @ v`), every new
    vector re-orthogonalised against all earlier ones by classical Gram-Schmidt, a second
    time when the first pass removed much of it (the DGKS criterion: its norm fell below
    1/sqrt(2) of what it was; Daniel, Gragg, Kaufman, Stewart 1976).

    Returns V (n, k), alpha (k,), beta (k,) with k <= m (fewer on an invariant subspace):
    T = tridiag(beta[:-1], alpha, beta[:-1]) and A V = V T + beta[-1] v_{k+1} e_k^T.
    The basis is built as rows (k, n), so each re-orthogonalisation reads contiguous
    memory (2-3x faster than columns on a CPU); V is returned as its transpose."""
    n = v0.shape[0]
    m = min(m, n)
    Q = v0.new_zeros(m + 1, n)
    alpha = v0.new_zeros(m)
    beta = v0.new_zeros(m)
    Q[0] = v0 / v0.norm()
    scale = None
    for j in range(m):
        w = A @ Q[j]
        alpha[j] = w.dot(Q[j])
        w = w - alpha[j] * Q[j] - (beta[j - 1] * Q[j - 1] if j > 0 else 0)
        before = w.norm()
        w = w - (Q[:j + 1] @ w) @ Q[:j + 1]        # full re-orthogonalisation
        if float(w.norm()) < 0.7071 * float(before):   # much removed: once more suffices
            w = w - (Q[:j + 1] @ w) @ Q[:j + 1]
        beta[j] = w.norm()
        scale = max(scale or 0.0, abs(float(alpha[j])) + float(beta[j]))
        if float(beta[j]) <= 1e-12 * scale:  # invariant subspace: stop early
            return Q[:j + 1].T, alpha[:j + 1], beta[:j + 1]
        Q[j + 1] = w / beta[j]
    return Q[:m].T, alpha, beta


def tridiagonal(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """T_k from lanczos' alpha (k,) and beta (k,) (the last beta is the remainder)."""
    T = torch.diag(alpha)
    off = beta[:-1]
    return T + torch.diag(off, 1) + torch.diag(off, -1)


def ritz(A, m: int, seed: int = 0, dtype=torch.float64, device="cpu", drop: float = 1e-8,
         start: torch.Tensor = None):
    """Ritz pairs of A from m Lanczos steps started at A * randn (or at `start`, e.g. the
    right-hand side as Kaneda et al.'s deflated PCG does): (values ascending (k,), vectors
    (n, k)); values below drop * largest (A's null space) are left out."""
    n = A.shape[0]
    if start is None:
        gen = torch.Generator().manual_seed(seed)
        start = A @ torch.randn(n, generator=gen, dtype=dtype).to(device)
    V, alpha, beta = lanczos(A, start.to(device, dtype), m)
    theta, S = torch.linalg.eigh(tridiagonal(alpha, beta))
    keep = theta > drop * theta.abs().max()
    return theta[keep], V @ S[:, keep]


def _cache_key(system, m: int, seed: int) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}|{system.digest()}|{m}|{seed}".encode())
    return h.hexdigest()[:20]


def training_basis(system, m: int, seed: int, data_dir, device="cpu",
                   dtype=torch.float64) -> dict:
    """Ritz values and vectors (float32, (k, n)) of the system's matrix, computed once and
    cached as `<data_dir>/dcdm/ritz_<hash>.pt`, the hash of the solid mask, m and seed."""
    path = Path(data_dir) / "dcdm" / f"ritz_{_cache_key(system, m, seed)}.pt"
    if path.exists():
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            log.info("dcdm: Ritz vectors from cache %s", path)
            return data
        except Exception as exc:  # a truncated file: recompute (and overwrite atomically)
            log.warning("dcdm: cache %s unreadable (%s); recomputing", path, exc)
    A = system.matrix(device, dtype)
    values, vectors = ritz(A, m, seed=seed, dtype=dtype, device=device)
    data = {"values": values.cpu(), "vectors": vectors.T.contiguous().float().cpu(),
            "m": m, "seed": seed, "digest": system.digest()}
    from quadrun.artifacts import save_checkpoint  # atomic torch.save

    save_checkpoint(path, data, keep_previous=False)
    log.info("dcdm: %d Ritz vectors (m=%d) cached at %s", len(values), m, path)
    return data


def training_coefficients(k: int, count: int, low: int, seed: int) -> torch.Tensor:
    """(count, k) random combination weights: N(0,1), the lowest `low` modes times 9."""
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(count, k, generator=gen)
    c[:, :min(low, k)] *= 9.0
    return c


def training_samples(vectors: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    """Normalised right-hand sides coeff @ vectors: (batch, n), unit 2-norm rows."""
    b = coeff @ vectors
    return b / b.norm(dim=1, keepdim=True)

"""Hierarchical polynomial targets h = g(p(x)) on Gaussian inputs x ~ N(0, I_d).

    target = make_target("quadratic", d=16, k=2, q=3, seed=0)
    x, p, h = target.sample(4096, seed=1)        # fresh, independent samples per seed

Inner polynomials p of degree k, normalised exactly to E[p] = 0, E[p^2] = 1:
- ``quadratic``: p = (x^T A x - tr A) / (sqrt 2 ||A||_F), A random symmetric with a
  chosen spectrum (Var x^T A x = 2 ||A||_F^2 for Gaussian x);
- ``hermite_sum``: p = sum_i lambda_i He_k(x_i) / sqrt(k!), lambda_i = +-1/sqrt(d) with
  random signs (the paper's k = 3 case); the He_k(x_i)/sqrt(k!) are orthonormal.

Outer polynomials g of degree q: ``power`` (z^q), ``hermite`` (He_q(z)) or
``linear_hermite`` (He_1(z) + He_q(z) / sqrt(q!): a unit linear Hermite coefficient beside
the degree-q one), then shifted and scaled so that h = g(p) has E[h] = 0 and E[h^2] = 1
exactly. The moments of p needed for that are computed exactly from cumulants (quadratic
forms: kappa_r = 2^(r-1) (r-1)! tr A^r; sums of independent terms: cumulants add), no
Monte Carlo.

Samples come in blocks of BLOCK rows, block j drawn from its own generator seeded by
derive_seed(seed, j): the first n samples of a seed are the same however they are read
(`sample(n, seed)` whole, or `stream(seed, start, stop)` in chunks), so the samples of a
nested grid of n are prefixes of one stream, and a million samples never need to exist at
once. `HermiteFeatures(d, degree)`: the orthonormal multivariate Hermite basis of the
polynomials of degree <= degree, C(d + degree, degree) features.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch

from quadrun.vocab import derive_seed

INNER = ("quadratic", "hermite_sum")
OUTER = ("power", "hermite", "linear_hermite")
BLOCK = 4096                              # rows per independently seeded block of samples
SPECTRA = ("goe", "flat", "decay", "projection")


# ---- probabilists' Hermite polynomials -------------------------------------------------

def hermite_coefficients(k: int) -> List[int]:
    """Integer monomial coefficients [c_0, ..., c_k] of He_k, by He_{j+1} = z He_j - j He_{j-1}."""
    prev, cur = [1], [0, 1]
    if k == 0:
        return prev
    for j in range(1, k):
        nxt = [0] + cur                      # z * He_j
        for i, c in enumerate(prev):         # - j * He_{j-1}
            nxt[i] -= j * c
        prev, cur = cur, nxt
    return cur


def hermite(k: int, z: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """He_k(z) by the three-term recurrence; divided by sqrt(k!) when `normalized`, which
    makes {He_k / sqrt(k!)} orthonormal under N(0, 1)."""
    prev, cur = torch.ones_like(z), z
    if k == 0:
        out = prev
    else:
        for j in range(1, k):
            prev, cur = cur, z * cur - j * prev
        out = cur
    return out / math.sqrt(math.factorial(k)) if normalized else out


def gaussian_moment(j: int) -> int:
    """E[z^j] for z ~ N(0, 1): (j-1)!! for even j, 0 for odd j."""
    return 0 if j % 2 else math.prod(range(j - 1, 0, -2))


def _poly_power(coeffs: Sequence[float], m: int) -> np.ndarray:
    out = np.array([1.0])
    for _ in range(m):
        out = np.convolve(out, np.asarray(coeffs, dtype=float))
    return out


def polynomial_moment(coeffs: Sequence[float], m: int) -> float:
    """E[P(z)^m] for z ~ N(0, 1) and P with monomial coefficients `coeffs`."""
    c = _poly_power(coeffs, m)
    return float(sum(cj * gaussian_moment(j) for j, cj in enumerate(c)))


class HermiteFeatures:
    """phi_alpha(x) = prod_i He_{alpha_i}(x_i) / sqrt(alpha_i!) for every multi-index alpha
    with |alpha| <= degree: an orthonormal basis of the polynomials of degree <= degree
    under N(0, I_d), ordered by degree (the constant first, then x_1..x_d, ...).

        phi = HermiteFeatures(d=64, degree=2)      # 1 + 64 + 64*65/2 = 2145 features
        Phi = phi(x)                               # (n, 2145)
    """

    def __init__(self, d: int, degree: int):
        self.d, self.degree = d, degree
        var, power, degs = [], [], []
        for m in range(degree + 1):
            for combo in itertools.combinations_with_replacement(range(d), m):
                counts = sorted({v: combo.count(v) for v in combo}.items())
                counts += [(0, 0)] * (max(degree, 1) - len(counts))
                var.append([v for v, _ in counts])
                power.append([c for _, c in counts])
                degs.append(m)
        self.var = torch.tensor(var, dtype=torch.long)       # (F, slots)
        self.power = torch.tensor(power, dtype=torch.long)
        self.degrees = torch.tensor(degs, dtype=torch.long)  # total degree of each feature
        self.count = len(var)
        self._flat = self.var * (degree + 1) + self.power   # column of (variable, power)
        # degree >= 3: each feature is an earlier one (its last variable left out) times one
        # univariate column, built in rounds by the number of distinct variables
        index = {tuple((v, c) for v, c in zip(vs, cs) if c): i for i, (vs, cs) in enumerate(zip(var, power))}
        rounds: dict = {}
        for key, i in index.items():
            if key:
                v, c = key[-1]
                rounds.setdefault(len(key), []).append((i, index[key[:-1]], v * (degree + 1) + c))
        self._rounds = [tuple(torch.tensor(col) for col in zip(*rounds[m])) for m in sorted(rounds)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        H = torch.stack([hermite(j, x, normalized=True) for j in range(self.degree + 1)], -1)
        H = H.reshape(len(x), -1)                            # (n, d * (degree + 1))
        if self.degree <= 2:                                 # at most two factors: gather them
            flat = self._flat.to(x.device)
            out = H.index_select(1, flat[:, 0])
            for s in range(1, flat.shape[1]):
                out *= H.index_select(1, flat[:, s])
            return out
        out = torch.empty(len(x), self.count, dtype=x.dtype, device=x.device)
        out[:, 0] = 1.0
        for idx, prefix, col in self._rounds:
            idx, prefix, col = idx.to(x.device), prefix.to(x.device), col.to(x.device)
            out[:, idx] = out.index_select(1, prefix) * H.index_select(1, col)
        return out


def feature_count(d: int, degree: int) -> int:
    """C(d + degree, degree): the number of monomials (or Hermite features) of degree <= degree."""
    return math.comb(d + degree, degree)


# ---- moments <-> cumulants ---------------------------------------------------------------

def moments_from_cumulants(kappa: Sequence[float]) -> List[float]:
    """[m_0, ..., m_R] from [kappa_1, ..., kappa_R]: m_n = sum_j C(n-1, j-1) kappa_j m_{n-j}."""
    m = [1.0]
    for n in range(1, len(kappa) + 1):
        m.append(sum(math.comb(n - 1, j - 1) * kappa[j - 1] * m[n - j] for j in range(1, n + 1)))
    return m


def cumulants_from_moments(m: Sequence[float]) -> List[float]:
    """[kappa_1, ..., kappa_R] from [m_0 = 1, m_1, ..., m_R] (the inverse recursion)."""
    kappa: List[float] = []
    for n in range(1, len(m)):
        kappa.append(m[n] - sum(math.comb(n - 1, j - 1) * kappa[j - 1] * m[n - j]
                                for j in range(1, n)))
    return kappa


# ---- inner polynomials -------------------------------------------------------------------

def random_symmetric(d: int, spectrum: str, gen: torch.Generator) -> torch.Tensor:
    """A random symmetric d x d matrix (float64) with ||A||_F = 1 / sqrt 2, so that
    x^T A x - tr A has variance exactly 1. Spectra: ``goe`` (Gaussian entries),
    ``flat`` (eigenvalues +-1, random signs and basis), ``decay`` (eigenvalues ~ +-1/i),
    ``projection`` (eigenvalue 1 on a random subspace of dimension max(1, d // 2), 0 on the
    rest: A^2 is proportional to A, so the degree-2 Hermite part of any g(p) is exactly a
    multiple of p, at every d; for the other spectra only as d grows)."""
    if spectrum not in SPECTRA:
        raise ValueError(f"spectrum must be one of {SPECTRA}, got {spectrum!r}")
    if spectrum == "goe":
        g = torch.randn(d, d, generator=gen, dtype=torch.float64)
        a = (g + g.T) / 2
    else:
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
        signs = torch.randint(0, 2, (d,), generator=gen).double() * 2 - 1
        if spectrum == "projection":
            signs = (torch.arange(d) < max(1, d // 2)).double()
        mags = 1.0 / torch.arange(1, d + 1, dtype=torch.float64) if spectrum == "decay" else \
            torch.ones(d, dtype=torch.float64)
        a = (q * (signs * mags)) @ q.T
        a = (a + a.T) / 2
    return a / (math.sqrt(2) * torch.linalg.matrix_norm(a))


@dataclass
class QuadraticP:
    """p(x) = x^T A x - tr A with ||A||_F = 1/sqrt 2 (E p = 0, E p^2 = 1)."""
    A: torch.Tensor
    k: int = 2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        A = self.A.to(x)
        return ((x @ A) * x).sum(-1) - torch.diagonal(A).sum()

    def cumulants(self, order: int) -> List[float]:
        """Exact cumulants kappa_1..kappa_order of p (kappa_r = 2^(r-1)(r-1)! tr A^r, r >= 2)."""
        eig = torch.linalg.eigvalsh(self.A.double()).numpy()
        return [0.0] + [2 ** (r - 1) * math.factorial(r - 1) * float(np.sum(eig ** r))
                        for r in range(2, order + 1)]


@dataclass
class HermiteSumP:
    """p(x) = sum_i lambda_i He_k(x_i) / sqrt(k!) with sum lambda_i^2 = 1."""
    lam: torch.Tensor
    k: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return hermite(self.k, x, normalized=True) @ self.lam.to(x)

    def cumulants(self, order: int) -> List[float]:
        """Exact cumulants: those of one He_k(z)/sqrt(k!) term, weighted by lambda_i^r."""
        coeffs = [c / math.sqrt(math.factorial(self.k)) for c in hermite_coefficients(self.k)]
        one = cumulants_from_moments([polynomial_moment(coeffs, m) for m in range(order + 1)])
        lam = self.lam.double().numpy()
        return [one[r - 1] * float(np.sum(lam ** r)) for r in range(1, order + 1)]


# ---- the target h = g(p) -------------------------------------------------------------------

def outer_coefficients(kind: str, q: int) -> List[float]:
    """Monomial coefficients of the un-normalised outer polynomial of degree q."""
    if kind == "power":
        return [0.0] * q + [1.0]
    if kind == "hermite":
        return [float(c) for c in hermite_coefficients(q)]
    if kind == "linear_hermite":
        out = [c / math.sqrt(math.factorial(q)) for c in map(float, hermite_coefficients(q))]
        out[1] += 1.0
        return out
    raise ValueError(f"outer must be one of {OUTER}, got {kind!r}")


class HierarchicalTarget:
    """h(x) = (G(p(x)) - E G(p)) / sd G(p) for x ~ N(0, I_d), with exact normalisation."""

    def __init__(self, p, outer: str, q: int, d: int):
        self.p, self.d, self.q, self.k = p, d, q, p.k
        raw = outer_coefficients(outer, q)
        m = moments_from_cumulants(p.cumulants(2 * q))
        mean = sum(c * m[j] for j, c in enumerate(raw))
        second = sum(ci * cj * m[i + j] for i, ci in enumerate(raw) for j, cj in enumerate(raw))
        var = second - mean ** 2
        if not var > 0:
            raise ValueError("the outer polynomial is constant on p; choose q >= 1")
        self.coeffs = [(c - (mean if j == 0 else 0.0)) / math.sqrt(var) for j, c in enumerate(raw)]
        self.p_moments = m

    def g(self, z: torch.Tensor) -> torch.Tensor:
        """The normalised outer polynomial (Horner's rule)."""
        out = torch.zeros_like(z)
        for c in reversed(self.coeffs):
            out = out * z + c
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(self.p(x))

    def block(self, seed: int, j: int) -> tuple:
        """(x, p(x), h(x)) of block j (BLOCK rows, float64) of the stream `seed`."""
        gen = torch.Generator().manual_seed(derive_seed(seed, "block", j))
        x = torch.randn(BLOCK, self.d, generator=gen, dtype=torch.float64)
        p = self.p(x)
        return x, p, self.g(p)

    def stream(self, seed: int, start: int, stop: int, chunk: int = BLOCK):
        """Rows [start, stop) of the stream `seed` as (x, p, h) pieces of at most `chunk`
        rows (float64), generated block by block: memory is one block, whatever stop is."""
        i, cache = start, (None, None)
        while i < stop:
            j = i // BLOCK
            if cache[0] != j:
                cache = (j, self.block(seed, j))
            end = min(stop, (j + 1) * BLOCK, i + chunk)
            lo, hi = i - j * BLOCK, end - j * BLOCK
            yield tuple(t[lo:hi] for t in cache[1])
            i = end

    def sample(self, n: int, seed: int, dtype=torch.float64) -> tuple:
        """(x, p(x), h(x)): the first n rows of the stream `seed`, whole; different seeds
        give independent samples (one per stage, one for test), and sample(m, seed) is a
        prefix of sample(n, seed) for m < n."""
        parts = list(self.stream(seed, 0, n))
        if not parts:
            return tuple(torch.zeros(0, *shape, dtype=dtype) for shape in ((self.d,), (), ()))
        return tuple(torch.cat([p[i] for p in parts]).to(dtype) for i in range(3))


def make_target(inner: str, d: int, k: int, q: int, seed: int, outer: str = "power",
                spectrum: str = "goe") -> HierarchicalTarget:
    """The target of one (d, seed): the inner polynomial's random parts come from `seed`."""
    gen = torch.Generator().manual_seed(int(seed))
    if inner == "quadratic":
        if k != 2:
            raise ValueError(f"inner 'quadratic' has degree k = 2, got k = {k}")
        p = QuadraticP(random_symmetric(d, spectrum, gen))
    elif inner == "hermite_sum":
        signs = torch.randint(0, 2, (d,), generator=gen).double() * 2 - 1
        p = HermiteSumP(signs / math.sqrt(d), k)
    else:
        raise ValueError(f"inner must be one of {INNER}, got {inner!r}")
    return HierarchicalTarget(p, outer, q, d)

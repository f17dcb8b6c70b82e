"""Nonlinear variational PDEs on the unit cube and their grid reference solvers.

The problem family of Marwah, Lipton, Lu, Risteski (ICML 2023, arXiv 2210.12101): on
Omega = [0,1]^d minimise

    E(u) = int_Omega |grad u|^2/2 + u^2/2 + phi(u) - f u  dx

with the natural (homogeneous Neumann) boundary condition. `phi` is convex: ``none``
(the linear problem -Laplace u + u = f), ``quartic`` u^4/4 or ``logcosh`` alpha*log cosh u.
The exact solution u* is manufactured (quadrun.solvers.manufactured: a sum or product of
cosines, cosines of chosen frequencies, a Gaussian bump with its mirror images; each with
zero normal derivative on the boundary) and f = -Laplace u* + u* + phi'(u*) is derived
from it exactly.

`Problem` evaluates u*, grad u*, f and the energy density; it accepts numpy arrays and
torch tensors alike, so the neural solvers (quadrun.nn.ritz) and the grid solvers below
share one definition of the energy.

Grid reference (d <= 3): a cell-centred finite-difference discretisation of the same
energy, n cells per axis, h = 1/n,

    E_h(u) = h^d [ sum over interior faces ((u_j - u_k)/h)^2/2 + sum over cells u^2/2 + phi(u) - f u ],

whose L2 gradient is A u + u + phi'(u) - f with A the Neumann difference Laplacian
(mirror ghost cells). The DCT-II diagonalises A, so (I + A)^{-1} costs two FFTs:

- `preconditioned_gradient_descent`: u <- u - eta (I + A)^{-1} DE_h(u), the paper's
  iteration; it converges geometrically with rate about L/(L+2) in the error for
  eta = 2/(2+L), L = max phi''.
- `newton`: damped Newton on the same grid (inner conjugate gradients preconditioned by
  the same DCT solve), used to cross-check the iteration and to measure its energy gap.
- `gradient_descent`: the same iteration without the preconditioner (a control: its rate
  depends on the grid and on d through the largest eigenvalue of A).
- `Grid.barron_norm`: the spectral Barron norm sum_k |xi_k| |a_k| of a grid function from
  its cosine coefficients a_k (u = sum_k a_k prod_i cos(pi k_i x_i), xi_k = pi k).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import numpy as np

from quadrun.solvers.manufactured import SOLUTIONS, Manufactured  # noqa: F401 (re-exported)
from quadrun.solvers.manufactured import lib as _lib

PHIS = ("none", "quartic", "logcosh")
MAX_GRID_DIM = 3
ROUNDOFF = 1e-12        # energy gaps below ROUNDOFF * max(1, |E_h|) are round-off


def _log_cosh(u):
    """log cosh u without overflow: |u| + log(1 + e^{-2|u|}) - log 2."""
    lib = _lib(u)
    a = lib.abs(u)
    return a + lib.log1p(lib.exp(-2 * a)) - math.log(2.0)


@dataclass(frozen=True)
class Problem:
    """-Laplace u + u + phi'(u) = f on [0,1]^d, Neumann boundary, exact solution u*
    (quadrun.solvers.manufactured: `solution` and its parameters)."""
    d: int
    phi: str = "quartic"
    solution: str = "cosine_sum"
    alpha: float = 1.0          # logcosh coefficient
    amplitude: float = 1.0      # cosines, gaussian_bump
    frequencies: Tuple[int, ...] = (1,)          # cosines
    bump_width: float = 0.25                     # gaussian_bump
    bump_centre: Tuple[float, ...] = (0.5,)      # gaussian_bump

    def __post_init__(self):
        if self.phi not in PHIS:
            raise ValueError(f"phi must be one of {PHIS}, not {self.phi!r}")
        if self.d < 1:
            raise ValueError(f"d must be >= 1, not {self.d}")
        object.__setattr__(self, "exact", Manufactured(
            self.d, self.solution, self.amplitude, tuple(self.frequencies), self.bump_width,
            tuple(self.bump_centre)))

    # -- the nonlinearity ---------------------------------------------------------------
    def phi_value(self, u):
        if self.phi == "none":
            return 0 * u
        if self.phi == "quartic":
            return u ** 4 / 4
        return self.alpha * _log_cosh(u)

    def phi_prime(self, u):
        if self.phi == "none":
            return 0 * u
        if self.phi == "quartic":
            return u ** 3
        return self.alpha * _lib(u).tanh(u)

    def phi_second(self, u):
        if self.phi == "none":
            return 0 * u
        if self.phi == "quartic":
            return 3 * u ** 2
        return self.alpha * (1 - _lib(u).tanh(u) ** 2)

    # -- the manufactured solution ------------------------------------------------------
    def u_star(self, x):
        """u*(x) for points x of shape (..., d)."""
        return self.exact.value(x)

    def grad_u_star(self, x):
        """grad u*(x), shape (..., d)."""
        return self.exact.grad(x)

    def f(self, x):
        """Right-hand side f = -Laplace u* + u* + phi'(u*), exactly."""
        u = self.u_star(x)
        return -self.exact.laplacian(x) + u + self.phi_prime(u)

    def max_abs_u_star(self) -> float:
        return self.exact.max_abs()

    # -- energy ---------------------------------------------------------------------------
    def energy_density(self, x, u, grad):
        """|grad u|^2/2 + u^2/2 + phi(u) - f u at the points x (the integrand of E)."""
        return 0.5 * (grad ** 2).sum(-1) + 0.5 * u ** 2 + self.phi_value(u) - self.f(x) * u

    def exact_energy(self) -> Optional[float]:
        """E(u*). Integrating f u* by parts (Neumann) gives
        E(u*) = int -|grad u*|^2/2 - u*^2/2 + phi(u*) - phi'(u*) u*.
        Closed form for phi none/quartic with the cosine sum or product (from the moments
        of cos(pi x)); tensor Gauss-Legendre quadrature otherwise when d <= 4; None beyond."""
        if self.phi in ("none", "quartic") and self.solution in ("cosine_sum", "cosine_product"):
            m2, g2, m4 = self._moments()
            value = -0.5 * g2 - 0.5 * m2
            if self.phi == "quartic":
                value += (0.25 - 1.0) * m4
            return value
        if self.d > 4:
            return None
        n = {1: 400, 2: 160, 3: 60, 4: 28}[self.d]
        nodes, weights = np.polynomial.legendre.leggauss(n)
        nodes, weights = (nodes + 1) / 2, weights / 2
        x = np.stack(np.meshgrid(*[nodes] * self.d, indexing="ij"), -1).reshape(-1, self.d)
        w = np.prod(np.stack(np.meshgrid(*[weights] * self.d, indexing="ij"), -1)
                    .reshape(-1, self.d), axis=1)
        u, g = self.u_star(x), self.grad_u_star(x)
        density = -0.5 * (g ** 2).sum(-1) - 0.5 * u ** 2 + self.phi_value(u) - self.phi_prime(u) * u
        return float(w @ density)

    def _moments(self):
        """(int u*^2, int |grad u*|^2, int u*^4) in closed form.
        For c = cos(pi t), t uniform: E c = E c^3 = 0, E c^2 = 1/2, E c^4 = 3/8."""
        d = self.d
        if self.solution == "cosine_sum":
            m4 = (d * 3 / 8 + 3 * d * (d - 1) / 4) / d ** 2
            return 0.5, math.pi ** 2 / 2, m4
        return 0.5 ** d, d * math.pi ** 2 * 0.5 ** d, (3 / 8) ** d


def relative_errors(problem: Problem, x, u, grad) -> dict:
    """Relative L2 and H1 errors of (u, grad u) against u* and the paired energy gap
    mean(e(u) - e(u*)) at the points x (the same points for both, so the quadrature error
    largely cancels)."""
    us, gs = problem.u_star(x), problem.grad_u_star(x)
    e2 = ((u - us) ** 2).mean()
    g2 = ((grad - gs) ** 2).sum(-1).mean()
    n2, ng2 = (us ** 2).mean(), (gs ** 2).sum(-1).mean()
    gap = (problem.energy_density(x, u, grad) - problem.energy_density(x, us, gs)).mean()
    return {"rel_l2": float((e2 / n2) ** 0.5), "rel_h1": float(((e2 + g2) / (n2 + ng2)) ** 0.5),
            "energy_gap": float(gap)}


# ----------------------------------------------------------------------------------------
# Damped Newton (shared by the grid solver here and the random-feature Ritz solver)
# ----------------------------------------------------------------------------------------
@dataclass
class NewtonResult:
    x: object
    energy: float
    iterations: int
    decrement: float            # g . H^{-1} g at the last iterate (the Newton decrement^2)
    converged: bool
    energies: list = field(default_factory=list)


def damped_newton(energy: Callable, newton_step: Callable, x0, *, tol: float = 1e-13,
                  max_iter: int = 50) -> NewtonResult:
    """Minimise a convex `energy` by Newton steps with Armijo backtracking.

    `newton_step(x)` returns (s, decrement) with s = H^{-1} grad E(x) and
    decrement = grad E(x) . s. Stops when decrement/2 (the predicted energy decrease)
    falls to `tol * max(1, |E|)`: the energy is then minimised to round-off for tol
    near machine precision. Works on numpy arrays and torch tensors."""
    x, e = x0, float(energy(x0))
    energies = [e]
    dec = math.inf
    for it in range(max_iter):
        step, dec = newton_step(x)
        dec = float(dec)
        if dec / 2 <= tol * max(1.0, abs(e)):
            return NewtonResult(x, e, it, dec, True, energies)
        t = 1.0
        while True:
            x_new = x - t * step
            e_new = float(energy(x_new))
            if e_new <= e - 0.25 * t * dec:
                break
            t /= 2
            if t < 1e-8:  # no decrease left to find: round-off level
                return NewtonResult(x, e, it, dec, dec / 2 <= 1e-8 * max(1.0, abs(e)), energies)
        x, e = x_new, e_new
        energies.append(e)
    return NewtonResult(x, e, max_iter, dec, False, energies)


# ----------------------------------------------------------------------------------------
# Cell-centred finite differences with Neumann boundary, d <= 3
# ----------------------------------------------------------------------------------------
class Grid:
    """The discretised problem on n^d cells: f and u* at the cell centres, the energy
    E_h, its gradient, and (I + A)^{-1} by the discrete cosine transform."""

    def __init__(self, problem: Problem, n: int):
        if not 1 <= problem.d <= MAX_GRID_DIM:
            raise ValueError(f"grid solvers need 1 <= d <= {MAX_GRID_DIM}, not d={problem.d}")
        if n < 2:
            raise ValueError(f"a grid needs n >= 2 cells per axis, not {n}")
        self.problem, self.n, self.d = problem, n, problem.d
        self.h = 1.0 / n
        centres = (np.arange(n) + 0.5) * self.h
        self.x = np.stack(np.meshgrid(*[centres] * self.d, indexing="ij"), -1)
        self.f = problem.f(self.x)
        self.u_star = problem.u_star(self.x)
        # eigenvalues of the 1-D Neumann difference Laplacian on the DCT-II modes
        lam1 = 4.0 / self.h ** 2 * np.sin(np.pi * np.arange(n) / (2 * n)) ** 2
        self.eigenvalues = sum(lam1.reshape([-1 if a == i else 1 for a in range(self.d)])
                               for i in range(self.d))

    def laplacian(self, u: np.ndarray) -> np.ndarray:
        """A u: minus the Neumann difference Laplacian, by the 3-point stencil per axis
        (a zero flux through boundary faces)."""
        out = np.zeros(u.shape)
        for axis in range(self.d):
            flux = np.diff(u, axis=axis) / self.h ** 2       # on interior faces
            pad = [(0, 0)] * self.d
            pad[axis] = (1, 1)
            flux = np.pad(flux, pad)                          # zero on boundary faces
            out -= np.diff(flux, axis=axis)
        return out

    def energy(self, u: np.ndarray) -> float:
        p = self.problem
        dirichlet = sum((np.diff(u, axis=a) ** 2).sum() for a in range(self.d)) / self.h ** 2
        local = (0.5 * u ** 2 + p.phi_value(u) - self.f * u).sum()
        return float(self.h ** self.d * (0.5 * dirichlet + local))

    def gradient(self, u: np.ndarray) -> np.ndarray:
        """The L2 (h^d-weighted) gradient of E_h: A u + u + phi'(u) - f."""
        return self.laplacian(u) + u + self.problem.phi_prime(u) - self.f

    def solve_shifted(self, r: np.ndarray) -> np.ndarray:
        """(I + A)^{-1} r, exactly, in the discrete cosine basis."""
        import scipy.fft

        coef = scipy.fft.dctn(r, type=2, norm="ortho")
        return scipy.fft.idctn(coef / (1.0 + self.eigenvalues), type=2, norm="ortho")

    def inner(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(self.h ** self.d * (a * b).sum())

    def rel_l2(self, u: np.ndarray) -> float:
        """Relative discrete L2 error against u* at the cell centres."""
        return float(np.linalg.norm(u - self.u_star) / np.linalg.norm(self.u_star))

    def cosine_coefficients(self, u: np.ndarray) -> np.ndarray:
        """a_k with u(x_j) = sum_k a_k prod_i cos(pi k_i x_i) at the cell centres x_j,
        k_i = 0..n-1 (the DCT-II, scaled: a single mode cos(pi k x) has a_k = 1)."""
        import scipy.fft

        a = scipy.fft.dctn(u, type=2) / self.n ** self.d
        for axis in range(self.d):
            index = [slice(None)] * self.d
            index[axis] = 0
            a[tuple(index)] *= 0.5
        return a

    def barron_norm(self, u: np.ndarray) -> float:
        """The spectral Barron norm sum_k |xi_k| |a_k| of the grid function u, xi_k = pi k
        (the constant mode has xi = 0): for A prod_i cos(pi k_i x_i), A pi |k|."""
        if not hasattr(self, "_xi"):
            k = np.arange(self.n, dtype=float) ** 2
            self._xi = np.pi * np.sqrt(sum(k.reshape([-1 if a == i else 1 for a in range(self.d)])
                                           for i in range(self.d)))
        return float((self._xi * np.abs(self.cosine_coefficients(u))).sum())


def default_step_size(problem: Problem) -> float:
    """eta = 2/(2 + L), L = max phi'' over |u| <= max|u*|: the preconditioned Hessian
    (I+A)^{-1}(I + A + phi''(u)) has spectrum in [1, 1+L], and this eta balances the two ends."""
    m = problem.max_abs_u_star()
    L = float(max(problem.phi_second(np.array([0.0, m, -m]))))
    return 2.0 / (2.0 + L)


@dataclass
class PGDResult:
    u: np.ndarray
    energies: list              # E_h(u_t), t = 0..steps
    seconds: float


def preconditioned_gradient_descent(grid: Grid, steps: int, eta: Optional[float] = None,
                                    u0: Optional[np.ndarray] = None,
                                    callback: Optional[Callable] = None,
                                    precondition: bool = True) -> PGDResult:
    """u <- u - eta (I + A)^{-1} (A u + u + phi'(u) - f), from u0 (zero by default); with
    precondition=False plain gradient descent u <- u - eta DE_h(u) (eta by default
    `plain_step_size`). `callback(t, u, energy)` is called after every step t = 1..steps."""
    if eta is None:
        eta = default_step_size(grid.problem) if precondition else plain_step_size(grid)
    u = np.zeros_like(grid.f) if u0 is None else u0.copy()
    t0 = time.perf_counter()
    energies = [grid.energy(u)]
    for t in range(1, steps + 1):
        g = grid.gradient(u)
        u = u - eta * (grid.solve_shifted(g) if precondition else g)
        energies.append(grid.energy(u))
        if callback is not None:
            callback(t, u, energies[-1])
    return PGDResult(u, energies, time.perf_counter() - t0)


def plain_step_size(grid: Grid) -> float:
    """eta = 2/(lambda_min + lambda_max) for gradient descent without the preconditioner:
    the Hessian I + A + phi''(u) has spectrum in [1, 1 + max A + L]."""
    L = 2.0 / default_step_size(grid.problem) - 2.0
    return 2.0 / (2.0 + float(grid.eigenvalues.max()) + L)


def newton(grid: Grid, u0: Optional[np.ndarray] = None, tol: float = 1e-15,
           max_iter: int = 50) -> NewtonResult:
    """Damped Newton on E_h; each step solves (I + A + diag phi''(u)) s = DE_h(u) by
    conjugate gradients preconditioned with (I + A)^{-1} (exact when phi is none)."""
    import scipy.sparse.linalg

    p, shape = grid.problem, grid.f.shape
    size = grid.f.size
    precond = scipy.sparse.linalg.LinearOperator(
        (size, size), matvec=lambda r: grid.solve_shifted(r.reshape(shape)).ravel(), dtype=float)

    def step(u):
        g = grid.gradient(u)
        if p.phi == "none":
            s = grid.solve_shifted(g)
        else:
            curvature = p.phi_second(u)
            hess = scipy.sparse.linalg.LinearOperator(
                (size, size), matvec=lambda v: (grid.laplacian(v.reshape(shape)) +
                                                (1 + curvature) * v.reshape(shape)).ravel(),
                dtype=float)
            s, _ = scipy.sparse.linalg.cg(hess, g.ravel(), rtol=1e-14, atol=0.0,
                                             maxiter=500, M=precond)
            s = s.reshape(shape)
        return s, grid.inner(g, s)

    x0 = np.zeros_like(grid.f) if u0 is None else u0
    return damped_newton(grid.energy, step, x0, tol=tol, max_iter=max_iter)


def geometric_rate(gaps, floor: float) -> float:
    """Per-step contraction factor of a geometrically falling sequence: exp of the slope of
    a least-squares line through log(gap) over the steps where gap > floor."""
    gaps = np.asarray(gaps, dtype=float)
    idx = np.nonzero(gaps > floor)[0]
    if len(idx) < 2:
        return float("nan")
    slope = np.polyfit(idx, np.log(gaps[idx]), 1)[0]
    return float(np.exp(slope))


def reference_solution(problem: Problem, n: int, steps: int, eta: Optional[float] = None,
                       callback: Optional[Callable] = None, precondition: bool = True,
                       barron: bool = False) -> dict:
    """The grid reference: PGD for `steps` steps (plain gradient descent with
    precondition=False), Newton to round-off, and their comparison.

    Returns grid, d, steps, eta, rel_l2 (PGD vs u*), newton_rel_l2, newton_iterations,
    newton_energy (E_h at the Newton minimiser), pgd_newton_diff, energy_gap (the last),
    energy_gaps (E_h(u_t) - E_h(u_newton) for t = 0..steps), pgd_rate (fitted per-step
    factor of the gap over the steps above ROUNDOFF max(1, |E_h|)), seconds; with barron,
    also barron (Grid.barron_norm of u_t, t = 0..steps), barron_solution (of the Newton
    minimiser), barron_coarse (of the Newton minimiser on the n/2 grid) and barron_exact
    (of u* at the cell centres). `callback(t, gap)` sees each step's gap."""
    grid = Grid(problem, n)
    t0 = time.perf_counter()
    exact = newton(grid)
    if eta is None:
        eta = default_step_size(problem) if precondition else plain_step_size(grid)
    norms = [0.0]

    def each(t, u, energy):
        norms.append(grid.barron_norm(u))

    pgd = preconditioned_gradient_descent(grid, steps, eta, callback=each if barron else None,
                                          precondition=precondition)
    gaps = [e - exact.energy for e in pgd.energies]
    if callback is not None:
        for t, gap in enumerate(gaps):
            callback(t, gap)
    floor = ROUNDOFF * max(1.0, abs(exact.energy))
    out = {
        "grid": n, "d": problem.d, "steps": steps, "eta": eta,
        "rel_l2": grid.rel_l2(pgd.u), "newton_rel_l2": grid.rel_l2(exact.x),
        "newton_iterations": exact.iterations, "newton_energy": exact.energy,
        "pgd_newton_diff": float(np.linalg.norm(pgd.u - exact.x) / np.linalg.norm(exact.x)),
        "energy_gap": gaps[-1], "energy_gaps": gaps,
        "pgd_rate": geometric_rate(gaps, floor),
    }
    if barron:
        coarse = Grid(problem, max(2, n // 2))
        out.update(barron=norms, barron_solution=grid.barron_norm(exact.x),
                   barron_coarse=coarse.barron_norm(newton(coarse).x),
                   barron_exact=grid.barron_norm(grid.u_star))
    out["seconds"] = time.perf_counter() - t0
    return out

"""Krylov solvers with one signature, and their set-ups, for the Poisson systems.

Every iteration has the pyamg signature

    x, info = solver(A, b, x0=None, tol=1e-4, maxiter=None, M=None, callback=None,
                     residuals=None, check_every=1, atol=0.0, **extra)

with A anything that supports `A @ v` on torch vectors (a torch sparse CSR matrix), the
tolerance relative (stop when ||b - A x|| <= max(tol ||b||, atol), as scipy's rtol/atol),
`residuals` a list that receives ||r_k|| for k = 0, 1, ..., and info 0 when converged,
else the iterations done. All vector work is torch on b's device. The only host read is
the convergence check, every `check_every` iterations (larger avoids GPU syncs); the
residual norms of every iteration stay on the device, so the exact iteration count, the
first k with ||r_k|| below the target, is read from the history afterwards
(`first_below`) whatever `check_every` is: `solve` reports that count. (DCDM records the
true residual b - A x; CG and the PCGs their recurrence residual, the same to rounding in
float64; `solve` recomputes the final one in float64 either way.)

`solve(name, system, b, ...)` runs a solver by name (SOLVERS): its set-up (Jacobi
diagonal, IC(0) factor, AMG hierarchy, multigrid hierarchy, Ritz vectors, network) timed
apart from the solve, and the final residual recomputed independently in float64 with
scipy. `protocol="authors"` runs the baselines as Kaneda et al.'s test script did
(PROTOCOLS): CG and deflated PCG to an ABSOLUTE tolerance, deflation from 16 Lanczos
steps started at b with a Jacobi preconditioner; everything else is unchanged.

Where preconditioners run: Jacobi, IC(0), deflation, geometric multigrid (mg, torch) and
DCDM's network on the device; AMG (pyamg) on the host, so its vector crosses to the host
once per iteration. On CUDA the multigrid V-cycle and the network forward are replayed as
CUDA graphs (GraphedMap), the network in channels-last memory format and, with
precision="bf16", under bf16 autocast (the Krylov vectors stay in the solve's dtype).
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from quadrun.solvers.lanczos import ritz
from quadrun.solvers.multigrid import Multigrid
from quadrun.solvers.poisson import PoissonSystem

log = logging.getLogger("quadrun")

PROTOCOLS = ("quadrun", "authors")
AUTHORS_ABSOLUTE = ("cg", "deflated")   # the solvers their test script ran to an absolute tol


class _Tracker:
    """Residual norms kept on the device; read on the host every `check_every` steps."""

    def __init__(self, b: torch.Tensor, tol: float, maxiter: int, check_every: int,
                 residuals: Optional[list], atol: float = 0.0):
        self.norms = b.new_zeros(maxiter + 1, dtype=torch.float64)
        self.target = target(b, tol, atol)
        self.maxiter, self.every, self.out = maxiter, max(1, check_every), residuals
        self.flushed = 0

    def record(self, k: int, norm: torch.Tensor) -> None:
        self.norms[k] = norm

    def done(self, k: int) -> bool:
        """True when converged (checked every `every` steps) or out of iterations."""
        if k % self.every and k < self.maxiter:
            return False
        if self.out is not None:
            self.out.extend(self.norms[self.flushed:k + 1].tolist())
            self.flushed = k + 1
        return k >= self.maxiter or float(self.norms[k]) <= self.target

    def info(self, k: int) -> int:
        return 0 if float(self.norms[k]) <= self.target else k


def target(b: torch.Tensor, tol: float, atol: float = 0.0) -> float:
    """The residual norm to reach: max(tol ||b||, atol)."""
    return max(tol * float(b.norm()), float(atol))


def first_below(residuals: list, goal: float) -> Optional[int]:
    """The first k with residuals[k] <= goal (None when there is none): the exact
    iteration count to the tolerance, whatever check_every let the solver run past it."""
    return next((k for k, v in enumerate(residuals) if v <= goal), None)


def _start(A, b, x0):
    if x0 is None:
        return torch.zeros_like(b), b.clone()
    x = x0.clone()
    return x, b - A @ x


def _default_maxiter(b: torch.Tensor) -> int:
    return 10 * b.shape[0]


def cg(A, b, x0=None, tol=1e-4, maxiter=None, M=None, callback=None, residuals=None,
       check_every=1, atol=0.0):
    """Conjugate gradients, preconditioned by M (a callable r -> z, SPD) when given."""
    maxiter = maxiter or _default_maxiter(b)
    x, r = _start(A, b, x0)
    track = _Tracker(b, tol, maxiter, check_every, residuals, atol)
    if float(b.norm()) == 0:
        track.done(0)
        return torch.zeros_like(b), 0
    z = M(r) if M is not None else r
    p = z.clone()
    rz = r.dot(z)
    track.record(0, r.norm())
    k = 0
    while not track.done(k):
        Ap = A @ p
        alpha = rz / p.dot(Ap)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, Ap, value=-1)
        z = M(r) if M is not None else r
        rz_new = r.dot(z)
        p.mul_(rz_new / rz).add_(z)
        rz = rz_new
        k += 1
        track.record(k, r.norm() if M is not None else rz.sqrt())
        if callback is not None:
            callback(x)
    return x, track.info(k)


def deflated_cg(A, b, x0=None, tol=1e-4, maxiter=None, M=None, callback=None,
                residuals=None, check_every=1, atol=0.0, W=None):
    """Deflated (P)CG (Saad, Yeung, Erhel, Guyomarc'h 2000): the span of W (n, k), e.g.
    the lowest Ritz vectors, is solved exactly and removed from every search direction."""
    if W is None:
        raise ValueError("deflated_cg needs W, the (n, k) deflation vectors")
    maxiter = maxiter or _default_maxiter(b)
    AW = torch.stack([A @ W[:, i] for i in range(W.shape[1])], 1)
    E = torch.linalg.cholesky(W.T @ AW)

    def coarse(v):  # W E^{-1} W^T v
        return W @ torch.cholesky_solve((W.T @ v)[:, None], E)[:, 0]

    def deflate(z):  # z - W E^{-1} (AW)^T z
        return z - W @ torch.cholesky_solve((AW.T @ z)[:, None], E)[:, 0]

    x, r = _start(A, b, x0)
    x = x + coarse(r)
    r = b - A @ x
    track = _Tracker(b, tol, maxiter, check_every, residuals, atol)
    z = M(r) if M is not None else r
    p = deflate(z)
    rz = r.dot(z)
    track.record(0, r.norm())
    k = 0
    while not track.done(k):
        Ap = A @ p
        alpha = rz / p.dot(Ap)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, Ap, value=-1)
        z = M(r) if M is not None else r
        rz_new = r.dot(z)
        p = deflate(z) + (rz_new / rz) * p
        rz = rz_new
        k += 1
        track.record(k, r.norm())
        if callback is not None:
            callback(x)
    return x, track.info(k)


def dcdm(A, b, x0=None, tol=1e-4, maxiter=None, M=None, callback=None, residuals=None,
         check_every=1, atol=0.0, history=2):
    """Deep conjugate direction method: each direction is M(r / ||r||) (the network; the
    identity when M is None), A-orthogonalised against the last `history` directions, the
    step is (q.r)/(q.Aq), and the true residual b - A x is recomputed every iteration.
    With M = identity it takes CG's steps (the same iterates in exact arithmetic)."""
    maxiter = maxiter or _default_maxiter(b)
    x, r = _start(A, b, x0)
    track = _Tracker(b, tol, maxiter, check_every, residuals, atol)
    if float(b.norm()) == 0:
        track.done(0)
        return torch.zeros_like(b), 0
    dirs = deque(maxlen=history)            # (p, A p, p.A p)
    rnorm = r.norm()
    track.record(0, rnorm)
    k = 0
    while not track.done(k):
        q = r / rnorm
        q = M(q) if M is not None else q
        for p, Ap, pAp in dirs:
            q = q - (q.dot(Ap) / pAp) * p
        Aq = A @ q
        qAq = q.dot(Aq)
        x.addcmul_(q.dot(r) / qAq, q)
        r = b - A @ x
        dirs.append((q, Aq, qAq))
        rnorm = r.norm()
        k += 1
        track.record(k, rnorm)
        if callback is not None:
            callback(x)
    return x, track.info(k)


# -- preconditioner set-ups ---------------------------------------------------------------
def jacobi_setup(system: PoissonSystem, A, **_) -> dict:
    dinv = 1.0 / torch.from_numpy(system.scipy.diagonal()).to(A.device, A.dtype)
    return {"M": lambda r: r * dinv}


class IC0:
    """Incomplete Cholesky IC(0) of the fluid-cell matrix, M = (D + L) D^-1 (D + L^T)
    with L the strict lower part of A (lexicographic order) and pivots
    d_c = A_cc - sum_{lower fluid neighbours j} 1 / d_j.

    Cells on one anti-diagonal (i + j + k = w) are independent, so both the pivots (numpy)
    and the triangular solves (torch, on the device) run one wavefront at a time, in a
    wave-sorted copy of the vector where every wavefront is a contiguous slice. A pivot
    that vanishes (the last cell of a tree-shaped fluid region, where IC(0) is exact and
    meets the null space) is replaced by A_cc, which keeps M symmetric positive definite."""

    def __init__(self, system: PoissonSystem, device, dtype):
        coords = np.stack(np.unravel_index(system.fluid, system.shape), 1)
        wave = coords.sum(1)
        order = np.argsort(wave, kind="stable")          # wave-sorted position -> cell
        pos = np.empty_like(order)
        pos[order] = np.arange(len(order))                # cell -> wave-sorted position
        size = len(order)
        index = np.full(system.solid.size, size, dtype=np.int64)  # size: a zero slot
        index[system.fluid] = pos
        index = index.reshape(system.shape)
        diag = system.scipy.diagonal()[order]
        lower, upper = [], []
        for axis in range(system.dim):
            for step, out in ((-1, lower), (1, upper)):
                shifted = np.full_like(index, size)
                src = [slice(None)] * system.dim
                dst = [slice(None)] * system.dim
                if step < 0:
                    src[axis], dst[axis] = slice(None, -1), slice(1, None)
                else:
                    src[axis], dst[axis] = slice(1, None), slice(None, -1)
                shifted[tuple(dst)] = index[tuple(src)]
                out.append(shifted.ravel()[system.fluid][order])
        lower, upper = np.stack(lower, 1), np.stack(upper, 1)
        bounds = np.searchsorted(wave[order], np.arange(wave.max() + 2))
        self.slices = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        inv = np.zeros(size + 1)                           # 1 / d, with inv[size] = 0
        for a, b in self.slices:
            d = diag[a:b] - inv[lower[a:b]].sum(1)
            d = np.where(d > 1e-10 * diag[a:b], d, diag[a:b])
            inv[a:b] = 1.0 / d
        t = lambda v: torch.from_numpy(v).to(device)
        self.order, self.inv_d = t(order), t(inv[:size]).to(dtype)
        self.lower, self.upper = t(lower), t(upper)
        self.size = size

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        rs = r[self.order]
        y = r.new_zeros(self.size + 1)                    # forward: (D + L) y = r
        for a, b in self.slices:
            torch.mul(rs[a:b] + y[self.lower[a:b]].sum(1), self.inv_d[a:b], out=y[a:b])
        z = r.new_zeros(self.size + 1)                    # backward: (D + L^T) z = D y
        for a, b in reversed(self.slices):
            torch.addcmul(y[a:b], z[self.upper[a:b]].sum(1), self.inv_d[a:b], out=z[a:b])
        out = torch.empty_like(r)
        out[self.order] = z[:self.size]
        return out


def ic_setup(system: PoissonSystem, A, **_) -> dict:
    return {"M": IC0(system, A.device, A.dtype)}


def amg_setup(system: PoissonSystem, A, amg: str = "smoothed_aggregation", seed: int = 0,
              **_) -> dict:
    """pyamg hierarchy (smoothed aggregation or Ruge-Stuben), one V-cycle as M (host).

    pyamg estimates spectral radii from numpy's global random generator; it is seeded
    here (and restored after) so the hierarchy, and the iteration count, is reproducible."""
    import pyamg

    kinds = {"smoothed_aggregation": pyamg.smoothed_aggregation_solver,
             "ruge_stuben": pyamg.ruge_stuben_solver}
    if amg not in kinds:
        raise ValueError(f"unknown amg {amg!r}; must be one of: {', '.join(kinds)}")
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        ml = kinds[amg](system.scipy)
    finally:
        np.random.set_state(state)
    P = ml.aspreconditioner(cycle="V")

    def M(r):  # float64 on the host; the null-space part (round-off) removed first, since
        # the coarsest level of a singular matrix would amplify it without bound
        v = system.project(r.detach().cpu().double().numpy())
        return torch.from_numpy(P @ v).to(r.device, r.dtype)

    return {"M": M}


def deflation_setup(system: PoissonSystem, A, deflate: int = 16, seed: int = 0,
                    lanczos_steps: Optional[int] = None, protocol: str = "quadrun",
                    b: Optional[torch.Tensor] = None, **_) -> dict:
    """The `deflate` lowest Ritz vectors from `lanczos_steps` (default 16 * deflate)
    Lanczos steps started at A * randn. Far fewer steps give inaccurate low modes, and then
    deflation barely helps (benchmarks/results/dcdm_notes.md).

    protocol "authors" (Kaneda et al.'s test script): `deflate` Lanczos steps started at
    the right-hand side b, all their Ritz vectors, and a Jacobi preconditioner inside."""
    if protocol == "authors":
        if b is None:
            raise ValueError("deflation_setup: the authors' protocol starts Lanczos at b")
        values, vectors = ritz(A, deflate, dtype=A.dtype, device=A.device, start=b)
        return {"W": vectors.contiguous(), **jacobi_setup(system, A)}
    steps = lanczos_steps or 16 * deflate
    values, vectors = ritz(A, steps, seed=seed, dtype=A.dtype, device=A.device)
    return {"W": vectors[:, :deflate].contiguous()}


def mg_setup(system: PoissonSystem, A, mg_smoother: str = "rbgs", mg_sweeps: int = 2,
             mg_interpolation: str = "constant", mg_coarsest: int = 4,
             graphs: bool = True, b: Optional[torch.Tensor] = None, **_) -> dict:
    """Geometric multigrid (quadrun.solvers.multigrid): one V-cycle as M, on A's device
    (a CUDA graph there when `graphs`). The defaults (red-black Gauss-Seidel, 2 sweeps,
    piecewise-constant transfers) kept CG's iterations flat from n to 4n on every gallery
    scene, the one-cell wall of `cavities` included (benchmarks/results/dcdm_notes.md)."""
    mg = Multigrid(system, A.device, A.dtype, smoother=mg_smoother, sweeps=mg_sweeps,
                   interpolation=mg_interpolation, coarsest=mg_coarsest)
    M = mg
    if graphs and A.device.type == "cuda":
        M = GraphedMap(mg, b if b is not None else torch.ones(system.size, dtype=A.dtype,
                                                             device=A.device), "mg")
    return {"M": M}


class GraphedMap:
    """r -> f(r) replayed as one CUDA graph (inference only: no autograd).

    f runs a few times on a side stream (cuDNN autotuning, the allocator), then once under
    capture with a static input buffer; a call copies r into the buffer, replays the graph
    and returns a copy of the static output (callers keep directions across iterations).
    f must have static shapes and no host reads. A capture that fails leaves f eager."""

    def __init__(self, f: Callable, example: torch.Tensor, name: str = "map",
                 warmup: int = 3):
        self.f, self.graph = f, None
        self.static_in = example.detach().clone()
        try:
            stream = torch.cuda.Stream(example.device)
            stream.wait_stream(torch.cuda.current_stream(example.device))
            with torch.no_grad(), torch.cuda.stream(stream):
                for _ in range(warmup):
                    f(self.static_in)
            torch.cuda.current_stream(example.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph):
                self.static_out = f(self.static_in)
            self.graph = graph
        except Exception as exc:  # pragma: no cover - CUDA only
            log.warning("%s: CUDA graph capture failed (%s); running it eagerly", name, exc)

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            with torch.no_grad():
                return self.f(r)
        self.static_in.copy_(r)
        self.graph.replay()
        return self.static_out.clone()


def network_setup(system: PoissonSystem, A, model=None, precision: str = "fp32",
                  graphs: bool = True, channels_last: Optional[bool] = None,
                  b: Optional[torch.Tensor] = None, **_) -> dict:
    """DCDM's direction map: fluid vector -> grid -> network -> fluid vector.

    The network runs in its own dtype (float32) on A's device; the Krylov vectors keep the
    solve's dtype. On CUDA, by default: the model and its input in channels-last memory
    format, bf16 autocast when precision is "bf16", and the whole map (scatter to the
    grid, forward, gather) replayed as a CUDA graph when `graphs`. On a CPU the forward
    is eager and uses torch's threads (the run's `threads`)."""
    if model is None:
        return {"M": None}
    model.eval()
    device = A.device
    cuda = device.type == "cuda"
    fmt = torch.channels_last_3d if system.dim == 3 else torch.channels_last
    if channels_last is None:
        channels_last = cuda
    if channels_last:
        model.to(memory_format=fmt)
    net_dtype = next(model.parameters()).dtype
    bf16 = cuda and precision == "bf16"

    def M(r):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16,
                                             enabled=bf16, cache_enabled=False):
            g = system.to_grid(r.to(net_dtype))[None, None]
            if channels_last:
                g = g.contiguous(memory_format=fmt)
            return system.from_grid(model(g)[0, 0]).to(r.dtype)

    if cuda and graphs:
        example = b / b.norm() if b is not None else torch.ones(
            system.size, dtype=A.dtype, device=device) / system.size ** 0.5
        return {"M": GraphedMap(M, example, "dcdm network")}
    return {"M": M}


def _none_setup(system, A, **_) -> dict:
    return {}


@dataclass(frozen=True)
class Solver:
    iterate: Callable
    setup: Callable


SOLVERS = {
    "cg": Solver(cg, _none_setup),
    "jacobi": Solver(cg, jacobi_setup),
    "ic": Solver(cg, ic_setup),
    "deflated": Solver(deflated_cg, deflation_setup),
    "amg": Solver(cg, amg_setup),
    "mg": Solver(cg, mg_setup),
    "dcdm": Solver(dcdm, network_setup),
}


def get(name: str) -> Solver:
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; must be one of: {', '.join(SOLVERS)}")
    return SOLVERS[name]


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def relative_residual(system: PoissonSystem, b: np.ndarray, x: np.ndarray) -> float:
    """||b - A x|| / ||b|| in float64 with scipy: independent of the torch solvers."""
    return float(np.linalg.norm(b - system.scipy @ x) / np.linalg.norm(b))


def tolerances(name: str, tol: float, protocol: str = "quadrun") -> tuple:
    """(rtol, atol) of solver `name` under `protocol`: tol relative, except for CG and
    deflated PCG under the authors' protocol, where it is absolute."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; must be one of: "
                         f"{', '.join(PROTOCOLS)}")
    if protocol == "authors" and name in AUTHORS_ABSOLUTE:
        return 0.0, tol
    return tol, 0.0


def solve(name: str, system: PoissonSystem, b: np.ndarray, *, device="cpu",
          dtype=torch.float64, tol: float = 1e-4, maxiter: Optional[int] = None,
          check_every: int = 1, protocol: str = "quadrun", **options) -> dict:
    """Set up and run solver `name` on system x = b; return a record with iterations
    (exact: the first iteration whose residual is below the target, see first_below),
    iterations_run (what the solver did, up to check_every - 1 more), converged,
    rel_residual (recomputed in float64), tolerance ("relative" | "absolute"), setup_s,
    solve_s, residuals (||r_k|| / ||b|| up to `iterations`) and x (numpy, the last iterate).
    `options` go to the set-up (model=, amg=, deflate=, seed=, mg_*=, precision=,
    graphs=)."""
    solver = get(name)
    rtol, atol = tolerances(name, tol, protocol)
    A = system.matrix(device, dtype)
    bt = torch.as_tensor(b, dtype=dtype).to(device)
    _sync(device)
    t0 = time.perf_counter()
    extra = solver.setup(system, A, protocol=protocol, b=bt, **options)
    _sync(device)
    t1 = time.perf_counter()
    residuals: list = []
    x, info = solver.iterate(A, bt, tol=rtol, atol=atol, maxiter=maxiter,
                             residuals=residuals, check_every=check_every, **extra)
    _sync(device)
    t2 = time.perf_counter()
    x = x.detach().cpu().double().numpy()
    b64 = np.asarray(b, dtype=np.float64)
    rel = relative_residual(system, b64, x)
    bnorm = float(np.linalg.norm(b64))
    goal = target(bt, rtol, atol)
    first = first_below(residuals, goal)
    iterations = len(residuals) - 1 if first is None else first
    reached = rel * bnorm <= goal * (1 + 1e-6) + 1e-12 * bnorm
    return {"solver": name, "iterations": iterations, "iterations_run": len(residuals) - 1,
            "converged": bool(info == 0 and first is not None and reached),
            "rel_residual": rel, "tolerance": "absolute" if atol else "relative",
            "setup_s": t1 - t0, "solve_s": t2 - t1,
            "residuals": [v / bnorm for v in residuals[:iterations + 1]], "x": x}

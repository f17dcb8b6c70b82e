"""Two-layer networks for variational PDEs: Deep Ritz and random-feature Ritz.

    u(x) = sum_j a_j sigma(w_j . x + b_j) + c,     width m = len(a)

`TwoLayer.value_and_grad(x)` returns u and grad_x u in closed form
(grad u = (a * sigma'(W x + b)) W), so the energy needs no double back-propagation and
evaluation works under torch.inference_mode.

- Deep Ritz (`deep_ritz`): every parameter is trained on a quasi-Monte-Carlo estimate of
  the energy E (quadrun.solvers.pde.Problem), fresh scrambled Sobol points each step
  (`SobolBatches`), through the one training loop `quadrun.training.fit`; an optional
  L-BFGS polish on a fixed Sobol set follows (`lbfgs_polish`: it logs and honours a stop).
- Random-feature Ritz (`random_feature_ritz`): the inner weights stay at their random
  initialisation; E is then convex in the outer weights (a, c) and is minimised by damped
  Newton to round-off, so what is left is approximation (and quadrature) error, not
  optimisation error.

Inner weights: w ~ N(0, scale^2/d I) and b = -w . p with p uniform in [0,1]^d, so every
neuron's transition (hyperplane w.x + b = 0) passes through the domain.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from scipy.stats import qmc
from torch import nn

from quadrun.solvers.pde import Problem, damped_newton, relative_errors

ACTIVATIONS = ("tanh", "softplus", "relu_k")


class TwoLayer(nn.Module):
    """u(x) = a . sigma(W x + b) + c with sigma in tanh | softplus | relu_k (ReLU^power)."""

    def __init__(self, d: int, width: int, activation: str = "tanh", power: int = 3,
                 scale: float = 1.0, generator: Optional[torch.Generator] = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
        self.d, self.width, self.activation, self.power = d, width, activation, power
        w = torch.randn(width, d, generator=generator, dtype=torch.float64) * (scale / math.sqrt(d))
        p = torch.rand(width, d, generator=generator, dtype=torch.float64)
        self.W = nn.Parameter(w.to(dtype))
        self.b = nn.Parameter((-(w * p).sum(1)).to(dtype))
        self.a = nn.Parameter(torch.zeros(width, dtype=dtype))
        self.c = nn.Parameter(torch.zeros((), dtype=dtype))

    def features(self, x: torch.Tensor):
        """(sigma(z), sigma'(z)) with z = W x + b, each of shape (N, width)."""
        z = x @ self.W.T + self.b
        if self.activation == "tanh":
            s = torch.tanh(z)
            return s, 1 - s * s
        if self.activation == "softplus":
            return nn.functional.softplus(z), torch.sigmoid(z)
        r = torch.relu(z)
        return r ** self.power, self.power * r ** (self.power - 1)

    def value_and_grad(self, x: torch.Tensor):
        """u(x) of shape (N,) and grad_x u(x) of shape (N, d)."""
        s, ds = self.features(x)
        return s @ self.a + self.c, (ds * self.a) @ self.W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, _ = self.features(x)
        return s @ self.a + self.c


def energy(model: TwoLayer, problem: Problem, x: torch.Tensor) -> torch.Tensor:
    """The (quasi-)Monte-Carlo estimate mean_x e(u)(x) of the energy E(u) on [0,1]^d."""
    u, grad = model.value_and_grad(x)
    return problem.energy_density(x, u, grad).mean()


def sobol_points(d: int, n: int, seed: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """n scrambled Sobol points in [0,1]^d (n a power of two keeps their balance)."""
    log2 = int(round(math.log2(n)))
    if 2 ** log2 != n:
        raise ValueError(f"the number of Sobol points must be a power of two, not {n}")
    pts = qmc.Sobol(d, scramble=True, seed=np.random.default_rng(seed)).random_base2(log2)
    return torch.as_tensor(pts, dtype=dtype, device=device)


def errors(model: TwoLayer, problem: Problem, x: torch.Tensor) -> dict:
    """rel_l2, rel_h1 and the paired energy gap of the network at held-out points x."""
    with torch.no_grad():
        u, grad = model.value_and_grad(x)
        return relative_errors(problem, x.double(), u.double(), grad.double())


class SobolBatches:
    """Training data for `fit`: each step a fresh scrambled Sobol set of `batch_size`
    points in [0,1]^d, `steps` steps per epoch. The scrambling seeds are drawn from the
    loop's per-epoch generator, so a resumed epoch sees the same points."""

    def __init__(self, d: int, batch_size: int, steps: int, device=None,
                 dtype: torch.dtype = torch.float32):
        self.d, self.batch_size, self.steps = d, batch_size, steps
        self.device, self.dtype = device, dtype

    def __len__(self) -> int:
        return self.steps

    def epoch(self, gen: torch.Generator, start: int = 0):
        seeds = torch.randint(0, 2 ** 62, (self.steps,), generator=gen)
        for i in range(start, self.steps):
            yield sobol_points(self.d, self.batch_size, int(seeds[i]), self.device, self.dtype)


def deep_ritz(model: TwoLayer, problem: Problem, ctx, tc, test_x: torch.Tensor, *,
              steps_per_epoch: int, lbfgs_steps: int = 0, lbfgs_points: int = 4096,
              lbfgs_seed: int = 0, name: str = "deep_ritz") -> dict:
    """Train every weight of `model` on the Sobol energy estimate with `fit` (train config
    `tc`: optimizer, lr, schedule, epochs, batch_size; the batches' scrambles come from
    derive_seed(run seed, name, epoch)), then optionally polish with L-BFGS on a fixed Sobol
    set scrambled by `lbfgs_seed` (`lbfgs_polish`). Returns status, steps (Adam + L-BFGS)
    and the errors at test_x. A stop request raises quadrun.errors.Interrupted (nothing
    is checkpointed: the whole training runs again on resume)."""
    from quadrun.training import fit

    if hasattr(ctx, "truncate_metrics"):   # a re-run after a stop: drop the first try's points
        ctx.truncate_metrics(0, name)
    dtype = next(model.parameters()).dtype
    data = SobolBatches(problem.d, tc.batch_size, steps_per_epoch, ctx.device, dtype)
    test_x = test_x.to(ctx.device, dtype)

    def loss_fn(m, x):
        return energy(m, problem, x)

    def evaluate(m):
        out = errors(m, problem, test_x)
        return {f"{name}/rel_l2": out["rel_l2"], f"{name}/rel_h1": out["rel_h1"]}

    result = fit(model, data, loss_fn, ctx, tc, evaluate=evaluate, checkpoint=False, name=name)
    steps = result.step
    if result.status == "completed" and lbfgs_steps > 0:
        x = sobol_points(problem.d, lbfgs_points, lbfgs_seed, ctx.device, dtype)
        steps += lbfgs_polish(model, problem, x, lbfgs_steps, ctx=ctx, name=name, step=steps)
    out = errors(model, problem, test_x)
    if not all(math.isfinite(v) for v in out.values()):
        result.status = "diverged"
    return {"status": result.status, "steps": steps, **out}


LBFGS_CHUNK = 10    # L-BFGS iterations between a logged point and a stop check


def lbfgs_polish(model: TwoLayer, problem: Problem, x: torch.Tensor, max_iter: int, *,
                 ctx=None, name: str = "deep_ritz", step: int = 0,
                 chunk: int = LBFGS_CHUNK) -> int:
    """Minimise the energy estimate on the fixed points x with L-BFGS (strong Wolfe line
    search, history 50) for at most `max_iter` iterations; returns the iterations taken.

    A phase of its own: it runs in calls of `chunk` iterations; after each call it logs
    `<name>/lbfgs/energy` (and `<name>/lbfgs/iteration`) at step `step` + iterations, and
    before each call it calls `ctx.check_stop` (quadrun.errors.Interrupted on a stop).
    The iterates are those of one call with max_iter=`max_iter`: L-BFGS keeps its memory in its state between calls, a call's
    evaluation budget is what one call would have had left (max_iter * 5 // 4 in all), and
    the stops a single call makes between iterations (no progress, budget spent) are made
    between calls too."""
    tol_change = 1e-15
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, history_size=50,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=tol_change)
    group = opt.param_groups[0]
    budget = group["max_eval"]
    state = opt.state[next(iter(model.parameters()))]

    def closure():
        opt.zero_grad()
        loss = energy(model, problem, x)
        loss.backward()
        return loss

    done = calls = 0
    while done < max_iter:
        if ctx is not None:
            ctx.check_stop(f"in the L-BFGS polish of {name} after {done} of {max_iter} "
                           "iterations (the cell runs again on resume)")
        take = min(chunk, max_iter - done)
        # a later call first re-evaluates the point where the last one stopped: one call
        # would not have counted that evaluation against its budget
        counted = state.get("func_evals", 0) - max(calls - 1, 0)
        group["max_iter"] = take
        group["max_eval"] = budget - counted + (1 if calls else 0)
        opt.step(closure)
        calls += 1
        taken = state["n_iter"] - done
        done = state["n_iter"]
        if taken == 0:        # the gradient was already below tolerance_grad
            break
        with torch.no_grad():
            e = float(energy(model, problem, x))
        if ctx is not None:
            ctx.log(step + done, {"fit": name, f"{name}/lbfgs/energy": e,
                                  f"{name}/lbfgs/iteration": done})
        if taken < take:      # L-BFGS stopped on its own: converged or no progress
            break
        counted = state["func_evals"] - (calls - 1)
        no_progress = float(state["d"].mul(state["t"]).abs().max()) <= tol_change or \
            abs(e - float(state["prev_loss"])) < tol_change
        if counted >= budget or no_progress:
            break
    return int(done)


# ----------------------------------------------------------------------------------------
# Random-feature Ritz
# ----------------------------------------------------------------------------------------
def _energy_terms(model: TwoLayer, problem: Problem, x: torch.Tensor, theta: torch.Tensor,
                  chunk: int, hessian: bool):
    """Energy, gradient and (optionally) Hessian in the outer weights theta = (a, c),
    with u = Phi theta, Phi = [sigma(Wx+b), 1], accumulated over chunks of the N points:

        E    = mean  |grad u|^2/2 + u^2/2 + phi(u) - f u
        grad = (K theta + Phi^T (u + phi'(u) - f)) / N
        H    = (K + Phi^T diag(1 + phi''(u)) Phi) / N,   K_jk = sum_x s'_j s'_k (w_j . w_k)

    (the constant feature has zero gradient, so K has a zero last row and column)."""
    m, n = model.width, len(x)
    a = theta[:m]
    WWt = model.W @ model.W.T
    e = theta.new_zeros(())
    g = theta.new_zeros(m + 1)
    H = theta.new_zeros(m + 1, m + 1) if hessian else None
    for i in range(0, n, chunk):
        xc = x[i:i + chunk]
        s, ds = model.features(xc)
        phi = torch.cat([s, s.new_ones(len(xc), 1)], 1)
        u = phi @ theta
        grad_u = (ds * a) @ model.W
        e = e + problem.energy_density(xc, u, grad_u).sum()
        g[:m] += (ds * (grad_u @ model.W.T)).sum(0)
        g += phi.T @ (u + problem.phi_prime(u) - problem.f(xc))
        if hessian:
            H[:m, :m] += (ds.T @ ds) * WWt
            H += (phi * (1 + problem.phi_second(u))[:, None]).T @ phi
    return e / n, g / n, (H / n if hessian else None)


def truncated_solve(H: torch.Tensor, g: torch.Tensor, rcond: float) -> torch.Tensor:
    """H^+ g for a symmetric positive semi-definite H, Jacobi-scaled, with eigenvalues
    below rcond * (largest) dropped: random features are nearly dependent, so H is
    numerically singular, and the dropped directions barely change u."""
    D = torch.diagonal(H).clamp_min(torch.finfo(H.dtype).tiny).rsqrt()
    lam, V = torch.linalg.eigh(H * D[:, None] * D[None, :])
    keep = lam > rcond * lam[-1]
    V, lam = V[:, keep], lam[keep]
    return D * (V @ ((V.T @ (D * g)) / lam))


def random_feature_ritz(model: TwoLayer, problem: Problem, x: torch.Tensor, *,
                        rcond: float = 1e-12, tol: float = 1e-13, max_iter: int = 50,
                        chunk: int = 4096) -> dict:
    """Fix the inner weights of `model` and minimise the energy estimate on the points x
    over the outer weights (a, c) by damped Newton (quadrun.solvers.pde.damped_newton),
    until the predicted decrease is round-off. The model's a, c are set to the minimiser.
    Returns newton_iterations, decrement, converged and the energy estimate."""
    dtype = model.W.dtype
    x = x.to(model.W.device, dtype)
    with torch.no_grad():
        def energy_of(theta):
            return _energy_terms(model, problem, x, theta, chunk, hessian=False)[0]

        def newton_step(theta):
            _, g, H = _energy_terms(model, problem, x, theta, chunk, hessian=True)
            step = truncated_solve(H, g, rcond)
            return step, g @ step

        theta0 = torch.zeros(model.width + 1, dtype=dtype, device=x.device)
        result = damped_newton(energy_of, newton_step, theta0, tol=tol, max_iter=max_iter)
        model.a.copy_(result.x[:-1])
        model.c.copy_(result.x[-1])
    return {"newton_iterations": result.iterations, "decrement": result.decrement,
            "converged": result.converged, "energy": result.energy}

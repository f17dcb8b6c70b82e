"""pde: the problem family, the grid reference, two-layer Ritz solvers, the CLI smoke run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from quadrun.nn.ritz import (ACTIVATIONS, SobolBatches, TwoLayer, energy, errors,
                             random_feature_ritz, sobol_points, truncated_solve)
from quadrun.solvers.pde import (PHIS, SOLUTIONS, Grid, Problem, default_step_size, newton,
                                 preconditioned_gradient_descent, reference_solution)
from tests.conftest import run_folders, summary


# -- the problem family -------------------------------------------------------------------
@pytest.mark.parametrize("solution", SOLUTIONS)
@pytest.mark.parametrize("phi", PHIS)
def test_f_solves_the_pde(phi, solution):
    """-Laplace u* + u* + phi'(u*) = f, with the Laplacian by central differences, and the
    gradient of u* against differences too (so the closed forms are checked, not restated)."""
    p = Problem(3, phi, solution, alpha=0.7)
    x = np.random.default_rng(0).random((50, 3)) * 0.8 + 0.1
    h = 1e-4
    lap = sum((p.u_star(x + h * e) - 2 * p.u_star(x) + p.u_star(x - h * e)) / h ** 2
              for e in np.eye(3))
    grad = np.stack([(p.u_star(x + h * e) - p.u_star(x - h * e)) / (2 * h) for e in np.eye(3)], -1)
    u = p.u_star(x)
    np.testing.assert_allclose(-lap + u + p.phi_prime(u), p.f(x), atol=2e-5)
    np.testing.assert_allclose(grad, p.grad_u_star(x), atol=1e-7)
    # Neumann: the normal derivative vanishes on the faces x_i = 0 and x_i = 1
    face = x.copy()
    face[:, 0] = 1.0
    assert np.abs(p.grad_u_star(face)[:, 0]).max() < 1e-12


@pytest.mark.parametrize("solution", SOLUTIONS)
@pytest.mark.parametrize("phi", PHIS)
@pytest.mark.parametrize("d", [1, 3, 5])
def test_qmc_energy_of_u_star_matches_exact(phi, solution, d):
    p = Problem(d, phi, solution)
    exact = p.exact_energy()
    if exact is None:  # logcosh beyond d = 4 has no reference value
        assert phi == "logcosh" and d > 4
        return
    x = sobol_points(d, 2 ** 16, seed=3, dtype=torch.float64)
    qmc = float(p.energy_density(x, p.u_star(x), p.grad_u_star(x)).mean())
    assert abs(qmc - exact) <= 2e-4 * abs(exact), (qmc, exact)


def test_closed_form_energy_matches_quadrature():
    """The closed-form moments against tensor Gauss-Legendre quadrature of E(u*)."""
    for solution in SOLUTIONS:
        for d in (1, 2):
            p = Problem(d, "quartic", solution)
            nodes, w = np.polynomial.legendre.leggauss(60)
            nodes, w = (nodes + 1) / 2, w / 2
            x = np.stack(np.meshgrid(*[nodes] * d, indexing="ij"), -1).reshape(-1, d)
            weights = np.prod(np.stack(np.meshgrid(*[w] * d, indexing="ij"), -1).reshape(-1, d), 1)
            quad = weights @ p.energy_density(x, p.u_star(x), p.grad_u_star(x))
            assert abs(quad - p.exact_energy()) < 1e-12


# -- the grid reference ---------------------------------------------------------------------
@pytest.mark.parametrize("phi", ["none", "quartic", "logcosh"])
@pytest.mark.parametrize("d", [1, 2])
def test_finite_differences_converge_at_second_order(d, phi):
    p = Problem(d, phi)
    errs = []
    for n in (8, 16, 32):
        grid = Grid(p, n)
        result = newton(grid)
        assert result.converged
        errs.append(grid.rel_l2(result.x))
    ratios = [errs[i] / errs[i + 1] for i in range(2)]
    assert all(3.7 < r < 4.3 for r in ratios), (errs, ratios)


def test_linear_grid_solution_known_answer():
    """phi = none: the cosine sum is a DCT-II mode, so the grid solution is u*(x_j)
    (1 + pi^2) / (1 + lambda_1) with lambda_1 = 4/h^2 sin^2(pi h/2)."""
    p, n = Problem(2, "none"), 16
    grid = Grid(p, n)
    lam = 4 * n ** 2 * math.sin(math.pi / (2 * n)) ** 2
    expected = grid.u_star * (1 + math.pi ** 2) / (1 + lam)
    np.testing.assert_allclose(newton(grid).x, expected, atol=1e-13)


def test_dct_solve_inverts_the_stencil_and_gradient_is_exact():
    rng = np.random.default_rng(1)
    for d in (1, 2, 3):
        grid = Grid(Problem(d, "quartic"), 8)
        r = rng.standard_normal(grid.f.shape)
        v = grid.solve_shifted(r)
        np.testing.assert_allclose(v + grid.laplacian(v), r, atol=1e-11)
        u, w = rng.standard_normal(grid.f.shape), rng.standard_normal(grid.f.shape)
        eps = 1e-6
        fd = (grid.energy(u + eps * w) - grid.energy(u - eps * w)) / (2 * eps)
        assert abs(fd - grid.inner(grid.gradient(u), w)) < 1e-6 * max(1.0, abs(fd))


@pytest.mark.parametrize("phi", ["quartic", "logcosh"])
def test_preconditioned_iteration_energy_gap_falls_geometrically(phi):
    p = Problem(2, phi)
    grid = Grid(p, 32)
    exact = newton(grid)
    pgd = preconditioned_gradient_descent(grid, 50)
    gaps = np.array(pgd.energies) - exact.energy
    floor = 1e-11 * abs(exact.energy)
    live = gaps[gaps > floor]
    assert len(live) >= 5
    assert np.all(gaps > -1e-12)                              # never below the minimum
    # every step contracts the gap by at least the bound of the theory, L/(L+2) per step
    # in the error, with slack; a sublinear decay would fail this
    eta = default_step_size(p)
    bound = (1 - eta) ** 2 + 0.15
    assert np.all(live[1:] / live[:-1] <= bound), live[1:] / live[:-1]
    assert gaps[-1] <= floor
    assert np.linalg.norm(pgd.u - exact.x) / np.linalg.norm(exact.x) < 1e-6


def test_reference_solution_summary():
    ref = reference_solution(Problem(2, "quartic"), 32, 40)
    assert ref["pgd_rate"] < 0.7
    assert ref["pgd_newton_diff"] < 1e-6
    assert abs(ref["rel_l2"] - ref["newton_rel_l2"]) < 1e-6
    assert ref["rel_l2"] < 1e-3


# -- two-layer networks -------------------------------------------------------------------
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_closed_form_input_gradient_matches_autograd(activation):
    gen = torch.Generator().manual_seed(0)
    model = TwoLayer(3, 12, activation, power=3, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        model.a.copy_(torch.randn(12, generator=gen, dtype=torch.float64))
    x = torch.rand(20, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    u, grad = model.value_and_grad(x)
    (auto,) = torch.autograd.grad(u.sum(), x)
    torch.testing.assert_close(grad, auto)
    torch.testing.assert_close(model(x), u)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_deep_ritz_energy_gradient_matches_finite_differences(activation):
    """d E_N / d theta by back-propagation against central differences along a random
    direction in every parameter (float64, fixed points)."""
    gen = torch.Generator().manual_seed(1)
    p = Problem(3, "logcosh", alpha=0.5)
    model = TwoLayer(3, 10, activation, power=3, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        model.a.copy_(torch.randn(10, generator=gen, dtype=torch.float64))
    x = sobol_points(3, 256, seed=2, dtype=torch.float64)
    loss = energy(model, p, x)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    eps = 1e-6
    for param, g in zip(model.parameters(), grads):
        v = torch.randn(param.shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            param += eps * v
            plus = energy(model, p, x)
            param -= 2 * eps * v
            minus = energy(model, p, x)
            param += eps * v
        fd = float((plus - minus) / (2 * eps))
        assert abs(fd - float((g * v).sum())) <= 1e-6 * max(1.0, abs(fd))


def test_sobol_batches_resume_mid_epoch():
    data = SobolBatches(3, 64, steps=5)
    full = list(data.epoch(torch.Generator().manual_seed(7)))
    tail = list(data.epoch(torch.Generator().manual_seed(7), start=3))
    assert len(full) == 5 and len(tail) == 2
    for a, b in zip(full[3:], tail):
        torch.testing.assert_close(a, b)
    assert not torch.equal(full[0], full[1])                 # fresh points every step
    assert full[0].min() >= 0 and full[0].max() <= 1


def test_truncated_solve_is_the_inverse_when_well_conditioned():
    gen = torch.Generator().manual_seed(3)
    B = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    H = B @ B.T + torch.eye(6, dtype=torch.float64)
    g = torch.randn(6, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(truncated_solve(H, g, 1e-12), torch.linalg.solve(H, g))


def test_random_feature_ritz_reaches_the_minimiser():
    """Outer weights by Newton: no direction of the outer weights lowers the energy
    estimate to first order (the gradient against random directions, each scaled to unit
    energy norm v^T H v = 1, is below 1e-6, so E is within (1e-6)^2/2 of its minimum over
    all outer weights: round-off for E ~ 3), and in d = 1 the error is tiny."""
    p = Problem(1, "quartic")
    gen = torch.Generator().manual_seed(0)
    model = TwoLayer(1, 64, generator=gen, dtype=torch.float64)
    x = sobol_points(1, 2048, seed=0, dtype=torch.float64)
    info = random_feature_ritz(model, p, x)
    assert info["converged"] and info["newton_iterations"] <= 10
    theta = torch.cat([model.a.detach(), model.c.detach()[None]]).requires_grad_(True)

    def energy_of(t):
        s, ds = model.features(x)
        u = s.detach() @ t[:-1] + t[-1]
        grad = (ds.detach() * t[:-1]) @ model.W.detach()
        return p.energy_density(x, u, grad).mean()

    (g,) = torch.autograd.grad(energy_of(theta), theta)
    H = torch.autograd.functional.hessian(energy_of, theta.detach())
    V = torch.randn(len(theta), 20, generator=gen, dtype=torch.float64)
    V = V / torch.sqrt(torch.einsum("ik,ij,jk->k", V, H, V))
    assert (g @ V).abs().max() < 1e-6
    err = errors(model, p, sobol_points(1, 4096, seed=99, dtype=torch.float64))
    assert err["rel_l2"] < 1e-4 and 0 <= err["energy_gap"] < 1e-6


# -- the CLI ----------------------------------------------------------------------------------
def test_smoke_cli_run(cli):
    r = cli("experiment=pde", "scale=smoke", "threads=1")
    assert r.returncode == 0, r.stderr[-3000:]
    (folder,) = run_folders(cli.cwd, "pde")
    s = summary(folder)
    assert s["status"] == "completed"
    keys = {"solver", "d", "width", "rel_l2", "rel_h1", "energy_gap", "seconds"}
    assert s["results"] and all(keys <= set(row) for row in s["results"])
    assert {(r["solver"], r["d"]) for r in s["results"]} == \
        {("random_features", 1), ("random_features", 2), ("deep_ritz", 2)}
    rf1 = [r for r in s["results"] if r["solver"] == "random_features" and r["d"] == 1]
    assert all(r["rel_l2"] < 1e-3 for r in rf1)
    ref = s["reference"]
    assert {"grid", "rel_l2", "pgd_rate"} <= set(ref)
    assert ref["grid"] == 16 and ref["rel_l2"] < 1e-2 and ref["pgd_rate"] < 0.7
    for plot in ("error_vs_width", "width_for_target", "reference_energy_gap"):
        assert (folder / "plots" / f"{plot}.png").stat().st_size > 0
    assert "random_features" in (folder / "table.md").read_text()


def test_cli_rejects_a_non_power_of_two_point_count(cli):
    r = cli("experiment=pde", "scale=smoke", "pde.test_points=1000")
    assert r.returncode != 0
    assert "pde.test_points" in r.stderr and "Traceback" not in r.stderr

"""Poisson systems and Krylov solvers against known answers (quadrun.solvers)."""
import numpy as np
import pytest
import torch

from quadrun.solvers import krylov
from quadrun.solvers.lanczos import (lanczos, ritz, training_basis, training_coefficients,
                                     training_samples, tridiagonal)
from quadrun.solvers.poisson import SCENES, PoissonSystem, build_system, scene


def stencil_residual(solid: np.ndarray, b_grid: np.ndarray, x_grid: np.ndarray) -> float:
    """||b - A x|| / ||b|| from the grid stencil itself (no assembled matrix): for each
    fluid cell, (number of non-solid neighbours) x_c - sum of fluid neighbours' x."""
    fluid = ~solid
    pad = lambda a: np.pad(a, 1)
    fp, xp = pad(fluid), pad(np.where(fluid, x_grid, 0.0))
    Ax = np.zeros_like(x_grid)
    for axis in range(solid.ndim):
        for step in (-1, 1):
            nb_fluid = np.roll(fp, step, axis)[(slice(1, -1),) * solid.ndim]
            nb_x = np.roll(xp, step, axis)[(slice(1, -1),) * solid.ndim]
            Ax += nb_fluid * (x_grid - nb_x)
    r = np.where(fluid, b_grid - Ax, 0.0)
    return float(np.linalg.norm(r) / np.linalg.norm(np.where(fluid, b_grid, 0.0)))


@pytest.mark.parametrize("name", list(SCENES))
@pytest.mark.parametrize("dim,n", [(2, 12), (3, 7)])
def test_matrix_symmetric_psd_with_region_constants_as_null_space(name, dim, n):
    system, b = scene(name, n, dim, seed=1)
    A = system.scipy.toarray()
    assert np.array_equal(A, A.T)
    eig = np.linalg.eigvalsh(A)
    assert eig.min() > -1e-10
    Z = system.null_space()
    assert np.abs(A @ Z).max() == 0                        # constants on each region ...
    assert np.sum(np.abs(eig) < 1e-9) == system.regions    # ... and nothing else
    assert np.abs(Z.T @ b).max() < 1e-12 * max(1, np.abs(b).max())  # compatible rhs
    assert np.linalg.norm(b) > 0
    # rows as Kaneda et al. 2023's MAC matrices: diagonal = fluid neighbours (walls are
    # solid), -1 per fluid neighbour
    off = A - np.diag(np.diag(A))
    assert set(np.unique(off)) <= {0.0, -1.0}
    assert np.allclose(np.diag(A), -off.sum(1))


def test_cavities_has_two_regions_and_walls_are_solid():
    system = build_system("cavities", 10, 2)
    assert system.regions == 2
    assert system.solid[0].all() and system.solid[-1].all()
    assert system.solid[:, 0].all() and system.solid[:, -1].all()


def test_isolated_fluid_cells_become_solid():
    solid = np.zeros((6, 6), dtype=bool)
    solid[2, 1:4] = solid[4, 1:4] = solid[3, 1] = solid[3, 3] = True   # cell (3, 2) enclosed
    system = PoissonSystem(solid)
    assert system.solid[3, 2]
    assert (system.scipy.diagonal() > 0).all()


def test_grid_round_trip():
    system, b = scene("sphere", 10, 2)
    v = torch.from_numpy(b)
    g = system.to_grid(v)
    assert g.shape == (10, 10)
    assert torch.all(g[torch.from_numpy(system.solid)] == 0)
    assert torch.equal(system.from_grid(g), v)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", [s for s in krylov.SOLVERS if s != "dcdm"] + ["dcdm"])
@pytest.mark.parametrize("where", [("cavities", 2, 20), ("random_solids", 2, 24),
                                   ("two_obstacles", 3, 10)])
def test_every_solver_reaches_the_relative_tolerance(name, where, dtype):
    scene_name, dim, n = where
    system, b = scene(scene_name, n, dim, seed=3)
    tol = 1e-4 if dtype == torch.float64 else 1e-3
    rec = krylov.solve(name, system, b, tol=tol, dtype=dtype, deflate=4)
    xg = system.to_grid(torch.from_numpy(rec["x"])).numpy()
    bg = system.to_grid(torch.from_numpy(b)).numpy()
    rel = stencil_residual(system.solid, bg, xg)
    assert rec["converged"], rec["rel_residual"]
    assert rel <= tol * 1.01 + (2e-6 if dtype == torch.float32 else 0)
    assert rel == pytest.approx(rec["rel_residual"], rel=1e-3, abs=1e-7)
    assert rec["residuals"][0] <= 1 + 1e-6   # deflation starts from its coarse solve
    assert len(rec["residuals"]) == rec["iterations"] + 1
    assert rec["setup_s"] >= 0 and rec["solve_s"] > 0


def test_preconditioners_cut_iterations():
    system, b = scene("sphere", 32, 2)
    its = {s: krylov.solve(s, system, b)["iterations"] for s in ("cg", "ic", "amg", "deflated")}
    assert its["ic"] < its["cg"] / 2
    assert its["amg"] < its["cg"] / 5
    assert its["deflated"] < its["cg"]


def test_ic0_matches_a_dense_lexicographic_factorisation():
    system, _ = scene("two_obstacles", 9, 2)
    A = system.scipy.toarray()
    m = len(A)
    d = np.zeros(m)
    for i in range(m):               # IC(0) pivots, one row at a time, lexicographic order
        d[i] = A[i, i] - sum(A[i, j] ** 2 / d[j] for j in range(i) if A[i, j] != 0)
    L = np.tril(A, -1)
    M = (np.diag(d) + L) @ np.diag(1 / d) @ (np.diag(d) + L.T)
    ic = krylov.IC0(system, "cpu", torch.float64)
    r = np.random.default_rng(0).standard_normal(m)
    assert np.allclose(ic(torch.from_numpy(r)).numpy(), np.linalg.solve(M, r), atol=1e-10)


def test_cg_matches_scipy_iterations():
    import scipy.sparse.linalg as spla

    system, b = scene("box_obstacle", 24, 2)
    count = []
    spla.cg(system.scipy, b, rtol=1e-6, atol=0.0, maxiter=5000, callback=lambda x: count.append(1))
    rec = krylov.solve("cg", system, b, tol=1e-6)
    assert abs(rec["iterations"] - len(count)) <= 1


def test_check_every_stops_on_a_multiple_and_converges():
    system, b = scene("sphere", 20, 2)
    rec = krylov.solve("cg", system, b, check_every=8)
    exact = krylov.solve("cg", system, b)
    assert rec["iterations"] % 8 == 0
    assert exact["iterations"] <= rec["iterations"] < exact["iterations"] + 8
    assert rec["converged"]


def test_info_reports_iterations_when_not_converged():
    system, b = scene("sphere", 20, 2)
    A = system.matrix()
    res = []
    x, info = krylov.cg(A, torch.from_numpy(b), maxiter=5, residuals=res)
    assert info == 5 and len(res) == 6


def test_unknown_solver_names_the_choices():
    with pytest.raises(ValueError, match="must be one of: cg, jacobi, ic, deflated, amg, dcdm"):
        krylov.get("gmres")


def test_lanczos_relation_and_ritz_pairs():
    system, _ = scene("sphere", 14, 2)
    A = system.matrix()
    v0 = A @ torch.randn(system.size, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(0))
    m = 30
    V, alpha, beta = lanczos(A, v0, m)
    T = tridiagonal(alpha, beta)
    n = V.shape[1]
    assert torch.allclose(V.T @ V, torch.eye(n, dtype=V.dtype), atol=1e-12)
    # A V_m = V_m T_m + beta_m v_{m+1} e_m^T: the remainder lives in the last column only
    R = A @ V - V @ T
    assert R[:, :-1].abs().max() < 1e-10
    assert float(R[:, -1].norm()) == pytest.approx(float(beta[-1]), rel=1e-8)
    assert float((V.T @ R[:, -1]).abs().max()) < 1e-10
    # Ritz pairs: ||A y - theta y|| = |beta_m s_m|, and no null-space (constant) mode
    theta, S = torch.linalg.eigh(T)
    Y = V @ S
    res = (A @ Y - Y * theta).norm(dim=0)
    assert torch.allclose(res, (beta[-1] * S[-1]).abs(), atol=1e-9)
    values, vectors = ritz(A, m, seed=0)
    assert values.min() > 1e-6
    ones = torch.ones(system.size, dtype=torch.float64) / system.size ** 0.5
    assert float((ones @ vectors).abs().max()) < 1e-8


def test_training_basis_is_cached_and_samples_normalised(tmp_path):
    system = build_system("box", 10, 2)
    first = training_basis(system, 20, seed=0, data_dir=tmp_path)
    files = list((tmp_path / "dcdm").glob("ritz_*.pt"))
    assert len(files) == 1
    again = training_basis(system, 20, seed=0, data_dir=tmp_path)
    assert torch.equal(first["vectors"], again["vectors"])
    other = training_basis(build_system("sphere", 10, 2), 20, seed=0, data_dir=tmp_path)
    assert len(list((tmp_path / "dcdm").glob("ritz_*.pt"))) == 2 and other["digest"] != first["digest"]
    c = training_coefficients(len(first["vectors"]), 4000, 5, seed=0)
    assert c[:, :5].std() == pytest.approx(9.0, rel=0.05) and c[:, 5:].std() == pytest.approx(1.0, rel=0.05)
    b = training_samples(first["vectors"], c[:8])
    assert torch.allclose(b.norm(dim=1), torch.ones(8))

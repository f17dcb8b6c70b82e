"""pde: the problem family, the grid reference, two-layer Ritz solvers, the L-BFGS phase,
cells and claims on constructed records, the CLI smoke run."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from quadrun.experiments import pde
from quadrun.experiments.pde import networks
from quadrun.experiments.pde.config import ACTIVATIONS as CONFIG_ACTIVATIONS
from quadrun.experiments.pde.reference import gap_fit
from quadrun.nn.ritz import (ACTIVATIONS, SobolBatches, TwoLayer, energy, errors,
                             lbfgs_polish, random_feature_ritz, sobol_points, truncated_solve)
from quadrun.solvers.manufactured import Manufactured
from quadrun.solvers.pde import (PHIS, SOLUTIONS, Grid, Problem, default_step_size, newton,
                                 preconditioned_gradient_descent, reference_solution)
from quadrun.errors import Interrupted
from quadrun.schema import unread_keys
from tests.conftest import run_folders, summary
from tests.figure_checks import problems


# -- the problem family -------------------------------------------------------------------
@pytest.mark.parametrize("solution", SOLUTIONS)
@pytest.mark.parametrize("phi", PHIS)
def test_f_solves_the_pde(phi, solution):
    """-Laplace u* + u* + phi'(u*) = f, with the Laplacian by central differences, and the
    gradient of u* against differences too (so the closed forms are checked, not restated)."""
    p = Problem(3, phi, solution, alpha=0.7, amplitude=0.8, frequencies=(1, 2),
                bump_width=0.2, bump_centre=(0.3, 0.6))
    x = np.random.default_rng(0).random((50, 3)) * 0.8 + 0.1
    h = 1e-4
    lap = sum((p.u_star(x + h * e) - 2 * p.u_star(x) + p.u_star(x - h * e)) / h ** 2
              for e in np.eye(3))
    grad = np.stack([(p.u_star(x + h * e) - p.u_star(x - h * e)) / (2 * h) for e in np.eye(3)], -1)
    u = p.u_star(x)
    np.testing.assert_allclose(-lap + u + p.phi_prime(u), p.f(x), atol=2e-5)
    np.testing.assert_allclose(grad, p.grad_u_star(x), atol=1e-7)
    # Neumann: the normal derivative vanishes on the faces x_i = 0 and x_i = 1
    for axis in range(3):
        for side in (0.0, 1.0):
            face = x.copy()
            face[:, axis] = side
            assert np.abs(p.grad_u_star(face)[:, axis]).max() < 1e-12


@pytest.mark.parametrize("solution, params", [
    ("gaussian_bump", dict(bump_width=0.15, bump_centre=(0.35, 0.7))),
    ("cosines", dict(frequencies=(2, 1), amplitude=1.5))])
@pytest.mark.parametrize("phi", ["quartic", "logcosh"])
def test_user_solutions_are_the_minimiser_of_the_reference(phi, solution, params):
    """f derived from a user-given u* makes u* the minimiser: the grid reference (Newton on
    E_h) converges to u* at second order as the grid is refined, and PGD reaches it too."""
    p = Problem(2, phi, solution, alpha=2.0, **params)
    errs = []
    for n in (16, 32, 64):
        grid = Grid(p, n)
        errs.append(grid.rel_l2(newton(grid).x))
    assert 3.6 < errs[0] / errs[1] < 4.4 and 3.6 < errs[1] / errs[2] < 4.4, errs
    ref = reference_solution(p, 64, 150)
    assert ref["pgd_newton_diff"] < 1e-8 and abs(ref["rel_l2"] - errs[-1]) < 1e-8


def test_manufactured_solutions_check_their_parameters():
    with pytest.raises(ValueError, match="solution must be one of"):
        Manufactured(2, "nosuch")
    with pytest.raises(ValueError, match="bump width"):
        Manufactured(2, "gaussian_bump", width=0.9)
    images = 1 + 2 * math.exp(-1 / (2 * 0.25 ** 2))        # the two mirrors nearest the centre
    assert Manufactured(3, "gaussian_bump", amplitude=2.0).max_abs() == \
        pytest.approx(2.0 * images ** 3, rel=1e-6)
    u = Manufactured(2, "cosines", frequencies=(3,))
    x = np.array([[0.0, 0.0], [1 / 3, 0.0]])
    np.testing.assert_allclose(u.value(x), [1.0, -1.0], atol=1e-15)   # k = 3 on both axes


@pytest.mark.parametrize("solution", SOLUTIONS)
@pytest.mark.parametrize("phi", PHIS)
@pytest.mark.parametrize("d", [1, 3, 5])
def test_qmc_energy_of_u_star_matches_exact(phi, solution, d):
    p = Problem(d, phi, solution)
    exact = p.exact_energy()
    closed = solution in ("cosine_sum", "cosine_product") and phi != "logcosh"
    if exact is None:  # no closed form and d > 4: no reference value
        assert not closed and d > 4
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
    grid = Grid(Problem(2, "quartic"), 32)
    assert abs(ref["newton_energy"] - grid.energy(newton(grid).x)) < 1e-14
    assert len(ref["energy_gaps"]) == 41 and ref["energy_gaps"][-1] == ref["energy_gap"]
    # the claim's fit on the real iteration: geometric, as the paper says
    record = {"part": "reference", "phi": "quartic", "d": 2, "grid": 32, **ref}
    fit = gap_fit(record)
    assert fit["r2"] > 0.99 and abs(fit["rate"] - ref["pgd_rate"]) < 1e-12
    assert _claims([record])["pgd_geometric"]["verdict"] == "holds"


@pytest.mark.parametrize("d, k, amplitude", [(1, (3,), 1.0), (2, (1, 2), -0.5), (3, (0, 2, 5), 2.0)])
def test_barron_norm_of_a_single_cosine_mode_is_its_closed_form(d, k, amplitude):
    """u = A prod_i cos(pi k_i x_i): one cosine coefficient A, so B = |A| pi |k|; the
    DCT coefficients are that mode alone, and B adds up over a sum of modes."""
    grid = Grid(Problem(d, "none"), 16)
    mode = lambda k, x: np.prod(np.cos(np.pi * np.asarray(k) * x), -1)
    u = amplitude * mode(k, grid.x)
    assert grid.barron_norm(u) == pytest.approx(abs(amplitude) * np.pi * np.linalg.norm(k), rel=1e-12)
    a = grid.cosine_coefficients(u)
    assert a[tuple(k)] == pytest.approx(amplitude, rel=1e-12)
    assert np.abs(a).sum() == pytest.approx(abs(amplitude), rel=1e-12)
    v = u + 0.25 * mode((1,) * d, grid.x)
    expected = abs(amplitude) * np.pi * np.linalg.norm(k) + 0.25 * np.pi * np.sqrt(d)
    assert grid.barron_norm(v) == pytest.approx(expected, rel=1e-12)
    p = Problem(d, "none", "cosines", amplitude=abs(amplitude), frequencies=k)
    assert p.exact.barron_norm() == pytest.approx(Grid(p, 16).barron_norm(Grid(p, 16).u_star), rel=1e-12)


def test_reference_records_the_barron_norm_of_every_iterate():
    ref = reference_solution(Problem(2, "quartic"), 32, 60, barron=True)
    b = ref["barron"]
    assert len(b) == 61 and b[0] == 0.0 and b[1] > 0
    assert b[-1] == pytest.approx(ref["barron_solution"], rel=1e-6)
    assert ref["barron_coarse"] == pytest.approx(ref["barron_solution"], rel=0.02)
    assert ref["barron_exact"] == pytest.approx(np.pi * np.sqrt(2), rel=1e-12)


def test_gradient_descent_without_the_preconditioner_is_slower_and_slows_with_d():
    """The control: plain gradient descent's step is 2/(2 + max A + L); its late rate is
    much closer to 1 than PGD's and its e-folding time grows from d = 1 to d = 3 on the
    same grid for the linear problem (one excited mode, k = 1 on each axis)."""
    taus = []
    for d in (1, 3):
        ref = reference_solution(Problem(d, "none"), 8, 200, precondition=False)
        fit = gap_fit({**ref, "phi": "none"}, late=True)
        assert 0.5 < fit["rate"] < 1 and fit["r2"] > 0.999
        taus.append(-1 / fit["slope"])
    assert taus[1] / taus[0] > 2.5


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



# -- the L-BFGS polish: a phase that logs and stops ------------------------------------------
def _torch_lbfgs(model, problem, x, max_iter):
    """The polish as one call of torch's L-BFGS with the same settings (the reference)."""
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, history_size=50,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        loss = energy(model, problem, x)
        loss.backward()
        return loss

    opt.step(closure)
    return opt.state[next(iter(model.parameters()))]["n_iter"]


@pytest.mark.parametrize("d, width, max_iter", [(2, 8, 40), (1, 2, 400)])
def test_lbfgs_polish_in_chunks_equals_one_lbfgs_call(d, width, max_iter):
    """Chunks of any size give the iterates of one L-BFGS call, bit for bit, both when the
    iteration cap ends it (40) and when L-BFGS stops on its own (d=1, width 2: ~380)."""
    p = Problem(d, "quartic")
    x = sobol_points(d, 128, seed=1, dtype=torch.float64)

    def model():
        return TwoLayer(d, width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    ref = model()
    n_ref = _torch_lbfgs(ref, p, x, max_iter)
    assert (n_ref == max_iter) == (max_iter == 40)
    for chunk in (1, 3, 10):
        m = model()
        assert lbfgs_polish(m, p, x, max_iter, chunk=chunk) == n_ref
        assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), m.parameters()))


def test_lbfgs_polish_logs_energy_and_honours_a_stop(fake_ctx):
    p = Problem(2, "quartic")
    x = sobol_points(2, 128, seed=1, dtype=torch.float64)
    ctx = fake_ctx()
    m = TwoLayer(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert lbfgs_polish(m, p, x, 30, ctx=ctx, name="dr", step=100, chunk=10) == 30
    assert [r["step"] for r in ctx.rows] == [110, 120, 130]
    assert [r["dr/lbfgs/iteration"] for r in ctx.rows] == [10, 20, 30]
    assert all(r["fit"] == "dr" for r in ctx.rows)
    e = [r["dr/lbfgs/energy"] for r in ctx.rows]
    with torch.no_grad():
        assert e[0] > e[1] > e[2] and abs(e[2] - float(energy(m, p, x))) < 1e-12
    ctx = fake_ctx(stop_after=1)
    m = TwoLayer(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(Interrupted, match="L-BFGS"):
        lbfgs_polish(m, p, x, 30, ctx=ctx, name="dr", chunk=10)
    assert len(ctx.rows) == 1                          # stopped after its first chunk


# -- cells, summary, figures ------------------------------------------------------------------
def test_module_imports_without_torch_and_activations_match():
    code = "import sys, quadrun.experiments.pde; print(any(m == 'torch' for m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
    assert CONFIG_ACTIVATIONS == ACTIVATIONS


def test_cells_cover_every_part_with_stable_keys():
    c = pde.Config(rf_dims=[1, 2], rf_widths=[[4, 8], [8, 16, 32]], ritz_dims=[3],
                   ritz_widths=[[8]], repeats=2, reference_dims=[1, 2], reference_grid=8)
    cells = pde.cells(c)
    assert cells[0] == {"part": "reference", "phi": "none", "d": 1, "grid": 8}
    assert [x for x in cells if x["part"] == "control"] == \
        [{"part": "control", "phi": "logcosh", "d": d, "grid": 8} for d in (1, 2)]
    rf = [x for x in cells if x["part"] == "random_features"]
    assert len(rf) == (2 + 3) * 2 and rf[0] == {"part": "random_features", "d": 1, "width": 4,
                                                "replicate": 0}
    assert {x["width"] for x in rf if x["d"] == 2} == {8, 16, 32}
    assert [x for x in cells if x["part"] == "deep_ritz"] == \
        [{"part": "deep_ritz", "d": 3, "width": 8, "replicate": r} for r in (0, 1)]
    assert len({json.dumps(x, sort_keys=True) for x in cells}) == len(cells) == 6 + 2 + 10 + 2
    assert all(x["part"] not in ("reference", "control")
               for x in pde.cells(pde.Config(reference_dims=[])))
    assert not [x for x in pde.cells(pde.Config(control_steps=0)) if x["part"] == "control"]
    default = pde.Config()                 # the cpu scale: 9 + 3 + (5+6+6+6+7) x 3 + 3 x 3 x 3
    assert len(pde.cells(default)) == 9 + 3 + 90 + 27 and default.repeats >= 3


def test_quadrature_points_grow_with_the_width():
    from quadrun.experiments.pde.lab import quadrature_points

    c = pde.Config(rf_points=1024, rf_points_per_width=64)
    assert [quadrature_points(c, w) for w in (4, 16, 17, 100, 512)] == [1024, 1024, 2048, 8192, 32768]
    assert quadrature_points(pde.Config(rf_points=256, rf_points_per_width=0), 512) == 256


def test_config_checks_the_width_lists(compose):
    from quadrun.errors import ConfigError

    cfg, _ = compose("experiment=pde", "pde.rf_dims=[1,2,3]", "pde.rf_widths=[[4],[8]]")
    with pytest.raises(ConfigError, match="pde.rf_widths: 2 width lists for 3"):
        pde.check(cfg)
    cfg, _ = compose("experiment=pde", "pde.rf_dims=[1,2]", "pde.rf_widths=[[4,8]]")
    pde.check(cfg)                                               # one list for every d
    cfg, _ = compose("experiment=pde", "pde.rf_dims=[2,2]", "pde.rf_widths=[[4]]")
    with pytest.raises(ConfigError, match="twice"):
        pde.check(cfg)


def _net(part, d, width, err, replicate=0, floor=1e-9, status="completed"):
    return {"part": part, "d": d, "width": width, "replicate": replicate, "rel_l2": err,
            "rel_h1": err, "energy_gap": err, "floor": floor, "status": status}


def _ref(gaps, d=2, grid=16, energy=-3.0, phi="quartic", part="reference", **extra):
    return {"part": part, "phi": phi, "d": d, "grid": grid, "energy_gaps": [float(g) for g in gaps],
            "newton_energy": energy, "pgd_rate": 0.5, "rel_l2": 1e-3, "newton_rel_l2": 1e-3,
            "energy_gap": float(gaps[-1]), **extra}


def test_summarize_reports_the_reference_error_wstar_floors_and_divergence():
    c = pde.Config(target_error=0.01)
    recs = [_ref(0.5 ** np.arange(5), phi="logcosh", d=1), _ref(0.5 ** np.arange(5), d=2)]
    recs += [_net("random_features", 2, w, 0.01 * 32 / w, r, floor=1e-6)
             for w in (8, 16, 32, 64) for r in (0, 1)]
    recs += [_net("deep_ritz", 2, 16, 0.02), _net("deep_ritz", 2, 32, None, status="diverged")]
    s = pde.summarize(recs, c)
    assert s["width_for_target"]["random_features"]["2"] == pytest.approx(32.0)
    assert s["width_for_target"]["deep_ritz"] == {"2": None}
    assert set(s["reference"]) == {"logcosh d=1", "quartic d=2"}
    assert s["reference"]["quartic d=2"]["newton_rel_l2"] == 1e-3
    assert s["floor_at_widest"]["random_features"]["2"] == 1e-6
    assert s["status"] == "diverged" and "status" not in pde.summarize(recs[:-1], c)


def test_figures_draw_the_four_plots_from_records():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = []

    def save(fig, name):
        saved.append(name)
        plt.close(fig)

    barron = dict(barron=[0.0, 1.0, 1.5, 1.6], barron_solution=1.6, barron_coarse=1.6)
    recs = [_ref(0.5 ** np.arange(8), **barron)] + [_net(p, d, w, 0.1 / w ** 0.5)
                                                    for p in ("random_features", "deep_ritz")
                                                    for d in (1, 2) for w in (16, 64)]
    pde.figures(recs, pde.Config(), save)
    assert saved == ["error_vs_width", "width_for_target", "reference_energy_gap", "barron_growth"]


def test_figures_read_on_their_own():
    """Every figure passes the figure checks (tests/figure_checks.py), with w* resolved at
    some d and at none (then the figure says so), energy gaps that reach round-off and
    replicates that differ in number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def drawn(recs, c):
        out = {}

        def save(fig, name):
            out[name] = (problems(fig), [t.get_text() for ax in fig.axes for t in ax.texts],
                         fig.axes[0].get_title())
            plt.close(fig)

        pde.figures(recs, c, save)
        return out

    barron = dict(barron=[0.0, 1.0, 1.5, 1.6], barron_solution=1.6, barron_coarse=1.6)
    refs = [_ref(np.r_[0.5 ** np.arange(40), 0.0, 0.0], phi=phi, d=d, **barron)
            for phi in ("none", "logcosh", "quartic") for d in (1, 2, 4)]
    nets = [_net(p, d, w, 0.3 / w ** 0.5 * (1 + 0.1 * r), r, floor=1e-5)
            for p in ("random_features", "deep_ritz") for d in (1, 2, 4)
            for w in (16, 64, 256, 1024) for r in range(3 if p == "deep_ritz" else 2)]
    for c in (pde.Config(target_error=0.02), pde.Config(target_error=1e-4)):
        out = drawn(refs + nets, c)
        assert list(out) == ["error_vs_width", "width_for_target", "reference_energy_gap",
                             "barron_growth"]
        for name, (found, _, _) in out.items():
            assert found == [], (name, found)
        assert "median over 2-3 replicates" in out["error_vs_width"][2]
    assert any("unresolved" in t for t in out["width_for_target"][1])   # 1e-4: none reach it


# -- claims on constructed records: the iteration ---------------------------------------------
def _claims(records, **cfg):
    return {c["id"]: c for c in pde.claims(records, pde.Config(**cfg))}


def test_claim_geometric_convergence():
    t = np.arange(21)
    verdict = lambda gaps: _claims([_ref(gaps)])["pgd_geometric"]["verdict"]
    assert verdict(3.0 * 0.5 ** t) == "holds"
    assert verdict(np.r_[3.0 * 0.4 ** t[:12], np.full(9, 1e-16)]) == "holds"   # round-off tail
    assert verdict([3.0, 1e-16, 0.0]) == "holds"              # phi = none: exact in one step
    assert verdict(1.0 + 0.1 * t) == "fails"                  # rises
    assert verdict(np.ones(21)) == "fails"                    # does not fall
    assert verdict([1.0, 1.2, 1.5, 1.8, 0.99]) == "fails"     # fitted factor > 1
    assert verdict(1.0 / (t + 1)) == "fails"                  # algebraic, not geometric
    assert verdict([1.0, float("nan"), 0.5]) == "fails"       # blew up (NaN stored as None)
    bent = np.r_[0.9 ** np.arange(11), 0.9 ** 10 * 0.1 ** np.arange(1, 11)]
    assert verdict(bent) == "inconclusive"                    # geometric pieces, two rates
    c = _claims([_ref(3.0 * 0.5 ** t)])["pgd_geometric"]
    assert abs(c["values"]["fits"][0]["rate"] - 0.5) < 1e-12 and "factor 0.5" in c["measured"]
    assert _claims([])["pgd_geometric"]["verdict"] == "not_measured"
    # a sweep repeats the same reference in every job: it is decided once
    assert len(_claims([_ref(3.0 * 0.5 ** t)] * 3)["pgd_geometric"]["values"]["fits"]) == 1


def _rates(rates, phi="logcosh", part="reference", noise=0.0, steps=15, seed=0):
    rng = np.random.default_rng(seed)
    return [_ref(3.0 * np.asarray(r) ** np.arange(steps) * np.exp(noise * rng.standard_normal(steps)),
                 d=d, phi=phi, part=part) for d, r in zip((1, 2, 3), rates)]


def test_claim_rate_does_not_depend_on_d():
    verdict = lambda recs: _claims(recs)["pgd_rate_vs_d"]
    c = verdict(_rates([0.09, 0.094, 0.095]))                  # as measured for logcosh
    assert c["verdict"] == "holds" and "ratio 1.0" in c["measured"]
    assert verdict(_rates([0.1, 0.3, 0.5]))["verdict"] == "fails"          # tau 0.43 .. 1.44
    noisy = _rates([0.3, 0.32, 0.34], noise=0.6, steps=6)                  # wide slope intervals
    c = verdict(noisy)
    assert c["verdict"] == "inconclusive" and c["values"]["logcosh"]["high"] > 1.25
    assert verdict(_rates([0.1, 0.1]))["verdict"] == "inconclusive"        # two d only
    # quartic is shown, not a case: its curvature bound grows with max|u*|
    c = verdict(_rates([0.09, 0.09, 0.09]) + _rates([0.29, 0.51, 0.62], phi="quartic"))
    assert c["verdict"] == "holds" and "quartic" in c["measured"] and "not a case" in c["measured"]
    assert verdict(_rates([0.3, 0.5, 0.6], phi="quartic"))["verdict"] == "inconclusive"
    assert verdict([])["verdict"] == "not_measured"


def test_claim_control_rate_depends_on_d():
    verdict = lambda recs: _claims(recs)["pgd_rate_vs_d/unpreconditioned"]["verdict"]
    slow = lambda rates: _rates(rates, part="control", steps=200)
    assert verdict(slow([0.83, 0.91, 0.94])) == "holds"       # tau 5.4 .. 16
    assert verdict(slow([0.9, 0.9, 0.9])) == "fails"          # the same rate at every d
    assert verdict([]) == "not_measured"
    c = _claims(slow([0.9, 0.9, 0.9]))["pgd_rate_vs_d/unpreconditioned"]
    assert c["extension"] is True


def _barron_ref(b, solution=None, coarse=None, phi="quartic", d=2):
    b = [0.0] + list(b)
    return _ref(0.5 ** np.arange(len(b)), d=d, phi=phi, barron=b,
                barron_solution=solution or b[-1], barron_coarse=coarse or solution or b[-1])


def test_claim_barron_norm_grows_at_most_linearly_in_log():
    verdict = lambda recs: _claims(recs)["barron/linear"]["verdict"]
    saturating = 3.0 * (1 - 0.6 ** np.arange(1, 25))
    assert verdict([_barron_ref(saturating), _barron_ref(saturating, phi="none", d=1)]) == "holds"
    linear = np.exp(0.3 * np.arange(1, 10))                     # a constant factor per step
    assert verdict([_barron_ref(linear)]) == "holds"
    accelerating = np.exp(0.05 * np.arange(1, 10) ** 2)         # log B quadratic in t: p^t-like
    assert verdict([_barron_ref(accelerating)]) == "fails"
    assert verdict([_barron_ref([1.0, 2.0])]) == "inconclusive"  # too few steps
    assert verdict([_ref([1.0, 0.5])]) == "not_measured"         # no Barron norms recorded


def test_claim_barron_norm_saturates():
    verdict = lambda recs: _claims(recs)["barron/saturates"]["verdict"]
    b = 3.0 * (1 - 0.6 ** np.arange(1, 25))
    assert verdict([_barron_ref(b, solution=3.0, coarse=3.01)]) == "holds"
    assert verdict([_barron_ref(b, solution=3.0, coarse=3.3)]) == "fails"   # grid-dependent
    short = 3.0 * (1 - 0.6 ** np.arange(1, 4))                               # stopped early
    assert verdict([_barron_ref(short, solution=3.0, coarse=3.0)]) == "fails"
    c = _claims([_barron_ref(b, solution=3.0, coarse=3.01)])["barron/saturates"]
    assert "within 1 % after" in c["measured"]


# -- claims on constructed records: the networks ------------------------------------------------
def _curve(part, d, slope, widths=(8, 16, 32, 64), reps=3, noise=0.1, floor=1e-9, seed=0,
           level=0.1):
    rng = np.random.default_rng(seed)
    return [_net(part, d, w, level * (w / widths[0]) ** slope * math.exp(noise * rng.standard_normal()),
                 r, floor=floor) for w in widths for r in range(reps)]


def test_claim_error_falls_with_width_above_the_floor():
    falls = sum((_curve("random_features", d, -1.0, seed=d) for d in (1, 2, 5)), [])
    c = _claims(falls)["error_vs_width/rf"]
    assert c["verdict"] == "holds" and c["extension"] is True
    assert c["values"]["5"]["high"] < 0 and "[" in c["measured"]
    grows = falls + _curve("random_features", 10, 0.3)
    c = _claims(grows)["error_vs_width/rf"]
    assert c["verdict"] == "fails" and "d=10" in c["why"]
    noisy = falls + _curve("random_features", 3, -0.05, noise=2.0)
    c = _claims(noisy)["error_vs_width/rf"]
    assert c["verdict"] == "inconclusive" and c["values"]["3"]["low"] < 0 < c["values"]["3"]["high"]
    # the error meets its floor at width 32: only 8 and 16 are fitted, the flat rest is not
    meets = [_net("random_features", 2, w, max(0.1 * 8 / w, 2e-3) * (1 + 0.01 * r), r, floor=2e-3)
             for w in (8, 16, 32, 64, 128) for r in range(3)]
    c = _claims(meets)["error_vs_width/rf"]
    assert c["values"]["2"]["fitted"] == [8, 16, 32] and c["verdict"] == "holds"
    assert abs(c["values"]["2"]["slope"] + 1) < 0.05
    # every width within 10x of its floor: the d is listed, not a case
    floor = falls + [_net("random_features", 3, w, 1e-5, r, floor=2e-6) for w in (8, 16) for r in range(3)]
    c = _claims(floor)["error_vs_width/rf"]
    assert c["verdict"] == "holds" and "d=3: at its floor from width 8" in c["measured"]
    only_floor = [_net("random_features", 3, w, 1e-5, r, floor=2e-6) for w in (8, 16) for r in range(3)]
    assert _claims(only_floor)["error_vs_width/rf"]["verdict"] == "not_measured"
    # two replicates give no interval: undecided, with what would decide it
    two = _curve("deep_ritz", 2, -1.0, reps=2)
    c = _claims(two)["error_vs_width/ritz"]
    assert c["verdict"] == "inconclusive" and "pde.repeats" in c["why"] and not c["extension"]
    assert _claims([])["error_vs_width/rf"]["verdict"] == "not_measured"


def test_slope_rule_error_rates_on_synthetic_records():
    """A simulation with known truth (4 widths, 3 replicates, log-normal noise 0.3): with no
    trend the rule decides wrongly (holds or fails) at most ~15 % of the time (the bootstrap
    of 3 replicates is anti-conservative: nominal 5 %); with a slope of -0.5 it holds in
    >= 90 %."""
    from quadrun.claims import AllCases, Below

    rule, runs = AllCases(Below(0.0)), 60
    rng = np.random.default_rng(7)
    wrong = sum(rule.decide(networks.error_falls(
        _curve("random_features", 3, 0.0, noise=0.3, seed=int(rng.integers(1 << 30))),
        "random_features"))[0] != "inconclusive" for _ in range(runs))
    power = sum(rule.decide(networks.error_falls(
        _curve("random_features", 3, -0.5, noise=0.3, seed=int(rng.integers(1 << 30))),
        "random_features"))[0] == "holds" for _ in range(runs))
    assert wrong <= 0.15 * runs and power >= 0.9 * runs, (wrong, power)


def _wstar_records(part, wstar: dict, reps=3, noise=0.0, floor=1e-9, seed=0,
                   widths=(4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)):
    """Errors 0.01 w*/w: the median crosses 0.01 exactly at w*."""
    rng = np.random.default_rng(seed)
    return [_net(part, d, w, 0.01 * ws / w * math.exp(noise * rng.standard_normal()), r, floor=floor)
            for d, ws in wstar.items() for w in widths for r in range(reps)]


def test_wstar_is_interpolated_between_grid_widths():
    recs = _wstar_records("random_features", {2: 24.0})
    assert networks.wstar(networks.curves(recs, "random_features"), 0.01)[2] == pytest.approx(24.0)
    # reached at the smallest width, never reached, or within 10x of the floor: unresolved
    for ws, floor in ((3.0, 1e-9), (5000.0, 1e-9), (24.0, 2e-3)):
        recs = _wstar_records("random_features", {2: ws}, floor=floor)
        assert networks.wstar(networks.curves(recs, "random_features"), 0.01)[2] is None


def test_claim_width_grows_polynomially_in_d():
    dims = (1, 2, 3, 5, 10)
    poly = {d: 8.0 * d ** 2 for d in dims}
    c = _claims(_wstar_records("deep_ritz", poly, noise=0.05))["width_vs_d/ritz"]
    assert c["verdict"] == "holds" and abs(c["values"]["k"] - 2) < 0.1 and not c["extension"]
    expo = {d: 4.0 * math.exp(0.6 * d) for d in dims}
    c = _claims(_wstar_records("random_features", expo, noise=0.05))["width_vs_d/rf"]
    assert c["verdict"] == "fails" and c["extension"] is True
    flat = {d: 50.0 for d in dims}                               # all w* equal: not a holds
    assert _claims(_wstar_records("random_features", flat))["width_vs_d/rf"]["verdict"] == "inconclusive"
    few = {d: 8.0 * d ** 2 for d in (2, 3, 5, 10)}               # four d: a description
    c = _claims(_wstar_records("random_features", few))["width_vs_d/rf"]
    assert c["verdict"] == "not_measured" and "a description" in c["why"] and "d^2" in c["measured"]
    narrow = {d: 8.0 * d for d in (2, 3, 4, 5, 6)}               # five d, not a decade
    c = _claims(_wstar_records("random_features", narrow))["width_vs_d/rf"]
    assert c["verdict"] == "not_measured"
    assert _claims([])["width_vs_d/ritz"]["verdict"] == "not_measured"


# -- variants ----------------------------------------------------------------------------------
def test_variants_name_the_keys_each_choice_reads():
    """alpha only when some part solves with logcosh, power only with relu_k, a solution's
    parameters only with it, a part's keys only when it runs."""
    unread = lambda **kw: set(unread_keys(pde, pde.Config(**kw)))
    bump, cosines = {"bump_width", "bump_centre"}, {"frequencies"}
    assert unread() == {"power", "ritz_lbfgs_points", "amplitude"} | bump | cosines  # cpu scale
    assert "alpha" in unread(phi="quartic", reference_phis=["none", "quartic"])
    assert "alpha" not in unread(phi="logcosh", reference_phis=["quartic"])
    assert "alpha" in unread(reference_dims=[], phi="quartic")
    assert "power" in unread(activation="tanh") and "power" not in unread(activation="relu_k")
    assert not (bump | {"amplitude"}) & unread(solution="gaussian_bump")
    assert not (cosines | {"amplitude"}) & unread(solution="cosines")
    assert {"rf_widths", "rf_points", "rf_points_per_width", "rf_rcond"} <= unread(rf_dims=[])
    none = unread(ritz_dims=[])
    assert {"ritz_widths", "train", "ritz_lbfgs_steps", "ritz_lbfgs_points"} <= none
    assert "ritz_lbfgs_points" not in unread(ritz_lbfgs_steps=5)
    assert {"reference_grid", "pgd_steps", "pgd_eta", "control_grid"} <= unread(reference_dims=[])
    assert "control_grid" in unread(reference_phis=["quartic"])       # no bounded-curvature phi
    assert "power" in unread(rf_dims=[], ritz_dims=[], activation="relu_k")   # no network


def test_an_unread_override_leaves_the_fingerprint(compose):
    from quadrun.identity import config_fingerprint

    plain, _ = compose("experiment=pde", "scale=smoke")
    width, _ = compose("experiment=pde", "scale=smoke", "pde.bump_width=0.1")
    assert config_fingerprint(width) == config_fingerprint(plain)
    read, _ = compose("experiment=pde", "scale=smoke", "pde.solution=gaussian_bump",
                      "pde.bump_width=0.1")
    other, _ = compose("experiment=pde", "scale=smoke", "pde.solution=gaussian_bump")
    assert config_fingerprint(read) != config_fingerprint(other)


# -- the CLI (what the contract test does not cover) -----------------------------------------
def test_smoke_cli_run_with_a_gaussian_bump(cli):
    r = cli("experiment=pde", "scale=smoke", "threads=1", "pde.solution=gaussian_bump",
            "pde.bump_width=0.2", "pde.frequencies=[3]")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pde.frequencies" in r.stderr and "not read" in r.stderr
    (folder,) = run_folders(cli.cwd, "pde")
    s = summary(folder)
    assert s["status"] == "completed"
    assert s["record_keys"] == ["part", "phi", "d", "grid", "width", "replicate"]
    recs = s["records"]
    nets = [r for r in recs if r["part"] in ("random_features", "deep_ritz")]
    keys = {"part", "d", "width", "replicate", "rel_l2", "rel_h1", "energy_gap", "floor", "seconds"}
    assert nets and all(keys <= set(row) and "seed" not in row for row in nets)
    assert {(r["part"], r["d"]) for r in nets} == \
        {("random_features", 1), ("random_features", 2), ("deep_ritz", 2)}
    refs = [r for r in recs if r["part"] == "reference"]
    assert {(r["phi"], r["d"]) for r in refs} == {(p, d) for p in PHIS for d in (1, 2)}
    assert all(len(r["energy_gaps"]) == 21 and len(r["barron"]) == 21 for r in refs)
    # the reference's error against the exact solution is reported (16 cells: ~1e-2)
    assert all(0 < v["newton_rel_l2"] < 0.05 for v in s["reference"].values())
    assert "gaussian_bump" in s["problem"]["solution"]
    claims = {c["id"]: c for c in s["claims"]}
    assert list(claims) == ["pgd_geometric", "pgd_rate_vs_d", "pgd_rate_vs_d/unpreconditioned",
                            "barron/linear", "barron/saturates", "error_vs_width/ritz",
                            "width_vs_d/ritz", "error_vs_width/rf", "width_vs_d/rf"]
    assert claims["pgd_geometric"]["verdict"] == "holds"
    assert claims["width_vs_d/rf"]["verdict"] == "not_measured"       # two d at smoke scale
    assert "gaussian_bump" in claims["error_vs_width/rf"]["setup"]
    # Deep Ritz ran its L-BFGS polish as a logged phase
    rows = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
    assert any("deep_ritz/d2/w16/s0/lbfgs/energy" in row for row in rows)
    for plot in ("error_vs_width", "width_for_target", "reference_energy_gap", "barron_growth"):
        [png] = (folder / "report").glob(f"{plot}*.png")
        assert png.stat().st_size > 0
    stages = json.loads((folder / "stages.json").read_text())["stages"]
    assert len(stages) == len(recs)                    # every cell is a resumable stage


def test_cli_rejects_a_non_power_of_two_point_count(cli):
    r = cli("experiment=pde", "scale=smoke", "pde.test_points=1000")
    assert r.returncode != 0
    assert "pde.test_points" in r.stderr and "Traceback" not in r.stderr
    r = cli("experiment=pde", "scale=smoke", "pde.train.batch_size=100")
    assert r.returncode != 0
    assert "pde.train.batch_size" in r.stderr and "Traceback" not in r.stderr

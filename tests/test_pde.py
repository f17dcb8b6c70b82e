"""pde: the problem family, the grid reference, two-layer Ritz solvers, the L-BFGS phase,
cells and claims on constructed records, the CLI smoke run."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
from scipy import stats
import pytest
import torch

from quadrun.experiments import pde
from quadrun.experiments.pde.evidence import gap_fit
from quadrun.experiments.pde.config import ACTIVATIONS as CONFIG_ACTIVATIONS, SOLVERS
from quadrun.nn.ritz import (ACTIVATIONS, SobolBatches, TwoLayer, energy, errors,
                             lbfgs_polish, random_feature_ritz, sobol_points, truncated_solve)
from quadrun.solvers.pde import (PHIS, SOLUTIONS, Grid, Problem, default_step_size, newton,
                                 preconditioned_gradient_descent, reference_solution)
from quadrun.errors import Interrupted
from quadrun.schema import unread_keys
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
    grid = Grid(Problem(2, "quartic"), 32)
    assert abs(ref["newton_energy"] - grid.energy(newton(grid).x)) < 1e-14
    assert len(ref["energy_gaps"]) == 41 and ref["energy_gaps"][-1] == ref["energy_gap"]
    # the claim's fit on the real iteration: geometric, as the paper says
    record = {"part": "reference", "d": 2, "grid": 32, **ref}
    fit = gap_fit(record)
    assert fit["r2"] > 0.99 and abs(fit["rate"] - ref["pgd_rate"]) < 1e-12
    assert _claims([record])["pgd_geometric"]["verdict"] == "holds"


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
    c = pde.Config(rf_dims=[1, 2], rf_widths=[16, 32, 64], ritz_dims=[3], ritz_widths=[8],
                   repeats=2, reference_d=1, reference_grid=8)
    cells = pde.cells(c)
    assert cells[0] == {"part": "reference", "d": 1, "grid": 8}
    rf = [x for x in cells if x["part"] == "random_features"]
    assert len(rf) == 2 * 3 * 2 and \
        rf[0] == {"part": "random_features", "d": 1, "width": 16, "replicate": 0}
    assert [x for x in cells if x["part"] == "deep_ritz"] == \
        [{"part": "deep_ritz", "d": 3, "width": 8, "replicate": s} for s in (0, 1)]
    assert len({json.dumps(x, sort_keys=True) for x in cells}) == len(cells) == 1 + 12 + 2
    assert all(x["part"] != "reference" for x in pde.cells(pde.Config(reference_d=0)))
    default = pde.Config()                      # the cpu scale: 1 + 5 x 5 + 3 x 2 cells
    assert len(pde.cells(default)) == 32 and default.train.optimizer == "adam"


def _net(part, d, width, err, seed=0, status="completed"):
    return {"part": part, "d": d, "width": width, "replicate": seed, "rel_l2": err,
            "rel_h1": err, "energy_gap": err, "status": status}


def _ref(gaps, d=2, grid=16, energy=-3.0):
    return {"part": "reference", "d": d, "grid": grid, "energy_gaps": [float(g) for g in gaps],
            "newton_energy": energy, "pgd_rate": 0.5, "rel_l2": 1e-3, "energy_gap": float(gaps[-1])}


def test_summarize_width_for_target_reference_and_divergence():
    c = pde.Config(target_error=0.01)
    recs = [_ref(0.5 ** np.arange(5))]
    recs += [_net("random_features", 2, w, e, s) for w, e in ((16, 0.1), (32, 0.008), (64, 0.002))
             for s in (0, 1)]
    recs += [_net("random_features", 5, w, 0.5) for w in (16, 32, 64)]
    recs += [_net("deep_ritz", 2, 16, 0.02), _net("deep_ritz", 2, 32, None, status="diverged")]
    s = pde.summarize(recs, c)
    assert s["width_for_target"] == {"random_features": {"2": 32, "5": None},
                                     "deep_ritz": {"2": None}}
    assert s["reference"]["grid"] == 16 and "energy_gaps" not in s["reference"]
    assert s["status"] == "diverged"
    assert "status" not in pde.summarize(recs[:-1], c)


def test_figures_draw_the_three_plots_from_records():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = []

    def save(fig, name):
        saved.append(name)
        plt.close(fig)

    recs = [_ref(0.5 ** np.arange(8))] + [_net(p, d, w, 0.1 / w ** 0.5)
                                          for p in SOLVERS for d in (1, 2) for w in (16, 64)]
    pde.figures(recs, pde.Config(), save)
    assert saved == ["error_vs_width", "width_for_target", "reference_energy_gap"]


# -- claims on constructed records -------------------------------------------------------------
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
    assert abs(c["values"]["fits"][0]["rate"] - 0.5) < 1e-12 and "0.5 per step" in c["measured"]
    assert _claims([])["pgd_geometric"]["verdict"] == "not_measured"
    # a sweep repeats the same reference in every job: it is decided once
    assert len(_claims([_ref(3.0 * 0.5 ** t)] * 3)["pgd_geometric"]["values"]["fits"]) == 1


def test_claim_error_falls_with_width():
    widths = (64, 128, 256, 512)
    falls = [_net("random_features", d, w, 0.1 * d / w ** 0.5) for d in (1, 2, 5) for w in widths]
    c = _claims(falls)["error_vs_width/rf"]
    assert c["verdict"] == "holds"
    assert abs(c["values"]["5"]["slope"] + 0.5) < 1e-12
    grows = falls + [_net("random_features", 10, w, 1e-3 * w ** 0.2) for w in widths]
    c = _claims(grows)["error_vs_width/rf"]
    assert c["verdict"] == "fails" and "d=10" in c["why"]
    # below the Newton solve's resolution, a rise is not a rise: every error counts as 1e-6
    floor = falls + [_net("random_features", 3, w, 1e-8 * w ** 0.1) for w in widths]
    c = _claims(floor)["error_vs_width/rf"]
    assert c["verdict"] == "inconclusive" and "d=3" in c["why"]
    one_width = [_net("random_features", 2, 64, 0.01)]
    assert _claims(one_width)["error_vs_width/rf"]["verdict"] == "inconclusive"
    # one seed: the regression's own interval decides; a scatter as large as the trend
    # (errors 2.5e-5 ... 3.8e-5 over widths 64 ... 1024, as measured at d = 2) does not
    scatter = [_net("random_features", 3, w, e) for w, e in
               zip((64, 128, 256, 512, 1024), (2.47e-5, 2.04e-5, 2.09e-5, 3.89e-5, 3.78e-5))]
    c = _claims(falls + scatter)["error_vs_width/rf"]
    assert c["verdict"] == "inconclusive" and "regression interval" in c["measured"]
    low, high = c["values"]["3"]["low"], c["values"]["3"]["high"]
    x = np.log([64, 128, 256, 512, 1024])
    y = np.log([2.47e-5, 2.04e-5, 2.09e-5, 3.89e-5, 3.78e-5])
    ref = stats.linregress(x, y)
    half = stats.t.ppf(0.975, 3) * ref.stderr
    assert (low, high) == pytest.approx((ref.slope - half, ref.slope + half))
    # one seed at two widths: a fall with no measure of its noise decides nothing
    two = [_net("deep_ritz", 2, w, e) for w, e in ((64, 1.9e-3), (256, 9.9e-4))]
    c = _claims(two)["error_vs_width/ritz"]
    assert c["verdict"] == "inconclusive" and "no measure of the noise" in c["why"]
    assert _claims([])["error_vs_width/rf"]["verdict"] == "not_measured"
    assert "error_vs_width/ritz" not in _claims(falls)         # Deep Ritz did not run


def test_claim_error_falls_with_width_interval_over_seeds():
    rng = np.random.default_rng(0)
    widths = (64, 128, 256, 512)

    def records(slope, noise):
        return [_net("deep_ritz", 2, w, 0.01 * w ** slope * math.exp(noise * rng.standard_normal()), s)
                for w in widths for s in range(4)]

    c = _claims(records(-0.5, 0.1))["error_vs_width/ritz"]
    assert c["verdict"] == "holds" and c["values"]["2"]["high"] < 0 < c["values"]["2"]["low"] + 1
    assert "[" in c["measured"]                                # an interval, not one seed
    assert _claims(records(0.5, 0.1))["error_vs_width/ritz"]["verdict"] == "fails"
    c = _claims(records(-0.05, 2.0))["error_vs_width/ritz"]    # noise far above the trend
    assert c["verdict"] == "inconclusive" and c["values"]["2"]["low"] < 0 < c["values"]["2"]["high"]


def _reaching(part, wstar: dict, widths):
    """Records whose error reaches 0.01 exactly from width wstar[d] on (None: never)."""
    return [_net(part, d, w, 0.005 if ws is not None and w >= ws else 0.05)
            for d, ws in wstar.items() for w in widths]


def test_claim_width_grows_polynomially_in_d():
    poly = {1: 64, 2: 256, 3: 576, 5: 1600}                   # 64 d^2
    c = _claims(_reaching("random_features", poly, sorted(poly.values())))["width_vs_d/rf"]
    assert c["verdict"] == "holds" and abs(c["values"]["k"] - 2) < 1e-12
    expo = {1: 64, 2: 128, 3: 256, 5: 1024}                    # 32 * 2^d
    c = _claims(_reaching("random_features", expo, [64, 128, 256, 512, 1024]))["width_vs_d/rf"]
    assert c["verdict"] == "fails" and c["values"]["rss_exp"] < 1e-20
    few = {1: 64, 2: 128, 5: None, 10: None}
    c = _claims(_reaching("random_features", few, [64, 128, 256]))["width_vs_d/rf"]
    assert c["verdict"] == "inconclusive" and "5, 10" in c["measured"] and "(1, 2)" in c["why"]
    # w* at the smallest width tried is an upper bound, not a value: three d there and one
    # above (as measured at cpu scale) resolve nothing
    coarse = {1: 64, 2: 64, 3: 64, 5: 256, 10: None}
    c = _claims(_reaching("random_features", coarse, [64, 128, 256, 512, 1024]))["width_vs_d/rf"]
    assert c["verdict"] == "inconclusive" and "resolved" in c["why"] and "an upper bound" in c["measured"]
    flat = {1: 64, 2: 64, 3: 64}                               # the smallest width everywhere
    c = _claims(_reaching("random_features", flat, [64, 128]))["width_vs_d/rf"]
    assert c["verdict"] == "inconclusive" and "smallest width" in c["why"]
    # the same w* above the smallest width at every d: no growth to tell apart, undecided
    same = {1: 128, 2: 128, 3: 128}
    c = _claims(_reaching("random_features", same, [64, 128, 256]))["width_vs_d/rf"]
    assert c["verdict"] == "inconclusive" and "1 distinct value" in c["why"]
    c = _claims(_reaching("deep_ritz", poly, sorted(poly.values())))
    assert c["width_vs_d/ritz"]["verdict"] == "holds"
    assert c["width_vs_d/rf"]["verdict"] == "not_measured"


# -- variants ----------------------------------------------------------------------------------
def test_variants_name_the_keys_each_choice_reads():
    """alpha only with logcosh, power only with relu_k, a solver's keys only when it runs."""
    unread = lambda **kw: set(unread_keys(pde, pde.Config(**kw)))
    assert "alpha" in unread(phi="quartic") and "alpha" in unread(phi="none")
    assert "alpha" not in unread(phi="logcosh")
    assert "power" in unread(activation="tanh") and "power" not in unread(activation="relu_k")
    assert unread() == {"alpha", "power", "ritz_lbfgs_points"}           # the cpu scale
    assert {"rf_widths", "rf_points", "rf_rcond"} <= unread(rf_dims=[])
    none = unread(ritz_dims=[])
    assert {"ritz_widths", "train", "ritz_lbfgs_steps", "ritz_lbfgs_points"} <= none
    assert "ritz_lbfgs_points" not in unread(ritz_lbfgs_steps=5)
    assert {"reference_grid", "pgd_steps", "pgd_eta"} <= unread(reference_d=0)
    assert "power" in unread(rf_dims=[], ritz_dims=[], activation="relu_k")   # no network


def test_an_unread_override_leaves_the_fingerprint(compose):
    from quadrun.identity import config_fingerprint

    plain, _ = compose("experiment=pde", "scale=smoke")
    alpha, _ = compose("experiment=pde", "scale=smoke", "pde.alpha=5")
    assert config_fingerprint(alpha) == config_fingerprint(plain)
    read, _ = compose("experiment=pde", "scale=smoke", "pde.phi=logcosh", "pde.alpha=5")
    other, _ = compose("experiment=pde", "scale=smoke", "pde.phi=logcosh")
    assert config_fingerprint(read) != config_fingerprint(other)


# -- the CLI (what the contract test does not cover) -----------------------------------------
def test_smoke_cli_run(cli):
    r = cli("experiment=pde", "scale=smoke", "threads=1", "pde.alpha=5")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pde.alpha" in r.stderr and "not read" in r.stderr
    (folder,) = run_folders(cli.cwd, "pde")
    s = summary(folder)
    assert s["status"] == "completed"
    assert s["record_keys"] == ["part", "d", "grid", "width", "replicate"]
    recs = s["records"]
    nets = [r for r in recs if r["part"] != "reference"]
    keys = {"part", "d", "width", "replicate", "rel_l2", "rel_h1", "energy_gap", "seconds"}
    assert nets and all(keys <= set(row) and "seed" not in row for row in nets)
    assert {(r["part"], r["d"]) for r in nets} == \
        {("random_features", 1), ("random_features", 2), ("deep_ritz", 2)}
    assert all(r["rel_l2"] < 1e-3 for r in nets if r["part"] == "random_features" and r["d"] == 1)
    [ref] = [r for r in recs if r["part"] == "reference"]
    assert ref["grid"] == 16 and ref["rel_l2"] < 1e-2 and ref["pgd_rate"] < 0.7
    assert len(ref["energy_gaps"]) == 21
    assert s["reference"]["grid"] == 16 and s["width_for_target"]["random_features"]["1"] == 16
    claims = {c["id"]: c for c in s["claims"]}
    assert list(claims) == ["pgd_geometric", "error_vs_width/rf", "error_vs_width/ritz",
                            "width_vs_d/rf", "width_vs_d/ritz"]
    assert claims["pgd_geometric"]["verdict"] == "holds"
    assert claims["width_vs_d/rf"]["verdict"] == "inconclusive"       # two d at smoke scale
    # Deep Ritz ran its L-BFGS polish as a logged phase
    rows = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
    assert any("deep_ritz/d2/w16/s0/lbfgs/energy" in row for row in rows)
    for plot in ("error_vs_width", "width_for_target", "reference_energy_gap"):
        [png] = (folder / "plots").glob(f"{plot}*.png")
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

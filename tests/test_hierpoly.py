"""hierpoly: Hermite polynomials, exact target normalisation, the layerwise stage 1, the
ReLU NTK closed form, ridge selection, n*/slope bookkeeping, and a smoke run of the CLI."""
import itertools
import json
import math

import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss

from quadrun.data.polynomials import (cumulants_from_moments, hermite, hermite_coefficients,
                                      make_target, moments_from_cumulants)
from quadrun.experiments.hierpoly import n_star, scaling
from quadrun.nn.hierarchical import (ThreeLayerNet, correlation, fit_layerwise, init_layerwise,
                                     init_mup)
from quadrun.nn.kernels import kernel_ridge, ntk_features, random_network, relu_ntk, feature_ridge


# ---- Hermite polynomials ------------------------------------------------------------------

def test_hermite_recurrence_exact_values():
    assert hermite_coefficients(0) == [1]
    assert hermite_coefficients(1) == [0, 1]
    assert hermite_coefficients(2) == [-1, 0, 1]
    assert hermite_coefficients(3) == [0, -3, 0, 1]
    assert hermite_coefficients(4) == [3, 0, -6, 0, 1]
    assert hermite_coefficients(5) == [0, 15, 0, -10, 0, 1]
    assert hermite_coefficients(6) == [-15, 0, 45, 0, -15, 0, 1]
    z = torch.tensor([-1.5, 0.0, 0.7, 2.0], dtype=torch.float64)
    for k in range(7):  # the tensor recurrence agrees with the integer coefficients
        poly = sum(c * z ** j for j, c in enumerate(hermite_coefficients(k)))
        assert torch.allclose(hermite(k, z), poly)
    assert hermite(3, torch.tensor(2.0)).item() == 2.0  # 8 - 6


def test_hermite_orthonormal_exact_quadrature():
    nodes, weights = hermegauss(20)              # exact for degree <= 39 under exp(-z^2/2)
    weights = weights / weights.sum()
    z = torch.tensor(nodes)
    H = torch.stack([hermite(k, z, normalized=True) for k in range(7)])
    gram = (H * torch.tensor(weights)) @ H.T
    assert torch.allclose(gram, torch.eye(7, dtype=torch.float64), atol=1e-10)


def test_hermite_orthonormal_monte_carlo():
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    H = torch.stack([hermite(k, z, normalized=True) for k in range(5)])
    gram = H @ H.T / len(z)
    # standard error of E[He_j He_k / sqrt(j! k!)] is at most sqrt(E[..^2] / n) ~ 0.03 here
    assert torch.allclose(gram, torch.eye(5, dtype=torch.float64), atol=0.05)
    assert abs(gram[1, 2]) < 0.01 and abs(gram[0, 0] - 1) < 1e-12


def test_moments_cumulants_roundtrip_gaussian():
    # N(mu, s^2): cumulants (mu, s^2, 0, 0...) -> moments 1, mu, mu^2 + s^2, mu^3 + 3 mu s^2, ...
    m = moments_from_cumulants([0.5, 2.0, 0.0, 0.0])
    assert m == pytest.approx([1, 0.5, 2.25, 0.125 + 3.0, 0.0625 + 6 * 0.25 * 2 + 3 * 4])
    assert cumulants_from_moments(m) == pytest.approx([0.5, 2.0, 0.0, 0.0], abs=1e-12)


# ---- exact normalisation of p and h --------------------------------------------------------

def _quadrature_expectation(fn, d, points=12):
    """E[fn(x)] for x ~ N(0, I_d) by tensor Gauss-Hermite quadrature (exact for polynomials
    of degree < 2 * points in each coordinate)."""
    nodes, weights = hermegauss(points)
    weights = weights / weights.sum()
    grid = torch.tensor(list(itertools.product(nodes, repeat=d)))
    w = torch.tensor([math.prod(c) for c in itertools.product(weights, repeat=d)])
    return float((fn(grid) * w).sum())


@pytest.mark.parametrize("inner,k,outer,q,spectrum", [
    ("quadratic", 2, "power", 3, "goe"), ("quadratic", 2, "hermite", 2, "decay"),
    ("quadratic", 2, "power", 2, "flat"), ("hermite_sum", 3, "power", 3, "goe"),
    ("hermite_sum", 2, "hermite", 3, "goe")])
def test_p_and_h_normalised_exactly(inner, k, outer, q, spectrum):
    d = 3
    t = make_target(inner, d, k, q, seed=7, outer=outer, spectrum=spectrum)
    # h^2 has degree 2kq <= 18 per coordinate: 12 nodes are exact
    assert _quadrature_expectation(t.p, d) == pytest.approx(0, abs=1e-9)
    assert _quadrature_expectation(lambda x: t.p(x) ** 2, d) == pytest.approx(1, abs=1e-9)
    assert _quadrature_expectation(t, d) == pytest.approx(0, abs=1e-8)
    assert _quadrature_expectation(lambda x: t(x) ** 2, d) == pytest.approx(1, abs=1e-8)


def test_quadratic_variance_is_two_frobenius_squared():
    t = make_target("quadratic", 10, 2, 3, seed=1)
    A = t.p.A
    assert 2 * float((A ** 2).sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(torch.diagonal(A).sum()) != 0  # the centring term is really there
    x, p, h = t.sample(200_000, seed=3)
    assert abs(float(p.mean())) < 0.02 and abs(float(p.var()) - 1) < 0.03
    assert abs(float(h.mean())) < 0.05 and abs(float(h.var()) - 1) < 0.2


def test_samples_fresh_and_reproducible():
    t = make_target("hermite_sum", 6, 3, 3, seed=0)
    a, b, c = t.sample(50, 1), t.sample(50, 1), t.sample(50, 2)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    with pytest.raises(ValueError, match="degree k = 2"):
        make_target("quadratic", 4, 3, 3, seed=0)


# ---- the layerwise network -------------------------------------------------------------------

@pytest.mark.parametrize("q,spectrum,least", [(1, "goe", 0.9999), (3, "flat", 0.99)])
def test_stage1_ridge_recovers_p_up_to_scale(q, spectrum, least):
    """With lots of data stage 1 finds the best degree-2 fit of h: p itself when h = p, and
    nearly p for cubic g (exactly p only as d grows: for finite d the degree-2 projection of
    p^3 also holds x^T A^3 x-type terms, tiny for a flat spectrum)."""
    d = 6
    t = make_target("quadratic", d, 2, q, seed=11, spectrum=spectrum)
    x, p, h = t.sample(30_000, seed=1)
    xt, pt, _ = t.sample(5_000, seed=2)
    net = ThreeLayerNet(d, d * d, 200, "square").double()
    init_layerwise(net, torch.Generator().manual_seed(0))
    fit_layerwise(net, x[:20_000], h[:20_000], x[20_000:], h[20_000:])
    with torch.no_grad():
        assert correlation(net.feature(xt), pt) > least
        mse = float(((net(xt) - t(xt)) ** 2).mean())
    assert mse < 0.1  # and the outer layer then fits g on top of it


def test_mup_init_scales():
    net = ThreeLayerNet(8, 64, 1000, "cube")
    init_mup(net, torch.Generator().manual_seed(0))
    assert float(net.V.detach().std() * math.sqrt(8)) == pytest.approx(1, rel=0.1)
    assert float(net.u.detach().std() * 64) == pytest.approx(1, rel=0.25)
    assert float(net.c.detach().std() * 1000) == pytest.approx(1, rel=0.1)
    assert float(net.w.detach()) == 0 and float(net.c0.detach()) == 0


# ---- kernels and ridge -----------------------------------------------------------------------

def test_ntk_closed_form_matches_wide_network():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    W, a = random_network(5, 100_000, gen)
    f = ntk_features(x, W, a)
    emp, exact = f @ f.T, relu_ntk(x, x)
    assert (emp - exact).abs().max() < 0.03 * exact.abs().max()
    # the features are the true gradient of the network's output
    xx = x[:1].clone()
    Wp = W[:50].clone().requires_grad_(True)
    ap = a[:50].clone().requires_grad_(True)
    from quadrun.nn.kernels import augment
    out = (ap * torch.relu(augment(xx) @ Wp.T)).sum() / math.sqrt(50)
    out.backward()
    grad = torch.cat([ap.grad, Wp.grad.reshape(-1)])
    assert torch.allclose(ntk_features(xx, W[:50], a[:50])[0], grad)


def test_ntk_known_values():
    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    # x~ = (1, 0, 0, 1)/2, |x~|^2 = 1/2, theta = 0: E[relu^2] = |x~|^2 / 2, E[1 1] = 1/2
    assert float(relu_ntk(x, x)) == pytest.approx(0.25 + 0.25)
    y = torch.tensor([[-1.0, 0.0, 0.0]], dtype=torch.float64)  # x~ . y~ = 0: theta = pi/2
    assert float(relu_ntk(x, y)) == pytest.approx(0.5 / (2 * math.pi))


def test_ridge_primal_and_dual_agree_and_select():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(5, generator=gen, dtype=torch.float64)
    y = x @ w + 0.01 * torch.randn(300, generator=gen, dtype=torch.float64)
    fit = feature_ridge(lambda xb: xb, x, y, lambdas=[1e-6], chunk=64)
    assert torch.allclose(fit.weights, torch.linalg.lstsq(x, y).solution, atol=1e-6)
    dual = kernel_ridge(x @ x.T, y, lambdas=[1e-6])
    assert torch.allclose(x.T @ dual.weights, fit.weights, atol=1e-4)
    # a near-noiseless linear target prefers the smallest strength on the grid
    assert feature_ridge(lambda xb: xb, x, y).lam <= 1e-4
    # pure noise prefers a big one
    noise = torch.randn(300, generator=gen, dtype=torch.float64)
    assert feature_ridge(lambda xb: xb, x, noise).lam >= 1


# ---- n* and the slope --------------------------------------------------------------------------

def test_n_star_interpolation():
    assert n_star([100, 400], [0.4, 0.1], 0.2) == pytest.approx(200)  # log-log halfway
    assert n_star([100, 400], [0.4, 0.3], 0.2) is None
    assert n_star([100, 400], [0.1, 0.05], 0.2) == 100
    assert n_star([100, 400, 1600], [None, 0.4, 0.1], 0.2) == pytest.approx(800)


def test_scaling_recovers_known_exponent():
    # error = (n / d^2)^-1: n* = 5 d^2 at target 0.2; seeds differ by a constant factor
    points = [{"learner": "a", "d": d, "n": n, "seed": s,
               "test_mse": (1 + 0.05 * s) * d ** 2 / n, "corr": None}
              for d in (8, 16, 32) for s in range(3) for n in [d ** 2 * 2 ** i for i in range(6)]]
    stars, slope = scaling(points, "a", 0.2, bootstrap=200)
    assert stars[8] == pytest.approx(5.25 * 64, rel=1e-9)
    assert slope["value"] == pytest.approx(2.0, abs=1e-9)
    # seeds are resampled per d, so the interval is narrow but not a point
    assert 1.85 < slope["low"] <= 2.0 <= slope["high"] < 2.15
    stars, slope = scaling(points, "a", 0.001, bootstrap=10)
    assert slope is None and stars[8] is None


def test_combine_pools_a_sweep_over_d(tmp_path):
    from quadrun.experiments.hierpoly import combine
    for job, d in enumerate((8, 16, 32)):  # one job per d, as the paper sweep runs
        points = [{"learner": "a", "d": d, "n": n, "seed": s, "test_mse": d ** 2 / n, "corr": None}
                  for s in range(2) for n in [d ** 2 * 2 ** i for i in range(6)]]
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "summary.json").write_text(json.dumps(
            {"status": "completed", "experiment": "hierpoly", "points": points,
             "target_error": 0.2, "k": 2}))
    out = combine(tmp_path)
    assert out["runs"] == 3 and out["slope"]["a"]["value"] == pytest.approx(2.0)


# ---- the CLI ---------------------------------------------------------------------------------

def test_smoke_cli(cli):
    r = cli("experiment=hierpoly", "scale=smoke", "threads=1")
    assert r.returncode == 0, r.stderr
    from conftest import run_folders
    run = run_folders(cli.cwd, "hierpoly")[-1]
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "completed"
    learners = {"layerwise", "joint", "kernel", "relu2"}
    assert {p["learner"] for p in s["points"]} == learners
    assert len(s["points"]) == 4 * 2 * 3 * 2  # learners x dims x ratios x replicates
    for p in s["points"]:
        assert set(p) == {"learner", "d", "n", "seed", "test_mse", "corr"}
        assert p["test_mse"] is None or p["test_mse"] > 0
        assert (p["corr"] is None) == (p["learner"] in ("kernel", "relu2"))
    assert set(s["slope"]) == learners
    for v in s["slope"].values():
        assert v is None or set(v) == {"value", "low", "high"}
    assert (run / "plots" / "error_vs_n_over_dk.png").exists()
    assert (run / "plots" / "nstar_vs_d.png").exists()
    assert (run / "table.md").exists()
    # every point is a stage: a rerun into the folder recomputes nothing
    stages = json.loads((run / "stages.json").read_text())["stages"]
    assert len(stages) == len(s["points"])


def test_bad_config_is_one_line(cli):
    r = cli("experiment=hierpoly", "scale=smoke", "hierpoly.k=3")
    assert r.returncode == 2 and "hierpoly.k" in r.stderr and "Traceback" not in r.stderr

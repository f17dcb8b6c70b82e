"""hierpoly: Hermite polynomials, exact target normalisation, the layerwise stage 1, the
ReLU NTK closed form, ridge selection, n*/slope bookkeeping, cells and shared data, the
claims on constructed records, pooling a sweep over d, and a smoke run of the CLI."""
import itertools
import json
import math

import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss

from quadrun.data.polynomials import (cumulants_from_moments, hermite, hermite_coefficients,
                                      make_target, moments_from_cumulants)
from quadrun.experiments import hierpoly
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


# ---- cells and shared data -----------------------------------------------------------------------

def test_cells_order_dedupe_and_caps():
    c = hierpoly.Config(dims=[4, 6], ratios=[1, 1.01, 2], replicates=2,
                        learners=["layerwise", "kernel"], kernel=hierpoly.KernelConfig(max_n=40))
    cells = hierpoly.cells(c)
    keys = [(x["learner"], x["d"], x["replicate"], x["n"]) for x in cells]
    # n = 16 (1 and 1.01 round to the same n: one cell), 32; 36, 72; kernel only n <= 40
    assert keys == [("layerwise", 4, 0, 16), ("kernel", 4, 0, 16),
                    ("layerwise", 4, 0, 32), ("kernel", 4, 0, 32),
                    ("layerwise", 4, 1, 16), ("kernel", 4, 1, 16),
                    ("layerwise", 4, 1, 32), ("kernel", 4, 1, 32),
                    ("layerwise", 6, 0, 36), ("kernel", 6, 0, 36), ("layerwise", 6, 0, 72),
                    ("layerwise", 6, 1, 36), ("kernel", 6, 1, 36), ("layerwise", 6, 1, 72)]
    assert set(cells[0]) == {"learner", "d", "replicate", "n"}
    # the default caps are the cpu scale's: the baselines stop at n = 16384
    counts = {}
    for x in hierpoly.cells(hierpoly.Config()):
        counts[x["learner"]] = counts.get(x["learner"], 0) + 1
    assert counts == {"layerwise": 3 * 3 * 7, "kernel": 3 * (7 + 7 + 5), "relu2": 3 * (7 + 7 + 5)}


def test_torch_free_names_match_the_library():
    from quadrun.data import polynomials
    from quadrun.nn.hierarchical import SIGMA1
    assert (hierpoly.INNER, hierpoly.OUTER, hierpoly.SPECTRA) == \
        (polynomials.INNER, polynomials.OUTER, polynomials.SPECTRA)
    assert sorted(hierpoly.SIGMA1) == sorted(SIGMA1)


class _Ctx:
    """What measure uses of a RunContext: runtime seed, device, shared memo."""

    def __init__(self, seed=0):
        from types import SimpleNamespace
        self.runtime = SimpleNamespace(seed=seed, device=torch.device("cpu"))
        self.device = self.runtime.device
        self.memo, self.built = {}, []

    def shared(self, key, build):
        if key not in self.memo:
            self.built.append(key[1:2] + key[2:3] + key[4:])
            self.memo[key] = build()
        return self.memo[key]


def test_measure_shares_data_between_learners_and_keeps_only_the_latest():
    c = hierpoly.Config(dims=[4], ratios=[4, 8], replicates=1, n_test=500,
                        layerwise=hierpoly.LayerwiseConfig(width2=50),
                        kernel=hierpoly.KernelConfig(exact_max_n=200, rf_features=64))
    ctx = _Ctx()
    recs = [{**cell, **hierpoly.measure(c, cell, ctx)}
            for cell in hierpoly.cells(c) if cell["learner"] in ("layerwise", "kernel")]
    # one target and one test set for (d, replicate), one training sample per n
    assert ctx.built == [("target", 4), ("test", 4), ("train", 4, 64), ("train", 4, 128)]
    assert sorted(k[1] for k in ctx.memo) == ["target", "test", "train"]   # n = 64 dropped
    seed = hierpoly.derive_seed(0, "hierpoly", "replicate", 0)
    assert {r["seed"] for r in recs} == {seed}
    for r in recs:
        assert r["status"] == "completed" and 0 < r["test_mse"] < 2
        assert (r["corr"] is None) == (r["learner"] == "kernel")
    # the same cell in another run seed draws other data
    other = hierpoly.measure(c, hierpoly.cells(c)[0], _Ctx(seed=1))
    assert other["seed"] != seed and other["test_mse"] != recs[0]["test_mse"]


# ---- claims on constructed records ------------------------------------------------------------

def _records(learner, exponent, dims=(8, 16, 32), seeds=3, steps=range(6), factors=None):
    """error = f(d, s) d^exponent / n on the grid n = d^exponent 2^i: n* = 5 f d^exponent."""
    factor = factors or (lambda d, s: 1 + 0.05 * s)
    return [{"learner": learner, "d": d, "replicate": s, "seed": 1000 + s,
             "n": int(d ** exponent * 2 ** i), "test_mse": factor(d, s) * 2.0 ** -i,
             "corr": None, "seconds": 0.0, "status": "completed"}
            for d in dims for s in range(seeds) for i in steps]


CFG = hierpoly.Config(bootstrap=200)   # k = 2, q = 3, target 0.2


def _verdicts(records, cfg=CFG):
    return {c["id"]: c for c in hierpoly.claims(records, cfg)}


def test_claim_dk_holds_and_fails():
    c = _verdicts(_records("layerwise", 2))["layerwise_dk"]
    assert c["verdict"] == "holds", c
    assert c["values"]["slope"]["value"] == pytest.approx(2.0, abs=1e-9)
    assert "slope 2 [" in c["measured"]
    c = _verdicts(_records("layerwise", 3))["layerwise_dk"]
    assert c["verdict"] == "fails" and "above 2" in c["why"], c
    assert c["values"]["slope"]["low"] > 2.8
    c = _verdicts(_records("layerwise", 1))["layerwise_dk"]
    assert c["verdict"] == "fails" and "below 2" in c["why"]


def test_claim_dk_uses_joint_when_there_is_no_layerwise():
    c = _verdicts(_records("joint", 2) + _records("kernel", 4))["layerwise_dk"]
    assert c["verdict"] == "holds" and c["values"]["learner"] == "joint"
    assert c["measured"].startswith("joint: n*")


def test_claim_dk_inconclusive():
    # one seed per d: no spread to build an interval from
    c = _verdicts(_records("layerwise", 2, seeds=1))["layerwise_dk"]
    assert c["verdict"] == "inconclusive" and "one seed" in c["why"]
    # already below the target at the first n of d = 8: n* there is only an upper bound
    recs = _records("layerwise", 2, dims=(16, 32)) + _records("layerwise", 2, dims=(8,), steps=range(3, 6))
    c = _verdicts(recs)["layerwise_dk"]
    assert c["verdict"] == "inconclusive" and "upper bound" in c["why"] and "d = 8" in c["why"]
    # seeds that disagree by a factor 400 between d: the interval holds both k = 2 and kq = 6
    wild = lambda d, s: {(16, 0): 0.05, (16, 1): 20, (32, 0): 20, (32, 1): 0.05}[(d, s)]
    c = _verdicts(_records("layerwise", 2, dims=(16, 32), seeds=2, steps=range(-6, 12),
                           factors=wild))["layerwise_dk"]
    low, high = c["values"]["slope"]["low"], c["values"]["slope"]["high"]
    assert low < 2 < 6 < high
    assert c["verdict"] == "inconclusive" and "too wide" in c["why"], c


def test_claim_dk_not_measured():
    c = _verdicts(_records("kernel", 4))["layerwise_dk"]
    assert c["verdict"] == "not_measured" and "hierpoly.learners" in c["why"]
    c = _verdicts(_records("layerwise", 2, dims=(8,)))["layerwise_dk"]
    assert c["verdict"] == "not_measured" and "at least 2 dimensions" in c["why"]
    # the grid stops before the target at d = 32 (errors 1 ... 1/4 > 0.2)
    recs = _records("layerwise", 2, dims=(8, 16)) + _records("layerwise", 2, dims=(32,), steps=range(3))
    c = _verdicts(recs)["layerwise_dk"]
    assert c["verdict"] == "not_measured" and "not reached" in c["why"] and "d = 32" in c["why"]
    assert "d=32: error 0.263 at the largest n = 4096" in c["measured"]  # mean factor 1.05, / 4


def test_claim_kernel_holds_fails_inconclusive():
    net = _records("layerwise", 2)
    c = _verdicts(net + _records("kernel", 4))["kernel_more"]
    assert c["verdict"] == "holds", c
    assert c["values"]["kernel"]["slope"]["value"] == pytest.approx(4.0, abs=1e-9)
    c = _verdicts(net + _records("kernel", 1))["kernel_more"]
    assert c["verdict"] == "fails" and "below" in c["why"], c
    c = _verdicts(net + _records("kernel", 2.05))["kernel_more"]
    assert c["verdict"] == "inconclusive" and "overlap" in c["why"], c


def test_claim_kernel_not_reached_is_evidence_but_inconclusive():
    net = _records("layerwise", 2)
    # the kernel's grid (capped) stops before the target at d = 32
    kern = _records("kernel", 4, dims=(8, 16)) + _records("kernel", 4, dims=(32,), steps=range(2))
    c = _verdicts(net + kern)["kernel_more"]
    assert c["verdict"] == "inconclusive"
    assert "does not reach the target inside its grid at d = 32" in c["why"]
    assert "kernel: n* d=8:" in c["measured"] and "d=32: error 0.525 at the largest n" in c["measured"]
    # no kernel cell at all at d = 32 (every n above kernel.max_n)
    c = _verdicts(net + _records("kernel", 4, dims=(8, 16)))["kernel_more"]
    assert c["verdict"] == "inconclusive" and "d=32: no cells" in c["measured"]


def test_claim_kernel_not_measured():
    c = _verdicts(_records("layerwise", 2))["kernel_more"]
    assert c["verdict"] == "not_measured" and "kernel" in c["why"]
    c = _verdicts(_records("layerwise", 2, dims=(8,)) + _records("kernel", 4, dims=(8,)))["kernel_more"]
    assert c["verdict"] == "not_measured" and "at least 2 dimensions" in c["why"]


def test_report_pools_a_sweep_over_d(tmp_path):
    """One job per d, as the paper sweep runs: quadrun-report pools them into one study
    (hierpoly.dims is a POOL key) and decides the slope across the jobs."""
    from quadrun import report
    for job, d in enumerate((8, 16, 32)):
        folder = tmp_path / str(job)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(
            f"- experiment=hierpoly\n- hierpoly.dims=[{d}]\n")
        (folder / "config.yaml").write_text(
            f"experiment: hierpoly\nseed: 0\nhierpoly:\n  dims: [{d}]\n  bootstrap: 200\n")
        recs = _records("layerwise", 2, dims=(d,)) + _records("kernel", 4, dims=(d,))
        (folder / "summary.json").write_text(json.dumps(
            {"status": "completed", "experiment": "hierpoly", "seed": 0, "records": recs,
             "record_keys": ["learner", "d", "replicate", "n"]}))
    out = report.build([tmp_path], quiet=True)
    assert len(out["studies"]) == 1
    verdicts = {c["id"]: c["verdict"] for c in out["claims"]}
    assert verdicts == {"layerwise_dk": "holds", "kernel_more": "holds"}
    # one job alone cannot fit a slope
    alone = report.build([tmp_path / "0"], out=tmp_path / "alone", quiet=True)
    assert {c["verdict"] for c in alone["claims"]} == {"not_measured"}


def test_summarize_and_figures():
    recs = _records("layerwise", 2) + _records("kernel", 4, dims=(8, 16))
    s = hierpoly.summarize(recs, CFG)
    assert s["k"] == 2 and s["target_error"] == 0.2
    assert s["n_star"]["layerwise"][16] == pytest.approx(5.25 * 256)
    assert s["slope"]["layerwise"]["value"] == pytest.approx(2.0)
    assert s["slope"]["kernel"]["value"] == pytest.approx(4.0)
    saved = []
    hierpoly.figures(recs, CFG, lambda fig, name: saved.append(name))
    assert saved == ["error_vs_n_over_dk", "nstar_vs_d"]


# ---- the CLI ---------------------------------------------------------------------------------

def _compose(*overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from quadrun import registry
    from quadrun.cli import config_dir
    from quadrun.schema import register
    experiments = registry.load_all()
    register(experiments)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose("config", overrides=list(overrides)), experiments
    finally:
        GlobalHydra.instance().clear()


def test_train_keys_live_in_each_training():
    from omegaconf import open_dict
    from quadrun.schema import validate
    cfg, experiments = _compose("experiment=hierpoly", "hierpoly.joint.train.lr=0.01",
                                "hierpoly.relu2.train.epochs=7")
    with open_dict(cfg):
        cfg.pop("hydra", None)
    validate(cfg, experiments)
    assert cfg.hierpoly.joint.train.lr == 0.01 and cfg.hierpoly.relu2.train.epochs == 7
    assert cfg.hierpoly.joint.train.optimizer == "adam" and cfg.hierpoly.joint.train.schedule == "cosine"
    assert cfg.hierpoly.relu2.train.lr == 3e-3 and cfg.hierpoly.relu2.max_n == 16384
    with pytest.raises(Exception, match=r"Key 'lr' is not in struct|hierpoly\.joint\.lr"):
        _compose("experiment=hierpoly", "hierpoly.joint.lr=0.01")
    # the paper scale sets the joint training through its own TrainConfig
    cfg, _ = _compose("experiment=hierpoly", "scale=paper")
    assert (cfg.hierpoly.joint.train.epochs, cfg.hierpoly.joint.train.lr) == (100, 0.01)
    assert cfg.hierpoly.k == 3 and cfg.hierpoly.q == 3 and list(cfg.hierpoly.learners) == ["joint", "kernel"]


def test_smoke_cli(cli):
    r = cli("experiment=hierpoly", "scale=smoke", "threads=1")
    assert r.returncode == 0, r.stderr
    from conftest import run_folders
    run = run_folders(cli.cwd, "hierpoly")[-1]
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "completed"
    learners = {"layerwise", "joint", "kernel", "relu2"}
    assert s["record_keys"] == ["learner", "d", "replicate", "n"]
    assert {p["learner"] for p in s["records"]} == learners
    assert len(s["records"]) == 4 * 2 * 3 * 2  # learners x dims x ratios x replicates
    for p in s["records"]:
        assert set(p) == {"learner", "d", "replicate", "n", "seed", "test_mse", "corr",
                          "seconds", "status"}
        assert p["test_mse"] is None or p["test_mse"] > 0
        assert (p["corr"] is None) == (p["learner"] in ("kernel", "relu2"))
    assert len({p["seed"] for p in s["records"]}) == 2
    assert set(s["slope"]) == learners and s["k"] == 2
    for v in s["slope"].values():
        assert v is None or set(v) == {"value", "low", "high"}
    assert [c["id"] for c in s["claims"]] == ["layerwise_dk", "kernel_more"]
    assert all(c["verdict"] in ("holds", "fails", "inconclusive", "not_measured") for c in s["claims"])
    assert list((run / "plots").glob("error_vs_n_over_dk*.png"))
    assert list((run / "plots").glob("nstar_vs_d*.png"))
    md = (run / "report" / "table.md").read_text()
    assert md.index("Claims: hierpoly") < md.index("hierpoly: records")
    assert "layerwise_dk" in md
    # every cell is a stage: a rerun into the folder recomputes nothing
    stages = json.loads((run / "stages.json").read_text())["stages"]
    assert len(stages) == len(s["records"])


def test_bad_config_is_one_line(cli):
    r = cli("experiment=hierpoly", "scale=smoke", "hierpoly.k=3")
    assert r.returncode == 2 and "hierpoly.k" in r.stderr and "Traceback" not in r.stderr

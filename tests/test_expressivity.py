"""Expressivity: the variety dimension (quadrun.nn.variety) on cases with known answers,
the experiment's cells, measures and claims, and the experiment through the real CLI."""
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from quadrun.experiments import expressivity as ex
from quadrun.nn.mlp import mlp, param_count, widths_for_budget
from quadrun.nn.variety import (ambient_dimension, jacobian, numerical_rank, output_degree,
                                variety_dimension)
from tests.conftest import run_folders, summary


# -- known answers ---------------------------------------------------------------------------

@pytest.mark.parametrize("d0,d1", [(1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (4, 2),
                                   (4, 3), (5, 2), (5, 4)])
def test_shallow_square_network_is_quadratic_forms_of_rank_d1(d0, d1):
    """f(x) = sum_j a_j (w_j . x)^2 = x^T W^T diag(a) W x: the quadratic forms of rank <= d1,
    a variety of dimension d0 d1 - d1 (d1 - 1) / 2."""
    res = variety_dimension([d0, d1, 1], "conventional", bias=False)
    assert res["dim"] == d0 * d1 - d1 * (d1 - 1) // 2
    assert res["params"] == d0 * d1 + d1


@pytest.mark.parametrize("d0,d1", [(2, 3), (2, 5), (3, 4)])
def test_wide_shallow_square_network_fills_all_quadratic_forms(d0, d1):
    res = variety_dimension([d0, d1, 1], "conventional", bias=False)
    assert res["dim"] == d0 * (d0 + 1) // 2


@pytest.mark.parametrize("d0,d1", [(3, 2), (4, 2), (4, 3)])
def test_shallow_square_network_with_biases(d0, d1):
    """With biases f = [x;1]^T M [x;1] + c, M of rank <= d1 in d0 + 1 variables: the rank
    <= d1 forms in d0 + 1 variables plus the constant c, one more direction."""
    n = d0 + 1
    res = variety_dimension([d0, d1, 1], "conventional", bias=True)
    assert res["dim"] == n * d1 - d1 * (d1 - 1) // 2 + 1


def test_linear_network_dimension():
    """A single linear layer: the affine functions, d0 + 1 of them (d0 without bias)."""
    assert variety_dimension([4, 1], "conventional", bias=True)["dim"] == 5
    assert variety_dimension([4, 1], "conventional", bias=False)["dim"] == 4
    assert variety_dimension([3, 2], "conventional", bias=True)["dim"] == 8  # two outputs


WIDTHS = [[2, 2, 1], [2, 3, 1], [3, 2, 1], [3, 3, 1], [2, 2, 2, 1], [3, 3, 3, 1], [2, 3, 2]]


@pytest.mark.parametrize("widths", WIDTHS)
@pytest.mark.parametrize("bias", [False, True])
def test_dimension_bounded_and_quadratic_at_least_conventional(widths, bias):
    conv = variety_dimension(widths, "conventional", bias)
    for kind in ("conventional", "quadratic", "compact"):
        res = variety_dimension(widths, kind, bias)
        assert 1 <= res["dim"] <= min(res["params"], res["ambient"])
        assert res["gap"] > 1e6, f"no clear rank gap for {widths} {kind} {bias}"
    # a full quadratic network contains the conventional one (w_g = 0, b_g = 1, w_b = 0)
    assert variety_dimension(widths, "quadratic", bias)["dim"] >= conv["dim"]


def test_dimension_does_not_depend_on_the_random_point():
    for widths, kind in [([3, 3, 3, 1], "quadratic"), ([3, 2, 1], "conventional")]:
        dims = {variety_dimension(widths, kind, True, seed=s)["dim"] for s in range(3)}
        assert len(dims) == 1


def test_unresolvable_rank_is_reported_as_none():
    """Degree 128 (three x^2 activations around quadratic layers): float64 cannot separate
    the rank, and the gap rule says so instead of guessing."""
    res = variety_dimension([3, 3, 3, 3, 1], "quadratic", bias=True)
    assert res["degree"] == 128 and res["dim"] is None and res["gap"] < 1e6


def test_degree_and_ambient():
    assert output_degree([2, 2, 1], "conventional") == 2
    assert output_degree([3, 3, 3, 1], "conventional") == 4
    assert output_degree([2, 2, 1], "quadratic") == 8        # 2 * 2 * 2
    assert output_degree([3, 3, 3, 1], "compact") == 32      # 2^3 layers * 2^2 activations
    assert ambient_dimension(2, 2) == 6                      # 1, x, y, x^2, xy, y^2
    assert ambient_dimension(3, 4) == math.comb(7, 3)
    assert ambient_dimension(2, 2, n_outputs=3) == 18


def test_numerical_rank_known_matrices():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    b = torch.randn(6, 15, generator=gen, dtype=torch.float64)
    low = a @ b                                   # rank 6
    low[:, 3] *= 1e8                              # columns of very different scales
    low[:, 4] *= 1e-8
    r = numerical_rank(low)
    assert r.rank == 6 and r.gap > 1e8
    full = torch.randn(30, 12, generator=gen, dtype=torch.float64)
    assert numerical_rank(full).rank == 12
    zero_col = torch.cat([full, torch.zeros(30, 2, dtype=torch.float64)], 1)
    assert numerical_rank(zero_col).rank == 12
    assert numerical_rank(torch.zeros(5, 3, dtype=torch.float64)).rank == 0


def test_jacobian_of_a_tiny_square_network_by_hand():
    """f = a (w . x)^2 without biases: df/dw = 2 a (w . x) x, df/da = (w . x)^2."""
    net = mlp([2, 1, 1], "conventional", activation="square", bias=False).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.5, -2.0]]))
        net[2].weight.copy_(torch.tensor([[3.0]]))
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, 0.7]], dtype=torch.float64)
    jac = jacobian(net, x)
    s = x @ torch.tensor([0.5, -2.0], dtype=torch.float64)
    expect = torch.cat([(2 * 3.0 * s).unsqueeze(1) * x, (s * s).unsqueeze(1)], 1)
    torch.testing.assert_close(jac, expect, rtol=1e-14, atol=1e-14)


# -- the experiment's pieces ------------------------------------------------------------------

def test_module_imports_without_torch():
    code = ("import sys, quadrun.experiments.expressivity as m; m.Config(); "
            "print(any(k == 'torch' or k.startswith('torch.') for k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_targets_have_their_stated_values():
    x = torch.tensor([[-1.0], [-0.8], [-0.6], [-0.4], [0.0], [0.6], [1.0]], dtype=torch.float64)
    torch.testing.assert_close(ex._spline(x), torch.tensor([0.0, -1, 0, 1, -1, 0, 0],
                                                           dtype=torch.float64),
                               atol=1e-12, rtol=0)
    x2 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    torch.testing.assert_close(ex._radial(x2), torch.tensor([1.0, -1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ex._oscillatory(x2), torch.tensor([0.0, 0.0, 0.0]), atol=1e-6,
                               rtol=0)
    x3 = torch.tensor([[0.5, -2.0, 3.0]])
    assert ex._product(x3).item() == -3.0
    for name, d in ex.TARGET_DIMS.items():
        xtr, ytr, xte, yte = ex.make_data(name, 10, 20, seed=0)
        assert xtr.shape == (10, d) and yte.shape == (20, 1) and xtr.abs().max() <= 1
        torch.testing.assert_close(ytr[:, 0], ex._target_fn(name)(xtr))
        again = ex.make_data(name, 10, 20, seed=0)
        assert torch.equal(again[0], xtr)
        assert not torch.equal(ex.make_data(name, 10, 20, seed=1)[0], xtr)


def test_plot_inputs_have_plot_grid_squared_points():
    assert ex.plot_inputs("spline", 5).shape == (25, 1)
    grid = ex.plot_inputs("product", 4)
    assert grid.shape == (16, 3) and torch.all(grid[:, 2] == 0.5)
    assert grid[:, :2].min() == -1 and grid[:, :2].max() == 1


def test_default_budget_matches_every_model_within_5_percent():
    cfg = ex.Config()
    for target in cfg.targets:
        for name in cfg.models:
            kind = ex.MODELS[name][0]
            widths = widths_for_budget(kind, ex.TARGET_DIMS[target], 1, cfg.depth, cfg.budget)
            assert abs(param_count(widths, kind) - cfg.budget) <= 0.05 * cfg.budget


def test_cells_cover_the_dimension_table_and_every_fit():
    c = ex.Config()
    cells = ex.cells(c)
    dims = [x for x in cells if x["part"] == "dimension"]
    fits = [x for x in cells if x["part"] == "fit"]
    assert len(dims) == len(c.widths) * 2 * len(c.biases) == 24
    assert set(dims[0]) == {"part", "widths", "kind", "bias"}
    assert len(fits) == len(c.targets) * len(c.models) * c.seeds == 4 * 4 * 5
    assert set(fits[0]) == {"part", "target", "model", "seed"}
    assert {x["seed"] for x in fits} == set(range(5))
    assert c.seeds == 5 and c.train.epochs == 120 and c.train.eval_every == c.train.epochs


def test_measure_dimension_cell_known_answer():
    """[3, 2, 1] x^2 without bias: rank-2 quadratic forms in 3 variables, 3*2 - 1 = 5."""
    ctx = SimpleNamespace(runtime=SimpleNamespace(seed=0))
    rec = ex.measure(ex.Config(), {"part": "dimension", "widths": [3, 2, 1],
                                   "kind": "conventional", "bias": False}, ctx)
    assert rec["dim"] == 5 and rec["params"] == 8 and rec["ambient"] == 10
    assert rec["degree"] == 2 and rec["points"] == 16 and rec["gap"] > 1e6
    json.dumps(rec, allow_nan=False)


def _context(tmp_path, seed=0):
    from quadrun.artifacts import RunContext
    from quadrun.devices import Runtime

    cfg = OmegaConf.create({"experiment": "expressivity", "scale": "smoke", "seed": seed,
                            "data_dir": str(tmp_path / "data"), "logger": "none"})
    return RunContext(tmp_path / f"run{seed}", cfg, Runtime(device=torch.device("cpu"), seed=seed))


def test_fit_measure_is_seeded_by_its_cell_not_the_global_generator(tmp_path):
    c = ex.Config(n_train=64, n_test=64, plot_grid=4, budget=100)
    c.train.epochs = 2
    cell = {"part": "fit", "target": "spline", "model": "quad_relu", "seed": 0}
    torch.manual_seed(1)
    a = ex.measure(c, cell, _context(tmp_path))
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = ex.measure(c, cell, _context(tmp_path / "b"))
    assert a == b                                   # the global stream does not matter
    assert torch.equal(torch.get_rng_state(), state)  # ... and is not touched
    other = ex.measure(c, {**cell, "seed": 1}, _context(tmp_path / "d"))
    assert other["test_mse"] != a["test_mse"] and "plot" not in other
    assert a["status"] == "completed" and a["params"] == 99 and len(a["plot"]) == 16
    assert a["model_widths"] == widths_for_budget("quadratic", 1, 1, 2, 100)
    assert 0 < a["test_mse"] < 10 and 0 < a["train_mse"] < 10


# -- claims on constructed records ------------------------------------------------------------

def _dim(widths, kind, bias, dim):
    return {"part": "dimension", "widths": widths, "kind": kind, "bias": bias, "dim": dim}


def _dims(quad, conv, bias=False, widths=([2, 2, 1], [3, 2, 1])):
    return [r for w, q, k in zip(widths, quad, conv)
            for r in (_dim(list(w), "quadratic", bias, q), _dim(list(w), "conventional", bias, k))]


def _verdicts(records, c):
    return {x["id"]: x["verdict"] for x in ex.claims(records, c)}


def test_dimension_claim_holds_fails_and_is_inconclusive():
    c = ex.Config(widths=[[2, 2, 1], [3, 2, 1]])
    holds = _dims([13, 21], [3, 5]) + _dims([16, 24], [6, 8], bias=True)
    v = _verdicts(holds, c)
    assert v["dimension_no_bias"] == "holds" and v["dimension_bias"] == "holds"
    [cl] = [x for x in ex.claims(holds, c) if x["id"] == "dimension_no_bias"]
    assert cl["values"]["rows"][0] == {"widths": [2, 2, 1], "quadratic": 13, "conventional": 3,
                                       "ratio": pytest.approx(13 / 3)}
    assert "[2,2,1] 13/3 = 4.33" in cl["measured"]

    fails = _dims([13, 5], [3, 5]) + _dims([16, 24], [6, 8], bias=True)
    v = _verdicts(fails, c)
    assert v["dimension_no_bias"] == "fails" and v["dimension_bias"] == "holds"
    # one unresolved row: inconclusive, not holds
    assert _verdicts(_dims([13, None], [3, 5]), c)["dimension_no_bias"] == "inconclusive"
    # a failing row decides even when another is unresolved
    assert _verdicts(_dims([2, None], [3, 5]), c)["dimension_no_bias"] == "fails"
    # a listed architecture without records
    assert _verdicts(_dims([13], [3]), c)["dimension_no_bias"] == "inconclusive"
    # pooled runs that disagree on a row (different random points)
    pooled = _dims([13, 21], [3, 5]) + _dims([13, 45], [3, 5])
    assert _verdicts(pooled, c)["dimension_no_bias"] == "inconclusive"
    assert _verdicts(_dims([13, 21], [3, 5]) * 2, c)["dimension_no_bias"] == "holds"


def test_dimension_claim_not_measured_without_that_bias_setting():
    c = ex.Config(widths=[[2, 2, 1], [3, 2, 1]], biases=[False])
    v = _verdicts(_dims([13, 21], [3, 5]), c)
    assert v["dimension_no_bias"] == "holds" and v["dimension_bias"] == "not_measured"
    assert _verdicts([], ex.Config())["dimension_no_bias"] == "not_measured"


def _fits(target, model, mses, status="completed"):
    return [{"part": "fit", "target": target, "model": model, "seed": s, "status": status,
             "test_mse": m} for s, m in enumerate(mses)]


def _fit_records(quad, compact, relu, square, target="spline"):
    return (_fits(target, "quad_relu", quad) + _fits(target, "compact_relu", compact)
            + _fits(target, "relu_mlp", relu) + _fits(target, "square_mlp", square))


LOW = [1.0e-4, 1.2e-4, 0.9e-4, 1.1e-4, 1.05e-4]
HIGH = [1.0e-2, 1.3e-2, 0.8e-2, 1.1e-2, 0.95e-2]
MID = [1.0e-3, 1.2e-3, 0.9e-3, 1.1e-3, 1.0e-3]


def test_fit_claim_holds_fails_and_is_inconclusive():
    c = ex.Config()
    records = _fit_records(LOW, HIGH, MID, HIGH) + _fit_records(MID, LOW, HIGH, HIGH, "radial")
    v = _verdicts(records, c)
    assert v["fit_spline_quad_relu"] == "holds"        # 1e-4 against the best, relu's 1e-3
    assert v["fit_spline_compact_relu"] == "fails"     # 1e-2 against 1e-3
    assert v["fit_radial_quad_relu"] == "holds"        # 1e-3 against 1e-2
    assert v["fit_radial_compact_relu"] == "holds"
    [cl] = [x for x in ex.claims(records, c) if x["id"] == "fit_spline_quad_relu"]
    assert cl["values"]["best_conventional"] == "relu_mlp"
    assert cl["values"]["log10_ratio"] == pytest.approx(
        sum(math.log10(m) for m in LOW) / 5 - sum(math.log10(m) for m in MID) / 5)
    assert cl["values"]["log10_ratio_high"] < 0
    # overlapping MSEs: the interval contains equality
    noisy = [1e-4, 1e-2, 1e-3, 1e-4, 1e-2]
    assert _verdicts(_fit_records(noisy, noisy, MID, HIGH), c)["fit_spline_quad_relu"] \
        == "inconclusive"
    # one seed only: no interval
    assert _verdicts(_fit_records(LOW[:1], LOW[:1], MID[:1], HIGH[:1]), c)[
        "fit_spline_quad_relu"] == "inconclusive"


def test_fit_claim_with_diverged_fits():
    c = ex.Config()
    base = _fits("spline", "relu_mlp", MID) + _fits("spline", "square_mlp", HIGH)
    diverged = _fits("spline", "quad_relu", [None] * 5, status="diverged")
    assert _verdicts(base + diverged, c)["fit_spline_quad_relu"] == "fails"
    partly = _fits("spline", "quad_relu", LOW[:3]) + \
        [{**r, "seed": 3 + i} for i, r in enumerate(diverged[:2])]
    assert _verdicts(base + partly, c)["fit_spline_quad_relu"] == "inconclusive"
    # a conventional model with a diverged seed is not the best one
    relu_bad = _fits("spline", "relu_mlp", MID[:4]) + \
        _fits("spline", "relu_mlp", [None], status="diverged")
    records = relu_bad + _fits("spline", "square_mlp", HIGH) + _fits("spline", "quad_relu", MID)
    [cl] = [x for x in ex.claims(records, c) if x["id"] == "fit_spline_quad_relu"]
    assert cl["values"]["best_conventional"] == "square_mlp" and cl["verdict"] == "holds"


def test_fit_claim_not_measured_when_a_model_or_target_is_missing():
    records = _fit_records(LOW, LOW, MID, HIGH)
    v = _verdicts(records, ex.Config(models=["relu_mlp", "square_mlp", "quad_relu"]))
    assert v["fit_spline_quad_relu"] == "holds" and v["fit_spline_compact_relu"] == "not_measured"
    v = _verdicts(records, ex.Config(targets=["spline", "product"]))
    assert v["fit_spline_quad_relu"] == "holds" and v["fit_radial_quad_relu"] == "not_measured"
    v = _verdicts(records, ex.Config(models=["quad_relu", "compact_relu"]))
    assert v["fit_spline_quad_relu"] == "not_measured"
    # in the config but without records (e.g. a run that measured no fit)
    assert _verdicts([], ex.Config())["fit_radial_quad_relu"] == "not_measured"


# -- through the CLI --------------------------------------------------------------------------

def test_smoke_run(cli):
    r = cli("experiment=expressivity", "scale=smoke", "threads=1")
    assert r.returncode == 0, r.stderr
    (folder,) = run_folders(cli.cwd, "expressivity")
    s = summary(folder)
    assert s["status"] == "completed"
    assert s["record_keys"] == ["part", "widths", "kind", "bias", "target", "model", "seed"]
    dims = [x for x in s["records"] if x["part"] == "dimension"]
    fits = [x for x in s["records"] if x["part"] == "fit"]
    assert len(dims) == 3 * 2 * 2                       # configs/sizes/expressivity/smoke.yaml
    for row in dims:
        assert row["kind"] in ("conventional", "quadratic")
        assert row["dim"] <= min(row["params"], row["ambient"])
        d0, d1 = row["widths"][0], row["widths"][1]
        if len(row["widths"]) == 3 and row["kind"] == "conventional" and not row["bias"] \
                and d1 <= d0:
            assert row["dim"] == d0 * d1 - d1 * (d1 - 1) // 2
    budget, seeds = 100, 2                              # smoke.yaml
    assert len(fits) == len(ex.TARGET_DIMS) * 4 * seeds
    for row in fits:
        assert abs(row["params"] - budget) <= 0.05 * budget
        assert row["status"] == "completed" and math.isfinite(row["test_mse"])
        assert ("plot" in row) == (row["seed"] == 0)
        if row["seed"] == 0:
            assert len(row["plot"]) == 16 * 16
    ids = [x["id"] for x in s["claims"]]
    assert ids == ["dimension_no_bias", "dimension_bias", "fit_spline_quad_relu",
                   "fit_spline_compact_relu", "fit_radial_quad_relu", "fit_radial_compact_relu"]
    assert s["claims"][0]["verdict"] == "holds" and s["claims"][1]["verdict"] == "holds"
    md = (folder / "report" / "table.md").read_text()
    assert md.index("Claims: expressivity") < md.index("expressivity: dimension") \
        < md.index("expressivity: fit")
    assert "| target | model |" in md and "plot" not in md.split("expressivity: fit")[1]
    for name in ["fit_mse"] + [f"fit_{t}" for t in ex.TARGET_DIMS]:
        [png] = (folder / "plots").glob(f"{name}*.png")
        assert png.stat().st_size > 0

    # a second run into the same folder takes every cell from stages.json: no training
    stages = json.loads((folder / "stages.json").read_text())["stages"]
    assert len([k for k in stages if k.startswith("part=fit/")]) == len(fits)
    lines = len((folder / "metrics.jsonl").read_text().splitlines())
    r = cli("experiment=expressivity", "scale=smoke", "threads=1", f"hydra.run.dir={folder}")
    assert r.returncode == 0, r.stderr
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == lines
    again = summary(folder)
    assert again["records"] == s["records"] and again["claims"] == s["claims"]


def test_train_settings_live_in_the_experiment_section(cli):
    r = cli("experiment=expressivity", "scale=smoke", "expressivity.train.epochs=2", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    assert "epochs: 2" in r.stdout and "\ntrain:" not in r.stdout
    r = cli("experiment=expressivity", "scale=smoke", "train.epochs=2")
    assert r.returncode == 2 and "unknown key" in r.stderr and "Traceback" not in r.stderr


def test_bad_widths_and_budget_are_one_line_errors(cli):
    r = cli("experiment=expressivity", "scale=smoke", "expressivity.widths=[[3]]")
    assert r.returncode == 2 and "expressivity.widths[0]" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("experiment=expressivity", "scale=smoke", "expressivity.budget=60")
    assert r.returncode == 2 and "expressivity.budget" in r.stderr and "5%" in r.stderr


@pytest.mark.parametrize("bias", [False, True])
def test_each_dimension_claim_holds_and_fails(bias):
    c = ex.Config(widths=[[2, 2, 1], [3, 2, 1]])
    cid = "dimension_bias" if bias else "dimension_no_bias"
    assert _verdicts(_dims([16, 24], [6, 8], bias=bias), c)[cid] == "holds"
    assert _verdicts(_dims([16, 8], [6, 8], bias=bias), c)[cid] == "fails"
    assert _verdicts(_dims([16, None], [6, 8], bias=bias), c)[cid] == "inconclusive"


@pytest.mark.parametrize("target", ex.CLAIMED_TARGETS)
@pytest.mark.parametrize("quad", ex.QUADRATIC)
def test_each_fit_claim_holds_and_fails(target, quad):
    c = ex.Config()
    cid = f"fit_{target}_{quad}"
    conv = _fits(target, "relu_mlp", MID) + _fits(target, "square_mlp", HIGH)
    assert _verdicts(conv + _fits(target, quad, LOW), c)[cid] == "holds"
    assert _verdicts(conv + _fits(target, quad, HIGH), c)[cid] == "fails"
    assert _verdicts(conv + _fits(target, quad, [1e-4, 1e-2, 1e-3, 1e-4, 1e-2]), c)[cid] \
        == "inconclusive"

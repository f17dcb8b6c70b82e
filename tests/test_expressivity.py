"""Expressivity: the variety dimension (quadrun.nn.variety) on cases with known answers,
and the experiment through the real CLI."""
import json
import math

import pytest
import torch

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
    for name, (d, _) in ex.TARGETS.items():
        xtr, ytr, xte, yte = ex.make_data(name, 10, 20, seed=0)
        assert xtr.shape == (10, d) and yte.shape == (20, 1) and xtr.abs().max() <= 1


def test_default_budget_matches_every_model_within_5_percent():
    cfg = ex.Config()
    for target in cfg.targets:
        for name in cfg.models:
            kind = ex.MODELS[name][0]
            widths = widths_for_budget(kind, ex.TARGETS[target][0], 1, cfg.depth, cfg.budget)
            assert abs(param_count(widths, kind) - cfg.budget) <= 0.05 * cfg.budget


# -- through the CLI --------------------------------------------------------------------------

def test_smoke_run(cli):
    r = cli("experiment=expressivity", "scale=smoke", "threads=1")
    assert r.returncode == 0, r.stderr
    (folder,) = run_folders(cli.cwd, "expressivity")
    s = summary(folder)
    assert s["status"] == "completed"
    assert s["dimension"] and s["fit"]
    for row in s["dimension"]:
        assert set(row) == {"widths", "kind", "bias", "params", "dim", "ambient"}
        assert row["kind"] in ("conventional", "quadratic")
        assert row["dim"] <= min(row["params"], row["ambient"])
        d0, d1 = row["widths"][0], row["widths"][1]
        if len(row["widths"]) == 3 and row["kind"] == "conventional" and not row["bias"] \
                and d1 <= d0:
            assert row["dim"] == d0 * d1 - d1 * (d1 - 1) // 2
    budget = 100  # configs/sizes/expressivity/smoke.yaml
    seen = set()
    for row in s["fit"]:
        assert set(row) == {"target", "model", "params", "seeds", "test_mse_mean", "test_mse_std"}
        assert abs(row["params"] - budget) <= 0.05 * budget
        assert row["seeds"] == 2 and math.isfinite(row["test_mse_mean"])
        seen.add((row["target"], row["model"]))
    assert len(seen) == len(ex.TARGETS) * 4
    tables = (folder / "tables.md").read_text()
    assert "| widths | kind |" in tables and "| target | model |" in tables
    for target in ex.TARGETS:
        assert (folder / "plots" / f"fit_{target}.png").stat().st_size > 0

    # a second run into the same folder takes every part from stages.json: no training
    stages = json.loads((folder / "stages.json").read_text())["stages"]
    assert len([k for k in stages if k.startswith("fit/")]) == len(seen) * 2
    lines = len((folder / "metrics.jsonl").read_text().splitlines())
    r = cli("experiment=expressivity", "scale=smoke", "threads=1", f"hydra.run.dir={folder}")
    assert r.returncode == 0, r.stderr
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == lines
    again = summary(folder)
    assert again["fit"] == s["fit"] and again["dimension"] == s["dimension"]


def test_bad_widths_and_budget_are_one_line_errors(cli):
    r = cli("experiment=expressivity", "scale=smoke", "expressivity.widths=[[3]]")
    assert r.returncode == 2 and "expressivity.widths[0]" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("experiment=expressivity", "scale=smoke", "expressivity.budget=60")
    assert r.returncode == 2 and "expressivity.budget" in r.stderr and "5%" in r.stderr

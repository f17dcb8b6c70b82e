"""Quadratic layers (quadrun.nn.quadratic) and the MLP builder (quadrun.nn.mlp)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quadrun.nn.mlp import KINDS, MLP, Square, count_params, mlp, param_count, widths_for_budget
from quadrun.nn.quadratic import (QuadraticConv2d, QuadraticLinear, param_groups, role_norms,
                                  roles)


def _randomise_bias_r(layer):
    """ReLinear sets b_r = 0; give it values so the test also checks that b_r passes."""
    if layer.bias_r is not None:
        with torch.no_grad():
            layer.bias_r.normal_()


def _same_as_conventional(out, ref, form):
    """Compact layers compute r with the very GEMM of nn.Linear: bitwise equal. The full
    form computes r and g in one GEMM with 2*out columns, which BLAS may sum in another
    order than the out-column GEMM of nn.Linear (measured: <= 2 ulp), so there the
    check is to rounding: 4 ulp of float64, a few of float32."""
    if form == "compact":
        assert torch.equal(out, ref)
    else:
        eps = torch.finfo(ref.dtype).eps
        torch.testing.assert_close(out, ref, rtol=8 * eps, atol=8 * eps * float(ref.detach().abs().max()))


@pytest.mark.parametrize("form", ["full", "compact"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relinear_dense_equals_conventional(form, bias, dtype):
    torch.manual_seed(0)
    q = QuadraticLinear(7, 5, bias=bias, form=form, init="relinear").to(dtype)
    _randomise_bias_r(q)
    lin = nn.Linear(7, 5, bias=bias).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(q.weight_r)
        if bias:
            lin.bias.copy_(q.bias_r)
    for shape in [(32, 7), (4, 6, 7), (1, 7), (300, 7)]:  # leading dimensions are kept
        x = torch.randn(shape, dtype=dtype)
        _same_as_conventional(q(x), lin(x), form)
    # the gate is exactly one and the b part exactly zero: r * 1 + 0 adds no rounding
    x = torch.randn(16, 7, dtype=dtype)
    w, b = q._rg_params()
    r = F.linear(x, w, b)[:, :5] if form == "full" else F.linear(x, w, b)
    assert torch.equal(q(x), r)


@pytest.mark.parametrize("form", ["full", "compact"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
def test_relinear_conv_equals_conventional_exactly(form, bias, stride, padding):
    torch.manual_seed(1)
    q = QuadraticConv2d(3, 4, 3, stride=stride, padding=padding, bias=bias, form=form,
                        init="relinear")
    _randomise_bias_r(q)
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(q.weight_r)
        if bias:
            conv.bias.copy_(q.bias_r)
    x = torch.randn(2, 3, 9, 9)
    assert torch.equal(q(x), conv(x))


def test_relinear_init_values():
    q = QuadraticLinear(6, 3, init="relinear")
    assert torch.equal(q.weight_g, torch.zeros(3, 6)) and torch.equal(q.bias_g, torch.ones(3))
    assert torch.equal(q.weight_b, torch.zeros(3, 6)) and torch.equal(q.bias_b, torch.zeros(3))
    assert q.weight_r.abs().sum() > 0
    r = QuadraticLinear(6, 3, init="random")
    for p in (r.weight_g, r.weight_b, r.bias_b):
        assert p.abs().sum() > 0


def test_fused_dense_equals_three_separate_computations():
    torch.manual_seed(2)
    q = QuadraticLinear(6, 4, form="full", init="random").double()
    x = torch.randn(20, 6, dtype=torch.float64)
    r = F.linear(x, q.weight_r, q.bias_r)
    g = F.linear(x, q.weight_g, q.bias_g)
    b = F.linear(x * x, q.weight_b, q.bias_b)
    torch.testing.assert_close(q(x), r * g + b, rtol=1e-13, atol=1e-13)
    c = QuadraticLinear(6, 4, form="compact", init="random").double()
    torch.testing.assert_close(c(x), F.linear(x, c.weight_r, c.bias_r)
                               + F.linear(x * x, c.weight_b, c.bias_b), rtol=1e-13, atol=1e-13)


def test_fused_dense_without_bias_uses_no_r_bias():
    torch.manual_seed(3)
    q = QuadraticLinear(5, 2, bias=False, form="full", init="random").double()
    assert q.bias_r is None and q.bias_b is None and q.bias_g is not None
    x = torch.randn(8, 5, dtype=torch.float64)
    expect = (x @ q.weight_r.T) * (x @ q.weight_g.T + q.bias_g) + (x * x) @ q.weight_b.T
    torch.testing.assert_close(q(x), expect, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("form", ["full", "compact"])
def test_fused_conv_equals_three_separate_computations(form):
    torch.manual_seed(4)
    q = QuadraticConv2d(2, 3, 3, stride=1, padding=1, form=form, init="random").double()
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64)
    r = F.conv2d(x, q.weight_r, q.bias_r, 1, 1)
    b = F.conv2d(x * x, q.weight_b, q.bias_b, 1, 1)
    expect = r * F.conv2d(x, q.weight_g, q.bias_g, 1, 1) + b if form == "full" else r + b
    torch.testing.assert_close(q(x), expect, rtol=1e-13, atol=1e-13)


def test_roles_by_module_not_by_name():
    # names that would fool name-substring grouping ('r.', 'g.', 'b.')
    model = nn.Sequential()
    model.add_module("g", nn.Linear(3, 4))
    model.add_module("b", QuadraticLinear(4, 2, form="full"))
    model.add_module("r", QuadraticConv2d(1, 1, 1, form="compact"))
    found = {id(p): role for p, role in roles(model)}
    assert len(found) == len(list(model.parameters()))
    assert found[id(model.g.weight)] == "linear" and found[id(model.g.bias)] == "linear"
    assert found[id(model.b.weight_r)] == "linear" and found[id(model.b.bias_r)] == "linear"
    assert found[id(model.b.weight_g)] == "quad_g" and found[id(model.b.bias_g)] == "quad_g"
    assert found[id(model.b.weight_b)] == "quad_b" and found[id(model.b.bias_b)] == "quad_b"
    assert found[id(model.r.weight_b)] == "quad_b"


def test_param_groups_and_role_norms():
    model = nn.Sequential(QuadraticLinear(4, 3, form="full"), nn.ReLU(), nn.Linear(3, 1))
    groups = param_groups(model, lr=0.1, weight_decay=1e-4, role_lr={"quad_g": 1e-5},
                          role_weight_decay={"quad_b": 0.0})
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"linear", "quad_g", "quad_b"}
    assert by_name["linear"]["lr"] == 0.1 and by_name["quad_g"]["lr"] == 1e-5
    assert by_name["quad_b"]["lr"] == 0.1 and by_name["quad_b"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    torch.optim.SGD(groups, lr=0.1)  # accepted by an optimiser as is
    norms = role_norms(model)  # relinear start: b_g = 1 (3 of them), everything of b zero
    assert norms["quad_g"] == pytest.approx(3 ** 0.5) and norms["quad_b"] == 0.0
    conventional = param_groups(nn.Linear(2, 2), lr=0.1, weight_decay=0.0)
    assert [g["name"] for g in conventional] == ["linear"]


def test_bad_form_and_init_are_refused():
    with pytest.raises(ValueError, match="form"):
        QuadraticLinear(2, 2, form="diagonal")
    with pytest.raises(ValueError, match="init"):
        QuadraticConv2d(2, 2, 3, init="zeros")


# -- quadrun.nn.mlp --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_param_count_matches_built_model(kind, bias):
    for widths in ([2, 5, 1], [3, 4, 4, 1], [1, 7, 3, 2], [4, 1]):
        assert param_count(widths, kind, bias) == count_params(mlp(widths, kind, bias=bias))


def test_mlp_structure():
    m = mlp([2, 4, 3, 1], kind="conventional", activation="square", bias=False)
    assert isinstance(m, MLP) and len(m) == 5
    assert [type(l) for l in m] == [nn.Linear, Square, nn.Linear, Square, nn.Linear]
    assert all(l.bias is None for l in m if isinstance(l, nn.Linear))
    x = torch.randn(3, 2)
    h = m[0](x)
    torch.testing.assert_close(m[1](h), h * h)
    q = mlp([2, 4, 1], kind="compact", activation="relu")
    assert isinstance(q[0], QuadraticLinear) and q[0].form == "compact"
    assert q(x).shape == (3, 1)
    with pytest.raises(ValueError, match="activation"):
        mlp([2, 2, 1], activation="swish")
    with pytest.raises(ValueError, match="kind"):
        mlp([2, 2, 1], kind="cubic")


def test_relinear_quadratic_mlp_equals_conventional_mlp():
    """A whole quadratic MLP at its ReLinear start computes the conventional MLP."""
    torch.manual_seed(5)
    q = mlp([3, 8, 8, 1], kind="quadratic", activation="relu", init="relinear")
    c = mlp([3, 8, 8, 1], kind="conventional", activation="relu")
    with torch.no_grad():
        for ql, cl in zip(list(q)[::2], list(c)[::2]):
            ql.bias_r.normal_()
            cl.weight.copy_(ql.weight_r)
            cl.bias.copy_(ql.bias_r)
    x = torch.randn(50, 3, dtype=torch.float64)
    q, c = q.double(), c.double()
    torch.testing.assert_close(q(x), c(x), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d_in,depth,budget", [(1, 2, 300), (2, 2, 300), (3, 2, 300),
                                               (2, 1, 200), (2, 3, 1000), (3, 2, 100)])
def test_widths_for_budget_within_tolerance(kind, d_in, depth, budget):
    widths = widths_for_budget(kind, d_in, 1, depth, budget)
    assert widths[0] == d_in and widths[-1] == 1 and len(widths) == depth + 2
    assert abs(param_count(widths, kind) - budget) <= 0.05 * budget
    hidden = widths[1:-1]
    assert all(w == hidden[0] for w in hidden[:-1]) and hidden[-1] <= hidden[0]


def test_widths_for_budget_refuses_an_unreachable_budget():
    with pytest.raises(ValueError, match="within 5%"):
        widths_for_budget("quadratic", 3, 1, 2, 60)

"""DCDM: identity network == CG, the scale-invariant loss, the networks, the CLI run."""
import json

import numpy as np
import pytest
import torch

from quadrun.nn.dcdm_net import (AdditiveDCDMNet, DCDMNet, MultilevelDCDMNet, build,
                                 scale_invariant_loss)
from quadrun.solvers import krylov
from quadrun.solvers.poisson import scene


@pytest.mark.parametrize("where", [("sphere", 2, 24), ("cavities", 2, 20), ("box_obstacle", 3, 10)])
def test_identity_network_reproduces_cg(where):
    name, dim, n = where
    system, b = scene(name, n, dim, seed=2)
    cg = krylov.solve("cg", system, b, tol=1e-6)
    ident = krylov.solve("dcdm", system, b, tol=1e-6, model=None)   # M = identity
    assert cg["iterations"] == ident["iterations"] > 10
    a, c = np.array(cg["residuals"]), np.array(ident["residuals"])
    assert np.max(np.abs(a - c) / a) < 1e-8
    assert ident["converged"]


def test_dcdm_is_not_cg_with_a_different_direction_map():
    """The test above could not fail if M were ignored: a Jacobi-like map changes the path."""
    system, b = scene("sphere", 24, 2)
    A = system.matrix()
    bt = torch.from_numpy(b)
    d = torch.from_numpy(system.scipy.diagonal())
    res_cg, res_m = [], []
    krylov.dcdm(A, bt, residuals=res_cg)
    krylov.dcdm(A, bt, M=lambda r: r / d ** 2, residuals=res_m)
    assert res_cg[1] != pytest.approx(res_m[1], rel=1e-6)


def test_loss_is_invariant_to_scaling_the_network_output():
    system, _ = scene("sphere", 12, 2)
    A = system.matrix("cpu", torch.float64)
    g = torch.Generator().manual_seed(0)
    b = torch.randn(5, system.size, generator=g, dtype=torch.float64)
    q = torch.randn(5, system.size, generator=g, dtype=torch.float64)
    c = torch.tensor([3.0, -0.5, 1e-3, 7e4, -2.0], dtype=torch.float64)[:, None]
    assert scale_invariant_loss(q * c, b, A).item() == pytest.approx(
        scale_invariant_loss(q, b, A).item(), rel=1e-12)
    # and it is the optimal-step residual: zero when q solves A q = b
    x = torch.from_numpy(np.linalg.lstsq(system.scipy.toarray(), b[0].numpy(), rcond=None)[0])
    bc = torch.from_numpy(system.scipy @ x.numpy())[None]
    assert scale_invariant_loss(x[None], bc, A).item() < 1e-20


def test_loss_backpropagates_through_the_sparse_matrix():
    system, _ = scene("box", 8, 2)
    A = system.matrix("cpu", torch.float32)
    net = build("paper", 2, width=4, blocks=1)
    b = torch.randn(3, system.size)
    q = system.from_grid(net(system.to_grid(b)[:, None])[:, 0])
    scale_invariant_loss(q, b, A).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_paper_network_shape_and_size():
    net = DCDMNet(dim=3, width=16, blocks=2)
    assert 90_000 < sum(p.numel() for p in net.parameters()) < 105_000   # NOTES: ~97k at N=64
    assert net(torch.randn(2, 1, 8, 8, 8)).shape == (2, 1, 8, 8, 8)
    assert DCDMNet(dim=2)(torch.randn(1, 1, 10, 10)).shape == (1, 1, 10, 10)


def test_multilevel_gains_a_level_per_doubling_with_shared_weights():
    net = MultilevelDCDMNet(dim=2, width=8, blocks=1, coarsest=8)
    assert [net.levels(n) for n in (8, 16, 32, 64, 128)] == [0, 1, 2, 3, 4]
    count = sum(p.numel() for p in net.parameters())
    for n in (16, 64):
        assert net(torch.randn(1, 1, n, n)).shape == (1, 1, n, n)
    assert sum(p.numel() for p in net.parameters()) == count   # same weights at every n
    capped = MultilevelDCDMNet(dim=2, width=8, blocks=1, coarsest=8, max_levels=2)
    assert [capped.levels(n) for n in (8, 16, 32, 64, 128)] == [0, 1, 2, 2, 2]


@pytest.mark.parametrize("dim", [2, 3])
def test_additive_network_is_symmetric_positive_semidefinite(dim):
    torch.manual_seed(0)
    net = AdditiveDCDMNet(dim=dim, width=4, blocks=2, coarsest=2).double()
    with torch.no_grad():
        net.log_gain.fill_(1.3)   # any gain: the symmetry must not rely on the initial one
    n = 16 if dim == 2 else 8
    assert net.levels(n) == (3 if dim == 2 else 2) and net.levels(2 * n) == net.levels(n) + 1
    shape = (3, 1) + (n,) * dim
    u, v = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        Lu, Lv = net.linear(u), net.linear(v)
        # interpolation and restriction are adjoint (up to the averaging factor 2^d)
        c = torch.randn((1, 1) + (n // 2,) * dim, dtype=torch.float64)
        assert (net._prolong(c) * u[:1]).sum().item() == pytest.approx(
            2 ** dim * (c * net._restrict(u[:1])).sum().item(), rel=1e-10)
    dims = tuple(range(1, u.dim()))
    assert torch.allclose((u * Lv).sum(dims), (Lu * v).sum(dims), rtol=1e-10)
    assert ((v * Lv).sum(dims) > 0).all()
    assert not torch.allclose(Lv, v)                 # not the identity (which is SPD too)
    with torch.no_grad():            # interpolation reproduces constants away from the edge
        fine = net._prolong(torch.ones((1, 1) + (n // 2,) * dim, dtype=torch.float64))
    inner = fine[(0, 0) + (slice(1, -1),) * dim]
    assert torch.allclose(inner, torch.ones_like(inner))


def test_dcdm_with_the_additive_network_is_its_pcg():
    """The additive net is a fixed SPD map, so DCDM with it takes PCG's steps (even
    untrained) on an obstacle scene: no stall is possible."""
    torch.manual_seed(0)
    system, b = scene("two_obstacles", 32, 2)
    net = build("additive", 2, width=4, blocks=1, coarsest=4).double()
    A = system.matrix()
    M = krylov.network_setup(system, A, model=net)["M"]
    res_pcg, res_dcdm = [], []
    krylov.cg(A, torch.from_numpy(b), M=M, tol=1e-6, residuals=res_pcg)
    x, info = krylov.dcdm(A, torch.from_numpy(b), M=M, tol=1e-6, maxiter=500,
                          residuals=res_dcdm)
    assert info == 0 and len(res_pcg) == len(res_dcdm)
    assert np.allclose(res_pcg, res_dcdm, rtol=1e-5)


@pytest.mark.parametrize("arch", ["paper", "multilevel", "additive"])
def test_network_direction_ignores_the_scale_of_the_residual(arch):
    torch.manual_seed(0)
    net = build(arch, 2, width=4, blocks=1).double()
    r = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    assert torch.allclose(net(r), net(r * 123.0), rtol=1e-10, atol=1e-12)


def test_dcdm_with_a_fixed_spd_map_is_pcg():
    """With M a fixed SPD preconditioner, A-orthogonalising M r against the last two
    directions is PCG's recurrence: the same iteration count as IC(0)-PCG."""
    system, b = scene("two_obstacles", 20, 2)
    A = system.matrix()
    ic = krylov.IC0(system, "cpu", torch.float64)
    res_pcg, res_dcdm = [], []
    krylov.cg(A, torch.from_numpy(b), M=ic, tol=1e-6, residuals=res_pcg)
    krylov.dcdm(A, torch.from_numpy(b), M=ic, tol=1e-6, residuals=res_dcdm)
    assert len(res_pcg) == len(res_dcdm)
    assert np.allclose(res_pcg, res_dcdm, rtol=1e-6)


def test_dcdm_with_a_network_never_increases_the_energy_error():
    """Each step is optimal along its direction: ||x - x*||_A cannot grow, whatever f is."""
    torch.manual_seed(0)
    system, b = scene("sphere", 16, 2)
    net = build("multilevel", 2, width=4, blocks=1, coarsest=4)
    xs = np.linalg.lstsq(system.scipy.toarray(), b, rcond=None)[0]
    errors = []

    def energy(x):
        e = x.numpy() - xs
        errors.append(float(e @ (system.scipy @ e)))

    A = system.matrix()
    M = krylov.network_setup(system, A, model=net)["M"]
    krylov.dcdm(A, torch.from_numpy(b), M=M, maxiter=15, callback=energy)
    assert len(errors) == 15
    assert all(b <= a * (1 + 1e-9) for a, b in zip(errors, errors[1:]))
    assert errors[-1] < errors[0]


RECORD_KEYS = {"solver", "scene", "dim", "n", "iterations", "converged", "rel_residual",
               "setup_s", "solve_s"}


def test_smoke_cli_run(cli):
    r = cli("experiment=dcdm", "scale=smoke", "threads=1", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    run = next((cli.cwd / "outputs" / "dcdm").glob("*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    solves = summary["solves"]
    assert all(set(s) == RECORD_KEYS for s in solves)
    assert {s["solver"] for s in solves} == set(krylov.SOLVERS)
    assert {(s["dim"], s["n"]) for s in solves} == {(2, 16), (2, 32), (3, 8), (3, 16)}
    for s in solves:
        if s["solver"] != "dcdm":   # the smoke network is barely trained
            assert s["converged"] and s["rel_residual"] <= 1e-4 * 1.01, s
    assert set(summary["targets"]) == {"2d", "3d"}
    assert (run / "plots" / "residuals_2d.png").exists()
    assert (run / "checkpoints" / "model_2d.pt").exists()
    assert "| dcdm |" in (run / "table.md").read_text()
    assert list((cli.cwd / "data" / "dcdm").glob("ritz_*.pt"))   # the cached basis


def test_cli_rejects_training_on_the_target_scene(cli):
    r = cli("experiment=dcdm", "scale=smoke", "dcdm.train_scene=two_obstacles")
    assert r.returncode == 2
    assert "dcdm.target_scene" in r.stderr and "Traceback" not in r.stderr

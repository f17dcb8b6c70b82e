"""DCDM: identity network == CG, the scale-invariant loss, the networks, cells and claims
on constructed records, the CLI run and its resume."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from quadrun.artifacts import RunContext
from quadrun.cli import config_dir
from quadrun.experiments import dcdm as exp
from quadrun.experiments.dcdm import config, lab
from quadrun.nn.dcdm_net import (ARCHS, AdditiveDCDMNet, DCDMNet, MultilevelDCDMNet, PaperNet,
                                 build, scale_invariant_loss)
from quadrun.solvers import krylov
from quadrun.solvers.poisson import SCENES, scene


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
    net = build("paper", 2, width=4)
    b = torch.randn(3, system.size)
    q = system.from_grid(net(system.to_grid(b)[:, None])[:, 0])
    scale_invariant_loss(q, b, A).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def count(net):
    return sum(p.numel() for p in net.parameters())


def test_the_authors_networks_have_their_parameter_counts():
    assert count(build("paper", 3)) == 97_457             # their N=64 model, 15 convolutions
    assert count(build("paper128", 3)) == 152_881         # their N=128 model, 23
    assert len(build("paper", 3).convs) == 15 and len(build("paper128", 3).convs) == 23
    assert count(build("paper", 2)) == 1 * 16 * 9 + 16 + 14 * (16 * 16 * 9 + 16) + 17
    # Keras' initialisation: Glorot-uniform kernels, zero biases
    net = build("paper", 3)
    w = net.convs[3].weight.detach()
    assert float(w.abs().max()) <= (6 / (2 * 16 * 27)) ** 0.5 and float(w.std()) > 0.02
    assert all(float(c.bias.detach().abs().max()) == 0 for c in net.convs)
    # "resnet", quadrun's first version: the same layers, wired differently (a skip around
    # every residual pair, none missing), so only a forward pass can tell them apart
    assert count(DCDMNet(dim=3, width=16, blocks=2)) == 97_457


def literal_n64(x, W, B, Wd, Bd):
    """The authors' N=64 network (src/train_N64.py), line by line, with F.conv3d."""
    conv = lambda i, h: F.conv3d(h, W[i], B[i], padding=1)
    relu = F.relu
    first_layer = conv(0, x)
    la = relu(conv(1, first_layer))
    lb = relu(conv(2, la))
    la = relu(conv(3, lb)) + la
    lb = relu(conv(4, la))
    apa = F.avg_pool3d(lb, 2)
    apb = relu(conv(5, apa))
    apa = relu(conv(6, apb)) + apa
    apb = relu(conv(7, apa))
    apa = relu(conv(8, apb)) + apa
    apb = relu(conv(9, apa))
    apa = relu(conv(10, apb)) + apa
    upa = apa.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4) + lb
    upb = relu(conv(11, upa))
    upa = relu(conv(12, upb)) + upa
    upb = relu(conv(13, upa))
    upa = relu(conv(14, upb)) + upa
    return F.conv3d(upa, Wd, Bd)


def literal_n128(x, W, B, Wd, Bd):
    """The authors' N=128 network (src/train_N128.py), line by line."""
    conv = lambda i, h: F.conv3d(h, W[i], B[i], padding=1)
    relu = F.relu
    first_layer = conv(0, x)
    la = relu(conv(1, first_layer))
    lb = relu(conv(2, la))
    la = relu(conv(3, lb)) + la
    lb = relu(conv(4, la))
    la = relu(conv(5, lb)) + la
    lb = relu(conv(6, la))
    apa = F.avg_pool3d(lb, 2)
    apb = relu(conv(7, apa))
    apa = relu(conv(8, apb)) + apa
    apb = relu(conv(9, apa))
    apa = relu(conv(10, apb)) + apa
    apb = relu(conv(11, apa))
    apa = relu(conv(12, apb)) + apa
    apb = relu(conv(13, apa))
    apa = relu(conv(14, apb)) + apa
    apb = relu(conv(15, apa))
    apa = relu(conv(16, apb)) + apa
    upa = apa.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4) + lb
    upb = relu(conv(17, upa))
    upa = relu(conv(18, upb)) + upa
    upb = relu(conv(19, upa))
    upa = relu(conv(20, upb)) + upa
    upb = relu(conv(21, upa))
    upa = relu(conv(22, upb)) + upa
    return F.conv3d(upa, Wd, Bd)


@pytest.mark.parametrize("arch,literal", [("paper", literal_n64), ("paper128", literal_n128)])
def test_the_authors_networks_equal_a_literal_transcription(arch, literal):
    """Random weights and biases (not the zero-bias initialisation), float64; the input is
    r / ||r|| as the solver gives it, unscaled: their net sees what ours sees."""
    torch.manual_seed(0)
    net = build(arch, 3).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    W = [c.weight for c in net.convs]
    B = [c.bias for c in net.convs]
    system, b = scene("two_obstacles", 12, 3, seed=0)
    r = torch.from_numpy(b / np.linalg.norm(b))
    grid = system.to_grid(r)[None, None]
    with torch.no_grad():
        ref = literal(grid, W, B, net.dense.weight, net.dense.bias)
        assert float((net(grid) - ref).abs().max()) < 1e-12
        M = krylov.network_setup(system, system.matrix(), model=net)["M"]
        assert float((M(r) - system.from_grid(ref[0, 0])).abs().max()) < 1e-12
        assert float(ref.abs().max()) > 1e-3                       # not a vacuous zero
        # the input is used as it is: a scaled residual gives another direction
        assert not torch.allclose(net(grid * 100) / 100, net(grid), rtol=1e-3)


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


@pytest.mark.parametrize("arch", ["resnet", "multilevel", "additive"])
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


# -- cells, records and claims -------------------------------------------------------------------
def test_the_torch_free_name_lists_match_the_library():
    assert config.SCENE_NAMES == list(SCENES)
    assert config.SOLVER_NAMES == list(krylov.SOLVERS)
    assert config.ARCH_NAMES == list(ARCHS)
    assert config.PROTOCOLS == list(krylov.PROTOCOLS)


def test_cells_train_each_dim_once_before_its_solves():
    c = exp.Config()
    cells = exp.cells(c)
    assert [x for x in cells if x["part"] == "train"] == [{"part": "train", "dim": 2},
                                                          {"part": "train", "dim": 3}]
    solves = [x for x in cells if x["part"] == "solve"]
    assert len(solves) == 2 * 2 * 4 * 7                  # dims x factors x scenes x solvers
    assert {x["protocol"] for x in solves} == {"quadrun"}
    assert {(x["dim"], x["n"]) for x in solves} == {(2, 64), (2, 128), (3, 16), (3, 32)}
    first_3d = next(i for i, x in enumerate(cells) if x["dim"] == 3)
    assert cells[first_3d] == {"part": "train", "dim": 3}
    c.solvers = ["cg", "amg"]
    assert all(x["part"] == "solve" for x in exp.cells(c)) and len(exp.cells(c)) == 2 * 2 * 4 * 2


def test_a_record_keeps_every_residual_or_evenly_spaced_ones():
    assert config.kept(5) == [0, 1, 2, 3, 4, 5]
    assert len(config.kept(config.HISTORY - 1)) == config.HISTORY
    kept = config.kept(1000)
    assert len(kept) == config.HISTORY and kept[0] == 0 and kept[-1] == 1000
    assert all(b > a for a, b in zip(kept, kept[1:]))


@pytest.mark.parametrize("overrides,unread", [
    (["dcdm.arch=paper", "dcdm.width=99", "dcdm.blocks=3", "dcdm.coarsest=8"],
     {"blocks", "coarsest", "max_levels"}),           # the authors' wiring: width is theirs
    (["dcdm.arch=additive"], {"max_levels"}),
    (["dcdm.arch=multilevel"], set()),
    (["dcdm.solvers=[cg,mg]", "dcdm.arch=paper"],
     {"arch", "width", "blocks", "coarsest", "max_levels", "train_scene", "samples", "ritz_m",
      "ritz_theta", "val_samples", "train_sizes", "train", "dcdm_maxiter", "deflate", "amg"}),
])
def test_keys_the_chosen_arch_and_solvers_do_not_read(compose, overrides, unread):
    from quadrun.schema import unread_keys

    cfg, experiments = compose("experiment=dcdm", *overrides)
    assert set(unread_keys(experiments["dcdm"], cfg.dcdm)) == unread


def test_an_unread_key_leaves_the_fingerprint_alone(compose):
    from quadrun.identity import config_fingerprint

    base = config_fingerprint(compose("experiment=dcdm", "dcdm.arch=paper")[0])
    assert config_fingerprint(compose("experiment=dcdm", "dcdm.arch=paper",
                                      "dcdm.coarsest=8")[0]) == base
    assert config_fingerprint(compose("experiment=dcdm", "dcdm.arch=paper",
                                      "dcdm.width=8")[0]) != base


def solve(dim, n, scene_, solver, its, converged=True, setup_s=0.0, solve_s=0.1):
    return {"part": "solve", "dim": dim, "n": n, "scene": scene_, "solver": solver,
            "protocol": "quadrun", "iterations": its, "iterations_run": its,
            "converged": converged, "rel_residual": 1e-5, "absolute_tol": False,
            "device": "cpu", "setup_s": setup_s, "solve_s": solve_s}


def decide(records, c=None):
    return {x["id"]: x for x in exp.claims(records, c or exp.Config())}


def grid(table):
    """{(dim, n, scene, solver): iterations (None: not converged)} -> records."""
    return [solve(d, n, s, v, 300 if its is None else its, converged=its is not None)
            for (d, n, s, v), its in table.items()]


def test_the_exact_rule_and_the_censored_statistics():
    from quadrun.experiments.dcdm.claims import Exact, censored_median, censored_ratio, exact

    loose, strict = Exact(1.2, 1.5), Exact(1.0, strict=True)
    assert [loose.decide(exact(v))[0] for v in (1.0, 1.2, 1.3, 1.5, 1.51, math.inf)] == \
        ["holds", "holds", "inconclusive", "inconclusive", "fails", "fails"]
    assert [strict.decide(exact(v))[0] for v in (0.0, 0.99, 1.0, math.inf)] == \
        ["holds", "holds", "fails", "fails"]
    assert censored_median([20, math.inf, 30]) == 30 and censored_median([20, None]) == math.inf
    assert censored_ratio(math.inf, math.inf) is None and censored_ratio(1, math.inf) == 0
    assert censored_ratio(math.inf, 3) == math.inf and censored_ratio(3, 4) == 0.75


def test_fewer_holds_fails_inconclusive_and_not_measured():
    good = {(2, 64, "box", "dcdm"): 20, (2, 64, "box", "cg"): 100,
            (2, 64, "sphere", "dcdm"): 25, (2, 64, "sphere", "cg"): 110}
    got = decide(grid(good))["fewer"]
    assert got["verdict"] == "holds" and "fewer on 2/2" in got["measured"]
    assert "0.2-0.227x" in got["measured"] and "worst 2D n=64 sphere: DCDM 25 vs CG 110" in got["measured"]
    assert got["values"]["2D n=64 box"] == {"dcdm": 20.0, "cg": 100.0}
    slower = {**good, (2, 64, "sphere", "dcdm"): 120}
    assert decide(grid(slower))["fewer"]["verdict"] == "fails"
    equal = {**good, (2, 64, "sphere", "dcdm"): 110}             # as many is not fewer
    assert decide(grid(equal))["fewer"]["verdict"] == "fails"
    stalled = {**good, (2, 64, "sphere", "dcdm"): None}           # DCDM hit its cap
    got = decide(grid(stalled))["fewer"]
    assert got["verdict"] == "fails" and "DCDM not converged vs CG 110" in got["measured"]
    neither = {**good, (2, 64, "sphere", "dcdm"): None, (2, 64, "sphere", "cg"): None}
    got = decide(grid(neither))["fewer"]
    assert got["verdict"] == "inconclusive" and "higher iteration caps" in got["why"]
    cg_only = {k: v for k, v in good.items() if k[3] == "cg"}
    assert decide(grid(cg_only))["fewer"]["verdict"] == "not_measured"


def test_seeds_pooled_by_a_sweep_are_combined_by_their_median():
    runs = [{(2, 64, "box", "dcdm"): its, (2, 64, "box", "cg"): 100} for its in (20, 200, 30)]
    got = decide([r for run in runs for r in grid(run)])["fewer"]
    assert got["verdict"] == "holds"                      # median 30 < 100, though one is 200
    assert got["values"]["2D n=64 box"]["dcdm"] == 30.0 and "median over 3 seeds" in got["measured"]
    runs[2][(2, 64, "box", "dcdm")] = 150                 # median 150 > 100
    assert decide([r for run in runs for r in grid(run)])["fewer"]["verdict"] == "fails"
    runs[2][(2, 64, "box", "dcdm")] = None                # a seed that never converged: +inf
    assert decide([r for run in runs for r in grid(run)])["fewer"]["verdict"] == "fails"


def test_growth_holds_fails_inconclusive_and_not_measured():
    good = {(2, 64, "box", "dcdm"): 20, (2, 128, "box", "dcdm"): 24,
            (2, 64, "box", "cg"): 100, (2, 128, "box", "cg"): 200}
    got = decide(grid(good))["growth"]
    assert got["verdict"] == "holds"
    assert got["measured"].startswith("DCDM 1.2-1.2x vs CG 2-2x per doubling; below CG's on 1/1")
    assert got["values"]["2D box 64->128"] == {"dcdm": 1.2, "cg": 2.0}
    steep = {**good, (2, 128, "box", "dcdm"): 60}         # 3x against CG's 2x
    assert decide(grid(steep))["growth"]["verdict"] == "fails"
    lost = {**good, (2, 128, "box", "dcdm"): None}        # converged at n only
    assert decide(grid(lost))["growth"]["verdict"] == "fails"
    never = {**good, (2, 64, "box", "dcdm"): None, (2, 128, "box", "dcdm"): None}
    assert decide(grid(never))["growth"]["verdict"] == "inconclusive"
    one_size = {k: v for k, v in good.items() if k[1] == 64}
    got = decide(grid(one_size))["growth"]
    assert got["verdict"] == "not_measured" and "n and 2n" in got["why"]
    # growth is compared per scene: 4n also pairs with 2n
    chain = {**good, (2, 256, "box", "dcdm"): 60, (2, 256, "box", "cg"): 400}
    got = decide(grid(chain))["growth"]
    assert got["verdict"] == "fails" and set(got["values"]) == {"2D box 64->128", "2D box 128->256"}


def test_unseen_holds_fails_inconclusive_and_not_measured():
    good = {(2, 64, "box", "dcdm"): 20, (2, 64, "sphere", "dcdm"): 30,
            (2, 64, "two_obstacles", "dcdm"): 40}
    got = decide(grid(good))["unseen"]
    assert got["verdict"] == "holds" and "unseen/training 1.5-2x" in got["measured"]
    assert "worst 2D n=64 two_obstacles: 40 vs 20 on box" in got["measured"]
    far = {**good, (2, 64, "sphere", "dcdm"): 50}           # 2.5x the training scene's
    assert decide(grid(far))["unseen"]["verdict"] == "fails"
    stalled = {**good, (2, 64, "sphere", "dcdm"): None}
    assert decide(grid(stalled))["unseen"]["verdict"] == "fails"
    both = {**good, (2, 64, "box", "dcdm"): None, (2, 64, "sphere", "dcdm"): None}
    got = decide(grid(both))["unseen"]
    assert got["verdict"] == "inconclusive" and got["why"].startswith("1 of 2")
    no_training_scene = {k: v for k, v in good.items() if k[2] != "box"}
    got = decide(grid(no_training_scene))["unseen"]
    assert got["verdict"] == "not_measured" and "training scene (box)" in got["why"]
    # another training scene changes which scene is the reference
    c = exp.Config(train_scene="sphere", target_scene="two_obstacles")
    assert decide(grid(good), c)["unseen"]["verdict"] == "holds"     # 20/30, 40/30
    assert "worst 2D n=64 two_obstacles: 40 vs 30 on sphere" in decide(grid(good), c)["unseen"]["measured"]


def test_no_records_decide_nothing():
    got = decide([])
    assert [x["verdict"] for x in got.values()] == ["not_measured"] * 4


def timed(table):
    """{(dim, n, scene, solver): seconds (None: not converged)} -> records (set-up 0.1 of it)."""
    return [solve(d, n, s, v, 10, converged=t is not None, setup_s=0.1 * (t or 1),
                  solve_s=0.9 * (t or 1)) for (d, n, s, v), t in table.items()]


def test_walltime_holds_fails_inconclusive_and_not_measured():
    good = {(3, 32, "sphere", "dcdm"): 1.0, (3, 32, "sphere", "cg"): 2.0,
            (3, 32, "sphere", "mg"): 0.8, (3, 32, "sphere", "amg"): 4.0,
            (3, 16, "sphere", "dcdm"): 9.0, (3, 16, "sphere", "cg"): 0.1,   # smaller n: not used
            (3, 16, "sphere", "mg"): 0.1}
    got = decide(timed(good))["walltime"]
    assert got["verdict"] == "holds", got
    assert got["measured"].startswith("3D n=32 sphere: DCDM 1 s = CG 0.5x, MG 1.25x, AMG 0.25x")
    assert "(set-up + solve; cpu)" in got["measured"]
    assert got["values"] == {"3D n=32 sphere": {"dcdm_s": 1.0, "cg_s": 2.0, "mg_s": 0.8,
                                                "amg_s": 4.0}}
    slower_than_cg = {**good, (3, 32, "sphere", "cg"): 0.5}
    assert decide(timed(slower_than_cg))["walltime"]["verdict"] == "fails"
    far_from_mg = {**good, (3, 32, "sphere", "mg"): 0.3}            # DCDM 3.3x MG's
    assert decide(timed(far_from_mg))["walltime"]["verdict"] == "fails"
    near_cg = {**good, (3, 32, "sphere", "cg"): 1.05}               # within 10 % of CG's
    got = decide(timed(near_cg))["walltime"]
    assert got["verdict"] == "inconclusive" and "unloaded device" in got["why"]
    near_mg = {**good, (3, 32, "sphere", "mg"): 0.52}               # 1.92x MG's
    assert decide(timed(near_mg))["walltime"]["verdict"] == "inconclusive"
    stalled = {**good, (3, 32, "sphere", "dcdm"): None}
    got = decide(timed(stalled))["walltime"]
    assert got["verdict"] == "fails" and "DCDM not converged" in got["measured"]
    cg_stalled = {**good, (3, 32, "sphere", "cg"): None}           # DCDM converged, CG not
    assert decide(timed(cg_stalled))["walltime"]["verdict"] == "holds"
    no_mg = {k: v for k, v in good.items() if k[3] != "mg"}
    got = decide(timed(no_mg))["walltime"]
    assert got["verdict"] == "not_measured" and "mg" in got["why"]
    # the set-up counts: MG's hierarchy, AMG's, the network's
    rec = timed(good)
    for r in rec:
        if r["solver"] == "dcdm" and r["n"] == 32:
            r["setup_s"] = 2.0
    assert decide(rec)["walltime"]["verdict"] == "fails"


def test_claims_name_the_authors_protocol():
    records = [{**r, "protocol": "authors"} for r in grid({(2, 64, "box", "dcdm"): 20,
                                                           (2, 64, "box", "cg"): 100})]
    got = decide(records)["fewer"]
    assert "protocol authors (CG and deflated PCG to an absolute tol)" in got["measured"]
    assert "protocol" not in decide(grid({(2, 64, "box", "dcdm"): 20,
                                          (2, 64, "box", "cg"): 100}))["fewer"]["measured"]


def test_summarize_targets_and_a_diverged_training():
    c = exp.Config()
    records = grid({(2, 64, "two_obstacles", "dcdm"): 20, (2, 64, "two_obstacles", "cg"): 100,
                    (2, 128, "two_obstacles", "dcdm"): 26, (2, 128, "two_obstacles", "cg"): 210})
    train = {"part": "train", "dim": 2, "status": "completed"}
    out = exp.summarize([train] + records, c)
    assert "status" not in out
    t = out["targets"]["2d"]
    assert t["dcdm_over_cg"] == pytest.approx(0.2) and t["dcdm_over_cg_ok"]
    assert t["dcdm_growth_2n"] == pytest.approx(1.3) and t["dcdm_growth_ok"]
    assert t["cg_growth_2n"] == pytest.approx(2.1)
    assert out["targets"]["3d"] == {"scene": "two_obstacles", "n": 16}
    assert exp.summarize([{**train, "status": "diverged"}] + records, c)["status"] == "diverged"


def test_a_solve_after_a_diverged_training_records_no_dcdm_run(fake_ctx):
    ctx = fake_ctx()
    ctx.memo[("model", 2)] = (None, "diverged")
    rec = lab.solve(exp.Config(), ctx, 2, 64, "sphere", "dcdm")
    assert rec["status"] == "diverged" and rec["converged"] is False and rec["iterations"] is None
    assert ctx.built == []                                  # no scene was built for it
    cell = {"part": "solve", "dim": 2, "n": 64, "scene": "sphere", "solver": "dcdm"}
    got = decide([{**cell, **rec}, solve(2, 64, "sphere", "cg", 100)])["fewer"]
    assert got["verdict"] == "fails"


def test_consecutive_solves_share_one_scene(fake_ctx):
    ctx = fake_ctx()
    c = exp.Config(tol=1e-3)
    first = lab.solve(c, ctx, 2, 8, "sphere", "cg")
    lab.solve(c, ctx, 2, 8, "sphere", "jacobi")
    lab.solve(c, ctx, 2, 8, "box", "cg")
    assert ctx.built == [("scene", ("sphere", 8, 2)), ("scene", ("box", 8, 2))]
    assert first["converged"] and len(first["residuals"]) == first["iterations"] + 1


# -- the CLI ---------------------------------------------------------------------------------------
SOLVE_FIELDS = {"part", "dim", "n", "scene", "solver", "protocol", "iterations",
                "iterations_run", "converged", "rel_residual", "absolute_tol", "device",
                "setup_s", "solve_s", "residuals", "threads"}
TRAIN_FIELDS = {"part", "dim", "sizes", "ritz_vectors", "status", "steps", "val_loss",
                "parameters", "train_seconds", "threads"}


def test_smoke_cli_run(cli):
    """What a dcdm run records (the shared contract is tests/test_contract.py's)."""
    r = cli("experiment=dcdm", "scale=smoke", "threads=1", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    run = next((cli.cwd / "outputs" / "dcdm").glob("*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["record_keys"] == ["part", "dim", "n", "scene", "solver", "protocol"]
    train = [x for x in summary["records"] if x["part"] == "train"]
    solves = [x for x in summary["records"] if x["part"] == "solve"]
    assert [x["dim"] for x in train] == [2, 3] and all(set(x) == TRAIN_FIELDS for x in train)
    assert train[0]["sizes"] == [16, 8] and train[1]["sizes"] == [8, 4]   # train_sizes 2
    assert all(x["status"] == "completed" and x["steps"] > 0 for x in train)
    assert all(set(s) == SOLVE_FIELDS for s in solves) and len(solves) == 2 * 2 * 2 * 7
    assert all(s["iterations"] == s["iterations_run"] for s in solves)   # check_every 1
    assert all(s["device"] == "cpu" and s["absolute_tol"] is False for s in solves)
    assert {s["solver"] for s in solves} == set(krylov.SOLVERS)
    assert {(s["dim"], s["n"]) for s in solves} == {(2, 16), (2, 32), (3, 8), (3, 16)}
    for s in solves:
        assert len(s["residuals"]) == s["iterations"] + 1
        assert s["residuals"][0] == pytest.approx(1) or s["solver"] == "deflated"  # x0 = coarse
        assert s["residuals"][-1] <= 1e-4 or not s["converged"]
        if s["solver"] != "dcdm":   # the smoke network is barely trained
            assert s["converged"] and s["rel_residual"] <= 1e-4 * 1.01, s
    claims = {x["id"]: x for x in summary["claims"]}
    assert list(claims) == ["fewer", "growth", "unseen", "walltime"]
    mg = [s for s in solves if s["solver"] == "mg"]
    assert all(s["converged"] and s["iterations"] <= 8 for s in mg), mg
    assert claims["unseen"]["verdict"] == "not_measured"    # smoke solves no box scene
    assert set(summary["targets"]) == {"2d", "3d"}
    table = (run / "report" / "table.md").read_text()
    assert "### dcdm: train" in table and "### dcdm: solve" in table
    assert "| walltime |" in table and "protocol: quadrun" in table and "| mg |" in table
    assert list((run / "plots").glob("residuals_2d*.png"))
    assert list((run / "plots").glob("residuals_3d*.png"))
    assert (run / "checkpoints" / "model_2d.pt").exists()
    assert list((cli.cwd / "data" / "dcdm").glob("ritz_*.pt"))   # the cached basis


def test_resumed_solves_use_the_saved_network(cli):
    """A run resumed after its training reloads model_<dim>d.pt: the same DCDM solves."""
    args = ("experiment=dcdm", "scale=smoke", "threads=1", "dcdm.dims=[2]",
            "dcdm.solvers=[cg,dcdm]")
    r = cli(*args, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    run = next((cli.cwd / "outputs" / "dcdm").glob("*"))
    first = json.loads((run / "summary.json").read_text())["records"]
    stages = json.loads((run / "stages.json").read_text())
    stages["stages"] = {k: v for k, v in stages["stages"].items() if k.startswith("part=train")}
    (run / "stages.json").write_text(json.dumps(stages))
    (run / "summary.json").unlink()
    r = cli(f"resume={run}", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads((run / "summary.json").read_text())["records"]
    dcdm_runs = [(a, b) for a, b in zip(first, again) if a.get("solver") == "dcdm"]
    assert len(first) == len(again) == 1 + 2 * 2 * 2 and len(dcdm_runs) == 4
    for a, b in dcdm_runs:
        assert a["iterations"] == b["iterations"] and a["residuals"] == b["residuals"]
    assert [a["train_seconds"] for a in first if a["part"] == "train"] == \
        [b["train_seconds"] for b in again if b["part"] == "train"]   # not trained again


def test_a_missing_network_is_a_checkpoint_error(fake_ctx):
    from quadrun.errors import CheckpointError

    ctx = fake_ctx()
    ctx.load_model = lambda name, model, made_by: RunContext.load_model(ctx, name, model, made_by)
    ctx.checkpoint_path = lambda name: ctx.dir / f"{name}.pt"
    with pytest.raises(CheckpointError, match="part=train/dim=2"):
        lab.load_model(exp.Config(), ctx, 2)


def test_paper_scale_and_its_sweep_compose(compose):
    cfg, _ = compose("experiment=dcdm", "scale=paper", "sweep=dcdm_paper")
    cpu, _ = compose("experiment=dcdm")
    sweep = yaml.safe_load(open(f"{config_dir()}/sweep/dcdm_paper.yaml"))
    assert sweep["hydra"]["sweeper"]["params"]["seed"] == "0,1,2"
    assert cfg.dcdm.arch == "paper" and list(cfg.dcdm.dims) == [3]
    assert list(cfg.dcdm.eval_factors) == [1, 2, 4] and cfg.dcdm.check_every == 10
    assert cfg.dcdm.train.lr == 1e-4 and cfg.dcdm.train.schedule == "none"
    assert cfg.dcdm.train.optimizer == "adam" and cfg.dcdm.train.batch_size == 10
    assert cpu.dcdm.arch == "additive" and cpu.dcdm.train.lr == 1e-3 and cpu.dcdm.train.epochs == 2
    assert "train" not in cpu


def test_cli_rejects_training_on_the_target_scene(cli):
    r = cli("experiment=dcdm", "scale=smoke", "dcdm.train_scene=two_obstacles")
    assert r.returncode == 2
    assert "dcdm.target_scene" in r.stderr and "Traceback" not in r.stderr

# -- the solve's network map: memory format, CUDA graphs, bf16 ------------------------------
def test_channels_last_network_map_equals_the_contiguous_one():
    """The memory-format path the solve takes on CUDA, checked on the CPU."""
    torch.manual_seed(0)
    system, b = scene("two_obstacles", 12, 3, seed=0)
    A = system.matrix()
    r = torch.from_numpy(b / np.linalg.norm(b))
    outs = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        net = build("paper", 3)
        M = krylov.network_setup(system, A, model=net, channels_last=channels_last)["M"]
        outs.append(M(r))
    assert net.convs[1].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(outs[0], outs[1], rtol=1e-5, atol=1e-7)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("arch", ["paper", "additive"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.gpu
@needs_cuda
def test_cuda_graphed_network_map_equals_eager(arch, precision):
    torch.manual_seed(0)
    system, b = scene("two_obstacles", 32, 3, seed=0)
    net = build(arch, 3, coarsest=4).cuda()
    A = system.matrix("cuda", torch.float64)
    r = torch.from_numpy(b / np.linalg.norm(b)).cuda()
    eager = krylov.network_setup(system, A, model=net, graphs=False, precision=precision)["M"]
    graphed = krylov.network_setup(system, A, model=net, graphs=True, precision=precision,
                                   b=r)["M"]
    assert isinstance(graphed, krylov.GraphedMap) and graphed.captured
    close = 1e-5 if precision == "fp32" else 2e-2     # bf16: kernels may differ in rounding
    for scale in (1.0, 0.5):        # a replay reads the new input
        z, y = graphed(r * scale), eager(r * scale)
        assert float((z - y).abs().max()) <= close * float(y.abs().max())
    full = krylov.network_setup(system, A, model=net, graphs=False)["M"](r)
    if precision == "bf16":   # close to the fp32 direction, not equal
        assert float((z - full).norm() / full.norm()) < 5e-2
        assert float((z - full).norm() / full.norm()) > 0


@pytest.mark.gpu
@needs_cuda
def test_cuda_multigrid_and_dcdm_count_as_on_the_cpu():
    torch.manual_seed(0)
    system, b = scene("two_obstacles", 32, 3, seed=0)
    net = build("additive", 3, width=4, blocks=1, coarsest=4).double()
    cpu = {s: krylov.solve(s, system, b, model=net) for s in ("mg", "dcdm")}
    net = net.cuda()
    for check in (1, 10):
        for s in ("mg", "dcdm"):
            got = krylov.solve(s, system, b, device="cuda", check_every=check, model=net)
            assert got["iterations"] == cpu[s]["iterations"], (s, check)
            assert got["converged"]
    eager = krylov.solve("mg", system, b, device="cuda", graphs=False)
    assert eager["iterations"] == cpu["mg"]["iterations"]

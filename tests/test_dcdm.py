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
from tests.figure_checks import problems


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


def test_cells_train_every_network_of_a_dim_before_its_solves():
    c = exp.Config()
    cells = exp.cells(c)
    train = [x for x in cells if x["part"] == "train"]
    assert train[:3] == [{"part": "train", "dim": 2, "arch": "additive", "net": k}
                         for k in range(3)]
    assert len(train) == 2 * 2 * 3                         # dims x archs x nets
    solves = [x for x in cells if x["part"] == "solve"]
    # 2-D: 64, 128, 256; 3-D: 8, 16 (max_n); 4 scenes; 6 classical solvers + 2 x 3 nets
    assert len(solves) == (3 + 2) * 4 * (6 + 6)
    assert {x["protocol"] for x in solves} == {"quadrun"}
    assert {(x["dim"], x["n"]) for x in solves} == {(2, 64), (2, 128), (2, 256), (3, 8), (3, 16)}
    assert all(("arch" in x) == (x["solver"] == "dcdm") for x in solves)
    first_3d = next(i for i, x in enumerate(cells) if x["dim"] == 3)
    assert cells[first_3d] == {"part": "train", "dim": 3, "arch": "additive", "net": 0}
    c.solvers = ["cg", "amg"]
    assert all(x["part"] == "solve" for x in exp.cells(c)) and len(exp.cells(c)) == 5 * 4 * 2


def test_max_n_must_leave_a_size(cli):
    r = cli("experiment=dcdm", "scale=smoke", "dcdm.max_n=[8,8]")
    assert r.returncode == 2 and "dcdm.max_n" in r.stderr and "at least 16" in r.stderr


def test_a_record_keeps_every_residual_or_evenly_spaced_ones():
    assert config.kept(5) == [0, 1, 2, 3, 4, 5]
    assert len(config.kept(config.HISTORY - 1)) == config.HISTORY
    kept = config.kept(1000)
    assert len(kept) == config.HISTORY and kept[0] == 0 and kept[-1] == 1000
    assert all(b > a for a, b in zip(kept, kept[1:]))


@pytest.mark.parametrize("overrides,unread", [
    (["dcdm.archs=[paper]", "dcdm.width=99", "dcdm.blocks=3", "dcdm.coarsest=8"],
     {"blocks", "coarsest", "max_levels"}),           # the authors' wiring: width is theirs
    ([], {"max_levels"}),                             # additive and paper
    (["dcdm.archs=[multilevel]"], set()),
    (["dcdm.solvers=[cg,mg]", "dcdm.archs=[paper]"],
     {"archs", "nets", "width", "blocks", "coarsest", "max_levels", "train_scene", "samples",
      "ritz_m", "ritz_theta", "val_samples", "train_sizes", "train", "dcdm_maxiter",
      "deflate", "amg"}),
])
def test_keys_the_chosen_archs_and_solvers_do_not_read(compose, overrides, unread):
    from quadrun.schema import unread_keys

    cfg, experiments = compose("experiment=dcdm", *overrides)
    assert set(unread_keys(experiments["dcdm"], cfg.dcdm)) == unread


def test_an_unread_key_leaves_the_fingerprint_alone(compose):
    from quadrun.identity import config_fingerprint

    base = config_fingerprint(compose("experiment=dcdm", "dcdm.archs=[paper]")[0])
    assert config_fingerprint(compose("experiment=dcdm", "dcdm.archs=[paper]",
                                      "dcdm.coarsest=8")[0]) == base
    assert config_fingerprint(compose("experiment=dcdm", "dcdm.archs=[paper]",
                                      "dcdm.width=8")[0]) != base


def solve(dim, n, scene_, solver, its, converged=True, setup_s=0.0, solve_s=0.1, cosine=None):
    """A record; `cosine` (one number or None) stands for every test residual's."""
    return {"part": "solve", "dim": dim, "n": n, "scene": scene_, "solver": solver,
            "protocol": "quadrun", "iterations": its, "iterations_run": its,
            "converged": converged, "rel_residual": 1e-5, "absolute_tol": False,
            "device": "cpu", "setup_s": setup_s, "solve_s": solve_s,
            "cosines": [cosine] * 3, "cosine": None if cosine is None else abs(cosine)}


def net_solve(dim, n, scene_, arch, k, its, **kw):
    """A DCDM record of network k of `arch` (None: not converged)."""
    rec = solve(dim, n, scene_, "dcdm", 300 if its is None else its, converged=its is not None,
                **kw)
    return {**rec, "arch": arch, "net": k, "train_seed": hash((dim, arch, k)) % 10 ** 6}


def records(classical=None, nets=None, arch="additive"):
    """classical: {(dim, n, scene, solver): its}; nets: {(dim, n, scene): [its per net]}."""
    out = [solve(d, n, s, v, 300 if its is None else its, converged=its is not None)
           for (d, n, s, v), its in (classical or {}).items()]
    for (d, n, s), counts in (nets or {}).items():
        out += [net_solve(d, n, s, arch, k, its) for k, its in enumerate(counts)]
    return out


def decide(recs, c=None):
    return {x["id"]: x for x in exp.claims(recs, c or exp.Config())}


def sized(growth_dcdm, growth_cg=2.0, scenes=("box", "sphere"), nets=3, start=20):
    """Three sizes 64, 128, 256 in 2-D: DCDM's counts grow by growth_dcdm per doubling
    (one list per net: [g1, g2] or a number for both), CG's by growth_cg."""
    classical, dcdm = {}, {}
    for s in scenes:
        for j, n in enumerate((64, 128, 256)):
            classical[(2, n, s, "cg")] = round(100 * growth_cg ** j)
            counts = []
            for k in range(nets):
                g = growth_dcdm[k] if isinstance(growth_dcdm, list) else growth_dcdm
                g = g if isinstance(g, (list, tuple)) else (g, g)
                its = start
                for step in g[:j]:
                    its = None if its is None or step is None else round(its * step)
                counts.append(its)
            dcdm[(2, n, s)] = counts
    return records(classical, dcdm)


def test_size_independent_holds_fails_and_is_inconclusive():
    got = decide(sized(1.1))["size_independent.additive"]          # 20 -> 22 -> 24
    assert got["verdict"] == "holds", got["why"]
    assert "additive nets (3 in 2-D)" in got["measured"] and "arch additive" in got["measured"]
    assert "cg 2x (fails)" in got["measured"].replace("2-2x", "2x")      # the control fails
    cg_like = decide(sized(1.8))["size_independent.additive"]     # a fixed local preconditioner
    assert cg_like["verdict"] == "fails" and "1.81x per doubling is above 1.5" in cg_like["why"]
    between = decide(sized(1.35))["size_independent.additive"]
    assert between["verdict"] == "inconclusive" and "between 1.2 and 1.5" in between["why"]
    # each doubling counts: flat then steep is not size independence
    assert decide(sized([(1.0, 1.6)] * 3))["size_independent.additive"]["verdict"] == "fails"
    # a claim holds only if it holds for each network
    one_bad = decide(sized([1.1, 1.1, 1.6]))["size_independent.additive"]
    assert one_bad["verdict"] == "fails" and "net 2" in one_bad["why"]
    one_open = decide(sized([1.1, 1.3, 1.1]))["size_independent.additive"]
    assert one_open["verdict"] == "inconclusive"
    # lost at 4n: fails; never converged at n: undecided
    assert decide(sized([(1.1, None)] * 3))["size_independent.additive"]["verdict"] == "fails"
    never = decide(sized(1.1, start=None))["size_independent.additive"]
    assert never["verdict"] == "inconclusive" and "higher iteration caps" in never["why"]


def test_size_independent_needs_two_doublings_and_its_arch():
    two_sizes = [r for r in sized(1.1) if r["n"] != 256]
    got = decide(two_sizes)["size_independent.additive"]
    assert got["verdict"] == "not_measured" and "n, 2n and 4n" in got["measured"]
    assert decide(sized(1.1))["size_independent.paper"]["verdict"] == "not_measured"
    # a dim with one doubling is named and left out, the other still decides
    extra = sized(1.1) + records({(3, 8, "box", "cg"): 20, (3, 16, "box", "cg"): 40},
                                 {(3, 8, "box"): [10, 10, 10], (3, 16, "box"): [30, 30, 30]})
    got = decide(extra)["size_independent.additive"]
    assert got["verdict"] == "holds" and "3-D: fewer than three sizes" in got["measured"]


def test_the_weak_growth_claim_is_labelled_and_passes_a_cg_like_net():
    got = decide(sized(1.8))["grows_less_than_cg.additive"]
    assert got["verdict"] == "holds" and got["extension"]      # why the strong one exists
    assert decide(sized(2.1))["grows_less_than_cg.additive"]["verdict"] == "fails"
    assert decide(sized([1.5, 1.5, 2.1]))["grows_less_than_cg.additive"]["verdict"] == "fails"


def baselines(dcdm_counts, cg=100, ic=40, deflated=80, scenes=("box", "sphere")):
    classical = {(2, 64, s, v): its for s in scenes
                 for v, its in (("cg", cg), ("ic", ic), ("deflated", deflated))}
    return records(classical, {(2, 64, s): list(dcdm_counts) for s in scenes})


@pytest.mark.parametrize("solver,count", [("cg", 100), ("ic", 40), ("deflated", 80)])
def test_fewer_than_each_baseline_for_each_network(solver, count):
    key = f"fewer_than_{solver}.additive"
    assert decide(baselines([count - 5] * 3))[key]["verdict"] == "holds"
    assert decide(baselines([count] * 3))[key]["verdict"] == "fails"     # as many: not fewer
    got = decide(baselines([count - 5, count - 5, count + 5]))[key]
    assert got["verdict"] == "fails" and "net 2" in got["why"]
    assert f"spread over nets: widest 2D n=64 box: {count - 5} to {count + 5}" in got["measured"]
    stalled = decide(baselines([None] * 3))[key]
    assert stalled["verdict"] == "fails" and "not converged" in stalled["measured"]
    assert decide(records(nets={(2, 64, "box"): [10]}))[key]["verdict"] == "not_measured"


def test_fewer_is_undecided_when_neither_converges_and_baselines_pool_by_median():
    recs = records({(2, 64, "box", "cg"): None}, {(2, 64, "box"): [None]})
    got = decide(recs)["fewer_than_cg.additive"]
    assert got["verdict"] == "inconclusive" and "higher iteration caps" in got["why"]
    pooled = records({(2, 64, "box", "cg"): 100}) * 2 + records({(2, 64, "box", "cg"): None}) + \
        records(nets={(2, 64, "box"): [90]})                  # CG: 100, 100, inf -> 100
    got = decide(pooled)["fewer_than_cg.additive"]
    assert got["verdict"] == "holds" and "median over 3 seeds" in got["measured"]


def test_unseen_per_network_and_undecided_without_training_convergence():
    def unseen(train, other):
        return decide(records(nets={(2, 64, "box"): train, (2, 64, "sphere"): other}))[
            "unseen.additive"]

    assert unseen([20, 22], [30, 40])["verdict"] == "holds"              # 1.5x, 1.8x
    got = unseen([20, 20], [30, 50])                                       # net 1: 2.5x
    assert got["verdict"] == "fails" and "net 1" in got["why"]
    assert unseen([20, 20], [30, None])["verdict"] == "fails"
    untrained = unseen([None, 20], [25, 30])      # net 0 never converged on its training scene
    assert untrained["verdict"] == "inconclusive"
    assert "did not reach the tolerance on its training scene (box)" in untrained["why"]
    assert unseen([None, None], [25, 30])["verdict"] == "inconclusive"
    got = decide(records(nets={(2, 64, "sphere"): [30]}))["unseen.additive"]
    assert got["verdict"] == "not_measured" and "training scene (box)" in got["why"]


def timed(dcdm_s, others, nets=2):
    """2-D n=64 (smaller) and n=128 (the largest, timed) on one scene."""
    out = []
    for n, scale in ((64, 0.01), (128, 1.0)):
        for solver, t in others.items():
            out.append(solve(2, n, "sphere", solver, 10, converged=t is not None,
                             setup_s=0.1 * scale * (t or 1), solve_s=0.9 * scale * (t or 1)))
        for k in range(nets):
            d = dcdm_s[k] if isinstance(dcdm_s, list) else dcdm_s
            out.append(net_solve(2, n, "sphere", "additive", k, None if d is None else 10,
                                 setup_s=0.0, solve_s=(d or 1) * scale * (9 if n == 64 else 1)))
    return out


def test_time_claims_name_the_device_and_use_the_largest_n():
    others = {"cg": 2.0, "ic": 1.0, "deflated": 4.0, "mg": 0.4}
    got = decide(timed(1.5, others))
    assert got["time_vs_cg.additive"]["verdict"] == "holds"                 # 0.75x
    assert got["time_vs_ic.additive"]["verdict"] == "fails"                 # 1.5x
    assert got["time_vs_deflated.additive"]["verdict"] == "holds"
    assert got["time_vs_mg.additive"]["verdict"] == "fails"                 # 3.75x > 2.2
    assert got["time_vs_mg.additive"]["extension"] and not got["time_vs_cg.additive"]["extension"]
    for key in ("time_vs_cg.additive", "time_vs_mg.additive"):
        assert "this run's device (cpu)" in got[key]["target"]
        assert "set-up + solve on cpu" in got[key]["measured"]
    assert "2D n=128 sphere net" in got["time_vs_cg.additive"]["why"] or \
        got["time_vs_cg.additive"]["verdict"] == "holds"
    assert set(got["time_vs_cg.additive"]["values"]) == {"2D n=128 sphere net 0",
                                                          "2D n=128 sphere net 1"}
    near = decide(timed(1.05, others))["time_vs_ic.additive"]               # within 10 %
    assert near["verdict"] == "inconclusive" and "unloaded device" in near["why"]
    assert decide(timed([1.5, 0.5], others))["time_vs_ic.additive"]["verdict"] == "fails"
    assert decide(timed([0.5, 0.5], others))["time_vs_ic.additive"]["verdict"] == "holds"
    assert decide(timed(None, others))["time_vs_cg.additive"]["verdict"] == "fails"
    assert decide(timed(0.7, {**others, "mg": None}))["time_vs_mg.additive"]["verdict"] == "holds"


def test_the_time_rule_error_rates_under_timing_noise():
    """Simulated timings (log-normal noise, 5 % per timing, as on a loaded CPU) with a
    known true ratio: the 10 % band keeps wrong verdicts rare."""
    from quadrun.experiments.dcdm.claims import TIME
    from quadrun.claims import exact

    rng = np.random.default_rng(0)

    def verdicts(ratio, trials=2000):
        noise = np.exp(rng.normal(0, 0.05, (trials, 2)))
        return [TIME.decide(exact(ratio * a / b))[0] for a, b in noise]

    for truth, wrong in ((0.7, "fails"), (1.4, "holds")):
        assert verdicts(truth).count(wrong) == 0
    near = verdicts(0.85)                     # 15 % below the bound
    assert near.count("fails") == 0 and near.count("holds") / len(near) > 0.7


def test_the_size_rule_error_rates_with_seed_to_seed_spread():
    """Simulated networks whose counts (about 30) vary by +-8 % from seed to seed around a
    known growth per doubling: a CG-like 1.8x never holds, true size independence (1.0x)
    rarely fails, and three nets make the claim conservative, not wrong."""
    rng = np.random.default_rng(1)

    def verdict(growth):
        counts = [[max(1, round(30 * growth ** j * np.exp(rng.normal(0, 0.08))))
                   for j in range(3)] for _ in range(3)]
        recs = records({(2, n, "box", "cg"): 100 * 2 ** j for j, n in enumerate((64, 128, 256))},
                       {(2, n, "box"): [c[j] for c in counts]
                        for j, n in enumerate((64, 128, 256))})
        return decide(recs)["size_independent.additive"]["verdict"]

    flat = [verdict(1.0) for _ in range(300)]
    cg_like = [verdict(1.8) for _ in range(300)]
    assert cg_like.count("fails") == 300
    assert flat.count("fails") / 300 < 0.05 and flat.count("holds") / 300 > 0.3


def test_approx_inverse_against_ic_for_each_network():
    def recs(net_cos, ic=0.6):
        out = [solve(2, 64, "box", s, 10, cosine=c) for s, c in
               (("cg", 0.3), ("jacobi", 0.31), ("ic", ic), ("mg", 0.99))]
        return out + [net_solve(2, 64, "box", "additive", k, 10, cosine=c)
                      for k, c in enumerate(net_cos)]

    got = decide(recs([0.8, 0.75]))["approx_inverse.additive"]
    assert got["verdict"] == "holds" and "vs IC 0.6" in got["measured"]
    assert got["values"]["2D n=64 box"] == {"cg": 0.3, "jacobi": 0.31, "ic": 0.6, "mg": 0.99,
                                            "additive": [0.8, 0.75]}
    assert decide(recs([0.8, 0.5]))["approx_inverse.additive"]["verdict"] == "fails"
    # "up to a constant" of either sign: DCDM's step takes -c A^-1 r as well as c A^-1 r
    flipped = decide(recs([0.8, -0.75]))["approx_inverse.additive"]
    assert flipped["verdict"] == "holds" and "negative constant" in flipped["measured"]
    assert "2-D net 1" in flipped["measured"]
    assert decide(recs([0.8, -0.5]))["approx_inverse.additive"]["verdict"] == "fails"
    assert decide(recs([0.8, None]))["approx_inverse.additive"]["verdict"] == "inconclusive"
    no_ic = [r for r in recs([0.8]) if r["solver"] != "ic"]
    assert decide(no_ic)["approx_inverse.additive"]["verdict"] == "not_measured"


def test_the_cosine_is_one_for_the_exact_inverse():
    from quadrun.solvers import inverse

    system, b = scene("sphere", 12, 2, seed=0)        # closed domain: A is singular
    A = system.matrix()
    pairs = inverse.test_residuals(system, b, 3)
    assert len(pairs) == 3 and all(abs(float(r.norm()) - 1) < 1e-12 for r, _ in pairs)
    assert abs(float(pairs[1][0].sum())) < 1e-10                  # in A's range
    P = torch.from_numpy(np.linalg.pinv(system.scipy.toarray()))
    exact_inverse = inverse.cosines(A, lambda r: 3.0 * (P @ r) + 5.0, pairs)   # up to a
    assert exact_inverse == pytest.approx([1.0] * 3, abs=1e-8)        # constant and the null space
    assert inverse.cosines(A, lambda r: -(P @ r), pairs) == pytest.approx([-1.0] * 3, abs=1e-8)
    identity = inverse.cosines(A, None, pairs)
    assert all(0 < x < 0.95 for x in identity)
    ic = inverse.cosines(A, krylov.IC0(system, "cpu", torch.float64), pairs)
    assert all(i > x for i, x in zip(ic, identity))                 # IC is a better inverse


def test_claims_per_arch_name_the_arch_training_scene_and_size():
    recs = sized(1.1) + [{**r, "arch": "paper", "train_seed": r["train_seed"] + 1}
                         for r in sized(1.8) if r["solver"] == "dcdm"]
    got = decide(recs)
    ids = list(got)
    assert len(ids) == 2 * 11 and len(set(ids)) == len(ids)
    assert ids[0] == "size_independent.additive" and ids[11] == "size_independent.paper"
    assert got["size_independent.additive"]["verdict"] == "holds"
    assert got["size_independent.paper"]["verdict"] == "fails"
    for x in got.values():
        arch = x["id"].split(".")[1]
        assert f"arch {arch}" in x["setup"] and "trained on box at 64^2, 8^3" in x["setup"]
        assert "3 nets per dim" in x["setup"] and x["setup"] in x["measured"]


def test_no_records_decide_nothing():
    assert {x["verdict"] for x in decide([]).values()} == {"not_measured"}


def test_claims_name_the_authors_protocol():
    recs = [{**r, "protocol": "authors"} for r in baselines([20])]
    c = exp.Config(protocol="authors")
    got = decide(recs, c)["fewer_than_cg.additive"]
    assert "protocol authors" in got["measured"] and "absolute tol" in got["setup"]


def test_summarize_flags_a_diverged_training():
    train = {"part": "train", "dim": 2, "arch": "paper", "net": 0, "status": "completed"}
    assert exp.summarize([train], exp.Config()) == {}
    assert exp.summarize([{**train, "status": "diverged"}], exp.Config())["status"] == "diverged"


def test_a_solve_after_a_diverged_training_records_no_dcdm_run(fake_ctx):
    ctx = fake_ctx()
    ctx.memo[("model", 2, "paper", 1)] = (None, "diverged")
    cell = {"part": "solve", "dim": 2, "n": 64, "scene": "sphere", "solver": "dcdm",
            "arch": "paper", "net": 1, "protocol": "quadrun"}
    rec = lab.solve(exp.Config(), ctx, cell)
    assert rec["status"] == "diverged" and rec["converged"] is False and rec["iterations"] is None
    assert rec["train_seed"] == lab.train_seed(0, 2, "paper", 1)
    assert ctx.built == []                                  # no scene was built for it
    got = decide([{**cell, **rec}, solve(2, 64, "sphere", "cg", 100)])["fewer_than_cg.paper"]
    assert got["verdict"] == "fails"


def test_consecutive_solves_share_one_scene_and_its_test_residuals(fake_ctx):
    ctx = fake_ctx()
    c = exp.Config(tol=1e-3, inverse_residuals=2)
    cells = [{"part": "solve", "dim": 2, "n": 8, "scene": s, "solver": v, "protocol": "quadrun"}
             for s, v in (("sphere", "cg"), ("sphere", "ic"), ("sphere", "amg"), ("box", "cg"))]
    recs = [lab.solve(c, ctx, cell) for cell in cells]
    assert ctx.built == [("scene", ("sphere", 8, 2)), ("test residuals", ("sphere", 8, 2)),
                         ("scene", ("box", 8, 2)), ("test residuals", ("box", 8, 2))]
    assert recs[0]["converged"] and len(recs[0]["residuals"]) == recs[0]["iterations"] + 1
    assert len(recs[1]["cosines"]) == 2
    assert recs[1]["cosine"] == np.median(np.abs(recs[1]["cosines"]))
    assert "cosine" not in recs[2]                          # AMG: not a map measured here


# -- the CLI ---------------------------------------------------------------------------------------
SOLVE_FIELDS = {"part", "dim", "n", "scene", "solver", "protocol", "iterations",
                "iterations_run", "converged", "rel_residual", "absolute_tol", "device",
                "setup_s", "solve_s", "residuals", "threads"}
NET_FIELDS = {"arch", "net", "train_seed"}
COSINE_FIELDS = {"cosine", "cosines"}
TRAIN_FIELDS = {"part", "dim", "arch", "net", "train_seed", "sizes", "ritz_vectors", "status",
                "steps", "val_loss", "parameters", "train_seconds", "threads"}


def test_smoke_cli_run(cli):
    """What a dcdm run records (the shared contract is tests/test_contract.py's)."""
    r = cli("experiment=dcdm", "scale=smoke", "threads=1", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    run = next((cli.cwd / "outputs" / "dcdm").glob("*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["record_keys"] == ["part", "dim", "arch", "net", "n", "scene", "solver",
                                      "protocol"]
    train = [x for x in summary["records"] if x["part"] == "train"]
    solves = [x for x in summary["records"] if x["part"] == "solve"]
    assert [(x["dim"], x["arch"], x["net"]) for x in train] == [
        (d, a, k) for d in (2, 3) for a in ("additive", "paper") for k in (0, 1)]
    assert all(set(x) == TRAIN_FIELDS for x in train)
    assert len({x["train_seed"] for x in train}) == 8                      # 8 networks
    assert train[0]["sizes"] == [16, 8] and train[4]["sizes"] == [8, 4]   # train_sizes 2
    assert all(x["status"] == "completed" and x["steps"] > 0 for x in train)
    for s in solves:
        extra = (NET_FIELDS if s["solver"] == "dcdm" else set()) | \
            (COSINE_FIELDS if s["solver"] in lab.INVERSE_SOLVERS else set())
        assert set(s) == SOLVE_FIELDS | extra, s["solver"]
    # 2-D: 16, 32, 64; 3-D: 8 (max_n); 2 scenes; 6 classical solvers and 4 networks
    assert len(solves) == (3 + 1) * 2 * (6 + 4)
    assert all(s["iterations"] == s["iterations_run"] for s in solves)   # check_every 1
    assert all(s["device"] == "cpu" and s["absolute_tol"] is False for s in solves)
    assert {s["solver"] for s in solves} == set(krylov.SOLVERS)
    for s in solves:
        assert len(s["residuals"]) == s["iterations"] + 1
        assert s["residuals"][0] == pytest.approx(1) or s["solver"] == "deflated"  # x0 = coarse
        assert s["residuals"][-1] <= 1e-4 or not s["converged"]
        if s["solver"] != "dcdm":   # the smoke networks are barely trained
            assert s["converged"] and s["rel_residual"] <= 1e-4 * 1.01, s
        if s["solver"] == "mg":
            assert s["iterations"] <= 8 and min(s["cosines"]) > 0.9
    claims = {x["id"]: x for x in summary["claims"]}
    assert len(claims) == 22 and "size_independent.paper" in claims
    assert claims["unseen.additive"]["verdict"] == "not_measured"   # smoke solves no box scene
    assert claims["size_independent.additive"]["verdict"] != "not_measured"   # 2-D: 3 sizes
    table = (run / "report" / "table.md").read_text()
    assert "### dcdm: train" in table and "### dcdm: solve" in table
    assert "| time_vs_cg.additive |" in table and "| mg |" in table
    assert list((run / "report").glob("residuals_2d*.png"))
    assert list((run / "report").glob("residuals_3d*.png"))
    assert (run / "checkpoints" / "model_2d_paper_1.pt").exists()
    assert list((cli.cwd / "data" / "dcdm").glob("ritz_*.pt"))   # the cached basis


def test_resumed_solves_use_the_saved_network(cli):
    """A run resumed after its training reloads the saved networks: the same DCDM solves."""
    args = ("experiment=dcdm", "scale=smoke", "threads=1", "dcdm.dims=[2]",
            "dcdm.solvers=[cg,dcdm]", "dcdm.archs=[additive]", "dcdm.max_n=[32]")
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
    assert len(first) == len(again) == 2 + 2 * 2 * 3 and len(dcdm_runs) == 8
    for a, b in dcdm_runs:
        assert a["iterations"] == b["iterations"] and a["residuals"] == b["residuals"]
        assert a["cosines"] == b["cosines"]
    assert [a["train_seconds"] for a in first if a["part"] == "train"] == \
        [b["train_seconds"] for b in again if b["part"] == "train"]   # not trained again


def test_a_missing_network_is_a_checkpoint_error(fake_ctx):
    from quadrun.errors import CheckpointError

    ctx = fake_ctx()
    ctx.load_model = lambda name, model, made_by: RunContext.load_model(ctx, name, model, made_by)
    ctx.checkpoint_path = lambda name: ctx.dir / f"{name}.pt"
    with pytest.raises(CheckpointError, match="part=train/dim=2/arch=paper/net=1"):
        lab.load_model(exp.Config(), ctx, 2, "paper", 1)


def test_paper_scale_and_its_sweep_compose(compose):
    cfg, _ = compose("experiment=dcdm", "scale=paper", "sweep=dcdm_paper")
    cpu, _ = compose("experiment=dcdm")
    sweep = yaml.safe_load(open(f"{config_dir()}/sweep/dcdm_paper.yaml"))
    assert sweep["hydra"]["sweeper"]["params"]["seed"] == "0,1,2"
    assert list(cfg.dcdm.archs) == ["paper", "additive"] and list(cfg.dcdm.dims) == [3]
    assert cfg.dcdm.nets == 1 and list(cfg.dcdm.max_n) == [256]
    assert list(cfg.dcdm.eval_factors) == [1, 2, 4] and cfg.dcdm.check_every == 10
    assert cfg.dcdm.train.lr == 1e-4 and cfg.dcdm.train.schedule == "none"
    assert cfg.dcdm.train.optimizer == "adam" and cfg.dcdm.train.batch_size == 10
    assert list(cpu.dcdm.archs) == ["additive", "paper"] and cpu.dcdm.nets == 3
    assert cpu.dcdm.train.lr == 1e-3 and cpu.dcdm.train.epochs == 2
    assert "train" not in cpu


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


# -- figures ---------------------------------------------------------------------------------------
def _solves(converged_paper=False):
    """Solve records of a 2-D smoke-like run: residuals falling at each solver's rate, the
    classical ones' iterations growing with n, DCDM's (two nets) flat, the paper net's stuck."""
    recs = []
    for n in (16, 32, 64):
        for scene_name in ("sphere", "two_obstacles"):
            for solver, arch, seed, its in (("cg", None, None, 3 * n), ("jacobi", None, None, 3 * n),
                                            ("mg", None, None, 4), ("dcdm", "additive", 1, 30),
                                            ("dcdm", "additive", 2, 34), ("dcdm", "paper", 3, 300)):
                stuck = arch == "paper" and not converged_paper
                res = [1.0 if stuck else 1e-4 ** (k / its) for k in config.kept(its)]
                recs.append({"part": "solve", "dim": 2, "n": n, "scene": scene_name,
                             "solver": solver, "arch": arch, "train_seed": seed, "iterations": its,
                             "converged": not stuck, "residuals": res})
    return recs


def _drawn(recs) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}

    def save(fig, name):
        out[name] = (problems(fig), fig.get_suptitle())
        plt.close(fig)

    exp.figures(recs, exp.Config(), save)
    return out


def test_figures_read_on_their_own():
    """Both figures pass the figure checks (tests/figure_checks.py: the legend once covered
    residual curves); the iterations figure names the solves it leaves out, and is not drawn
    without converged solves at two sizes."""
    out = _drawn(_solves())
    assert list(out) == ["residuals_2d", "iterations_2d"]
    for name, (found, _) in out.items():
        assert found == [], (name, found)
    assert "left out, not converged: dcdm paper (6 solves)" in out["iterations_2d"][1]
    assert "a line per trained net, 2 additive and 1 paper" in out["residuals_2d"][1]
    assert "left out" not in _drawn(_solves(converged_paper=True))["iterations_2d"][1]
    stuck = [dict(r, converged=False) for r in _solves()]
    assert list(_drawn(stuck)) == ["residuals_2d"]

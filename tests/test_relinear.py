"""ReLinear ablation: (Q)ResNet maths and sizes, strategy parameter groups, batched
augmentation, collapse detection, the claims on constructed records, figures, the sweep
config, the ablation report, and a smoke run through the CLI."""
from __future__ import annotations

import contextlib
import importlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from quadrun import stats
import torch

from quadrun.data.images import Augment, load_images, random_crop, random_flip
from quadrun.experiments import relinear as rl
from quadrun.experiments.relinear import config as rcfg
from quadrun.experiments.relinear import evidence as rev
from quadrun.experiments.relinear import lab
from quadrun.nn.evaluation import batch_statistics

rc = importlib.import_module("quadrun.experiments.relinear.claims")  # `rl.claims` is the function
from quadrun.nn.quadratic import QuadraticConv2d, roles
from quadrun.nn.resnet import count_parameters, load_conventional, qresnet, resnet
from quadrun.training import make_optimizer, make_schedule
from conftest import run_folders, summary
from figure_checks import problems
from quadrun.errors import ConfigError


# -- models ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["full", "compact"])
def test_relinear_qresnet_computes_the_resnet(form):
    torch.manual_seed(0)
    net = resnet(20).double()
    for m in net.modules():  # non-trivial BN state, so the check covers it
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    q = qresnet(20, form=form, init="relinear").double()
    load_conventional(q, net)
    x = torch.randn(8, 3, 32, 32, dtype=torch.double)
    for mode in (True, False):
        net.train(mode), q.train(mode)
        with torch.no_grad():
            assert torch.allclose(q(x), net(x), rtol=0, atol=1e-12)
    # control: moving a quadratic part off its reference init changes the function
    with torch.no_grad():
        q.stages[0][0].conv1.weight_b.fill_(0.01)
        assert not torch.allclose(q(x), net(x), atol=1e-6)


def test_parameter_counts_match_the_reference():
    counts = {name: count_parameters(m) for name, m in [
        ("resnet20", resnet(20)), ("qresnet20", qresnet(20)), ("resnet56", resnet(56)),
        ("qresnet56", qresnet(56)), ("qresnet110", qresnet(110))]}
    assert round(counts["resnet20"] / 1e6, 3) == 0.270
    assert round(counts["qresnet20"] / 1e6, 3) == 0.806
    assert round(counts["resnet56"] / 1e6, 3) == 0.853
    assert round(counts["qresnet56"] / 1e6, 3) == 2.555
    assert round(counts["qresnet110"] / 1e6, 3) == 5.178
    # compact drops W_g, b_g; ReZero adds one scalar per block (9 blocks in depth 20)
    conv_g = sum(m.weight_g.numel() + m.bias_g.numel() for m in qresnet(20).modules()
                 if isinstance(m, QuadraticConv2d))
    assert count_parameters(qresnet(20, form="compact")) == counts["qresnet20"] - conv_g
    assert count_parameters(qresnet(20, rezero=True)) == counts["qresnet20"] + 9


def test_option_a_shortcut_has_no_parameters_and_right_shapes():
    net = resnet(20)
    shapes = []
    hook = lambda _m, _i, out: shapes.append(tuple(out.shape))
    for stage in net.stages:
        stage.register_forward_hook(hook)
    net(torch.randn(2, 3, 32, 32))
    assert shapes == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    assert not any("shortcut" in n for n, _ in net.named_parameters())


# -- strategies ------------------------------------------------------------------------------------
TRAIN = SimpleNamespace(lr=0.1, weight_decay=1e-4, optimizer="sgd", momentum=0.9,
                        nesterov=False, schedule="multistep", milestones=[2], lr_decay=0.1,
                        epochs=3)


def _cfg(strategy, **kw):
    base = dict(strategy=strategy, depth=20, form="full", width=4, gamma=None, alpha=1e-3,
                beta=1e-5)
    return SimpleNamespace(**{**base, **kw})


def _data():
    return SimpleNamespace(num_classes=10, shape=(3, 8, 8))


@pytest.mark.parametrize("strategy", rcfg.STRATEGIES)
def test_strategy_groups(strategy):
    cfg = _cfg(strategy)
    model = lab.build_model(cfg, _data())
    groups = lab.strategy_groups(model, cfg, TRAIN)
    by_name = {g["name"]: g for g in groups}
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each exactly once
    role = {id(p): r for p, r in roles(model)}
    for g in groups:
        assert all(role[id(p)] == g["name"] for p in g["params"])
    quads = [m for m in model.modules() if isinstance(m, QuadraticConv2d)]
    alphas = [m.alpha for m in model.modules() if getattr(m, "alpha", None) is not None]
    assert len(alphas) == (9 if strategy.endswith("_rezero") else 0)
    assert all(role[id(a)] == "linear" for a in alphas)
    if strategy.startswith("conventional"):
        assert set(by_name) == {"linear"} and not quads
        return
    assert set(by_name) == {"linear", "quad_g", "quad_b"} and len(quads) == 18
    gamma = {"relinear_sg": 1e-5, "relinear_rezero": 1e-3}.get(strategy, 0.1)
    decay = 0.0 if strategy == "relinear_sw" else 1e-4
    assert by_name["linear"]["lr"] == 0.1 and by_name["linear"]["weight_decay"] == 1e-4
    for r in ("quad_g", "quad_b"):
        assert by_name[r]["lr"] == gamma and by_name[r]["weight_decay"] == decay
    q = quads[0]
    if strategy == "plain":  # every part random
        assert q.weight_g.abs().sum() > 0 and q.weight_b.abs().sum() > 0
    else:  # starts as the conventional neuron
        assert q.weight_g.abs().sum() == 0 and torch.all(q.bias_g == 1)
        assert q.weight_b.abs().sum() == 0 and q.bias_b.abs().sum() == 0


def test_gamma_override_and_its_schedule():
    cfg = _cfg("relinear_sg", gamma=3e-4)
    model = lab.build_model(cfg, _data())
    opt = make_optimizer(lab.strategy_groups(model, cfg, TRAIN), TRAIN)
    sched = make_schedule(opt, TRAIN, steps_per_epoch=5)
    lrs = []
    for _ in range(12):
        lrs.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert lrs[0]["quad_g"] == 3e-4 and lrs[0]["linear"] == 0.1
    assert math.isclose(lrs[11]["quad_b"], 3e-5) and math.isclose(lrs[11]["linear"], 0.01)


def test_shrink_weights_penalty_gradient():
    cfg = _cfg("relinear_sw", alpha=0.5, beta=0.25)
    model = lab.build_model(cfg, _data())
    q = next(m for m in model.modules() if isinstance(m, QuadraticConv2d))
    with torch.no_grad():
        q.weight_g.normal_()
        q.weight_b.normal_()
    lab.shrink_penalty(cfg.alpha, cfg.beta)(model).backward()
    assert torch.allclose(q.weight_g.grad, 2 * 0.5 * q.weight_g + 0.25 * q.weight_g.sign())
    assert torch.allclose(q.weight_b.grad, 2 * 0.5 * q.weight_b + 0.25 * q.weight_b.sign())
    assert q.weight_r.grad is None and q.bias_g.grad is None  # only W_g, W_b are shrunk


# -- data and evaluation ---------------------------------------------------------------------------
def test_batched_crop_and_flip():
    x = torch.arange(3 * 2 * 5 * 5, dtype=torch.float32).view(3, 2, 5, 5)
    torch.manual_seed(1)
    out = random_crop(x, 2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(3):  # each image is some 5x5 window of its own padded image
        windows = [padded[i, :, a:a + 5, b:b + 5] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    flipped = random_flip(x)
    for i in range(3):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    torch.manual_seed(0)
    many = random_flip(torch.arange(1000.).view(1000, 1, 1, 1).expand(1000, 1, 1, 2).contiguous()
                       * torch.tensor([1., -1.]).view(1, 1, 1, 2))
    assert 400 < int((many[:, 0, 0, 0] < 0).sum()) < 600  # about half flipped


def test_augment_normalises_like_the_test_path():
    data = load_images("synthetic", "unused", torch.device("cpu"), train_size=64,
                       test_size=64, image_size=8)
    x, y = Augment(data, pad=0, flip=False)((data.test_x, data.test_y))
    ref = next(data.test_batches(64))[0]
    assert torch.equal(x, ref) and torch.equal(y, data.test_y)
    assert abs(float(data.normalise(data.train_x).mean())) < 1e-4


def test_batch_statistics_leave_running_stats_alone():
    model = resnet(20, width=4)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode(), batch_statistics(model):
        assert all(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        model(torch.randn(16, 3, 8, 8))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in model.modules())
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_collapse_rule():
    hist = [{"epoch": e, "test/acc": a} for e, a in
            [(1, 10.5), (2, 60.0), (9, 11.0), (10, 90.0), (12, 91.0)]]
    # evaluations before collapse_epochs are not judged: a slow start is no collapse
    assert lab.collapse(hist, "completed", 12, 10.0, min_epochs=10, margin=2.0) == (False, None, None)
    # from collapse_epochs on, an accuracy within the margin of chance is a collapse
    flag, reason, at = lab.collapse(hist, "completed", 12, 10.0, min_epochs=9, margin=2.0)
    assert (flag, at) == (True, 9) and reason.startswith("test accuracy 11.0% at epoch 9")
    late = hist + [{"epoch": 13, "test/acc": 11.9}]  # a late collapse counts too
    assert lab.collapse(late, "completed", 13, 10.0, 10, 2.0)[:3:2] == (True, 13)
    assert lab.collapse(late, "completed", 13, 10.0, 10, 1.5) == (False, None, None)  # 11.9 > 11.5
    nan = hist + [{"epoch": 13, "test/acc": float("nan")}]
    assert lab.collapse(nan, "completed", 13, 10.0, 10, 2.0)[0] is True
    # too short to judge: null with the reason, whatever the accuracies say
    flag, reason, at = lab.collapse(hist[:2], "completed", 2, 10.0, 10, 2.0)
    assert flag is None and at is None
    assert reason == "not judged: 2 epochs trained, fewer than relinear.collapse_epochs=10"
    # a non-finite loss is a collapse at any epoch, even the first
    assert lab.collapse([], "diverged", 1, 10.0, 10, 2.0) == \
        (True, "non-finite training loss in epoch 1", 1)


# -- claims on constructed records ------------------------------------------------------------------
def _rec(strategy, seed, acc=90.0, collapsed=False, best=None, history=None, **kw):
    """A record in measure's field order."""
    reason = {True: "test accuracy 10.0% at epoch 12 (chance 10.0%, margin 2)",
              None: "not judged: 2 epochs trained, fewer than relinear.collapse_epochs=10"}
    r = {"strategy": strategy, "depth": 20, "form": "full", "status": "completed",
         "seed": seed, "dataset": "digits", "train_images": 200, "test_images": 500,
         "test/acc": acc, "test/acc_best": acc + 1 if best is None else best, "best_epoch": 28,
         "test/acc_batchstats": acc + 2, "collapsed": collapsed,
         "collapse_reason": reason.get(collapsed), "collapse_epoch": 12 if collapsed else None,
         "params": 270 if strategy == "conventional" else 806}
    if history is not None:
        r["history"] = history
    return {**r, **kw}


def _runs(strategy, flags=None, accs=None):
    """Records of one strategy: collapse flags and/or accuracies, one per seed."""
    n = len(flags if flags is not None else accs)
    flags = flags if flags is not None else [False] * n
    accs = accs if accs is not None else [90.0] * n
    return [_rec(strategy, i, acc=a, collapsed=f) for i, (f, a) in enumerate(zip(flags, accs))]


def _claims(records):
    return {c["id"]: c for c in rl.claims(records, rl.Config())}


def test_collapse_claim_verdicts():
    plain = _runs("plain", flags=[True, True, True, True, False])        # 4/5
    fewer = _claims(plain + _runs("relinear_sg", flags=[False] * 5))     # 0/5: p = 6/252
    c = fewer["collapse.relinear_sg"]
    assert c["verdict"] == "holds" and c["values"]["p_fewer"] == pytest.approx(6 / 252)
    assert c["measured"].startswith("collapses (95 % interval): relinear_sg 0/5 [0, 0.52]; "
                                    "plain 4/5 [0.28, 0.99]; p(fewer) 0.0238")
    assert c["values"]["rate_high"] == pytest.approx(1 - 0.025 ** 0.2)
    # the same counts the other way round: the ReLinear strategy collapses more
    more = _claims(_runs("plain", flags=[False] * 5)
                   + _runs("relinear_sw", flags=[True, True, True, True, False]))
    assert more["collapse.relinear_sw"]["verdict"] == "fails"
    assert more["collapse.relinear_sw"]["values"]["p_more"] == pytest.approx(6 / 252)
    # 1/3 vs 2/3: p(fewer) = 0.5, p(more) = 0.95
    close = _claims(_runs("plain", flags=[True, True, False])
                    + _runs("relinear_rezero", flags=[True, False, False]))
    assert close["collapse.relinear_rezero"]["verdict"] == "inconclusive"
    assert close["collapse.relinear_rezero"]["values"]["p_fewer"] == pytest.approx(0.5)
    assert "seeds per strategy would decide" in close["collapse.relinear_rezero"]["why"]
    # 0/4 vs 4/4: p = 1 / C(8, 4) = 1/70
    edge = _claims(_runs("plain", flags=[True] * 4) + _runs("relinear_sg", flags=[False] * 4))
    assert edge["collapse.relinear_sg"]["verdict"] == "holds"
    assert edge["collapse.relinear_sg"]["values"]["p_fewer"] == pytest.approx(1 / 70)
    # nothing collapsed anywhere: nothing to prevent
    calm = _claims(_runs("plain", flags=[False] * 4) + _runs("relinear_sg", flags=[False] * 4))
    assert calm["collapse.relinear_sg"]["verdict"] == "inconclusive"
    assert "none to prevent" in calm["collapse.relinear_sg"]["why"]
    # a strategy without runs, or no plain runs: not measured, naming the sweep
    for c in (fewer["collapse.relinear_sw"], _claims(_runs("relinear_sg", flags=[False] * 5))
              ["collapse.relinear_sg"]):
        assert c["verdict"] == "not_measured" and rc.ABLATION in c["why"]
    # records whose collapse could not be judged (collapsed: None) are not counted
    unjudged = [_rec("relinear_sg", 9, collapsed=None)] + plain + _runs("relinear_sg", flags=[False] * 5)
    c = _claims(unjudged)["collapse.relinear_sg"]
    assert (c["values"]["runs"], c["values"]["not_judged"]) == (5, 1)
    assert "relinear_sg 0/5 [0, 0.52], 1 not judged" in c["measured"] and c["verdict"] == "holds"
    # only unjudged runs (a smoke-length ablation): not measured, saying why
    short = _claims([_rec(s, i, collapsed=None) for s in ("plain", "relinear_sg") for i in range(3)])
    c = short["collapse.relinear_sg"]
    assert c["verdict"] == "not_measured" and "none judged" in c["why"]
    assert "relinear.collapse_epochs" in c["why"]


def test_accuracy_claim_verdicts():
    conv = _runs("conventional", accs=[90.0, 91.0, 92.0])
    better = _claims(conv + _runs("relinear_sg", accs=[94.0, 95.0, 96.0]))["accuracy.relinear_sg"]
    # equal variances (1) and n = 3 each: Welch = pooled t, dof 4, half-width t_.975,4 * sqrt(2/3)
    half = 2.7764451051977987 * math.sqrt(2 / 3)
    assert better["verdict"] == "holds"
    assert better["values"]["difference"] == pytest.approx(4.0)
    assert (better["values"]["low"], better["values"]["high"]) == pytest.approx((4 - half, 4 + half))
    assert better["values"]["best_difference"] == pytest.approx(4.0)
    assert "test/acc" in better["target"] and "final eval-mode" in better["target"]
    worse = _claims(_runs("conventional_rezero", accs=[90.0, 91.0, 92.0])
                    + _runs("relinear_rezero", accs=[86.0, 87.0, 88.0]))["accuracy.relinear_rezero"]
    assert worse["verdict"] == "fails" and worse["values"]["difference"] == pytest.approx(-4.0)
    assert worse["values"]["control"] == "conventional_rezero"
    # rezero is never compared with the conventional net without ReZero
    assert _claims(conv + _runs("relinear_rezero", accs=[96.0, 97.0, 98.0]))[
        "accuracy.relinear_rezero"]["verdict"] == "not_measured"
    noisy = _claims(conv + _runs("relinear_sg", accs=[88.0, 93.0, 96.0]))["accuracy.relinear_sg"]
    assert noisy["verdict"] == "inconclusive" and noisy["values"]["low"] < 0 < noisy["values"]["high"]
    one_each = _claims(_runs("conventional", accs=[90.0]) + _runs("relinear_sg", accs=[99.0]))
    assert one_each["accuracy.relinear_sg"]["verdict"] == "inconclusive"
    assert one_each["accuracy.relinear_sg"]["values"]["difference"] == pytest.approx(9.0)
    # no conventional runs: not measured
    alone = _claims(_runs("relinear_sg", accs=[94.0, 95.0]))["accuracy.relinear_sg"]
    assert alone["verdict"] == "not_measured" and rc.ABLATION in alone["why"]


def test_one_run_measures_no_claim():
    out = rl.claims([_rec("relinear_sg", 0)], rl.Config())
    assert [c["id"] for c in out] == [
        "collapse.plain", "collapse.relinear_sg", "collapse.relinear_sw",
        "collapse.relinear_rezero", "failed.plain", "failed.relinear_sg", "failed.relinear_sw",
        "failed.relinear_rezero", "accuracy.relinear_sg", "accuracy.relinear_sg_matched",
        "accuracy.relinear_rezero", "accuracy.relinear_sw"]
    assert all(c["verdict"] == "not_measured" and rc.ABLATION in c["why"] for c in out)


def test_higher_risk_of_collapse_than_conventional():
    """collapse.plain and failed.plain: MORE events in plain than in the conventional net
    (the abstract's "higher risk of collapse than the conventional counterpart")."""
    conv = _runs("conventional", flags=[False] * 6, accs=[90.0] * 6)
    risky = _claims(conv + _runs("plain", flags=[True] * 5 + [False], accs=[12.0] * 5 + [88.0]))
    c = risky["collapse.plain"]
    assert c["verdict"] == "holds" and c["values"]["p"] == pytest.approx(c["values"]["p_more"])
    assert c["values"]["reference"] == "conventional" and c["source"].endswith("abstract")
    # 5/6 vs 0/6: all 5 events in plain's 6 of 12 runs, C(5,5) C(7,1) / C(12,6)
    assert c["values"]["p_more"] == pytest.approx(7 / 924)
    assert risky["failed.plain"]["verdict"] == "holds"       # 5 of 6 below 45 %
    safe = _claims(_runs("conventional", flags=[True] * 5 + [False])
                   + _runs("plain", flags=[False] * 6))
    assert safe["collapse.plain"]["verdict"] == "fails"
    even = _claims(_runs("conventional", flags=[True, False, False])
                   + _runs("plain", flags=[True, True, False]))
    assert even["collapse.plain"]["verdict"] == "inconclusive"
    assert "16 seeds per strategy would decide" in even["collapse.plain"]["why"]


def test_failed_training_rule():
    """failed: final eval-mode test/acc below half the conventional mean (here 45 %);
    a non-finite accuracy counts as failed; unjudged collapse flags do not matter."""
    conv = _runs("conventional", accs=[88.0, 90.0, 92.0])
    plain = [_rec("plain", i, acc=a, collapsed=None) for i, a in
             enumerate([20.0, 44.9, float("nan"), 45.0, 80.0])]
    sg = _runs("relinear_sg", accs=[89.0] * 5)
    out = _claims(conv + plain + sg)
    f = out["failed.relinear_sg"]
    assert f["values"]["threshold"] == pytest.approx(45.0)
    assert (f["values"]["events"], f["values"]["reference_events"]) == (0, 3)  # 20, 44.9, nan
    assert f["verdict"] == "inconclusive"   # 0/5 vs 3/5: p = 1/12
    assert f["values"]["p_fewer"] == pytest.approx(1 / 12)
    assert "below half the conventional" in f["setup"] and "failed trainings" in f["target"]
    many = _claims(conv + _runs("plain", accs=[20.0] * 6) + _runs("relinear_sg", accs=[89.0] * 6))
    assert many["failed.relinear_sg"]["verdict"] == "holds"
    worse = _claims(conv + _runs("plain", accs=[89.0] * 6) + _runs("relinear_sw", accs=[20.0] * 6))
    assert worse["failed.relinear_sw"]["verdict"] == "fails"
    # no conventional runs: no threshold, not measured
    assert _claims(plain + sg)["failed.relinear_sg"]["verdict"] == "not_measured"


def test_accuracy_claims_name_their_controls():
    conv = _runs("conventional", accs=[90.0, 91.0, 92.0])
    matched = [_rec("conventional_matched", i, acc=a, params=790, width=14)
               for i, a in enumerate([97.0, 98.0, 99.0])]
    sg = _runs("relinear_sg", accs=[94.0, 95.0, 96.0])
    sw = _runs("relinear_sw", accs=[30.0, 25.0, 20.0])
    out = _claims(conv + matched + sg + sw)
    assert out["accuracy.relinear_sg"]["verdict"] == "holds"
    m = out["accuracy.relinear_sg_matched"]
    assert m["verdict"] == "fails" and m["values"]["control"] == "conventional_matched"
    assert m["extension"] is True and "as many parameters" in m["statement"]
    assert "control conventional_matched (width 14, 790 parameters; relinear_sg: 806 " \
        "parameters)" in m["setup"]
    assert out["accuracy.relinear_sw"]["verdict"] == "fails"
    assert "control conventional" in out["accuracy.relinear_sw"]["setup"]
    noisy = _claims(conv + _runs("relinear_sg", accs=[85.0, 95.0, 99.0]))["accuracy.relinear_sg"]
    assert noisy["verdict"] == "inconclusive"
    # the minimum detectable difference and the seeds that would detect 3 points
    v = out["accuracy.relinear_sg"]["values"]
    from quadrun.stats import detectable_difference, runs_needed
    assert v["detectable"] == pytest.approx(detectable_difference(1.0, 3, 1.0, 3))
    assert v["runs_for_3_points"] == runs_needed(1.0, 1.0, 3.0)
    assert "detectable difference at 80 % power" in out["accuracy.relinear_sg"]["measured"]
    assert "seeds per arm would resolve 3 points" in noisy["why"]
    # the p-value matches the interval: below 0.05 exactly when the interval is above 0
    for c in (out["accuracy.relinear_sg"], noisy, m):
        assert (c["values"]["p"] < 0.05) == (c["verdict"] == "holds")


def test_holm_adjusts_across_the_claims():
    conv = _runs("conventional", flags=[False] * 6, accs=[90.0, 91.0, 92.0, 90.0, 91.0, 92.0])
    plain = _runs("plain", flags=[True] * 4 + [False] * 2, accs=[12.0] * 4 + [85.0, 86.0])
    sg = _runs("relinear_sg", flags=[False] * 6, accs=[92.0, 93.0, 94.0, 92.0, 93.0, 94.0])
    out = rl.claims(conv + plain + sg, rl.Config())
    with_p = [c for c in out if c["values"].get("p") is not None]
    from quadrun.stats import holm
    assert [c["values"]["p_holm"] for c in with_p] == pytest.approx(
        holm([c["values"]["p"] for c in with_p]))
    assert all(c["values"]["holm_family"] == len(with_p) for c in with_p)
    assert all(c["values"]["p_holm"] >= c["values"]["p"] for c in with_p)
    assert all("Holm-adjusted over" in c["measured"] for c in with_p)
    assert all("p_holm" not in c["values"] for c in out if c["verdict"] == "not_measured")


def test_claims_name_gamma_and_the_data():
    conv = _runs("conventional", accs=[90.0, 91.0])
    out = {c["id"]: c for c in rl.claims(conv + _runs("relinear_sg", accs=[92.0, 93.0]),
                                          rl.Config())}
    setup = out["accuracy.relinear_sg"]["setup"]
    assert "dataset digits" in setup and "200 training images" in setup and "width 8" in setup
    assert "chosen on the validation split" in setup and "the paper's: 1e-5 sg" in setup
    assert "gamma" not in out["accuracy.relinear_sw"]["setup"]
    paper = rl.Config(dataset="cifar10", train_size=0, val_size=0, width=16, pad=4, flip=True,
                      gamma_default="paper")
    paper.train.epochs, paper.train.batch_size = 200, 128
    out = {c["id"]: c for c in rl.claims(conv, paper)}
    assert out["accuracy.relinear_sg"]["setup"] == "control conventional (270 parameters)"
    assert out["collapse.relinear_sg"]["setup"] == ""            # the paper's recipe


@pytest.mark.parametrize("truth", [0.0, 3.0])
def test_accuracy_rule_error_rates(truth):
    """Simulated studies with a known difference (normal accuracies, sd 2 points, the
    ablation's 15 seeds an arm): with none, the claim holds in at most ~2.5 % of studies
    (one side of a 95 % interval); with 3 points it holds in >= 80 % (the design's power)."""
    rng = np.random.default_rng(7)
    rule = rc.CLAIMS[8].rule                      # accuracy.relinear_sg: Above(0)
    held, runs = 0, 1000
    for _ in range(runs):
        records = (_runs("conventional", accs=list(rng.normal(90, 2, 15)))
                   + _runs("relinear_sg", accs=list(rng.normal(90 + truth, 2, 15))))
        ev = rc.accuracy_evidence("relinear_sg", "conventional", rc.by_strategy(records))
        held += rule.decide(ev)[0] == "holds"
    rate = held / runs
    if truth == 0:   # 2.5 % plus three Monte Carlo standard errors
        assert rate <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / runs)
    else:            # the design's power minus three standard errors
        assert rate >= 0.8 - 3 * math.sqrt(0.8 * 0.2 / runs)


@pytest.mark.parametrize("truth", [(0.4, 0.4), (0.4, 0.0)])
def test_collapse_rule_error_rates(truth):
    """Simulated collapse counts at 15 seeds an arm: equal rates (0.4, 0.4) make the claim
    hold in at most 5 % of studies; plain at 0.4 vs ReLinear at 0 in most of them."""
    rng = np.random.default_rng(11)
    p_plain, p_mine = truth
    held, runs = 0, 400
    rule = rc.CLAIMS[1].rule                      # collapse.relinear_sg: fewer than plain
    for _ in range(runs):
        k0, k = rng.binomial(15, p_plain), rng.binomial(15, p_mine)
        records = (_runs("plain", flags=[True] * k0 + [False] * (15 - k0))
                   + _runs("relinear_sg", flags=[True] * k + [False] * (15 - k)))
        ev = rc.event_evidence("collapse", "relinear_sg", "plain", rc.by_strategy(records), None)
        held += rule.decide(ev)[0] == "holds"
    rate = held / runs
    assert rate <= 0.05 if p_mine == p_plain else rate >= 0.8


def test_summarize_puts_the_headline_at_the_top():
    r = _rec("plain", 0, acc=55.5, collapsed=True, status="diverged", history=[{"epoch": 1}])
    s = rl.summarize([r], rl.Config())
    assert s["status"] == "diverged" and s["test/acc"] == 55.5 and s["collapsed"] is True
    assert s["strategy"] == "plain" and s["params"] == 806 and "history" not in s


def test_figures_from_records(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = []

    def save(fig, name):
        fig.savefig(tmp_path / f"{name}.png")
        plt.close(fig)
        saved.append(name)

    def hist(acc):
        return [{"epoch": e, "train/loss": 2.0 / e, "test/acc": acc * e / 3,
                 "test/acc_batchstats": acc, "norm/W_g": 0.01 * e, "norm/W_b": 0.0}
                for e in (1, 2, 3)]
    records = [_rec("conventional", 0, history=hist(90)), _rec("relinear_sg", 0, history=hist(92)),
               _rec("relinear_sg", 1, history=hist(95)), _rec("plain", 0, collapsed=True)]
    rl.figures(records, rl.Config(), save)
    # the three curve figures (a panel per strategy with a history), then the comparison
    assert saved == ["loss", "accuracy", "norms", "strategies"]
    assert all((tmp_path / f"{n}.png").stat().st_size > 10_000 for n in saved)
    saved.clear()
    rl.figures([_rec("relinear_sg", 0, history=hist(92))], rl.Config(), save)
    assert saved == ["loss", "accuracy", "norms"]  # one strategy: nothing to compare


def test_strategies_figure_ranks_by_final_accuracy(tmp_path, monkeypatch):
    """The accuracy panel orders the strategies by mean final test/acc, not by the best
    epoch's: here relinear_sg is best at the end and conventional at its best epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = []

    def save(fig, name):
        if name == "strategies":
            ticks.append([t.get_text().split("\n")[0] for t in fig.axes[0].get_xticklabels()])
        plt.close(fig)

    records = (_runs("conventional", accs=[90.0, 91.0])
               + [_rec("relinear_sg", i, acc=a, best=a) for i, a in enumerate([93.0, 94.0])]
               + [_rec("plain", i, acc=a, best=99.0) for i, a in enumerate([40.0, 60.0])])
    for r in records[:2]:
        r["test/acc_best"] = 99.5
    rl.figures(records, rl.Config(), save)
    assert ticks == [["relinear_sg", "conventional", "plain"]]


def test_figures_read_on_their_own():
    """Every figure passes the figure checks (tests/figure_checks.py): one strategy (the
    accuracy caption once filled two thirds of the canvas), four strategies (two rows of
    panels, 30 epochs, five seeds, a collapse); the strategies figure's two panels list the
    strategies in the same (ranked) order, each with its run count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found, ticks = {}, {}

    def save(fig, name):
        found[name] = problems(fig)
        if name == "strategies":
            ticks[name] = [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes]
        plt.close(fig)

    def hist(top, epochs=30, fall=None):
        return [{"epoch": e, "train/loss": 2.3 / e ** 0.5,
                 "test/acc": 10.0 if fall and e >= fall else top * min(1.0, e / 10),
                 "test/acc_batchstats": top, "norm/W_g": 0.001 * e, "norm/W_b": 0.002 * e}
                for e in range(1, epochs + 1)]

    rl.figures([_rec("relinear_sg", 0, history=hist(90, epochs=2), collapsed=None)],
               rl.Config(), save)
    assert list(found) == ["loss", "accuracy", "norms"]
    for name, problem in found.items():
        assert problem == [], (name, problem)
    found.clear()
    records = [_rec(s, seed, acc=70 + 5 * i + seed, history=hist(70 + 5 * i + seed))
               for i, s in enumerate(("conventional", "plain", "relinear_sg", "relinear_rezero"))
               for seed in range(5)]
    records[5] = _rec("plain", 0, acc=10.0, collapsed=True, history=hist(60, fall=12))
    rl.figures(records, rl.Config(), save)
    assert list(found) == ["loss", "accuracy", "norms", "strategies"]
    for name, problem in found.items():
        assert problem == [], (name, problem)
    left, right = ticks["strategies"]
    # the same strategies in the same order; the right panel says how many runs were judged
    assert [t.split("\n")[0] for t in left] == [t.split("\n")[0] for t in right]
    assert left[0] == "relinear_rezero\n(5 runs)" and right[0] == "relinear_rezero\n(5 of 5 judged)"


# -- configs and the CLI ---------------------------------------------------------------------------
def test_choices_match_the_library():
    from quadrun.data.images import DATASETS
    from quadrun.nn.resnet import BLOCKS

    assert rcfg.DATASETS == DATASETS and rcfg.DEPTHS == tuple(sorted(BLOCKS))


def _sweep_params(name):
    """The sweeper's params of configs/sweep/NAME.yaml."""
    import yaml

    from quadrun.cli import config_dir

    text = (Path(config_dir()) / "sweep" / f"{name}.yaml").read_text()
    return yaml.safe_load(text)["hydra"]["sweeper"]["params"]


def test_ablation_sweep_config(compose):
    cfg, _ = compose("experiment=relinear", "sweep=relinear_ablation")
    paper, _ = compose("experiment=relinear", "scale=paper", "sweep=relinear_paper")
    params = _sweep_params("relinear_ablation")
    assert params["relinear.strategy"].split(",") == list(rcfg.STRATEGIES)
    assert params["seed"] == "range(300,315)"
    # the sweep (params and grids) runs exactly config.ABLATION_SEEDS per strategy: fresh
    # seeds, none the pilot's, the gamma choice's or the sizing run's (all exploratory)
    import yaml

    from quadrun.cli import config_dir
    rl_claims = importlib.import_module("quadrun.experiments.relinear.claims")
    from quadrun.sweeps import grid_jobs

    text = (Path(config_dir()) / "sweep" / "relinear_ablation.yaml").read_text()
    sweeper = yaml.safe_load(text)["hydra"]["sweeper"]
    seeds = {}
    for job in grid_jobs(sweeper["params"], sweeper["grids"], ["experiment=relinear"]):
        o = dict(x.split("=", 1) for x in job)
        seeds.setdefault(o["relinear.strategy"], []).append(int(o["seed"]))
    assert {s: tuple(v) for s, v in seeds.items()} == rcfg.ABLATION_SEEDS
    assert sum(len(v) for v in seeds.values()) == 255
    used = set(rcfg.PILOT_SEEDS) | set(rcfg.TUNING_SEEDS) | set(rcfg.SIZING_SEEDS)
    assert not used & set().union(*seeds.values())
    # each collapse claim: >= 15 runs an arm; each accuracy claim but relinear_sw's: a
    # 3-point difference detectable at 80 % power at the sizing run's spreads
    assert min(rcfg.ABLATION_RUNS.values()) >= 15
    planned = {cid: stats.detectable_difference(rcfg.SIZING_SD[a], rcfg.ABLATION_RUNS[a],
                                          rcfg.SIZING_SD[b], rcfg.ABLATION_RUNS[b], level=0.95)
               for cid, (a, b) in rl_claims.ACCURACY_PAIRS.items()}
    assert planned["accuracy.relinear_sg"] == pytest.approx(2.76, abs=0.01)
    assert planned["accuracy.relinear_sg_matched"] == pytest.approx(2.88, abs=0.01)
    assert planned["accuracy.relinear_rezero"] == pytest.approx(2.02, abs=0.01)
    assert planned["accuracy.relinear_sw"] == pytest.approx(9.66, abs=0.01)   # not sized: stated
    # fewer runs of relinear_sg would miss the 3 points: the plan is not padded
    assert stats.detectable_difference(8.57, 90, 4.35, 50, level=0.95) > 3
    grid = _sweep_params("relinear_gamma_grid")
    assert grid["relinear.strategy"].split(",") == list(rcfg.CPU_GAMMA)
    assert [float(g) for g in grid["relinear.gamma"].split(",")] == list(rcfg.GAMMA_GRID)
    assert tuple(int(x) for x in grid["seed"].split(",")) == rcfg.TUNING_SEEDS
    assert cfg.relinear.val_size == 300 and cfg.relinear.gamma_default == "validation"
    assert (paper.relinear.val_size, paper.relinear.gamma_default) == (0, "paper")
    # the cpu scale (the dataclass defaults): digits with headroom
    assert cfg.scale == "cpu" and cfg.relinear.dataset == "digits"
    assert (cfg.relinear.train_size, cfg.relinear.test_size, cfg.relinear.pad) == (200, 500, 1)
    assert cfg.relinear.width == 8 and cfg.relinear.flip is False
    assert cfg.relinear.collapse_epochs == 10 and cfg.relinear.download is False
    t = cfg.relinear.train
    assert (t.epochs, t.batch_size, list(t.milestones), t.lr, t.weight_decay) == (30, 32, [15, 25], 0.1, 1e-4)
    assert t.epochs >= cfg.relinear.collapse_epochs  # every cpu-scale run is judged
    assert _sweep_params("relinear_paper")["relinear.depth"] == "20,56,110"
    assert paper.relinear.dataset == "cifar10" and paper.relinear.flip is True
    assert (paper.relinear.train_size, paper.relinear.pad, paper.relinear.width) == (0, 4, 16)
    t = paper.relinear.train
    assert list(t.milestones) == [100, 150] and t.optimizer == "sgd" and t.momentum == 0.9
    assert t.lr == 0.1 and t.batch_size == 128 and t.epochs == 200 and t.weight_decay == 1e-4


# -- the variants table: keys a strategy or dataset does not read -----------------------------------
def test_unused_gamma_is_reported_and_left_out_of_the_fingerprint(compose, cli):
    """`relinear.strategy=plain relinear.gamma=0.5`: one line saying gamma is unused; the
    fingerprint equals the run's without it. gamma still counts for relinear_sg."""
    from quadrun.identity import config_fingerprint

    def fingerprint(*overrides):
        return config_fingerprint(compose("experiment=relinear", *overrides)[0])

    plain = fingerprint("relinear.strategy=plain")
    assert fingerprint("relinear.strategy=plain", "relinear.gamma=0.5") == plain
    assert fingerprint("relinear.strategy=plain", "relinear.alpha=0.5") == plain
    assert fingerprint("relinear.strategy=relinear_sg", "relinear.gamma=0.5") != \
        fingerprint("relinear.strategy=relinear_sg")
    assert fingerprint("relinear.strategy=relinear_sw", "relinear.alpha=0.5") != \
        fingerprint("relinear.strategy=relinear_sw")
    assert fingerprint("relinear.image_size=16") == fingerprint()           # digits ignores it
    assert fingerprint("relinear.dataset=synthetic", "relinear.image_size=16") != \
        fingerprint("relinear.dataset=synthetic")
    r = cli("experiment=relinear", "scale=smoke", "threads=1", "relinear.strategy=plain",
            "relinear.gamma=0.5", "relinear.train.epochs=1")
    assert r.returncode == 0, r.stderr[-2000:]
    said = [line for line in r.stderr.splitlines() if "unused" in line]
    assert said == ["quadrun: relinear.gamma: unused, not read by strategy=plain (read by "
                    "relinear_sg, relinear_rezero); it does not change the result"]


def test_gamma_sweep_over_plain_is_one_group(tmp_path):
    """A sweep over gamma with strategy=plain is one group in quadrun-report, since plain
    does not read gamma; over relinear_sg the same sweep is one group per gamma."""
    from quadrun.report import build

    def job(folder, strategy, seed, gamma):
        d = folder / f"{strategy}_{seed}_{gamma}"
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(
            f"- experiment=relinear\n- relinear.strategy={strategy}\n- seed={seed}\n"
            f"- relinear.gamma={gamma}\n")
        (d / "config.yaml").write_text(f"experiment: relinear\nseed: {seed}\nrelinear:\n"
                                       f"  strategy: {strategy}\n  gamma: {gamma}\n")
        (d / "summary.json").write_text(json.dumps({
            "experiment": "relinear", "status": "completed",
            "records": [_rec(strategy, seed, acc=80.0 + seed)],
            "record_keys": ["strategy", "depth", "form"], "claims": []}))
    for name, strategy in (("plain", "plain"), ("sg", "relinear_sg")):
        for seed in (0, 1):
            for gamma in (0.001, 0.01, 0.1):
                job(tmp_path / name, strategy, seed, gamma)
    plain = build([tmp_path / "plain"], quiet=True)
    assert len(plain["studies"]) == 1 and len(plain["studies"][0].records) == 6
    sg = build([tmp_path / "sg"], quiet=True)
    assert len(sg["studies"]) == 3 and {len(s.records) for s in sg["studies"]} == {2}


def test_ablation_table_from_sweep_folder(tmp_path):
    """quadrun-report pools an ablation sweep into one study: the claims first, then one
    row per strategy with its collapse count."""
    from quadrun.report import build

    def job(i, strategy, acc, collapsed):
        d = tmp_path / str(i)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(
            f"- experiment=relinear\n- relinear.strategy={strategy}\n- seed={i}\n")
        (d / "config.yaml").write_text(f"experiment: relinear\nseed: {i}\n"
                                       f"relinear:\n  strategy: {strategy}\n")
        rec = _rec(strategy, i, acc=acc, collapsed=collapsed)
        (d / "summary.json").write_text(json.dumps({
            "experiment": "relinear", "status": "completed", "records": [rec],
            "record_keys": ["strategy", "depth", "form"], "claims": []}))
    for i, (strategy, acc, collapsed) in enumerate([
            ("plain", 10.0, True), ("plain", 12.0, True), ("plain", 10.0, True), ("plain", 12.0, True),
            ("relinear_sg", 95.0, False), ("relinear_sg", 97.0, False),
            ("relinear_sg", 95.0, False), ("relinear_sg", 97.0, False),
            ("conventional", 90.0, False), ("conventional", 92.0, False),
            ("conventional", 90.0, False), ("conventional", 92.0, False)]):
        job(i, strategy, acc, collapsed)
    result = build([tmp_path], quiet=True)
    text = (tmp_path / "report" / "table.md").read_text()
    assert text.index("Claims: relinear") < text.index("relinear: records")
    claims = {c["id"]: c for c in result["claims"]}
    assert "group" not in claims["collapse.relinear_sg"]       # one study: pooled strategies
    assert claims["collapse.relinear_sg"]["verdict"] == "holds"  # 0/4 vs 4/4, p = 1/70
    assert claims["accuracy.relinear_sg"]["verdict"] == "holds"  # +5 [3.0, 7.0]
    assert claims["collapse.relinear_sw"]["verdict"] == "not_measured"
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()
            if line.startswith("| ") and "strategy" not in line and "---" not in line
            and "claim" not in line}
    # final accuracy first (what the claims rank by), then the best epoch's, batch statistics
    assert text.index("test/acc |") < text.index("test/acc_best |") < text.index("collapsed |")
    assert rows["plain"] == "| plain | 11 ± 1.2 | 12 ± 1.2 | 13 ± 1.2 | 4/4 | 12 | 806 |"
    assert rows["relinear_sg"] == "| relinear_sg | 96 ± 1.2 | 97 ± 1.2 | 98 ± 1.2 | 0/4 | - | 806 |"
    assert rows["conventional"] == "| conventional | 91 ± 1.2 | 92 ± 1.2 | 93 ± 1.2 | 0/4 | - | 270 |"
    assert text.index("| conventional |") < text.index("| plain |") < text.index("| relinear_sg |")
    assert "depth: 20" in text and "count: 4" in text        # the same in every row: a header
    figures = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert figures == ["strategies.png"]                      # no histories: no curves


def test_smoke_run_records(tmp_path, compose):
    """What a smoke run records beyond the shared contract (tests/test_contract.py)."""
    from quadrun.runner import run

    cfg, _ = compose("experiment=relinear", "scale=smoke", "device=cpu", "threads=1")
    folder = tmp_path / "run"
    run(cfg, folder)
    s = summary(folder)
    for key in ("collapsed", "status", "strategy", "params", "test/acc", "test/acc_best",
                "test/acc_batchstats", "norm/quad_g", "norm/quad_b", "train/images_per_s"):
        assert key in s, key
    assert s["status"] == "completed" and s["strategy"] == "relinear_sg"
    assert s["params"] == count_parameters(qresnet(20, width=8))
    assert 0 <= s["test/acc"] <= 100 and s["test/acc_best"] >= s["test/acc"]
    assert s["quad_lr"] == rcfg.CPU_GAMMA["relinear_sg"]  # the cpu scale's gamma
    assert s["norm/quad_g"] > 1  # b_g starts at 1
    assert s["epochs"] == 2 and s["steps"] == 2 * 16 and s["train/images_per_s"] > 0
    assert s["record_keys"] == ["strategy", "depth", "form"]
    (rec,) = s["records"]
    assert (rec["strategy"], rec["depth"], rec["form"], rec["seed"]) == ("relinear_sg", 20, "full", 0)
    assert rec["test/acc"] == s["test/acc"] and rec["status"] == "completed"
    assert [h["epoch"] for h in rec["history"]] == [1, 2]
    assert set(rec["history"][0]) == set(rcfg.HISTORY_KEYS)
    assert rec["history"][-1]["test/acc"] == s["test/acc"]
    assert rec["history"][-1]["norm/W_g"] == pytest.approx(s["norm/W_g"])
    # two epochs are fewer than collapse_epochs: not judged, and said so
    assert s["collapsed"] is None and rec["collapsed"] is None and s["collapse_epoch"] is None
    assert s["collapse_reason"] == "not judged: 2 epochs trained, fewer than relinear.collapse_epochs=10"
    assert 1 <= s["best_epoch"] <= 2 and s["train_images"] == 512 and s["test_images"] == 256
    assert s["val_images"] == 64 and 0 <= s["val/acc"] <= 100 and s["width"] == 8
    assert {c["verdict"] for c in s["claims"]} == {"not_measured"}  # one run decides nothing
    metrics = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
    assert any("test/acc_batchstats" in m for m in metrics)


def test_model_init_comes_from_the_run_seed(tmp_path, monkeypatch, compose):
    """The model is built under derive_seed(seed, "relinear", "model"): the same seed gives
    the same initial weights, another seed others, and the global stream is left alone."""
    from quadrun.runner import run

    first, streams = {}, []

    def fit_once(model, *args, **kw):  # record the initial weights, train nothing
        first[len(first)] = {k: v.clone() for k, v in model.state_dict().items()}
        streams.append(torch.random.get_rng_state())
        raise RuntimeError("stop after the model is built")

    monkeypatch.setattr(lab, "fit", fit_once)
    for i, seed in enumerate([3, 3, 4]):
        cfg, _ = compose("experiment=relinear", "scale=smoke", "device=cpu", "threads=1",
                         f"seed={seed}", "relinear.strategy=plain")
        with pytest.raises(Exception):
            run(cfg, tmp_path / str(i))
    assert all(torch.equal(first[0][k], first[1][k]) for k in first[0])
    for seed, state in zip([3, 3, 4], streams):  # as the runner seeded it: nothing drawn
        assert torch.equal(state, torch.Generator().manual_seed(seed).get_state())
    assert not torch.equal(first[0]["stem.weight"], first[2]["stem.weight"])
    from quadrun.devices import seeded
    from quadrun.vocab import derive_seed
    with seeded(derive_seed(3, "relinear", "model")):
        ref = lab.build_model(SimpleNamespace(strategy="plain", depth=20, form="full", width=8),
                             SimpleNamespace(num_classes=10, shape=(3, 8, 8)))
    assert torch.equal(ref.state_dict()["stem.weight"], first[0]["stem.weight"])


def test_forced_divergence_is_a_collapse(tmp_path, monkeypatch, compose):
    """One training image holds an infinite pixel: the loss of its batch is non-finite,
    fit stops with "diverged", and the run is marked collapsed."""
    from quadrun.data import images
    from quadrun.runner import run

    load = images.load_images

    def poisoned(*args, **kw):
        data = load(*args, **kw)
        data.train_x[3, 0, 2, 2] = float("inf")
        return data

    monkeypatch.setattr(lab, "load_images", poisoned)
    cfg, _ = compose("experiment=relinear", "scale=smoke", "device=cpu", "threads=1",
                     "relinear.strategy=relinear_init")
    out = run(cfg, tmp_path / "run")
    s = summary(tmp_path / "run")
    assert out["status"] == s["status"] == "diverged"
    assert s["collapsed"] is True and s["collapse_reason"] == "non-finite training loss in epoch 1"
    assert s["collapse_epoch"] == 1  # judged although 1 epoch < collapse_epochs
    assert s["steps"] <= len(range(0, 512, 32))  # stopped within the first epoch
    assert s["test/acc"] is not None  # the diverged weights were still scored
    assert s["records"][0]["status"] == "diverged" and s["records"][0]["history"] == []


def test_gamma_zero_freezes_the_quadratic_parts(tmp_path, compose):
    """relinear.gamma=0 (the authors' compact trainer's default): W_b and c (and W_g, b_g
    in the full form) never move, while the linear parts train; the compact QResNet then
    stays the conventional net with biased convs."""
    from quadrun.runner import run

    for form in ("compact", "full"):
        cfg, _ = compose("experiment=relinear", "scale=smoke", "device=cpu", "threads=1",
                         "relinear.gamma=0", f"relinear.form={form}", "relinear.train.epochs=1",
                         "relinear.batchstat_eval=false")
        out = run(cfg, tmp_path / form)
        assert out["status"] == "completed" and out["quad_lr"] == 0.0
        assert out["norm/W_g"] == 0.0 and out["norm/W_b"] == 0.0
        assert out["norm/quad_b"] == 0.0  # c too
        expected_g = 0.0 if form == "compact" else math.sqrt(sum(  # b_g stays 1
            m.out_channels for m in qresnet(20, width=8).modules()
            if isinstance(m, QuadraticConv2d)))
        assert out["norm/quad_g"] == pytest.approx(expected_g)
        state = torch.load(tmp_path / form / "checkpoints" / "last.pt", weights_only=False)
        first = state["model"]["stages.0.0.conv1.weight_r"]
        with seeded_model("relinear_sg", form) as ref:
            assert not torch.equal(first, ref["stages.0.0.conv1.weight_r"])  # W_r trained


@contextlib.contextmanager
def seeded_model(strategy, form, seed=0):
    from quadrun.devices import seeded
    from quadrun.vocab import derive_seed

    with seeded(derive_seed(seed, "relinear", "model")):
        model = lab.build_model(SimpleNamespace(strategy=strategy, depth=20, form=form, width=8),
                               SimpleNamespace(num_classes=10, shape=(3, 8, 8)))
    yield model.state_dict()


def test_missing_cifar_is_one_line_naming_the_fix(tmp_path):
    """check() runs before anything exists: the message names the folder, the files and
    relinear.download=true; with a download asked for, an unwritable data_dir is refused."""
    from quadrun.schema import ConfigError

    cfg = SimpleNamespace(data_dir=str(tmp_path / "nothing" / "cifar"),
                          relinear=SimpleNamespace(dataset="cifar10", download=False,
                                                   train_size=0, val_size=5000))
    with pytest.raises(ConfigError) as err:
        rl.check(cfg)
    message = str(err.value)
    assert message.startswith(f"data_dir: CIFAR-10 is not in {tmp_path / 'nothing' / 'cifar'} ")
    for part in ("cifar-10-python.tar.gz", "cifar-10-batches-py/", "data_batch_1",
                 "data_batch_5", "test_batch", "batches.meta", "relinear.download=true"):
        assert part in message, part
    assert "\n" not in message and not (tmp_path / "nothing").exists()
    cfg.relinear.download = True
    rl.check(cfg)                              # asked for: allowed, nothing made yet
    assert not (tmp_path / "nothing").exists()
    blocked = tmp_path / "file"
    blocked.write_text("")
    cfg.data_dir = str(blocked / "cifar")
    with pytest.raises(ConfigError, match="not a writable folder"):
        rl.check(cfg)
    cfg.relinear.dataset = "digits"            # other datasets need nothing
    rl.check(cfg)


def test_welch_p_against_scipy():
    from scipy.stats import ttest_ind

    a, b = [94.0, 95.5, 96.0, 93.0], [90.0, 91.0, 92.5]
    ref = ttest_ind(a, b, equal_var=False).pvalue           # two-sided; a is above
    assert stats.welch_p(a, b) == pytest.approx(ref)
    assert stats.welch_p(b, a) == 1.0                           # the other direction: capped
    assert stats.welch_p([1.0, 1.0], [0.0, 0.0]) == 0.0 and stats.welch_p([1.0], [0.0, 2.0]) is None


# -- validation split, gamma, the parameter-matched control ----------------------------------------
def test_validation_split_is_stratified_disjoint_and_fixed():
    from quadrun.data.holdout import carve_validation, stratified_indices

    y = np.repeat(np.arange(10), [30, 25, 20, 20, 20, 20, 20, 20, 15, 10])
    idx = stratified_indices(y, 50, seed=3)
    counts = np.bincount(y[idx], minlength=10)
    assert len(idx) == 50 == len(set(idx.tolist()))
    assert np.all(np.abs(counts - np.bincount(y) * 50 / len(y)) < 1)   # each class its share
    assert np.array_equal(idx, stratified_indices(y, 50, seed=3))      # fixed by the seed
    assert not np.array_equal(idx, stratified_indices(y, 50, seed=4))
    data = load_images("digits", "unused", torch.device("cpu"), train_size=500, test_size=500)
    train, vx, vy = carve_validation(data, 300, seed=0)
    assert (len(train.train_y), len(vy), len(train.test_y)) == (200, 300, 500)
    flat = lambda x: {tuple(row) for row in x.flatten(1).tolist()}
    assert not flat(train.train_x) & flat(vx)                       # disjoint images...
    assert flat(train.train_x) | flat(vx) == flat(data.train_x)     # ...from the same pool
    # normalised with the remaining training images' statistics only
    assert abs(float(train.normalise(train.train_x).mean())) < 1e-4
    assert float(train.normalise(vx).mean()) != pytest.approx(0.0, abs=1e-4)
    unchanged, none_x, none_y = carve_validation(data, 0, seed=0)
    assert unchanged is data and len(none_y) == 0


def test_validation_objective_needs_a_validation_split(compose):
    cfg, _ = compose("experiment=relinear", "sweep=relinear_gamma")
    assert cfg.sweep.objective == "val/acc"          # tuning never reads test accuracy
    rl.check(cfg)
    cfg.relinear.val_size = 0
    with pytest.raises(ConfigError, match=r"^relinear\.val_size: 0 leaves no validation"):
        rl.check(cfg)


def test_gamma_defaults_by_scale():
    cpu = rl.Config(strategy="relinear_sg")
    assert rcfg.quad_lr(cpu) == rcfg.CPU_GAMMA["relinear_sg"]
    assert rcfg.quad_lr(rl.Config(strategy="relinear_sg", gamma_default="paper")) == 1e-5
    assert rcfg.quad_lr(rl.Config(strategy="relinear_rezero", gamma_default="paper")) == 1e-3
    assert rcfg.quad_lr(rl.Config(strategy="relinear_sg", gamma=0.02)) == 0.02
    assert rcfg.quad_lr(rl.Config(strategy="plain")) is None


def test_matched_width_is_within_five_percent():
    data = SimpleNamespace(num_classes=10, shape=(1, 8, 8))
    for width, form in ((8, "full"), (16, "full"), (16, "compact")):
        c = _cfg("conventional_matched", width=width, form=form)
        state = torch.random.get_rng_state()
        w = lab.matched_width(c, data)
        assert torch.equal(state, torch.random.get_rng_state())   # nothing drawn
        q = count_parameters(qresnet(20, form=form, width=width, in_channels=1))
        p = count_parameters(resnet(20, width=w, in_channels=1))
        assert abs(p - q) <= 0.05 * q
        for other in (w - 1, w + 1):                               # the closest width
            assert abs(count_parameters(resnet(20, width=other, in_channels=1)) - q) >= abs(p - q)
    assert lab.matched_width(_cfg("conventional_matched", width=8), data) == 14
    # where no integer width comes within 5 % the run stops and says so
    with pytest.raises(ConfigError, match=r"^relinear\.width: no conventional ResNet20 width"):
        lab.matched_width(_cfg("conventional_matched", width=8, form="compact"), data)
    model = lab.build_model(_cfg("conventional_matched", width=8), data, 14)
    assert count_parameters(model) == count_parameters(resnet(20, width=14, in_channels=1))


def test_open_claims_carry_the_command_that_would_decide_them():
    conv = _runs("conventional", flags=[False] * 15, accs=list(np.linspace(86, 90, 15)))
    sg = _runs("relinear_sg", flags=[False] * 15, accs=list(np.linspace(80, 96, 15)))
    plain = _runs("plain", flags=[True] * 2 + [False] * 13, accs=[20.0] * 15)
    out = _claims(conv + sg + plain)
    acc = out["accuracy.relinear_sg"]
    assert acc["verdict"] == "inconclusive"
    needed = acc["values"]["runs_for_3_points"]
    assert acc["next"] == {"command": f"quadrun resume={{folder}} 'seed=range(0,{needed})'",
                           "jobs": (needed - 15) * 3}             # 3 strategies in the study
    col = out["collapse.plain"]                                  # 2/15 vs 0/15
    assert col["verdict"] == "inconclusive" and "seeds per strategy would decide" in col["why"]
    assert stats.fisher_runs_needed(2, 15, 0, 15, more=True) == 34
    p_fewer, p_more = rev.fisher_one_sided(round(2 / 15 * 34), 34, 0, 34)
    assert p_more <= 0.05 and rev.fisher_one_sided(round(2 / 15 * 33), 33, 0, 33)[1] > 0.05
    assert col["next"]["command"].endswith("'seed=range(0,34)'")
    assert stats.fisher_runs_needed(3, 15, 3, 15, more=False) is None   # equal rates never do
    gone = out["accuracy.relinear_rezero"]
    assert gone["verdict"] == "not_measured"
    assert gone["next"] == {"command": rc.ABLATION, "jobs": 255}


def test_a_well_powered_null_says_so_and_asks_for_no_runs():
    conv = _runs("conventional_rezero", accs=list(np.linspace(89, 93, 15)))
    rez = _runs("relinear_rezero", accs=list(np.linspace(88.5, 92.5, 15)))
    c = _claims(conv + rez)["accuracy.relinear_rezero"]
    assert c["verdict"] == "inconclusive" and c["values"]["runs_for_3_points"] <= 15
    assert "already detect" in c["why"] and c["next"] is None


def test_unequal_arms_are_judged_by_their_own_detectable_difference():
    """110 wide-spread runs against 20 narrow ones detect 3 points although 20 a side would
    not: the claim says so and asks for no runs (the confirmatory ablation's design)."""
    rng = np.random.default_rng(5)
    conv = _runs("conventional", accs=list(88 + 3.3 * rng.standard_normal(20)))
    sg = _runs("relinear_sg", accs=list(87.5 + 4.0 * rng.standard_normal(110)))
    c = _claims(conv + sg)["accuracy.relinear_sg"]
    v = c["values"]
    assert (v["n"], v["control_n"]) == (110, 20)
    assert v["detectable"] == pytest.approx(stats.detectable_difference(
        v["sd"], 110, v["control_sd"], 20, level=0.95))
    assert v["detectable"] < 3 < stats.detectable_difference(v["sd"], 20, v["control_sd"], 20,
                                                             level=0.95)
    assert c["verdict"] == "inconclusive" and v["runs_for_3_points"] > 20
    assert "these 110 and 20 seeds already detect" in c["why"] and c["next"] is None
    assert "seeds per arm would detect" not in c["measured"]

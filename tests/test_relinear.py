"""ReLinear ablation: (Q)ResNet maths and sizes, strategy parameter groups, batched
augmentation, collapse detection, the sweep config, and a smoke run through the CLI."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from quadrun.data.images import Augment, load_images, random_crop, random_flip
from quadrun.experiments import relinear as rl
from quadrun.nn.quadratic import QuadraticConv2d, roles
from quadrun.nn.resnet import count_parameters, load_conventional, qresnet, resnet
from quadrun.training import make_optimizer, make_schedule
from tests.conftest import run_folders, summary


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


@pytest.mark.parametrize("strategy", rl.STRATEGIES)
def test_strategy_groups(strategy):
    cfg = _cfg(strategy)
    model = rl.build_model(cfg, _data())
    groups = rl.strategy_groups(model, cfg, TRAIN)
    by_name = {g["name"]: g for g in groups}
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each exactly once
    role = {id(p): r for p, r in roles(model)}
    for g in groups:
        assert all(role[id(p)] == g["name"] for p in g["params"])
    quads = [m for m in model.modules() if isinstance(m, QuadraticConv2d)]
    if strategy == "conventional":
        assert set(by_name) == {"linear"} and not quads
        return
    assert set(by_name) == {"linear", "quad_g", "quad_b"} and len(quads) == 18
    gamma = {"relinear_sg": 1e-5, "relinear_rezero": 1e-3}.get(strategy, 0.1)
    decay = 0.0 if strategy == "relinear_sw" else 1e-4
    assert by_name["linear"]["lr"] == 0.1 and by_name["linear"]["weight_decay"] == 1e-4
    for r in ("quad_g", "quad_b"):
        assert by_name[r]["lr"] == gamma and by_name[r]["weight_decay"] == decay
    alphas = [m.alpha for m in model.modules() if getattr(m, "alpha", None) is not None]
    assert len(alphas) == (9 if strategy == "relinear_rezero" else 0)
    assert all(role[id(a)] == "linear" for a in alphas)
    q = quads[0]
    if strategy == "plain":  # every part random
        assert q.weight_g.abs().sum() > 0 and q.weight_b.abs().sum() > 0
    else:  # starts as the conventional neuron
        assert q.weight_g.abs().sum() == 0 and torch.all(q.bias_g == 1)
        assert q.weight_b.abs().sum() == 0 and q.bias_b.abs().sum() == 0


def test_gamma_override_and_its_schedule():
    cfg = _cfg("relinear_sg", gamma=3e-4)
    model = rl.build_model(cfg, _data())
    opt = make_optimizer(rl.strategy_groups(model, cfg, TRAIN), TRAIN)
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
    model = rl.build_model(cfg, _data())
    q = next(m for m in model.modules() if isinstance(m, QuadraticConv2d))
    with torch.no_grad():
        q.weight_g.normal_()
        q.weight_b.normal_()
    rl.shrink_penalty(cfg.alpha, cfg.beta)(model).backward()
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
    with torch.inference_mode(), rl.batch_statistics(model):
        assert all(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        model(torch.randn(16, 3, 8, 8))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in model.modules())
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_collapse_rule():
    hist = [{"epoch": e, "test/acc": a} for e, a in [(1, 10.5), (2, 60.0), (10, 90.0)]]
    # the first 10% of training is ignored: epoch 1 of 20, but not epoch 1 of 10
    assert rl.collapse(hist, "completed", epochs=20, chance=10.0) is None
    assert rl.collapse(hist, "completed", epochs=10, chance=10.0).startswith("test accuracy 10.5%")
    late = hist + [{"epoch": 11, "test/acc": 11.9}]  # a late collapse counts too
    assert "epoch 11" in rl.collapse(late, "completed", epochs=20, chance=10.0)
    assert rl.collapse(hist, "diverged", epochs=10, chance=10.0) == "non-finite training loss"
    assert rl.collapse([{"epoch": 5, "test/acc": 12.1}], "completed", 10, 10.0) is None


# -- configs and the CLI ---------------------------------------------------------------------------
def test_ablation_sweep_config():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from quadrun import registry
    from quadrun.cli import config_dir
    from quadrun.schema import register

    register(registry.load_all())
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("config", overrides=["experiment=relinear", "sweep=relinear_ablation"],
                          return_hydra_config=True)
            paper = compose("config", overrides=["experiment=relinear", "scale=paper",
                                                 "sweep=relinear_paper"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    params = cfg.hydra.sweeper.params
    assert params["relinear.strategy"].split(",") == list(rl.STRATEGIES)
    assert params["seed"] == "0,1,2"
    assert cfg.relinear.dataset == "digits" and cfg.scale == "cpu"
    assert paper.hydra.sweeper.params["relinear.depth"] == "20,56,110"
    assert paper.relinear.dataset == "cifar10" and list(paper.train.milestones) == [100, 150]
    assert paper.train.lr == 0.1 and paper.train.batch_size == 128 and paper.train.epochs == 200


def test_ablation_table_from_sweep_folder(tmp_path):
    """quadrun-report turns an ablation sweep into strategy rows with collapse counts."""
    from quadrun.report import build

    def job(i, strategy, acc, collapsed):
        d = tmp_path / str(i)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(
            f"- experiment=relinear\n- relinear.strategy={strategy}\n- seed={i}\n")
        (d / "summary.json").write_text(json.dumps({
            "experiment": "relinear", "status": "completed", "strategy": strategy,
            "params": 806266, "test/acc": acc, "test/acc_best": acc + 1, "seed": i,
            "collapsed": collapsed}))
    job(0, "plain", 10.0, True)
    job(1, "plain", 90.0, False)
    job(2, "relinear_sg", 95.0, False)
    build([tmp_path], quiet=True)
    text = (tmp_path / "report" / "table.md").read_text()
    assert ("| relinear.strategy=plain | 2 | 2 | 0 | 1 | 0 | 0 | 8.063e+05 ± 0 | 50 ± 57 | 51 ± 57 |"
            in text)
    assert text.index("strategy=plain") < text.index("strategy=relinear_sg")


def test_smoke_run_through_cli(cli):
    r = cli("experiment=relinear", "scale=smoke", "threads=1")
    assert r.returncode == 0, r.stderr
    (folder,) = run_folders(cli.cwd, "relinear")
    s = summary(folder)
    for key in ("collapsed", "status", "strategy", "params", "test/acc", "test/acc_best",
                "test/acc_batchstats", "norm/quad_g", "norm/quad_b"):
        assert key in s, key
    assert s["status"] == "completed" and s["strategy"] == "relinear_sg"
    assert s["params"] == count_parameters(qresnet(20, width=8))
    assert 0 <= s["test/acc"] <= 100 and s["test/acc_best"] >= s["test/acc"]
    assert s["norm/quad_b"] < 0.1 < s["norm/quad_g"]  # W_b barely moved at lr 1e-5; b_g = 1
    assert s["norm/W_g"] < 0.1 and s["norm/W_b"] < 0.1  # both start at 0
    metrics = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
    assert any("test/acc_batchstats" in m for m in metrics)


def _compose(*overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from quadrun import registry
    from quadrun.cli import config_dir
    from quadrun.schema import register

    register(registry.load_all())
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose("config", overrides=["experiment=relinear", *overrides])
    finally:
        GlobalHydra.instance().clear()


def test_forced_divergence_is_a_collapse(tmp_path, monkeypatch):
    """One training image holds an infinite pixel: the loss of its batch is non-finite,
    fit stops with "diverged", and the run is marked collapsed."""
    from quadrun.runner import run

    def poisoned(*args, **kw):
        data = load_images(*args, **kw)
        data.train_x[3, 0, 2, 2] = float("inf")
        return data

    monkeypatch.setattr(rl, "load_images", poisoned)
    cfg = _compose("scale=smoke", "device=cpu", "relinear.strategy=relinear_init")
    out = run(cfg, tmp_path / "run")
    s = summary(tmp_path / "run")
    assert out["status"] == s["status"] == "diverged"
    assert s["collapsed"] is True and s["collapse_reason"] == "non-finite training loss"
    assert s["steps"] <= len(range(0, 512, 32))  # stopped within the first epoch
    assert s["test/acc"] is not None  # the diverged weights were still scored

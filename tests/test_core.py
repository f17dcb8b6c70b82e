"""The core: config composition, bad input through the real CLI, run folders, resume,
divergence, the wheel's configs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from conftest import TESTS, run_cli, run_folders, start_cli, summary
from quadrun import registry
from quadrun.cli import config_dir
from quadrun.schema import SCALES, ConfigError, TrainConfig, register, validate
from quadrun.training import TensorBatches, make_optimizer, make_schedule

REPO = TESTS.parent


def compose_cfg(*overrides: str):
    experiments = registry.load_all()
    register(experiments)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg, experiments


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("experiment", sorted(registry.EXPERIMENTS))
def test_every_experiment_composes_at_every_scale(experiment, scale, tmp_path):
    # relinear's paper scale reads CIFAR-10 from data_dir: with a download allowed, the
    # check that it is there passes
    extra = [f"data_dir={tmp_path}", "relinear.download=true"] \
        if (experiment, scale) == ("relinear", "paper") else []
    # paper sizes may need more memory than this machine has: the memory check has its own tests
    extra += ["memory_check=false"] if scale == "paper" else []
    cfg, experiments = compose_cfg(f"experiment={experiment}", f"scale={scale}", *extra)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    if scale == "gpu" and not (REPO / "configs" / "sizes" / experiment / "gpu.yaml").exists():
        with pytest.raises(ConfigError, match=f"^scale: {experiment} has no gpu scale"):
            validate(cfg, experiments)
        return
    validate(cfg, experiments)
    assert cfg.experiment == experiment and cfg.scale == scale
    assert cfg[experiment] is not None


def test_validate_names_key_and_range():
    cfg, experiments = compose_cfg("experiment=relinear")
    with open_dict(cfg):
        cfg.pop("hydra", None)
    cfg.relinear.train.epochs = 0
    with pytest.raises(ConfigError, match=r"^relinear\.train\.epochs: 0 is out of range; "
                                          r"must be >= 1 and <= 1000000$"):
        validate(cfg, experiments)
    cfg.relinear.train.epochs = 1
    cfg.relinear.train.milestones = [3, -1]
    with pytest.raises(ConfigError, match=r"relinear\.train\.milestones: -1 is out of range"):
        validate(cfg, experiments)


BAD_INPUTS = {
    "unknown experiment": (["experiment=nope"], "experiment: unknown 'nope'; must be one of: "
                           "dcdm, expressivity, hierpoly, pde, relinear"),
    "unknown key": (["toy.train.nope=1"], "toy.train.nope: unknown key"),
    "unknown top key": (["+nope=1"], "nope: unknown key"),
    "wrong type": (["toy.train.epochs=abc"], "toy.train.epochs: Value 'abc' of type 'str' could not be "
                   "converted to Integer"),
    "negative epochs": (["toy.train.epochs=-3"], "toy.train.epochs: -3 is out of range; must be >= 1 and <= 1000000"),
    "bad choice": (["device=tpu"], "device: 'tpu' is not allowed; must be one of: auto, cpu, cuda"),
    "unknown scale": (["scale=huge"], "scale: unknown 'huge'; must be one of: cpu, gpu, paper, smoke"),
    "NaN": (["toy.train.lr=nan"], "toy.train.lr: NaN is not allowed"),
    "bad resume": (["resume=/no/such/run"], "resume: '/no/such/run' is not a run folder"),
    "bad sweep value": (["-m", "toy.train.epochs=2,-1"], "toy.train.epochs: -1 is out of range"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_nonzero(cli, name):
    args, expected = BAD_INPUTS[name]
    r = cli("experiment=toy", *args, toy=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("quadrun: error: " + expected), lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not (cli.cwd / "outputs").exists()  # nothing created


def test_help_lists_experiments_and_scales(cli):
    r = cli("--help")
    assert r.returncode == 0
    assert "experiment: dcdm, expressivity, hierpoly, pde, relinear" in r.stdout
    assert "scale: cpu, gpu, paper, smoke" in r.stdout


def test_run_folder_contents_and_metrics(cli):
    r = cli("experiment=toy", "toy.train.epochs=2", toy=True)
    assert r.returncode == 0, r.stderr
    [run] = run_folders(cli.cwd, "toy")
    for name in ("config.yaml", "meta.json", "metrics.jsonl", "summary.json", "quadrun.log",
                 ".hydra/overrides.yaml", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).exists(), name
    s = summary(run)
    assert s["status"] == "completed" and s["steps"] == 16 and s["experiment"] == "toy"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["device"] == "cpu" and meta["torch"] == torch.__version__ and meta["end"]
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val/mse" in r] == [8, 16]
    assert rows[-1]["val/mse"] == pytest.approx(s["val/mse"])
    assert OmegaConf.load(run / "config.yaml").toy.train.epochs == 2
    assert s["records"][0]["model"] == "mlp" and s["record_keys"] == ["model"]
    assert [c["verdict"] for c in s["claims"]] == ["holds"]
    md = (run / "report" / "table.md").read_text()
    assert md.index("Claims: toy") < md.index("toy: records")


def test_two_runs_in_the_same_second_get_distinct_folders(tmp_path):
    procs = [start_cli("experiment=toy", "toy.train.epochs=1", cwd=tmp_path, toy=True)
             for _ in range(2)]
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    runs = run_folders(tmp_path, "toy")
    assert len(runs) == 2
    ids = {r.name.rsplit("_", 1)[1] for r in runs}
    assert len(ids) == 2  # distinct ids, whether or not the second matched


def test_nonfinite_loss_gives_status_diverged(cli):
    r = cli("experiment=toy", "toy.nan_after=5", "toy.train.log_every=2", toy=True)
    assert r.returncode == 0, r.stderr
    [run] = run_folders(cli.cwd, "toy")
    s = summary(run)
    assert s["status"] == "diverged"
    assert s["steps"] == 6  # noticed at the first check after step 5 (log_every=2)


def _wait_for(path: Path, timeout: float = 60) -> None:
    t0 = time.time()
    while not path.exists():
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def test_sigterm_then_resume_equals_uninterrupted(tmp_path):
    args = ["experiment=toy", "toy.sleep=0.01", "toy.train.epochs=12", "toy.train.log_every=3"]
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    ref_dir.mkdir(), cut_dir.mkdir()
    r = run_cli(*args, cwd=ref_dir, toy=True)
    assert r.returncode == 0, r.stderr
    [ref] = run_folders(ref_dir, "toy")

    p = start_cli(*args, cwd=cut_dir, toy=True)
    _wait_for(cut_dir / "outputs" / "toy")
    [cut] = run_folders(cut_dir, "toy")
    _wait_for(cut / "checkpoints" / "last.pt")      # past the first epoch
    time.sleep(0.05)                                # now in the middle of the second
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    assert "interrupted" in err and "Traceback" not in err
    assert summary(cut)["status"] == "interrupted"
    stopped_at = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 0 < stopped_at < 96

    r = run_cli(f"resume={cut}", cwd=cut_dir, toy=True)
    assert r.returncode == 0, r.stderr
    a, b = summary(ref), summary(cut)
    assert b["status"] == "completed"
    for key in ("val/mse", "weights_sum", "steps"):
        assert a[key] == b[key], key
    assert (ref / "metrics.jsonl").read_text() == (cut / "metrics.jsonl").read_text()
    assert json.loads((cut / "meta.json").read_text())["attempts"] == 2
    assert a["samples"] == b["samples"] == 96 * 32                # every attempt's steps


def test_schedule_and_groups():
    model = torch.nn.Linear(2, 1)
    tc = OmegaConf.structured(TrainConfig(epochs=4, milestones=[2, 3], lr=0.1, lr_decay=0.1))
    groups = [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 1e-3}]
    opt = make_optimizer(groups, tc)
    sched = make_schedule(opt, tc, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0] == [0.1, 1e-3]
    assert lrs[10] == pytest.approx([0.01, 1e-4])  # epoch 2: both groups decay
    assert lrs[15] == pytest.approx([0.001, 1e-5])


def test_batches_are_deterministic_and_resume_mid_epoch():
    x = torch.arange(10.0)
    data = TensorBatches([x], batch_size=3)
    assert len(data) == 4
    full = [b[0].tolist() for b in data.epoch(torch.Generator().manual_seed(7))]
    tail = [b[0].tolist() for b in data.epoch(torch.Generator().manual_seed(7), start=2)]
    assert tail == full[2:]
    assert sorted(sum(full, [])) == x.tolist()


def test_wheel_ships_the_configs(tmp_path):
    wheel_dir, source = tmp_path / "wheel", tmp_path / "source"
    import shutil                     # a clean copy: no build/ left over from another build

    top = {".venv", "build", "outputs", ".git", "data", "dist"}
    shutil.copytree(REPO, source, ignore=lambda folder, names: [
        n for n in names if (Path(folder) == REPO and n in top) or n == "__pycache__"
        or n.endswith(".egg-info")])
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(wheel_dir), str(source)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    [wheel] = wheel_dir.glob("quadrun-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml")
                     if "local" not in p.parts)
    assert "config.yaml" in shipped
    for name in shipped:
        assert f"quadrun/configs/{name}" in names
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run_in = tmp_path / "elsewhere"
    run_in.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import quadrun.cli as c, sys; print(c.config_dir()); sys.argv=['quadrun',"
            "'experiment=dcdm','scale=smoke','--cfg','job']; c.main()")
    r = subprocess.run([sys.executable, "-c", code], cwd=run_in, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(str(target))
    assert "experiment: dcdm" in r.stdout and "scale: smoke" in r.stdout


def test_tensorboard_logger_writes_events(cli):
    pytest.importorskip("tensorboard")
    r = cli("experiment=toy", "toy.train.epochs=1", "logger=tensorboard", toy=True)
    assert r.returncode == 0, r.stderr
    [run] = run_folders(cli.cwd, "toy")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    loss = [e.value for e in events.Scalars("train/loss")]
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert loss == pytest.approx([r["train/loss"] for r in rows if "train/loss" in r])


# -- one home for every value ---------------------------------------------------------------------
def _defaults_of(cls) -> dict:
    """{dotted key: default} of a config dataclass, nested dataclasses flattened."""
    return dict(_leaves(OmegaConf.to_container(OmegaConf.structured(cls))))


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def test_no_yaml_value_restates_a_dataclass_default():
    import yaml

    from quadrun.schema import BaseConfig

    experiments = registry.load_all()
    defaults = _defaults_of(BaseConfig)
    for name, mod in experiments.items():
        defaults.update({f"{name}.{k}": v for k, v in _defaults_of(mod.Config).items()})
    restated = []
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for key, value in _leaves({k: v for k, v in doc.items() if k not in ("defaults", "hydra")}):
            if key in defaults and defaults[key] == value:
                restated.append(f"{path.relative_to(REPO)}: {key}: {value!r}")
    assert not restated, "YAML restates dataclass defaults:\n" + "\n".join(restated)
    assert not (REPO / "configs" / "experiment").exists() or \
        not list((REPO / "configs" / "experiment").glob("*.yaml"))


def test_schemas_and_config_errors_need_no_torch():
    code = ("import sys; from quadrun import registry, report; from quadrun.cli import preflight;"
            "from quadrun.schema import register; e = registry.load_all(); register(e);"
            "import quadrun.claims, quadrun.vocab;"
            "print('torch' in sys.modules, sorted(m for m, v in sys.modules.items()"
            " if m.startswith('quadrun') and 'torch' in vars(v)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False []", r.stdout   # else: the modules that import torch


def test_an_experiment_is_one_module_and_one_registry_line(tmp_path):
    """A new experiment with no YAML file: cells, measure, claims, through the real CLI."""
    (tmp_path / "mini.py").write_text('''
from dataclasses import dataclass, field
from typing import List
from quadrun.claims import Claim, Exact, decide, exact

SQUARES = Claim("squares", "x^2 is x times x.", "algebra", target="no record differs",
                rule=Exact(0))

@dataclass
class Config:
    xs: List[int] = field(default_factory=lambda: [1, 2, 3])

def cells(c):
    return [{"x": x} for x in c.xs]

def measure(c, cell, ctx):
    return {"square": cell["x"] ** 2}

def claims(records, c):
    wrong = sum(r["square"] != r["x"] ** 2 for r in records)
    return decide([SQUARES], {"squares": exact(wrong, f"{wrong} of {len(records)} differ")})
''')
    env = {"QUADRUN_EXPERIMENTS": "mini=mini", "PYTHONPATH": str(tmp_path)}
    r = run_cli("experiment=mini", "mini.xs=[2,5]", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    [run] = run_folders(tmp_path, "mini")
    s = summary(run)
    assert [(rec["x"], rec["square"]) for rec in s["records"]] == [(2, 4), (5, 25)]
    assert s["record_keys"] == ["x"] and s["claims"][0]["verdict"] == "holds"
    assert json.loads((run / "stages.json").read_text())["stages"]["x=5"]["square"] == 25


def test_derive_seed_is_stable_and_separates_streams():
    import numpy as np

    from quadrun.vocab import derive_seed

    assert derive_seed(0, "test", 8) == derive_seed(np.int64(0), "test", np.int64(8))
    assert derive_seed(0, "test", 8) != derive_seed(0, "test", 16) != derive_seed(1, "test", 8)
    assert derive_seed(0, "ab") != derive_seed(0, "a", "b")  # parts are separated
    # sha256("0\x1ftest\x1f8")[:8] & 0x7fffffff, computed independently:
    import hashlib
    assert derive_seed(0, "test", 8) == int(hashlib.sha256(b"0\x1ftest\x1f8").hexdigest()[:8], 16) & 0x7FFFFFFF
    assert 0 <= derive_seed("x") < 2 ** 31


def test_fingerprint_ignores_how_a_run_runs_not_what_it_measures():
    from quadrun.identity import config_fingerprint

    base = OmegaConf.create({"experiment": "toy", "seed": 0, "device": "cuda", "cuda_graphs": True,
                             "deterministic": False, "compile": False,
                             "toy": {"width": 4, "train": {"lr": 0.1, "log_every": 5,
                                                           "checkpoint_every": 0}}})
    same = OmegaConf.merge(base, {"device": "cpu", "cuda_graphs": False, "deterministic": True,
                                  "toy": {"train": {"log_every": 50, "checkpoint_every": 7}}})
    other = OmegaConf.merge(base, {"toy": {"train": {"lr": 0.2}}})
    assert config_fingerprint(base) == config_fingerprint(same)
    assert config_fingerprint(base) != config_fingerprint(other)
    assert config_fingerprint(base) != config_fingerprint(OmegaConf.merge(base, {"seed": 1}))


def test_training_seconds_add_up_over_a_resume(tmp_path):
    """FitResult.train_seconds counts every attempt, so images/s after a resume is the
    whole training's: 2 epochs of 4 steps at 0.05 s each, stopped after the first."""
    from quadrun.artifacts import RunContext
    from quadrun.devices import Runtime
    from quadrun.errors import Interrupted
    from quadrun.training import fit

    cfg = OmegaConf.create({"experiment": "toy", "scale": "cpu", "seed": 0, "data_dir": "data"})
    tc = TrainConfig(epochs=2, batch_size=4, lr=0.01, log_every=100)
    x = torch.randn(16, 2)

    def attempt(stop_after_first: bool):
        ctx = RunContext(tmp_path, cfg, Runtime(torch.device("cpu")))
        model = torch.nn.Linear(2, 1)

        def loss_fn(m, batch):
            time.sleep(0.05)
            return m(batch[0]).square().mean()

        def evaluate(m):
            ctx.stop_requested = stop_after_first
            return {"val": 0.0}
        return fit(model, TensorBatches([x], 4), loss_fn, ctx, tc, evaluate=evaluate)

    with pytest.raises(Interrupted):
        attempt(True)
    result = attempt(False)
    assert result.step == 8 and result.samples == 32
    assert result.train_seconds >= 8 * 0.05 * 0.95      # both epochs, not the second alone


@dataclass
class _Sub:
    lr: float = 0.1


@dataclass
class _Variants:
    strategy: str = "plain"
    learners: list = field(default_factory=lambda: ["a"])
    gamma: float = 1.0
    alpha: float = 0.0
    b: _Sub = field(default_factory=_Sub)


def test_unread_keys_follow_the_variants_table():
    """A key that only some variants read is unread (and left out of the fingerprint)
    when none of them is chosen; a list selector chooses several."""
    from types import SimpleNamespace

    from quadrun.schema import Variants, drop_keys, is_unread, unread_keys

    C = _Variants
    module = SimpleNamespace(VARIANTS=(
        Variants("strategy", {"plain": (), "sg": ("gamma",), "sw": ("alpha",)}),
        Variants("learners", {"a": (), "b": ("b",)})))
    assert sorted(unread_keys(module, C())) == ["alpha", "b", "gamma"]
    assert sorted(unread_keys(module, C(strategy="sg", learners=["a", "b"]))) == ["alpha"]
    assert "read by sg" in unread_keys(module, C())["gamma"]
    unread = unread_keys(module, C())
    assert is_unread("x.b.lr", "x", unread) and not is_unread("x.strategy", "x", unread)
    assert drop_keys({"gamma": 1, "b": {"lr": 2}, "k": 3}, ["gamma", "b.lr"]) == {"b": {}, "k": 3}
    assert unread_keys(SimpleNamespace(), C()) == {}


def test_a_config_that_cannot_fit_is_refused_before_anything_is_created(monkeypatch):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from quadrun import schema

    module = SimpleNamespace(memory=lambda c: (10 ** 15, "x.size", "a 1 PB grid"))
    cfg = OmegaConf.create({"experiment": "x", "device": "cpu", "memory_check": True,
                            "x": {"size": 3}})
    monkeypatch.setattr(OmegaConf, "to_object", lambda node: node)
    with pytest.raises(ConfigError, match=r"^x.size: the largest cell needs about 9.31e\+05 GB "
                                          r"\(a 1 PB grid\), and .* GB is free on this machine"):
        schema.check_memory(module, cfg)
    small = SimpleNamespace(memory=lambda c: (10 ** 6, "x.size", "1 MB"))
    schema.check_memory(small, cfg)                       # fits: nothing said


def test_expressivity_estimates_its_largest_dimension_cell():
    from quadrun.experiments.expressivity.config import Config, memory

    need, key, what = memory(Config(widths=[[16, 16, 16, 1]]))
    assert key == "expressivity.widths" and "1683 parameters at 3366 points" in what
    assert need == 6 * 8 * 3366 * 16 * 1683
    assert memory(Config())[0] < 50 * 2 ** 20             # the default table: tens of MB


def test_threads_n_limits_torch_and_numpy_s_blas_alike():
    """threads=1 is one core: torch's pool and numpy/scipy's BLAS pool both get 1 thread."""
    code = ("import threadpoolctl, torch; from omegaconf import OmegaConf; "
            "from quadrun.devices import make_runtime; "
            "make_runtime(OmegaConf.create({'device': 'cpu', 'threads': 1, 'seed': 0, "
            "'deterministic': False, 'precision': 'fp32', 'compile': False, 'cuda_graphs': False})); "
            "print(torch.get_num_threads(), "
            "sorted({i['num_threads'] for i in threadpoolctl.threadpool_info()}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(None, 1) == ["1", "[1]\n"]


def test_openmp_threads_sleep_only_when_they_would_share_busy_cores(monkeypatch):
    from quadrun import estimate

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(estimate, "usable_cores", lambda: 2)
    monkeypatch.setattr(estimate, "busy_cores", lambda: 1.0)    # one core busy: 1 free
    monkeypatch.delitem(sys.modules, "torch")                   # as before torch loads
    assert estimate.cpu_threads() == 1
    for threads in (0, 1):                  # the default count, or within the free cores
        estimate.wait_policy(threads)
        assert "OMP_WAIT_POLICY" not in os.environ
    estimate.wait_policy(2)                 # one more than the free cores
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")            # the user's own value is kept
    estimate.wait_policy(2)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_free_cores_come_from_the_cpu_time_busy_now_else_the_load_average(monkeypatch):
    from quadrun import estimate

    monkeypatch.setattr(estimate, "usable_cores", lambda: 4)
    monkeypatch.setattr(estimate, "load_now", lambda: 3.0)
    monkeypatch.setattr(estimate, "busy_cores", lambda: 0.2)    # the load average lags
    assert estimate.cpu_threads() == 4 and estimate.cpu_threads(3) == 3
    monkeypatch.setattr(estimate, "busy_cores", lambda: None)   # no /proc/stat
    assert estimate.cpu_threads() == 1
    monkeypatch.setattr(estimate, "busy_cores", lambda: 9.0)    # never below one thread
    assert estimate.cpu_threads() == 1

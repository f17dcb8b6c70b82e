"""Kills, corrupt files, hostile checkpoints, malformed overrides and full disks lose nothing."""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli, run_folders, start_cli, summary
from quadrun import artifacts
from quadrun.artifacts import CheckpointError, load_checkpoint
from quadrun.devices import Runtime

TOY = ["experiment=toy", "toy.sleep=0.01", "toy.train.epochs=5", "toy.train.log_every=2",
       "toy.train.checkpoint_every=1"]


def reference(tmp_path: Path, args=TOY) -> Path:
    ref = tmp_path / "ref"
    ref.mkdir()
    r = run_cli(*args, cwd=ref, toy=True)
    assert r.returncode == 0, r.stderr
    return run_folders(ref, "toy")[0]


def assert_same_result(ref: Path, run: Path) -> None:
    a, b = summary(ref), summary(run)
    assert b["status"] == "completed"
    for key in ("val/mse", "weights_sum", "steps"):
        assert a[key] == b[key], key
    assert (ref / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_sigkill_at_ten_random_moments_then_resume_equals_uninterrupted(tmp_path):
    args = [a if not a.startswith("toy.train.epochs=") else "toy.train.epochs=15" for a in TOY]
    ref = reference(tmp_path, args)
    work = tmp_path / "killed"
    work.mkdir()
    folder = work / "run"
    rng = random.Random(20261126)
    kills = 0
    last = folder / "checkpoints" / "last.pt"
    steps = []
    for attempt in range(10):
        before = last.stat().st_mtime_ns if last.exists() else None
        p = start_cli(*args, f"hydra.run.dir={folder}", cwd=work, toy=True, quiet=True)
        # wait until this process is training (it has written a checkpoint of its own), then
        # a random moment: checkpoints are written every step, so many kills land mid-write
        t0 = time.time()
        while p.poll() is None and time.time() - t0 < 60:
            try:
                if last.stat().st_mtime_ns != before:
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(60)
        # a kill between the two renames leaves prev.pt alone: that is what a resume loads
        newest = last if last.exists() else last.with_name("prev.pt")
        steps.append(load_checkpoint(newest)["step"] if newest.exists() else 0)
    assert kills >= 8  # most attempts were killed mid-run
    assert steps == sorted(steps) and steps[-1] > steps[0]  # each rerun resumed and advanced
    r = run_cli(*args, f"hydra.run.dir={folder}", cwd=work, toy=True)
    assert r.returncode == 0, r.stderr
    assert_same_result(ref, folder)


def _interrupted_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run stopped by SIGTERM after a few checkpoints (last.pt and prev.pt exist)."""
    work = tmp_path / "cut"
    work.mkdir()
    p = start_cli(*TOY, cwd=work, toy=True)
    t0 = time.time()
    while not list(work.glob("outputs/toy/*/checkpoints/prev.pt")):
        assert time.time() - t0 < 60 and p.poll() is None
        time.sleep(0.01)
    time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode == 3
    return work, run_folders(work, "toy")[0]


def test_truncated_checkpoint_falls_back_to_the_previous(tmp_path):
    ref = reference(tmp_path)
    work, run = _interrupted_run(tmp_path)
    last = run / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # truncated, as by a failing disk
    r = run_cli(f"resume={run}", cwd=work, toy=True)
    assert r.returncode == 0, r.stderr
    assert f"checkpoint {last} cannot be loaded" in r.stderr + (run / "quadrun.log").read_text()
    [aside] = (run / "checkpoints").glob("last.pt.corrupt-*")
    assert aside.read_bytes() == data[: len(data) // 2]  # kept, not overwritten
    assert_same_result(ref, run)


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_another_config_in_a_run_folder_is_refused_and_changes_no_file(tmp_path):
    work, run = _interrupted_run(tmp_path)
    before = _files(run)
    for args in ([*TOY, "toy.width=8", f"hydra.run.dir={run}"], [f"resume={run}", "toy.width=8"]):
        r = run_cli(*args, cwd=work, toy=True)
        assert r.returncode == 2
        [line] = [l for l in r.stderr.splitlines() if l.startswith("quadrun: error:")]
        assert "these overrides change the config of the run" in line, line
        assert "Traceback" not in r.stderr
        assert _files(run) == before


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['QUADRUN_PWNED']}",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("QUADRUN_PWNED", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} cannot be loaded"):
        load_checkpoint(path)
    assert not marker.exists()


def test_disk_full_while_checkpointing_keeps_previous_state(tmp_path, monkeypatch):
    """A write error mid-run: a clear error; the last good checkpoint and metrics intact."""
    from test_core import compose_cfg
    from quadrun.runner import RunFailed, run

    os.environ["QUADRUN_EXPERIMENTS"] = "toy=plugins.toy"
    try:
        cfg, _ = compose_cfg("experiment=toy", "toy.train.epochs=3", "toy.train.log_every=2")
    finally:
        del os.environ["QUADRUN_EXPERIMENTS"]
    from omegaconf import open_dict
    with open_dict(cfg):
        cfg.pop("hydra", None)
    monkeypatch.setenv("QUADRUN_EXPERIMENTS", "toy=plugins.toy")
    real_fsync, calls = os.fsync, {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] > 6:  # config, meta, first checkpoints go through; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(artifacts.os, "fsync", failing_fsync)
    with pytest.raises(RunFailed, match="No space left on device"):
        run(cfg, run_dir=tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] > 0
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["step"] <= 24 for r in rows)
    assert not list((tmp_path / "run" / "checkpoints").glob(".*tmp*"))  # no half files left


# -- malformed overrides ------------------------------------------------------------------------
KEYS = ["seed", "toy.train.epochs", "toy.train.lr", "toy.train.batch_size", "toy.train.optimizer", "device",
        "precision", "threads", "scale", "experiment", "toy.train.milestones", "toy.width", "data_dir"]
BAD_VALUES = st.one_of(
    st.sampled_from(["nan", "-nan", "inf", "-inf", "-1", "0", "''", "1e400", "-1e9",
                     "99999999999999999999999", "[1,x]", "{a: 1}", "null", "true", "ünï", "😀",
                     "x" * 300, "'   '", "1.5", "[[]]"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12),
)
BAD_OVERRIDES = st.one_of(
    st.tuples(st.sampled_from(KEYS), BAD_VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.from_regex(r"[a-zßü_]{1,10}(\.[a-zß]{1,8})?=[0-9a-z]{0,5}", fullmatch=True)
      .filter(lambda s: s.split("=")[0] not in KEYS + ["resume", "compile", "logger"]),
    # Hydra's grammar: trailing commas, open brackets, sweeps without -m, no '=', flags
    st.tuples(st.sampled_from(KEYS), st.sampled_from(["1,", "[1,", "{a:", "1,2", "a b", "'x",
                                                       "${nope}", "", "=", "tag(x)"]))
      .map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(["seed", "--experiment=toy", "--seed=1", "-x", "--cfg=nope", "+", "~",
                     "toy.train", "toy=1", "hydra/launcher=nope", "experiment=", "=1"]),
)


def _check_rejected_or_valid(override: str) -> None:
    """Either a clean ConfigError (one line) or a config that passes every check."""
    from quadrun import registry
    from quadrun.cli import preflight
    from quadrun.schema import ConfigError, register

    experiments = registry.load_all()
    register(experiments)
    try:
        preflight(["experiment=toy", override], experiments)
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 2000, message
        assert ":" in message  # names a key


@settings(max_examples=220, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BAD_OVERRIDES)
def test_malformed_overrides_in_process(monkeypatch_session_toy, override):
    """At least 200 generated bad command lines: each one line naming a key, or valid."""
    _check_rejected_or_valid(override)


@pytest.fixture(scope="module")
def monkeypatch_session_toy():
    old = os.environ.get("QUADRUN_EXPERIMENTS")
    os.environ["QUADRUN_EXPERIMENTS"] = "toy=plugins.toy"
    yield
    if old is None:
        del os.environ["QUADRUN_EXPERIMENTS"]
    else:
        os.environ["QUADRUN_EXPERIMENTS"] = old


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(override=st.tuples(st.sampled_from(KEYS[:9] + ["toy.train.nope", "ü", "toy.width"]),
                          st.sampled_from(["nan", "inf", "-1", "1e400", "''", "ünï", "[1,x]",
                                           "99999999999999999999999", "😀", "{a: 1}"]))
       .map(lambda kv: f"{kv[0]}={kv[1]}"))
def test_malformed_overrides_through_the_cli(tmp_path_factory, override):
    cwd = tmp_path_factory.mktemp("fuzz")
    r = run_cli("experiment=toy", override, "toy.train.epochs=1", cwd=cwd, toy=True, timeout=120)
    if r.returncode == 0:  # a value that happens to be valid ran normally to completion
        assert summary(run_folders(cwd, "toy")[0])["status"] == "completed"
        return
    if r.returncode == 1:  # valid but failing at run time: one line, run marked failed
        assert summary(run_folders(cwd, "toy")[0])["status"] == "failed"
        assert len([l for l in r.stderr.splitlines() if l.startswith("quadrun: error:")]) == 1
        assert "Traceback" not in r.stderr
        return
    assert r.returncode == 2, (override, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("quadrun: error: "), (override, r.stderr)
    assert "Traceback" not in r.stderr
    assert not (cwd / "outputs").exists(), override  # no half-written run folder


def test_stages_of_another_config_are_not_reused(tmp_path):
    """A rerun with other overrides into a folder with finished parts is refused."""
    from omegaconf import OmegaConf

    from quadrun.artifacts import RunContext

    cfg = OmegaConf.create({"experiment": "toy", "scale": "smoke", "seed": 0, "data_dir": "data",
                            "toy": {"width": 4, "train": {"epochs": 1}}})
    first = RunContext(tmp_path, cfg, Runtime(torch.device("cpu")))
    assert first.stage("a", lambda: 1.5) == 1.5
    assert first.stage("a", lambda: 99) == 1.5  # remembered
    cfg.toy.width = 8
    with pytest.raises(CheckpointError, match="holds results of another config"):
        RunContext(tmp_path, cfg, Runtime(torch.device("cpu"))).stage("a", lambda: 2.0)
    assert json.loads((tmp_path / "stages.json").read_text())["stages"] == {"a": 1.5}


def test_resuming_one_fit_keeps_the_points_of_another(tmp_path):
    from omegaconf import OmegaConf

    from quadrun.artifacts import RunContext
    from quadrun.training import _prefixed

    cfg = OmegaConf.create({"experiment": "toy", "scale": "smoke", "seed": 0, "data_dir": "data"})
    ctx = RunContext(tmp_path, cfg, Runtime(torch.device("cpu")))
    for step in range(1, 11):
        ctx.log(step, _prefixed("train_2d", {"train/loss": 1.0 / step}))
    for step in range(1, 6):
        ctx.log(step, _prefixed("train_3d", {"train/loss": 2.0 / step}))
    for step in range(1, 5):
        ctx.log(step, _prefixed("train", {"train/loss": 3.0 / step}))   # the main fit: no "fit"
    ctx.truncate_metrics(2, "train_3d")  # the 3-D fit resumes from its step-2 checkpoint
    rows = ctx.metrics()
    assert [r["step"] for r in rows if r.get("fit") == "train_2d"] == list(range(1, 11))
    assert [r["step"] for r in rows if r.get("fit") == "train_3d"] == [1, 2]
    assert [r["step"] for r in rows if "fit" not in r] == [1, 2, 3, 4]
    assert rows[0]["train_2d/train/loss"] == 1.0
    ctx.truncate_metrics(3, "train")     # the main fit resumes from step 3: its step 4 goes
    assert [r["step"] for r in ctx.metrics() if "fit" not in r] == [1, 2, 3]
    assert len(ctx.metrics()) == 10 + 2 + 3


# -- issue 30: each break reproduced, and shown fixed ------------------------------------------------
def test_a_cell_measured_by_other_code_is_measured_again(tmp_path):
    from omegaconf import OmegaConf

    from quadrun.artifacts import RunContext

    cfg = OmegaConf.create({"experiment": "toy", "scale": "cpu", "seed": 0, "data_dir": "data"})
    runtime = Runtime(device=torch.device("cpu"), seed=0)
    calls = []

    def measure():
        calls.append(1)
        return {"x": len(calls)}

    ctx = RunContext(tmp_path, cfg, runtime)
    assert ctx.stage("a", measure) == {"x": 1} and ctx.stage("a", measure) == {"x": 1}
    saved = json.loads((tmp_path / "stages.json").read_text())
    saved["code"]["a"] = "0.0.1+another"
    (tmp_path / "stages.json").write_text(json.dumps(saved))
    ctx = RunContext(tmp_path, cfg, runtime)
    assert ctx.stale_stages(["a", "b"]) == ["a"]
    assert ctx.stage("a", measure) == {"x": 2} and len(calls) == 2


def test_damaged_bookkeeping_gives_one_line_and_changes_nothing(tmp_path):
    work, run = _interrupted_run(tmp_path)
    for name, text in (("stages.json", "[]"), ("meta.json", "null"), ("stages.json", ""),
                       (".hydra/overrides.yaml", ""), (".hydra/overrides.yaml", "a: 1")):
        path = run / name
        if not path.exists() and name == "stages.json":
            continue
        old = path.read_bytes()
        path.write_text(text)
        before = _files(run)
        r = run_cli(f"resume={run}", cwd=work, toy=True)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "damaged" in lines[0] and name.split("/")[-1] in lines[0], lines[0]
        assert _files(run) == before
        path.write_bytes(old)


def test_report_and_listings_survive_json_that_is_not_an_object(tmp_path):
    work, run = _interrupted_run(tmp_path)
    (run / "summary.json").write_text("[]")
    (run / "meta.json").write_text("null")
    for args in ([str(run)], ["--runs"]):
        r = run_cli(*args, cwd=work, toy=True, script="quadrun.report")
        assert "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.mark.slow
def test_two_resumes_of_one_folder_one_runs_one_exits_2(tmp_path):
    work, run = _interrupted_run(tmp_path)
    first = start_cli(f"resume={run}", cwd=work, toy=True)
    t0 = time.time()
    # the interrupted run left its own pid in the lock file: wait for this one's
    while f"pid {first.pid} " not in (run / ".quadrun.lock").read_text():
        assert time.time() - t0 < 60
        time.sleep(0.02)
    second = run_cli(f"resume={run}", cwd=work, toy=True)
    assert second.returncode == 2 and "is in use by pid" in second.stderr, second.stderr
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()
             if '"train/train/loss"' in l]
    assert steps == sorted(steps) and len(steps) == len(set(steps))   # no step twice


@pytest.mark.slow
def test_two_sweeps_into_one_folder_one_runs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TOY, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    first = start_cli(*args, cwd=tmp_path, toy=True)
    t0 = time.time()
    while not (sweep / ".quadrun.lock").exists():
        assert time.time() - t0 < 60 and first.poll() is None
        time.sleep(0.02)
    second = run_cli(*args, cwd=tmp_path, toy=True)
    assert second.returncode == 2 and "is in use by pid" in second.stderr, second.stderr
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    journal = [json.loads(l) for l in (sweep / ".quadrun-jobs.jsonl").read_text().splitlines()]
    assert sum(j["outcome"] == "ran" for j in journal) == 2          # each job ran once


@pytest.mark.slow
def test_killing_a_local_sweep_leaves_no_job_running(tmp_path):
    pytest.importorskip("submitit")
    sweep = tmp_path / "sweep"
    p = start_cli("-m", "experiment=toy", "toy.sleep=0.05", "toy.train.epochs=200", "seed=0,1",
                  "cluster=local", f"hydra.sweep.dir={sweep}", cwd=tmp_path, toy=True, quiet=True)
    t0, pids = time.time(), []
    while len(pids) < 2:
        assert time.time() - t0 < 120 and p.poll() is None, "the jobs never started"
        pids = [json.loads(m.read_text()).get("pid") for m in sweep.glob("*/meta.json")]
        pids = [x for x in pids if x]
        time.sleep(0.1)
    p.kill()
    p.wait(30)
    t0 = time.time()
    alive = pids
    while alive and time.time() - t0 < 60:
        alive = [x for x in pids if _alive(x)]
        time.sleep(0.2)
    assert not alive, f"jobs {alive} outlived their sweep"
    from quadrun.report import sweep_status

    states = {state for _, state, _, _ in sweep_status(sweep)}
    assert "running" not in states


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie is not running
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_sweep_job_finished_by_other_code_runs_again(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=toy", "toy.train.epochs=2", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    assert run_cli(*args, cwd=tmp_path, toy=True).returncode == 0
    job = next(p for p in sweep.iterdir() if p.name.startswith("seed=0"))
    s = json.loads((job / "summary.json").read_text())
    s["code"]["source"] = "another"
    (job / "summary.json").write_text(json.dumps(s))
    r = run_cli(f"resume={sweep}", cwd=tmp_path, toy=True)
    assert r.returncode == 0, r.stderr
    assert "1 completed, 1 skipped" in r.stderr, r.stderr[-2000:]
    assert json.loads((job / "summary.json").read_text())["code"]["source"] != "another"


def test_second_sigterm_while_stopping_still_exits_3(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    p = start_cli(*TOY, cwd=work, toy=True)
    t0 = time.time()
    while not list(work.glob("outputs/toy/*/checkpoints/last.pt")):
        assert time.time() - t0 < 60 and p.poll() is None
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    p.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode == 3


@pytest.mark.parametrize("after", [0.3, 1.0, 2.0])
def test_sigterm_before_the_run_starts_leaves_no_empty_folder(tmp_path, after):
    """Stopped in its first seconds, a run exits cleanly (status 3, one line) once quadrun's
    code runs (earlier, the interpreter's default kills it before anything exists), and
    never leaves a run folder with nothing of the run in it."""
    p = start_cli(*TOY, cwd=tmp_path, toy=True)
    time.sleep(after)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    folders = list((tmp_path / "outputs" / "toy").glob("*")) if (tmp_path / "outputs").exists() else []
    assert all((f / "meta.json").exists() for f in folders), folders
    if p.returncode == -signal.SIGTERM:
        assert not folders
    else:
        assert p.returncode in (0, 3), err
        assert "Traceback" not in err


@pytest.mark.parametrize("args,expected", [
    (["experiment=relinear", "device=cuda"], "device: cuda asked for, but no CUDA device"),
    (["experiment=relinear", "relinear.train_size=5000"], "relinear.train_size: 5000 training"),
    (["experiment=dcdm", "dcdm.dims=[]"], "dcdm.dims: empty"),
    (["experiment=dcdm", "dcdm.solvers=[]"], "dcdm.solvers: empty"),
    (["experiment=relinear", "relinear.dataset=cifar10", "data_dir=data"],
     "data_dir: data/cifar-10-batches-py/data_batch_1 has MD5 "),
    (["experiment=hierpoly", "hierpoly.n_test=1000000000000"], "hierpoly.n_test: 1000000000000 is out of range"),
    (["experiment=relinear", "scale=gpu"], "scale: relinear has no gpu scale"),
])
def test_values_that_used_to_leave_a_folder_are_one_line_and_create_nothing(tmp_path, args,
                                                                             expected):
    if torch.cuda.is_available() and "device=cuda" in args:
        pytest.skip("a CUDA device is here")
    folder = tmp_path / "data" / "cifar-10-batches-py"      # a CIFAR-10 folder, one file wrong
    folder.mkdir(parents=True)
    from quadrun.data.cifar import FILE_MD5
    for name in FILE_MD5:
        (folder / name).write_bytes(b"not the official file")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = run_cli(*args, cwd=tmp_path, timeout=120)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("quadrun: error: " + expected), lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

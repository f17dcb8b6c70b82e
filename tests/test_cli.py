"""The first hour: messages that help, Ctrl-C, resume=latest, the run listing, a CLI
that needs no torch for help and errors."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_env, run_cli, run_folders, start_cli, summary
from quadrun.cli import main

# (arguments, the exact first words of the one line after "quadrun: error: ")
MESSAGES = {
    "unknown top key": (["nosuchkey=1"], "nosuchkey: unknown key; allowed here: "),
    "typo in a section": (["toy.widht=3"], "toy.widht: unknown key; did you mean toy.width? "
                                           "allowed in toy: width, "),
    "old train section": (["train.epoch=5"], "train.epoch: unknown key; did you mean "
                                             "toy.train.epochs?"),
    "typo in train": (["toy.train.epoch=5"], "toy.train.epoch: unknown key; did you mean "
                                             "toy.train.epochs? allowed in toy.train: epochs"),
    "dashes": (["--experiment=relinear"], "arguments: '--experiment=relinear' is not an option; "
                                          "overrides are written without dashes, e.g. "
                                          "experiment=relinear"),
    "trailing comma": (["toy.train.lr=1e-3,"], "toy.train.lr: cannot parse 'toy.train.lr=1e-3,': "
                                               "it ends with a comma; write key=value"),
    "snowman": (["seed=☃"], "seed: cannot parse 'seed=☃': it has a character that needs quotes"),
    "no equals": (["seed"], "seed: cannot parse 'seed': it has no '='"),
    "open bracket": (["toy.train.milestones=[1,"], "toy.train.milestones: cannot parse "
                                                   "'toy.train.milestones=[1,': "),
    "sweep without -m": (["seed=0,1"], "seed: '0,1' is a sweep; add -m to run one job per value "
                                       "(quadrun -m seed=0,1), or write seed=[0,1] for a list"),
    "unwritable folder": (["hydra.run.dir=/proc/quadrun/run"],
                          "hydra.run.dir: cannot write the run folder '/proc/quadrun/run'"),
    "no latest run": (["resume=latest"], "resume: 'latest' found no run of experiment 'toy'"),
    "missing plugin": (["-m", "hydra/sweeper=nope"], "hydra/sweeper: unknown 'nope'"),
    "optuna objective": (["-m", "hydra/sweeper=optuna", "toy.train.lr=tag(log, interval(0.001, 0.1))"],
                         "sweep.objective: a search sweeper needs the summary value to optimise"),
    "logger choice": (["logger=wandb"], "logger: 'wandb' is not allowed; must be one of: none, "
                                        "tensorboard, mlflow"),
    "cfg job, bad value": (["--cfg", "job", "toy.width=0"], "toy.width: 0 is out of range; "
                                                           "must be >= 1"),
    "cfg job, bad type": (["--cfg", "job", "toy.width=abc"], "toy.width: Value 'abc' "),
    "cfg job, no such experiment": (["--cfg", "job", "experiment=nosuch"],
                                    "experiment: unknown 'nosuch'; must be one of: "),
}


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """main(argv) in this process, in tmp_path, with the toy experiment registered."""
    monkeypatch.setenv("QUADRUN_EXPERIMENTS", "toy=plugins.toy")
    monkeypatch.chdir(tmp_path)

    def call(*args):
        with pytest.raises(SystemExit) as exit_:
            main(["experiment=toy", *args])
        return exit_.value.code
    return call


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_each_bad_command_line_is_one_helpful_line(in_process, capsys, tmp_path, name):
    args, expected = MESSAGES[name]
    code = in_process(*args)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("quadrun: error: " + expected), lines[0]
    assert not (tmp_path / "outputs").exists()      # nothing created


def test_messages_through_the_real_cli(tmp_path):
    for args, expected in (MESSAGES["typo in a section"], MESSAGES["unwritable folder"]):
        r = run_cli("experiment=toy", *args, cwd=tmp_path, toy=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().startswith("quadrun: error: " + expected), r.stderr
    assert not (tmp_path / "outputs").exists()


NO_TORCH = ("import atexit, sys; atexit.register(lambda: print('torch imported:', "
            "'torch' in sys.modules, file=sys.stderr)); from quadrun.cli import main; "
            "sys.argv[0] = 'quadrun'; main()")


@pytest.mark.parametrize("args", [["--help"], ["experiment=pde", "--cfg", "job"],
                                  ["experiment=pde", "--cfg", "job", "pde.solution=nosuch"],
                                  ["experiment=expressivity", "expressivity.budget=-1"],
                                  ["experiment=hierpoly", "hierpoly.nope=1"],
                                  ["experiment=dcdm", "seed=-4"]])
def test_help_config_and_errors_do_not_import_torch(tmp_path, args):
    r = subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=tmp_path, env=cli_env(),
                       capture_output=True, text=True, timeout=120)
    assert "torch imported: False" in r.stderr, r.stderr[-2000:]
    assert r.returncode in (0, 2)


def test_ctrl_c_checkpoints_and_prints_the_resume_command(tmp_path):
    args = ["experiment=toy", "toy.sleep=0.01", "toy.train.epochs=12", "toy.train.log_every=3"]
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    ref_dir.mkdir(), cut_dir.mkdir()
    assert run_cli(*args, cwd=ref_dir, toy=True).returncode == 0
    [ref] = run_folders(ref_dir, "toy")
    p = start_cli(*args, cwd=cut_dir, toy=True)
    t0 = time.time()
    while not list(cut_dir.glob("outputs/toy/*/checkpoints/last.pt")):
        assert time.time() - t0 < 60 and p.poll() is None
        time.sleep(0.05)
    [cut] = run_folders(cut_dir, "toy")
    p.send_signal(signal.SIGINT)
    time.sleep(0.02)
    p.send_signal(signal.SIGINT)                   # a second Ctrl-C while it saves
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = [l for l in err.splitlines() if l.strip()][-1]
    assert last.startswith("quadrun: interrupted: stopped at step ")
    assert last.endswith(f"continue with: quadrun resume={cut}"), last
    assert summary(cut)["status"] == "interrupted"
    r = run_cli("resume=latest", "experiment=toy", cwd=cut_dir, toy=True)
    assert r.returncode == 0, r.stderr
    assert f"quadrun: resuming outputs/toy/{cut.name}" in r.stderr
    assert summary(cut)["status"] == "completed"
    assert (ref / "metrics.jsonl").read_text() == (cut / "metrics.jsonl").read_text()
    assert summary(ref)["weights_sum"] == summary(cut)["weights_sum"]


def test_the_run_prints_its_folder_and_resume_command(tmp_path):
    r = run_cli("experiment=toy", "toy.train.epochs=1", cwd=tmp_path, toy=True)
    assert r.returncode == 0, r.stderr
    [run] = run_folders(tmp_path, "toy")
    assert f"to continue this run after a stop, kill or crash: quadrun resume={run}" in r.stdout
    assert "Claims" in r.stdout and "fits" in r.stdout          # the claims, printed at the end


def test_report_lists_recent_runs_with_state_and_step(tmp_path):
    for epochs in (1, 2):
        assert run_cli("experiment=toy", f"toy.train.epochs={epochs}", cwd=tmp_path,
                       toy=True).returncode == 0
    killed = run_folders(tmp_path, "toy")[0]
    (killed / "summary.json").unlink()              # as if killed: no summary, no process
    meta = json.loads((killed / "meta.json").read_text())
    meta["pid"], meta["end"] = 2 ** 22 + 12345, None  # no such process; it never ended
    (killed / "meta.json").write_text(json.dumps(meta))
    r = run_cli("--runs", "toy", cwd=tmp_path, toy=True, script="quadrun.report")
    assert r.returncode == 0, r.stderr
    assert "continue a killed or interrupted run with: quadrun resume=outputs/<folder>" in r.stdout
    assert "killed at step 8" in r.stdout
    from quadrun.report import recent_runs
    runs = recent_runs(tmp_path / "outputs", "toy")
    assert [r.state for r in runs] == ["completed", "killed"]
    assert [r.last_step for r in runs] == [16, 8]


def test_listings_never_wrap_a_path_and_show_a_sweep_as_one_row(tmp_path):
    sweep = ["-m", "experiment=toy", "toy.train.epochs=1", "seed=0,1,2"]
    assert run_cli(*sweep, cwd=tmp_path, toy=True).returncode == 0
    assert run_cli("experiment=toy", "toy.train.epochs=1", cwd=tmp_path, toy=True).returncode == 0
    for columns in ("80", "120", "140"):
        r = run_cli("--runs", cwd=tmp_path, toy=True, script="quadrun.report",
                    env={"COLUMNS": columns})
        assert r.returncode == 0, r.stderr
        rows = [l for l in r.stdout.splitlines() if "toy/" in l]
        assert len(rows) == 2, r.stdout                     # one run, one sweep of 3 jobs
        assert any("3 jobs: 3 completed" in l for l in rows)
        assert all(len(l) <= int(columns) for l in r.stdout.splitlines())
        folders = [l.split("│")[1].strip() for l in rows]
        assert all(f.startswith("toy/") and (f.endswith(f.split("_")[-1])) for f in folders)

"""Sweeps that survive (quadrun/sweeps.py): jobs named by their overrides, completed jobs
skipped, killed ones resumed byte-identical, failed ones reported and retried, fail-fast,
the status of a running sweep, Optuna studies that resume, MLflow read back."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import run_cli, run_folders, start_cli, summary

TOY = ["experiment=toy", "toy.sleep=0.01", "toy.train.epochs=4", "toy.train.log_every=2",
       "toy.fail_at=3", "toy.fail_seed=2"]


def jobs(sweep: Path) -> dict:
    return {p.name: p for p in sweep.iterdir() if (p / ".hydra").is_dir()}


def files_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_killed_failed_and_completed_jobs_on_a_second_launch(tmp_path):
    sweep = tmp_path / "sweep"
    # an uninterrupted run of the job that will be killed (seed=1), for comparison
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    assert run_cli(*TOY, "seed=1", cwd=ref_dir, toy=True).returncode == 0
    [ref] = run_folders(ref_dir, "toy")

    # launch 1: killed while job seed=1 trains (jobs run one after another)
    p = start_cli("-m", *TOY, "seed=0,1,2,3", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                  toy=True, quiet=True)
    t0 = time.time()
    killed = sweep / "seed=1,toy.fail_at=3,toy.fail_seed=2,toy.sleep=0.01,toy.train.epochs=4,toy.train.log_every=2"
    while not (killed / "checkpoints" / "last.pt").exists():
        assert time.time() - t0 < 120 and p.poll() is None, "job seed=1 never checkpointed"
        time.sleep(0.02)
    p.kill()
    p.wait(30)
    assert summary(sweep / jobs(sweep)["seed=0,toy.fail_at=3,toy.fail_seed=2,toy.sleep=0.01,"
                                        "toy.train.epochs=4,toy.train.log_every=2"])["status"] == "completed"
    assert not (killed / "summary.json").exists()
    done = {name: files_of(j) for name, j in jobs(sweep).items() if name.startswith("seed=0")}

    # launch 2: resume the sweep folder: seed=0 skipped, seed=1 resumed, 2 fails, 3 runs
    r = run_cli(f"resume={sweep}", cwd=tmp_path, toy=True)
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stderr.splitlines() if l.startswith(f"sweep {sweep}")][-1]
    assert line.startswith(f"sweep {sweep}: 4 jobs: 2 completed, 1 failed, 1 skipped; failed: ")
    assert "seed=2," in line
    names = jobs(sweep)
    assert sorted(n.split(",")[0] for n in names) == ["seed=0", "seed=1", "seed=2", "seed=3"]
    for name, files in done.items():                       # not rerun: files untouched
        assert files_of(names[name]) == files
    assert (ref / "metrics.jsonl").read_text() == (killed / "metrics.jsonl").read_text()
    for key in ("val/mse", "weights_sum", "steps"):
        assert summary(ref)[key] == summary(killed)[key]
    failed = next(j for n, j in names.items() if n.startswith("seed=2"))
    assert summary(failed)["status"] == "failed"
    meta = json.loads((failed / "meta.json").read_text())
    assert meta["failed_attempts"] == 1

    # launch 3: the failed job is reported, not rerun, unless sweep.retries allows it
    r = run_cli(f"resume={sweep}", cwd=tmp_path, toy=True)
    assert json.loads((failed / "meta.json").read_text())["attempts"] == meta["attempts"]
    r = run_cli(f"resume={sweep}", "sweep.retries=1", cwd=tmp_path, toy=True)
    meta2 = json.loads((failed / "meta.json").read_text())
    assert meta2["attempts"] == meta["attempts"] + 1 and meta2["failed_attempts"] == 2
    line = [l for l in r.stderr.splitlines() if l.startswith(f"sweep {sweep}")][-1]
    assert line.startswith(f"sweep {sweep}: 4 jobs: 1 failed, 3 skipped")

    # adding a value to the sweep list: one new job, no job renamed
    before = set(jobs(sweep))
    r = run_cli("-m", *TOY, "seed=0,1,2,3,4", f"hydra.sweep.dir={sweep}", cwd=tmp_path, toy=True)
    after = set(jobs(sweep))
    assert before <= after and [n.split(",")[0] for n in after - before] == ["seed=4"]


def test_fail_fast_starts_no_job_after_a_failure(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("-m", "experiment=toy", "toy.train.epochs=1", "toy.fail_at=2", "toy.fail_seed=0",
                "seed=0,1,2", "sweep.fail_fast=true", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                toy=True)
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stderr.splitlines() if l.startswith(f"sweep {sweep}")][-1]
    assert line.startswith(f"sweep {sweep}: 3 jobs: 1 failed, 2 cancelled; failed: ")
    states = {n.split(",")[0]: (j / "summary.json").exists() for n, j in jobs(sweep).items()}
    assert states == {"seed=0": True, "seed=1": False, "seed=2": False}
    # without fail_fast, the same sweep runs every job
    other = tmp_path / "other"
    r = run_cli("-m", "experiment=toy", "toy.train.epochs=1", "toy.fail_at=2", "toy.fail_seed=0",
                "seed=0,1,2", f"hydra.sweep.dir={other}", cwd=tmp_path, toy=True)
    assert "3 jobs: 2 completed, 1 failed" in r.stderr


def test_status_of_a_running_sweep(tmp_path):
    from quadrun.report import sweep_status

    sweep = tmp_path / "sweep"
    p = start_cli("-m", "experiment=toy", "toy.sleep=0.05", "toy.train.epochs=20",
                  "toy.train.log_every=1", "seed=0,1,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                  toy=True, quiet=True)
    try:
        t0 = time.time()
        while True:
            assert time.time() - t0 < 120 and p.poll() is None, "the sweep never got to job 2"
            rows = sweep_status(sweep) if (sweep / ".quadrun-sweep.yaml").exists() else []
            states = [state for _, state, _, _ in rows]
            if states[:1] == ["completed"] and states[1:2] == ["running"] and rows[1][2]:
                break
            time.sleep(0.05)
        assert states[2] == "pending" and len(rows) == 3
        r = run_cli(str(sweep), "--status", cwd=tmp_path, toy=True, script="quadrun.report")
        assert r.returncode == 0 and "3 jobs:" in r.stdout, r.stderr
    finally:
        p.kill()
        p.wait(30)
    assert sweep_status(sweep)[1][1] == "killed"


def test_optuna_study_of_three_trials_resumes_from_its_sqlite_file(tmp_path):
    optuna = pytest.importorskip("optuna")
    sweep = tmp_path / "study"
    args = ["-m", "experiment=toy", "toy.train.epochs=1", "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.direction=minimize",
            "hydra.sweeper.study_name=toy_lr", f"hydra.sweeper.storage=sqlite:///{sweep}/optuna.db",
            "toy.train.lr=tag(log, interval(0.001, 0.1))", "sweep.objective=val/mse",
            f"hydra.sweep.dir={sweep}"]
    r = run_cli(*args, cwd=tmp_path, toy=True)
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="toy_lr", storage=f"sqlite:///{sweep}/optuna.db")
    first = [(t.params["toy.train.lr"], t.value) for t in study.trials]
    assert len(first) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    for (lr, value), job in zip(first, sorted(jobs(sweep).values(), key=lambda j: j.stat().st_mtime)):
        assert summary(job)["val/mse"] == pytest.approx(value)     # the objective is the summary's
        assert 0.001 <= lr <= 0.1
    r = run_cli(f"resume={sweep}", cwd=tmp_path, toy=True)
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="toy_lr", storage=f"sqlite:///{sweep}/optuna.db")
    assert len(study.trials) == 6
    assert [(t.params["toy.train.lr"], t.value) for t in study.trials[:3]] == first


def test_mlflow_store_is_read_back_with_mlflows_client(tmp_path):
    pytest.importorskip("mlflow")
    r = run_cli("experiment=toy", "toy.train.epochs=2", "logger=mlflow", cwd=tmp_path, toy=True)
    assert r.returncode == 0, r.stderr[-3000:]
    [run] = run_folders(tmp_path, "toy")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlruns' / 'mlflow.db'}")
    [found] = client.search_runs([client.get_experiment_by_name("quadrun/toy").experiment_id])
    assert found.data.params["toy.train.epochs"] == "2" and found.data.params["seed"] == "0"
    assert found.data.tags["quadrun.status"] == "completed"
    assert found.data.tags["claim.fits"] == summary(run)["claims"][0]["verdict"]
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(found.info.run_id, "train/loss")
    logged = [r for r in rows if "train/loss" in r]
    assert [m.step for m in history] == [r["step"] for r in logged]
    assert [m.value for m in history] == pytest.approx([r["train/loss"] for r in logged])
    assert found.data.metrics["summary/val/mse"] == pytest.approx(summary(run)["val/mse"])
    names = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"summary.json", "report"} <= names
    assert "report/claims.json" in {a.path for a in client.list_artifacts(found.info.run_id, "report")}
    assert json.loads((run / "meta.json").read_text())["mlflow_run_id"] == found.info.run_id


@pytest.mark.slow
def test_the_next_command_of_an_inconclusive_relinear_sweep_launches_only_new_seeds(tmp_path):
    """The report's next command for an undecided relinear claim extends the sweep to more
    seeds: run in the form it suggests, the finished jobs are skipped and only the new
    seeds run (the count is cut to one more seed here, to stay quick)."""
    import re

    sweep = tmp_path / "sweep"
    r = run_cli("-m", "experiment=relinear", "scale=smoke", "threads=1",
                "relinear.strategy=conventional,relinear_sg", "seed=100,101",
                f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    claims = json.loads((sweep / "report" / "claims.json").read_text())
    steps = [c["next"]["text"] for c in claims if c["verdict"] in ("inconclusive", "not_measured")
             and isinstance(c.get("next"), dict) and "resume=" in c["next"].get("text", "")]
    assert steps, [(c["id"], c["verdict"], c.get("next")) for c in claims]
    found = re.match(r"quadrun resume=(\S+) 'seed=range\((\d+),(\d+)\)' \((\d+) new runs",
                     steps[0])
    assert found, steps[0]
    folder, start, stop, jobs = found.group(1), *map(int, found.groups()[1:])
    assert Path(folder) == sweep and start == 100 and stop > 102
    assert jobs == (stop - 102) * 2                       # two strategies, seeds 100-101 done
    r = run_cli(f"resume={folder}", "seed=range(100,103)", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 jobs" in r.stderr.splitlines()[0] or "(4 of 6 finished before" in r.stderr, r.stderr
    journal = [json.loads(l) for l in (sweep / ".quadrun-jobs.jsonl").read_text().splitlines()]
    last = [j for j in journal if j["launch"] == journal[-1]["launch"]]
    assert sorted(j["outcome"] for j in last if j["outcome"] != "finished") == \
        ["ran", "ran", "skipped", "skipped", "skipped", "skipped"]
    assert all("seed=102" in j["job"] for j in last if j["outcome"] == "ran")

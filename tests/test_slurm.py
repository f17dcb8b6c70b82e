"""Slow tier: sweeps on a real single-node SLURM cluster started by the test set-up."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TESTS, run_cli, run_folders, start_cli, summary

pytestmark = pytest.mark.slow
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

SLURM = ["cluster=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "hydra.launcher.timeout_min=20"]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    r = subprocess.run(["bash", str(TESTS / "slurm" / "start_cluster.sh"),
                        str(tmp_path_factory.mktemp("slurm-state"))],
                       capture_output=True, text=True, timeout=900)
    if r.returncode == 3:
        pytest.skip(f"SLURM daemons cannot be installed here: {r.stdout.strip()}")
    assert r.returncode == 0 and "ready" in r.stdout, r.stdout + r.stderr
    yield


def jobs_of(cwd: Path) -> list[Path]:
    [sweep] = (cwd / "outputs" / "toy" / "multirun").iterdir()
    return sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())


def test_two_job_sweep_on_slurm_then_report(slurm_cluster, tmp_path):
    r = run_cli("-m", "experiment=toy", "seed=0,1", "toy.train.epochs=2", *SLURM, cwd=tmp_path,
                toy=True, timeout=600)
    assert r.returncode == 0, r.stderr
    jobs = jobs_of(tmp_path)
    assert len(jobs) == 2
    for i, job in enumerate(jobs):
        s = summary(job)
        assert s["status"] == "completed" and s["seed"] == i and s["steps"] == 16
        meta = json.loads((job / "meta.json").read_text())
        assert meta["slurm"]["SLURM_JOB_ID"]  # ran as a SLURM job
    r = run_cli(str(jobs[0].parent), cwd=tmp_path, toy=True, script="quadrun.report")
    assert r.returncode == 0, r.stderr
    md = (jobs[0].parent / "report" / "table.md").read_text()
    assert md.startswith("2 runs: 2 completed") and "| count | 2 |" in md and "| fits | " in md


def test_slurm_pre_timeout_signal_requeues_and_resumes(slurm_cluster, tmp_path):
    args = ["experiment=toy", "toy.sleep=0.05", "toy.train.epochs=12", "toy.train.log_every=3"]
    ref_dir, job_dir = tmp_path / "ref", tmp_path / "job"
    ref_dir.mkdir(), job_dir.mkdir()
    assert run_cli(*args, cwd=ref_dir, toy=True).returncode == 0
    [ref] = run_folders(ref_dir, "toy")
    p = start_cli("-m", *args, *SLURM, cwd=job_dir, toy=True)
    t0 = time.time()
    while not list(job_dir.glob("outputs/toy/multirun/*/*/checkpoints/last.pt")):
        assert time.time() - t0 < 300 and p.poll() is None, "job never checkpointed"
        time.sleep(0.1)
    [job] = jobs_of(job_dir)
    slurm_id = json.loads((job / "meta.json").read_text())["slurm"]["SLURM_JOB_ID"]
    # what SLURM sends `signal_delay_s` before the time limit
    subprocess.run(["scancel", "--signal=USR2", slurm_id], check=True)  # to the job steps
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    meta = json.loads((job / "meta.json").read_text())
    assert meta["attempts"] == 2
    assert meta["slurm"].get("SLURM_RESTART_COUNT") == "1"  # requeued by SLURM itself
    a, b = summary(ref), summary(job)
    assert b["status"] == "completed"
    for key in ("val/mse", "weights_sum", "steps"):
        assert a[key] == b[key], key
    assert (ref / "metrics.jsonl").read_text() == (job / "metrics.jsonl").read_text()


def test_slurm_sweep_resumes_skipping_finished_jobs_and_retrying_a_failed_one(slurm_cluster,
                                                                             tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=toy", "toy.train.epochs=1", "toy.fail_at=3", "toy.fail_seed=1",
            "seed=0,1", *SLURM, f"hydra.sweep.dir={sweep}"]
    r = run_cli(*args, cwd=tmp_path, toy=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"sweep {sweep}: 2 jobs: 1 completed, 1 failed" in r.stderr
    done, failed = (sweep / "seed=0,toy.fail_at=3,toy.fail_seed=1,toy.train.epochs=1",
                    sweep / "seed=1,toy.fail_at=3,toy.fail_seed=1,toy.train.epochs=1")
    before = {p: p.stat().st_mtime_ns for p in done.rglob("*") if p.is_file()}
    r = run_cli(f"resume={sweep}", "sweep.retries=1", cwd=tmp_path, toy=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"sweep {sweep}: 2 jobs: 1 failed, 1 skipped" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in done.rglob("*") if p.is_file()} == before
    meta = json.loads((failed / "meta.json").read_text())
    assert meta["attempts"] == 2 and meta["failed_attempts"] == 2
    assert meta["slurm"]["SLURM_JOB_ID"]

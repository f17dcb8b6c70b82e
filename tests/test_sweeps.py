"""Sweeps through Hydra launchers, preemption with submitit's requeue protocol, report."""
from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from conftest import run_cli, run_folders, start_cli, summary

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")



def sweep_jobs(cwd: Path, experiment: str = "toy") -> list[Path]:
    [sweep] = (cwd / "outputs" / experiment / "multirun").iterdir()
    return sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())


def test_submitit_local_sweep_then_report(tmp_path):
    r = run_cli("-m", "experiment=toy", "seed=0,1", "cluster=local", "toy.train.epochs=2",
                cwd=tmp_path, toy=True, timeout=300)
    assert r.returncode == 0, r.stderr
    jobs = sweep_jobs(tmp_path)
    assert [j.name for j in jobs] == ["seed=0,toy.train.epochs=2", "seed=1,toy.train.epochs=2"]
    assert [summary(j)["seed"] for j in jobs] == [0, 1]
    assert all(summary(j)["status"] == "completed" for j in jobs)
    sweep = jobs[0].parent
    r = run_cli(str(sweep), cwd=tmp_path, toy=True, script="quadrun.report")
    assert r.returncode == 0, r.stderr
    md = (sweep / "report" / "table.md").read_text()
    assert md.startswith("2 runs: 2 completed")
    assert md.index("### Claims: toy") < md.index("| count | 2 |")   # two records pooled
    assert "| fits | " in md
    assert (sweep / "report" / "table.tex").exists() and (sweep / "report" / "results.csv").exists()


def test_failed_and_diverged_jobs_do_not_stop_the_sweep(tmp_path):
    r = run_cli("-m", "experiment=toy", "toy.fail_at=0,3", "toy.nan_after=0,2", "toy.train.epochs=1",
                cwd=tmp_path, toy=True, timeout=300)
    jobs = sweep_jobs(tmp_path)
    statuses = {j.name: summary(j)["status"] for j in jobs}
    assert statuses == {"toy.fail_at=0,toy.nan_after=0,toy.train.epochs=1": "completed",
                        "toy.fail_at=0,toy.nan_after=2,toy.train.epochs=1": "diverged",
                        "toy.fail_at=3,toy.nan_after=0,toy.train.epochs=1": "failed",
                        "toy.fail_at=3,toy.nan_after=2,toy.train.epochs=1": "failed"}, statuses
    assert "toy failure requested" in summary(jobs[2])["error"]
    assert "2 failed" in r.stderr and "sweep " in r.stderr      # the sweep's summary line
    assert r.returncode == 0, r.stderr  # the sweep itself finished


def test_preempted_job_requeues_and_resumes_to_the_same_result(tmp_path):
    args = ["experiment=toy", "toy.sleep=0.02", "toy.train.epochs=12", "toy.train.log_every=3"]
    ref_dir, job_dir = tmp_path / "ref", tmp_path / "job"
    ref_dir.mkdir(), job_dir.mkdir()
    r = run_cli(*args, cwd=ref_dir, toy=True)
    assert r.returncode == 0, r.stderr
    [ref] = run_folders(ref_dir, "toy")

    p = start_cli("-m", *args, "cluster=local", cwd=job_dir, toy=True)
    t0 = time.time()
    while not list(job_dir.glob("outputs/toy/multirun/*/*/checkpoints/last.pt")):
        assert time.time() - t0 < 120 and p.poll() is None, "job never checkpointed"
        time.sleep(0.05)
    [job] = sweep_jobs(job_dir)
    pid = json.loads((job / "meta.json").read_text())["pid"]
    import os
    os.kill(pid, signal.SIGUSR2)  # submitit's preemption / pre-timeout signal
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    meta = json.loads((job / "meta.json").read_text())
    assert meta["attempts"] == 2 and meta["pid"] != pid  # a new process resumed the folder
    a, b = summary(ref), summary(job)
    assert b["status"] == "completed"
    for key in ("val/mse", "weights_sum", "steps"):
        assert a[key] == b[key], key
    assert (ref / "metrics.jsonl").read_text() == (job / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_jobs_per_device_packs_jobs_onto_the_cpu(tmp_path):
    """jobs_per_device=1: the two jobs run one after the other; 2: side by side."""
    spans = {}
    for n in (1, 2):
        r = run_cli("-m", "experiment=toy", "toy.sleep=0.05", "toy.train.epochs=2", "seed=0,1",
                    "cluster=local", f"sweep.jobs_per_device={n}",
                    f"hydra.sweep.dir={tmp_path / str(n)}", cwd=tmp_path, toy=True, timeout=300)
        assert r.returncode == 0, r.stderr
        metas = [json.loads(p.read_text()) for p in (tmp_path / str(n)).glob("*/meta.json")]
        assert len(metas) == 2
        spans[n] = sorted((m["start"], m["end"]) for m in metas)
    (a0, a1), (b0, b1) = spans[1]
    assert a1 <= b0                      # one at a time
    (a0, a1), (b0, b1) = spans[2]
    assert b0 < a1                       # at once


@pytest.mark.slow
def test_a_30_job_smoke_sweep_prints_at_most_40_lines_and_ends_with_the_claims(tmp_path):
    r = run_cli("-m", "experiment=relinear", "scale=smoke", "threads=1",
                "relinear.strategy=conventional,conventional_rezero,plain,relinear_init,"
                "relinear_sg,relinear_rezero", "seed=0,1,2,3,4", cwd=tmp_path, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    assert len(lines) <= 40, "\n".join(lines)
    assert sum(l.startswith("[") and "/30] " in l for l in lines) == 30      # a line per job
    assert lines[-1].startswith("sweep ") and "30 jobs: 30 completed; report: " in lines[-1]
    assert any(l.startswith("claims (scale=smoke") for l in lines[-8:])
    assert not any(re.search(r"(?<!\()\b(holds|fails)\b", l) for l in lines if "claims" not in l
                   and not l.startswith("  ("))


def test_grids_add_jobs_to_some_arms_and_the_command_line_replaces_a_grid(tmp_path):
    """hydra.sweeper.grids: params' product, then each grid's (its own values for the keys
    it names, params' for the rest), a job listed twice launched once; a grid naming a key
    the command line sets is left out. The sweeper runs exactly those jobs and expected_jobs
    (quadrun-report --status) lists them (reproduce's count: test_reproduce.py)."""
    from quadrun.sweeps import expected_jobs, grid_jobs

    params = {"toy.train.epochs": "1,2", "seed": "range(0,2)"}
    grids = [{"toy.train.epochs": "2", "seed": "range(1,4)"}, {"toy.train.epochs": "1", "seed": "0"}]
    jobs = grid_jobs(params, grids, ["experiment=toy"])
    names = [",".join(o for o in j if not o.startswith("experiment=")) for j in jobs]
    assert names == ["toy.train.epochs=1,seed=0", "toy.train.epochs=1,seed=1",
                     "toy.train.epochs=2,seed=0", "toy.train.epochs=2,seed=1",
                     "toy.train.epochs=2,seed=2", "toy.train.epochs=2,seed=3"]
    assert len(grid_jobs(params, grids, ["seed=7"])) == 2     # both grids name seed: left out
    assert len(grid_jobs(params, grids, [])) == 6
    r = run_cli("-m", "experiment=toy", "hydra.sweeper.params={toy.train.epochs:'1,2',seed:'range(0,2)'}",
                "hydra.sweeper.grids=[{toy.train.epochs:'2',seed:'range(1,4)'},{toy.train.epochs:'1',seed:'0'}]",
                cwd=tmp_path, toy=True, timeout=300)
    assert r.returncode == 0, r.stderr
    jobs = sweep_jobs(tmp_path)
    assert [j.name for j in jobs] == ["seed=0,toy.train.epochs=1", "seed=0,toy.train.epochs=2",
                                      "seed=1,toy.train.epochs=1", "seed=1,toy.train.epochs=2",
                                      "seed=2,toy.train.epochs=2", "seed=3,toy.train.epochs=2"]
    assert [summary(j)["seed"] for j in jobs] == [0, 0, 1, 1, 2, 3]
    assert all(summary(j)["status"] == "completed" for j in jobs)
    assert sorted(p.name for p, _ in expected_jobs(jobs[0].parent)) == sorted(j.name for j in jobs)

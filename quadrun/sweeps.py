"""Sweeps that survive: jobs named by their overrides, resumed, retried, failing fast.

- A job's folder is named by its own overrides (`job_name`), not by its position, so adding
  a value to a sweep list adds one job and renames none, and re-running the same `-m`
  command (or `quadrun resume=<sweep folder>`) finds every job's folder again.
- `QuadrunSweeper` (hydra_plugins/quadrun_sweeper: Hydra's basic sweeper, the default) does not launch
  again a job whose folder holds a completed (or diverged) result, nor a failed one whose
  failed attempts exceed `sweep.retries`; their folders are not touched. An interrupted or
  killed job is launched and resumes from its checkpoint (the runner does that in any
  existing folder). `before_job` checks the same once a job starts, and with
  `sweep.fail_fast` skips jobs that start after a failure (pending SLURM tasks are
  cancelled).
- `sweep.jobs_per_device=N` packs N jobs onto each visible GPU (or N processes on the CPU,
  each with its share of the cores): a job waits for a free slot (a file lock in the sweep
  folder) before it starts.
- `SweepCallback` (a Hydra callback) prints one summary line when a sweep ends.
- `expected_jobs(sweep)` lists every job of a sweep from its multirun.yaml, so
  `quadrun-report --status` can show pending ones too.

Torch-free: the CLI and the report import it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Iterable, Optional

from quadrun import vocab

log = logging.getLogger("quadrun")

FAIL_FAST = ".quadrun-failed"          # written by the first failed job under fail_fast
JOURNAL = ".quadrun-jobs.jsonl"        # one line per job start: what it did this launch
LAUNCH = ".quadrun-launch.json"        # the current launch's id and start time
SLOTS = ".quadrun-slots"               # lock files of jobs_per_device
MULTIRUN = "multirun.yaml"             # Hydra's record of the sweep's config (basic sweeper)
RECORD = ".quadrun-sweep.yaml"         # the same, written for every sweeper at launch
# Overrides that say how a sweep is launched, not what a job computes: left out of names.
LAUNCH_KEYS = ("experiment", "sweep", "cluster", "hydra", "resume")


def defining(overrides: Iterable[str]) -> list:
    """The overrides that say what a job computes (launch keys left out), sorted."""
    return sorted(str(o) for o in overrides
                  if str(o).lstrip("+~").split("=", 1)[0].split(".")[0].split("/")[0]
                  not in LAUNCH_KEYS)


def job_name(overrides: Iterable[str]) -> str:
    """A job's folder name from its overrides, e.g. "relinear.strategy=plain,seed=2".

    Sorted, launch keys left out; characters other than letters, digits and `=,.+-_` become
    `_`, and a name that had to change or is long gets a short hash of the full overrides,
    so two jobs never share a folder."""
    text = ",".join(defining(overrides)) or "defaults"
    safe = re.sub(r"[^A-Za-z0-9=,.+\-_]", "_", text)
    if safe != text or len(safe) > 96:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        safe = f"{safe[:80]}-{digest}"
    return safe


def kept_grids(grids: Optional[list], overrides: Iterable[str]) -> list:
    """The grids (hydra.sweeper.grids) that name no key the command line's `overrides` set
    or sweep: those replace the grids that name them."""
    given = {str(o).split("=", 1)[0].lstrip("+~") for o in overrides}
    return [dict(g) for g in grids or [] if not set(dict(g)) & given]


def grid_jobs(params: Optional[dict], grids: Optional[list], task: Iterable[str],
              parser=None) -> list:
    """Every job of a list/range sweep, in launch order, as override lists: the product of
    `params` (hydra.sweeper.params) with the command line's `task` overrides (which win,
    key by key), then the product of each of `grids` (hydra.sweeper.grids: a list of
    {key: values}, each taking params' values for the keys it does not name) in turn, a job
    listed before not listed again. A grid that names a key the command line sweeps or sets
    is left out: the command line replaces that part of the sweep. So a sweep can give some
    arms more seeds than others:
        params: {strategy: a,b,c, seed: range(0,15)}    grids: [{strategy: a, seed: range(15,60)}]
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = parser or OverridesParser.create()
    task = list(task)
    jobs, seen = [], set()
    for grid in [{}] + kept_grids(grids, task):
        merged = {**(params or {}), **grid}
        parsed = parser.parse_overrides([f"{k}={v}" for k, v in merged.items()] + task)
        for batch in BasicSweeper.split_arguments(parsed, None):
            for job in batch:
                name = job_name(job)
                if name not in seen:
                    seen.add(name)
                    jobs.append(list(job))
    return jobs


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def launch_id(sweep_dir: Path) -> str:
    return str(_read_json(Path(sweep_dir) / LAUNCH).get("id", ""))


def journal(sweep_dir: Path, job_dir: Path, outcome: str, status: Optional[str]) -> None:
    line = json.dumps({"launch": launch_id(sweep_dir), "job": str(job_dir), "outcome": outcome,
                       "status": status, "time": time.time()})
    with open(Path(sweep_dir) / JOURNAL, "a") as fh:   # small appends: atomic enough
        fh.write(line + "\n")


def same_code(summary: dict) -> bool:
    """Whether a job's summary was made by this code (quadrun.identity)."""
    from quadrun import identity

    code = summary.get("code")
    return isinstance(code, dict) and identity.code_fingerprint(code) == identity.code_fingerprint()


def finished(cfg, job_dir: Path) -> Optional[str]:
    """Why a job need not run again ("completed", "diverged", "failed"), or None. A job
    finished by other code runs again (its cells are measured again)."""
    summary = _read_json(Path(job_dir) / vocab.SUMMARY)
    status = summary.get("status")
    if status in ("completed", "diverged"):
        return status if same_code(summary) else None
    if status == "failed":
        failed = int(_read_json(Path(job_dir) / vocab.META).get("failed_attempts", 1))
        if failed > int(cfg.sweep.retries):
            return status
    return None


def before_job(cfg, job_dir: Path, sweep_dir: Path) -> Optional[dict]:
    """None: run the job (fresh, resumed or retried); a summary: skip it, with that result."""
    job_dir, sweep_dir = Path(job_dir), Path(sweep_dir)
    summary = _read_json(job_dir / vocab.SUMMARY)
    status = summary.get("status")
    if status in ("completed", "diverged") and not same_code(summary):
        log.info("sweep: %s was %s by other code; measured again", job_dir.name, status)
    elif status in ("completed", "diverged"):
        log.info("sweep: %s already %s; skipped", job_dir.name, status)
        journal(sweep_dir, job_dir, "skipped", status)
        return summary
    if status == "failed":
        failed = int(_read_json(job_dir / vocab.META).get("failed_attempts", 1))
        if failed > int(cfg.sweep.retries):
            log.info("sweep: %s failed %d time(s) (sweep.retries=%d); not run again",
                     job_dir.name, failed, cfg.sweep.retries)
            journal(sweep_dir, job_dir, "skipped", "failed")
            return summary
        log.info("sweep: %s failed before; retry %d of %d", job_dir.name, failed, cfg.sweep.retries)
    if cfg.sweep.fail_fast and (sweep_dir / FAIL_FAST).exists():
        log.info("sweep: %s not run: a job failed and sweep.fail_fast is set", job_dir.name)
        journal(sweep_dir, job_dir, "cancelled", None)
        return {"status": "failed", "error": "not run: fail_fast after an earlier failure"}
    journal(sweep_dir, job_dir, "ran", None)
    return None


def after_job(cfg, job_dir: Path, sweep_dir: Path, status: str) -> None:
    """Record the job's outcome; under fail_fast the first failure stops the rest."""
    journal(Path(sweep_dir), Path(job_dir), "finished", status)
    if status != "failed" or not cfg.sweep.fail_fast:
        return
    marker = Path(sweep_dir) / FAIL_FAST
    if not marker.exists():
        marker.write_text(str(job_dir) + "\n")
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:  # the tasks still waiting in the queue will not start
        import subprocess

        subprocess.run(["scancel", "--state=PENDING", array], capture_output=True, timeout=30)


PARENT = "QUADRUN_SWEEP_PID"          # the launching process, for jobs that must die with it
TOTAL = "QUADRUN_SWEEP_JOBS"          # the jobs this launch runs, for the [i/N] of each line


def plan_line(cfg, launched: int, total: int) -> str:
    """`30 jobs to run (4 finished before); about 12 min (median 24 s a job over ...)`."""
    from quadrun import estimate

    parallel = int(cfg.sweep.jobs_per_device) or 1
    text = estimate.sweep_line(str(cfg.experiment), str(cfg.scale), launched, parallel)
    skipped = total - launched
    if skipped:
        text = f"{text} ({skipped} of {total} finished before: not run again)"
    return text


@contextlib.contextmanager
def quiet_console():
    """While a sweep job runs in the sweep's own process (Hydra's basic launcher), its
    progress and INFO lines go to its own quadrun.log only; the terminal gets one line per
    job (`job_line`) and warnings."""
    from quadrun import progress

    root = logging.getLogger()
    handlers = [h for h in root.handlers + log.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in handlers]
    was = progress.QUIET
    for h in handlers:
        h.setLevel(max(h.level, logging.WARNING))
    progress.QUIET = True
    try:
        yield
    finally:
        progress.QUIET = was
        for h, level in zip(handlers, levels):
            h.setLevel(level)


def headline(experiment: str, summary: dict) -> str:
    """`test/acc 88.2`: the experiment's HEADLINE keys of a summary (optional), else ''."""
    import importlib

    from quadrun import registry

    try:
        module = importlib.import_module(registry.names()[experiment])
    except (KeyError, ImportError):
        return ""
    keys = getattr(module, "HEADLINE", ())
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    parts = []
    for k in keys:
        v = summary.get(k)
        if isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
        elif v is not None:
            parts.append(f"{k} {v}")
    claims = [c for c in summary.get("claims") or [] if isinstance(c, dict)]
    if not parts and claims:     # no headline number: what its own claims say
        counts: dict = {}
        for c in claims:
            counts[c.get("verdict")] = counts.get(c.get("verdict"), 0) + 1
        shown = ", ".join(f"{n} {v}" for v, n in counts.items())
        parts.append(f"claims ({shown})" if summary.get("scale") != "smoke"
                     else f"claims at smoke scale ({shown})")
    return ", ".join(parts)


def job_line(job_dir: Path, summary: dict, index: Optional[int] = None,
             total: Optional[int] = None) -> str:
    """One line for a finished job: `[3/30] <its overrides>: completed in 14 s; test/acc 88.2`
    or `... failed (<folder>): <error>`."""
    from quadrun.estimate import duration
    from quadrun.provenance import run_seconds

    job_dir = Path(job_dir)
    status = summary.get("status", "failed")
    where = f"[{index}/{total}] " if index is not None and total else ""
    took = run_seconds(job_dir)
    text = f"{where}{job_dir.name}: {status}" + (f" in {duration(took)}" if took is not None else "")
    if status in ("failed", "interrupted"):
        why = str(summary.get("error") or summary.get("reason") or "").splitlines()[:1]
        return f"{text} ({job_dir}){': ' + why[0] if why and why[0] else ''}"
    saved = _read_json(job_dir / vocab.SUMMARY)          # what the run wrote, in full
    head = headline(str(saved.get("experiment") or summary.get("experiment")), saved or summary)
    return f"{text}; {head}" if head else text


def die_with_parent() -> None:
    """A job that submitit's local launcher started (cluster=local) stops when the sweep
    that launched it is gone, as if stopped by Ctrl-C (it checkpoints and exits 3, so a
    resume of the sweep continues it). SLURM jobs outlive the submitting process by design
    and are not watched."""
    pid = os.environ.get(PARENT)
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or not pid:
        return
    import signal
    import threading

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                log.warning("sweep: the launching process %s is gone; stopping this job", pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            except (PermissionError, ValueError):
                return

    threading.Thread(target=watch, name="quadrun-parent-watch", daemon=True).start()


@contextlib.contextmanager
def device_slot(cfg, sweep_dir: Path):
    """Hold one of `jobs_per_device` slots per device for the job's lifetime (a no-op when
    jobs_per_device is 0). On a GPU machine the job sees only its slot's GPU; on a CPU the
    job's threads are the cores divided by the slots."""
    per_device = int(cfg.sweep.jobs_per_device)
    if per_device <= 0:
        yield None
        return
    gpus = _visible_gpus()
    devices = gpus or ["cpu"]
    folder = Path(sweep_dir) / SLOTS
    folder.mkdir(parents=True, exist_ok=True)
    handle = None
    while handle is None:
        for dev in devices:
            for k in range(per_device):
                fh = open(folder / f"{dev}.{k}.lock", "w")
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    fh.close()
                    continue
                handle = (fh, dev)
                break
            if handle:
                break
        if handle is None:
            time.sleep(0.2)
    fh, dev = handle
    try:
        if dev != "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = dev
        log.info("sweep: slot %s on %s (%d jobs per device)", fh.name.rsplit("/", 1)[-1], dev,
                 per_device)
        yield dev
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def slot_threads(cfg) -> int:
    """The threads a packed CPU job gets: the cores divided by the slots (at least 1)."""
    per_device = int(cfg.sweep.jobs_per_device)
    if per_device <= 0 or _visible_gpus():
        return 0
    return max(1, (os.cpu_count() or 1) // per_device)


def _visible_gpus() -> list:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]
    except (OSError, subprocess.SubprocessError):
        return []


# -- the sweep as a whole -------------------------------------------------------------------------
def is_sweep(folder: Path) -> bool:
    return (Path(folder) / RECORD).exists() or (Path(folder) / MULTIRUN).exists()


def _record(sweep_dir: Path) -> dict:
    import yaml

    for name in (RECORD, MULTIRUN):
        try:
            cfg = yaml.safe_load((Path(sweep_dir) / name).read_text())
            if isinstance(cfg, dict):
                return cfg
        except (OSError, yaml.YAMLError):
            continue
    return {}


def expected_jobs(sweep_dir: Path) -> list:
    """[(folder, overrides)] of every job the sweep's own definition asks for, in launch
    order; basic sweeps (lists and ranges) only, else []."""
    cfg = _record(sweep_dir)
    hydra = cfg.get("hydra") or {}
    task = list((hydra.get("overrides") or {}).get("task") or [])
    sweeper = hydra.get("sweeper") or {}
    if "optuna" in str(sweeper.get("_target_", "")):
        return []
    try:
        jobs = grid_jobs(sweeper.get("params") or {}, sweeper.get("grids"), task)
    except Exception:  # not a list/range sweep
        return []
    return [(Path(sweep_dir) / job_name(job), job) for job in jobs]


def resume_argv(sweep_dir: Path) -> list:
    """The command line that launches the sweep in `sweep_dir` again (its own overrides)."""
    cfg = _record(sweep_dir)
    overrides = (cfg.get("hydra") or {}).get("overrides") or {}
    hydra = [o for o in overrides.get("hydra") or []
             if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
    quoted = str(Path(sweep_dir).resolve()).replace("\\", "\\\\").replace("'", "\\'")
    return ["-m", *[o for o in overrides.get("task") or [] if not o.startswith("resume=")],
            *hydra, f"hydra.sweep.dir='{quoted}'"]


def summary_line(sweep_dir: Path, launch: Optional[str] = None) -> str:
    """`sweep <dir>: 4 jobs: 2 completed, 1 failed, 1 skipped; failed: <folders>` for the
    jobs of one launch (the current one by default)."""
    launch = launch_id(sweep_dir) if launch is None else launch
    outcome, status = {}, {}
    try:
        lines = (Path(sweep_dir) / JOURNAL).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("launch") != launch:
            continue
        job = row["job"]
        if row["outcome"] in ("ran", "skipped", "cancelled"):
            outcome[job] = row["outcome"]
        if row.get("status"):
            status[job] = row["status"]
    counts: dict = {}
    failed = []
    for job, how in outcome.items():
        if how == "skipped":
            key = "skipped"
        elif how == "cancelled":
            key = "cancelled"
        else:
            key = status.get(job) or _read_json(Path(job) / vocab.SUMMARY).get("status") \
                or "interrupted"
        counts[key] = counts.get(key, 0) + 1
        if key == "failed" or (how == "skipped" and status.get(job) == "failed"):
            failed.append(job)
    order = ["completed", "diverged", "failed", "interrupted", "skipped", "cancelled"]
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    text = f"sweep {sweep_dir}: {len(outcome)} jobs: " + (", ".join(parts) or "none ran")
    if failed:
        text += "; failed: " + ", ".join(failed)
    return text


from hydra.experimental.callback import Callback  # noqa: E402


class SweepCallback(Callback):
    """Marks the start of a launch and prints the sweep's summary line at its end."""

    def on_multirun_start(self, config, **kwargs) -> None:
        import secrets

        from omegaconf import OmegaConf

        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / RECORD)
        (sweep_dir / LAUNCH).write_text(json.dumps({"id": secrets.token_hex(4),
                                                    "start": time.time()}) + "\n")
        marker = sweep_dir / FAIL_FAST
        if marker.exists():  # a new launch starts with a clean slate
            marker.unlink()

    def on_multirun_end(self, config, **kwargs) -> None:
        """The pooled claims of the whole sweep (one line each), its summary line and
        where its report is."""
        import sys

        sweep_dir = Path(str(config.hydra.sweep.dir))
        line = summary_line(sweep_dir)
        try:
            from rich.console import Console

            from quadrun import report

            result = report.build([sweep_dir], quiet=True)
            report.print_claims_compact(result["claims"], Console(stderr=True))
            line += f"; report: {result['out'] / 'table.md'}"
        except Exception as exc:  # noqa: BLE001 - the jobs' results are saved; say why
            line += f"; the report could not be written ({type(exc).__name__}: {exc})"
        print(line, file=sys.stderr)

"""How long a run, a sweep or a reproduction will take, from what was measured (torch-free).

The one home of these estimates: a run's line before it measures, a sweep's plan line, the
report's time for a claim's next command, and `quadrun reproduce`'s plan all use it.

- Earlier runs (`history`): finished one-attempt runs of the same experiment and scale
  under `outputs/` (single runs and sweep jobs alike), each with its wall seconds
  (quadrun.provenance.run_seconds), its cells, and the load average while it ran when its
  meta.json recorded it.
- Reference rates (`reference_rates`): seconds per job of every experiment at smoke and
  cpu scale measured on the 2-core development machine, with the load they were measured
  at (configs/reproduce/rates.json, `python -m quadrun.reproduce rates ... --write`).
- Load: a CPU-bound job's share of a core is min(1, cores / load), so a rate measured at
  one load is scaled to the load now (`load_factor`) when both are known.

Every estimate says where its rate comes from.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Optional

from quadrun import vocab

RATES = "rates.json"        # configs/reproduce/rates.json


def load_now() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def usable_cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_cores(sample: float = 0.1) -> Optional[float]:
    """How many cores are busy now: the share of CPU time not idle over `sample` seconds
    (/proc/stat), times the cores. Unlike the load average it does not remember the run
    that ended a minute ago. None where /proc/stat cannot be read."""
    def read() -> tuple:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:9]]   # user .. steal
        return values[3] + values[4], sum(values)                   # idle + iowait, all

    try:
        idle0, all0 = read()
        time.sleep(sample)
        idle1, all1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if all1 <= all0:
        return None
    return (1.0 - (idle1 - idle0) / (all1 - all0)) * (os.cpu_count() or 1)


def cpu_threads(requested: int = 0) -> int:
    """The CPU threads a run uses: `requested`, or for 0 the cores this process may use
    minus the cores busy now (busy_cores; the 1-minute load average where that cannot be
    read), at least 1. OpenMP threads that share busy cores with other processes wait for
    each other (a loaded 2-core machine ran the main job 5x slower on 2 threads than on 1:
    benchmarks/threads.py), so a loaded machine gets fewer threads and an idle one all of
    its cores."""
    if requested:
        return int(requested)
    busy = busy_cores()
    busy = (load_now() or 0.0) if busy is None else busy
    return max(1, min(usable_cores(), int(usable_cores() - busy + 0.5)))


def wait_policy(threads: int) -> None:
    """OpenMP's wait policy for a run of `threads` CPU threads (0: the default count), set
    before torch loads its OpenMP runtime; a value already set is kept. Threads that would
    share busy cores (more than cpu_threads() would choose) sleep while they wait
    (OMP_WAIT_POLICY=PASSIVE) instead of spinning on cores other processes need: at load 7
    on 2 cores the main job ran 9x faster. Threads on free cores keep OpenMP's default (spin
    briefly, then sleep): a sleeping thread wakes slowly, and PASSIVE halved the main job's
    images/s at 2 threads on an idle 2-core machine (benchmarks/threads.py)."""
    import sys

    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return
    if threads and threads > cpu_threads():
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def load_factor(measured: Optional[float], now: Optional[float]) -> Optional[float]:
    """How much longer a CPU-bound job takes at load average `now` than at `measured` on
    this machine's cores, taking a job's share of a core as min(1, cores / load)."""
    if measured is None or now is None:
        return None
    cores = os.cpu_count() or 1
    return max(1.0, now / cores) / max(1.0, measured / cores)


def reference_rates() -> dict:
    """configs/reproduce/rates.json: {"rates": {experiment: {scale: {name: {"seconds_per_job",
    "load"}}}}, "startup_s", "measured": {...}} ({} when absent)."""
    from quadrun.plans import plans_dir

    try:
        data = json.loads((plans_dir() / RATES).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def run_load(meta: dict) -> Optional[float]:
    """The load average while a run ran, from its meta.json (the mean of the loads at its
    start and end), or None."""
    load = meta.get("load") if isinstance(meta, dict) else None
    if isinstance(load, dict):
        values = [v for v in (load.get("start"), load.get("end")) if isinstance(v, (int, float))]
        return statistics.fmean(values) if values else None
    return None


def history(experiment: str, scale: str, root: Path = Path("outputs"),
            defining: Optional[set] = None, exclude: Optional[Path] = None,
            limit: int = 400) -> list:
    """[(seconds, load or None, cells)] of finished one-attempt runs of `experiment` at
    `scale` under `root` (newest first, at most `limit`). `defining`: only runs whose
    result-defining overrides (the seed and launch keys left out) are all in it;
    `exclude`: a folder whose runs do not count."""
    from quadrun.provenance import run_seconds

    root = Path(root)
    if not root.is_dir():
        return []
    exclude = Path(exclude).resolve() if exclude else None
    found = []
    for meta_path in root.rglob(vocab.META):
        folder = meta_path.parent
        if vocab.REPORT in folder.parts or (exclude and exclude in folder.resolve().parents):
            continue
        try:
            meta = json.loads(meta_path.read_text())
            summary = json.loads((folder / vocab.SUMMARY).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or not isinstance(summary, dict):
            continue
        if meta.get("experiment") != experiment or meta.get("scale") != scale or \
                summary.get("status") not in ("completed", "diverged"):
            continue
        if defining is not None and not _defining(folder) <= defining:
            continue
        seconds = run_seconds(folder, meta)
        if seconds is not None:
            cells = len(summary.get("records") or []) or 1
            found.append((meta.get("end") or "", seconds, run_load(meta), cells))
    found.sort(key=lambda row: row[0], reverse=True)
    return [(s, load, cells) for _, s, load, cells in found[:limit]]


def _defining(folder: Path) -> set:
    import yaml

    try:
        overrides = yaml.safe_load((folder / vocab.OVERRIDES).read_text()) or []
    except (OSError, ValueError, yaml.YAMLError):
        return {"?"}
    return {str(o) for o in overrides
            if str(o).split("=", 1)[0].split(".")[0] not in
            ("seed", "experiment", "scale", "hydra", "sweep", "cluster", "threads")
            and vocab.defines_result(str(o))}


def scaled(rows: list, now: Optional[float]) -> tuple:
    """(seconds, how) from [(seconds, load or None)]: the mean, times `load_factor` when
    every row's load is known."""
    rate = statistics.fmean(s for s, _ in rows)
    loads = [load for _, load in rows]
    if not loads or any(load is None for load in loads) or now is None:
        return rate, f"{duration(rate)} a job; load then unknown, not scaled"
    measured = statistics.fmean(loads)
    factor = load_factor(measured, now)
    return rate * factor, (f"{duration(rate)} a job at load {measured:.1f}; x{factor:.2f} "
                           f"for load {now:.1f} now")


def reference_rows(experiment: str, scale: str, name: str = "run",
                   reference: Optional[dict] = None) -> list:
    """[(seconds per job, load)] of the reference rates (`reference`, read from the file when
    None) for `name` (a sweep or "run"), or of every entry of the experiment at that scale
    when `name` has none."""
    reference = reference_rates() if reference is None else reference
    table = ((reference.get("rates") or {}).get(experiment) or {}).get(scale) or {}

    def rows(entry) -> list:
        if isinstance(entry, dict):
            return [(float(entry["seconds_per_job"]), entry.get("load"))]
        return [(float(entry), None)]

    entry = table.get(name)
    return rows(entry) if entry is not None else [r for e in table.values() for r in rows(e)]


def per_job(experiment: str, scale: str, root: Path = Path("outputs"),
            now: Optional[float] = None) -> Optional[tuple]:
    """(seconds per run, where it comes from): earlier runs under `root`, else the
    reference rates; None when neither has the experiment at that scale."""
    now = load_now() if now is None else now
    seen = history(experiment, scale, root)
    if seen:
        rate, how = scaled([(s, load) for s, load, _ in seen], now)
        return rate, (f"mean of {len(seen)} earlier run{'s' if len(seen) != 1 else ''} of "
                      f"{experiment} at scale {scale} in {root}/, {how}")
    rows = reference_rows(experiment, scale)
    if rows:
        rate, how = scaled(rows, now)
        return rate, f"reference rate in configs/reproduce/{RATES}, {how}"
    return None


def per_cell(experiment: str, scale: str, root: Path = Path("outputs"),
             now: Optional[float] = None) -> Optional[tuple]:
    """(seconds per cell, where it comes from), from earlier runs only."""
    now = load_now() if now is None else now
    seen = history(experiment, scale, root)
    if not seen:
        return None
    rate, how = scaled([(s / c, load) for s, load, c in seen], now)
    return rate, (f"mean over {len(seen)} earlier run{'s' if len(seen) != 1 else ''} at "
                  f"scale {scale} in {root}/, {how.replace('a job', 'a cell')}")


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def sweep_line(experiment: str, scale: str, jobs: int, parallel: int = 1,
               root: Path = Path("outputs")) -> str:
    """`30 jobs; about 12 min (mean of 14 earlier runs of relinear at scale cpu ...)`."""
    head = f"{jobs} job{'s' if jobs != 1 else ''}"
    rate = per_job(experiment, scale, root)
    if rate is None:
        return (f"{head}; no earlier finished run of {experiment} at scale {scale} in {root}/ "
                "and no reference rate to estimate the time from")
    seconds, how = rate
    at_once = f", {parallel} at a time" if parallel > 1 else ""
    return f"{head}; about {duration(seconds * jobs / max(parallel, 1))}{at_once} ({how})"


def run_line(experiment: str, scale: str, cells: int, done: int = 0,
             root: Path = Path("outputs")) -> str:
    """`12 cells (3 finished before); about 4 min (mean over 6 earlier runs ...)`."""
    head = f"{cells} cell{'s' if cells != 1 else ''}" + (f" ({done} finished before)" if done else "")
    rate = per_cell(experiment, scale, root)
    if rate is None:
        whole = per_job(experiment, scale, root)
        if whole is not None and not done:
            return f"{head}; about {duration(whole[0])} ({whole[1]})"
        return f"{head}; no earlier finished run of {experiment} at scale {scale} in {root}/ " \
               "to estimate the time from"
    seconds, how = rate
    return f"{head}; about {duration(seconds * (cells - done))} ({how})"

"""How long a run or a sweep will take, from what earlier runs on this machine measured
(torch-free).

Earlier runs are the finished run folders of the same experiment and scale under
`outputs/` (single runs and sweep jobs alike): their meta.json start and end, and the cells
their summary.json holds. The estimate is the median seconds per cell (a run) or per job (a
sweep) times the cells or jobs to come; the line says how many earlier runs it rests on,
or that there are none yet.
"""
from __future__ import annotations

import datetime as dt
import json
import statistics
from pathlib import Path
from typing import Optional


def _seconds(meta: dict) -> Optional[float]:
    try:
        start = dt.datetime.fromisoformat(meta["start"])
        end = dt.datetime.fromisoformat(meta["end"])
    except (KeyError, TypeError, ValueError):
        return None
    seconds = (end - start).total_seconds()
    return seconds if seconds >= 0 else None


def earlier(experiment: str, scale: str, root: Path = Path("outputs"), limit: int = 200) -> list:
    """[(seconds, cells)] of finished runs of `experiment` at `scale` under `root`, newest
    first (at most `limit`; a run resumed after a pause counts its whole span)."""
    folder = Path(root) / experiment
    if not folder.is_dir():
        return []
    found = []
    for summary in list(folder.glob("*/summary.json")) + list(folder.glob("multirun/*/*/summary.json")):
        try:
            s = json.loads(summary.read_text())
            meta = json.loads((summary.parent / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(s, dict) or not isinstance(meta, dict):
            continue
        if s.get("status") != "completed" or s.get("scale") != scale or meta.get("attempts", 1) != 1:
            continue
        seconds = _seconds(meta)
        cells = len(s.get("records") or []) or 1
        if seconds is not None:
            found.append((meta.get("end", ""), seconds, cells))
    found.sort(reverse=True)
    return [(seconds, cells) for _, seconds, cells in found[:limit]]


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def per_job(experiment: str, scale: str, root: Path = Path("outputs")) -> Optional[tuple]:
    """(median seconds per run, runs it rests on), or None without earlier runs."""
    runs = earlier(experiment, scale, root)
    return (max(statistics.median(s for s, _ in runs), 0.5), len(runs)) if runs else None


def per_cell(experiment: str, scale: str, root: Path = Path("outputs")) -> Optional[tuple]:
    runs = earlier(experiment, scale, root)
    return (max(statistics.median(s / c for s, c in runs), 0.5 / max(c for _, c in runs)),
            len(runs)) if runs else None


def sweep_line(experiment: str, scale: str, jobs: int, parallel: int = 1,
               root: Path = Path("outputs")) -> str:
    """`30 jobs; about 12 min (median 24 s a job over 14 earlier runs of relinear at scale
    cpu in outputs/)`."""
    rate = per_job(experiment, scale, root)
    head = f"{jobs} job{'s' if jobs != 1 else ''}"
    if rate is None:
        return f"{head}; no earlier finished run of {experiment} at scale {scale} in {root}/ " \
               "to estimate the time from"
    seconds, n = rate
    at_once = f", {parallel} at a time" if parallel > 1 else ""
    return (f"{head}; about {duration(seconds * jobs / max(parallel, 1))}{at_once} (median "
            f"{duration(seconds)} a job over {n} earlier run{'s' if n != 1 else ''} of "
            f"{experiment} at scale {scale} in {root}/)")


def run_line(experiment: str, scale: str, cells: int, done: int = 0,
             root: Path = Path("outputs")) -> str:
    """`12 cells (3 finished before); about 4 min (median 20 s a cell over 6 earlier runs ...)`."""
    head = f"{cells} cell{'s' if cells != 1 else ''}" + (f" ({done} finished before)" if done else "")
    rate = per_cell(experiment, scale, root)
    if rate is None:
        return f"{head}; no earlier finished run of {experiment} at scale {scale} in {root}/ " \
               "to estimate the time from"
    seconds, n = rate
    return (f"{head}; about {duration(seconds * (cells - done))} (median {duration(seconds)} a "
            f"cell over {n} earlier run{'s' if n != 1 else ''} at scale {scale} in {root}/)")

"""What a running training shows: a rich bar on a terminal, a plain log line otherwise.

Both appear at the first step and are refreshed on a time basis (`EVERY_S`), from counts
the loop already has on the host: no device synchronisation per step. The loss and each
evaluation's headline metric are shown when the loop has them (at its log points).
"""
from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("quadrun")

EVERY_S = 2.0
QUIET = False      # a sweep job in the sweep's own process: no bar, lines to the log file only


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress of one training of `total` steps, `done` of them already (a resume)."""

    def __init__(self, name: str, total: int, done: int = 0, label: str = "",
                 unit: str = "steps"):
        self.name, self.total, self.start_step, self.unit = name, total, done, unit
        self.label = f"{label} {name}".strip()
        self.info = ""
        self.t0 = self.last = time.perf_counter()
        self.shown_first, self.shown_step = False, None
        self.bar = None
        if sys.stderr.isatty() and not QUIET:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Bar(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                           TextColumn("eta"), TimeRemainingColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total, completed=done, info="")

    def rate(self, step: int) -> float:
        return (step - self.start_step) / max(time.perf_counter() - self.t0, 1e-9)

    def update(self, step: int, info: str | None = None) -> None:
        """Called every step (cheap); `info` replaces the shown loss / metric text."""
        if info is not None:
            self.info = info
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=self.info)
            return
        now = time.perf_counter()
        final = step == self.total and self.shown_step != step
        if self.shown_first and now - self.last < EVERY_S and not final:
            return
        self.shown_first, self.last, self.shown_step = True, now, step
        rate = self.rate(step)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        log.info("%s %d/%d %s (%.3g/s, eta %s) %s", self.label, step, self.total, self.unit,
                 rate, _duration(eta) if eta == eta else "?", self.info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

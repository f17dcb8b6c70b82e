"""Claims: a paper's statement, declared once, decided from records by a shared rule.

An experiment declares its claims (in its package's `claims.py`):

    ACCURACY = Claim("accuracy.relinear_sg",
                     statement="A quadratic ResNet trained with ReLinear ... (the paper's words)",
                     source="Fan et al. 2023, Section ...",
                     target="95 % Welch interval of the accuracy difference above 0",
                     rule=Above(0.0, "points"),
                     setup="digits, 200 training images, width 8 (ours, not the paper's)")

and, from the records, supplies one `Evidence` per claim: the numbers as text (`measured`),
the same numbers for programs (`values`) and what the rule reads (an `interval`, `cases`,
or `counts`), or why it cannot be measured here (`missing`) or decided yet (`undecided`).
`decide(claims, evidence)` applies each claim's rule and writes the verdict and a `why`
that, when the verdict is inconclusive, ends with what would decide it (`next`).

A decided claim is a plain dict (summary.json, claims.json, the report):

    {"id", "statement", "source", "setup", "extension", "measured", "target",
     "verdict", "why", "values", "next"}

`next` ({"command", "jobs"} or None): for an inconclusive or not-measured claim, the
command that would decide it; the report shows it with the folder filled in and a time.

Verdicts: holds | fails | inconclusive (noise or range too small to decide) |
not_measured (this scale or this run cannot reach it). The runner adds the run's `scale`
and `device`. Rules are small classes: `Above`, `Below`, `Band`, `Exact`, `AllCases` (one rule for
every case), `EachCase` (a rule per case), `FewerEvents`;
each has tests that make it hold and fail, and the ones that rest on noise have simulated
error rates (tests/test_claims.py). Torch-free.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from quadrun.stats import Interval, fisher_one_sided
from quadrun.vocab import VERDICTS

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = VERDICTS


# -- numbers in a claim's text -------------------------------------------------------------------
def fmt(x, digits: int = 3) -> str:
    """A number for a claim's text: 3 significant digits, '-' for a missing one."""
    if x is None or (isinstance(x, float) and not math.isfinite(x) and not math.isinf(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    return f"{x:.{digits}g}"


def fmt_interval(est, low=None, high=None, digits: int = 3) -> str:
    """'1.23 [0.98, 1.51]', or just the estimate when there is no interval. Also takes an
    Interval as its first argument."""
    if isinstance(est, Interval):
        est, low, high = est.estimate, est.low, est.high
    if low is None or high is None:
        return f"{fmt(est, digits)} (no interval)"
    return f"{fmt(est, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def _span(iv: Interval) -> str:
    if iv.low == iv.high:
        return fmt(iv.low)
    return f"the interval [{fmt(iv.low)}, {fmt(iv.high)}]"


# -- evidence -------------------------------------------------------------------------------------
@dataclass
class Evidence:
    """What the records say about one claim.

    measured   the numbers that decide it, as text (with intervals where there is noise)
    values     the same numbers for programs
    interval   what Above / Below / Band read (an exact number: Interval(v, v, v))
    cases      [(label, Evidence)] that AllCases reads (each decided by its inner rule)
    counts     (events, runs, reference events, reference runs) that FewerEvents reads
    missing    not measured here: why, and what would measure it
    undecided  the data cannot be judged by the rule (too few seeds, no interval...): why
    next       what would decide it when inconclusive (a seed count, a wider range), as text
    command    the command that would decide an inconclusive or not-measured claim, ready to
               copy; `{folder}` in it stands for the run or sweep folder the claim was
               decided in (the report fills it in), e.g.
               "quadrun resume={folder} 'seed=range(0,15)'"
    jobs       how many runs that command starts (the report turns it into a time from
               earlier runs of the experiment)
    """
    measured: str = ""
    values: dict = field(default_factory=dict)
    interval: Optional[Interval] = None
    cases: Sequence[Tuple[str, "Evidence"]] = ()
    counts: Optional[Tuple[int, int, int, int]] = None
    missing: Optional[str] = None
    undecided: Optional[str] = None
    next: str = ""
    command: Optional[str] = None
    jobs: Optional[int] = None


def missing(why: str, measured: str = "", command: Optional[str] = None,
            jobs: Optional[int] = None, **values) -> Evidence:
    """Evidence of a claim this run cannot measure (verdict not_measured)."""
    return Evidence(measured=measured or "not measured", values=values, missing=why,
                    command=command, jobs=jobs)


def exact(value: float, measured: str = "", **values) -> Evidence:
    """Evidence of an exact number (no noise: a count, a rank, a ratio of counts)."""
    return Evidence(measured=measured, values=values, interval=Interval(value, value, value))


def seeds_command(needed: int, have: int, arms: int = 1, what: str = "seed",
                  start: int = 0) -> tuple:
    """(command, jobs) that extends a sweep to `needed` seeds per arm, counted on from
    `start`: its new jobs only (a sweep launched again skips the jobs it has)."""
    return (f"quadrun resume={{folder}} '{what}=range({start},{start + needed})'",
            max(0, needed - have) * max(1, arms))


# -- rules ----------------------------------------------------------------------------------------
class Rule(ABC):
    """decide(evidence) -> (verdict, why). A rule says how it decides an interval or counts
    in `_decide`; missing and undecided evidence are handled here, once, for every rule."""

    def decide(self, ev: Evidence) -> Tuple[str, str]:
        if ev.missing:
            return NOT_MEASURED, ev.missing
        if ev.undecided:
            return INCONCLUSIVE, ev.undecided
        return self._decide(ev)

    @abstractmethod
    def _decide(self, ev: Evidence) -> Tuple[str, str]:
        """(verdict, why) from evidence that has something to decide from."""


def _interval(ev: Evidence) -> Optional[Interval]:
    iv = ev.interval
    if iv is None or not iv.has_interval:
        return None
    return iv


@dataclass(frozen=True)
class Above(Rule):
    """holds when the whole interval lies above `threshold`, fails when it lies wholly
    below, inconclusive when it contains it."""
    threshold: float = 0.0
    unit: str = ""

    def _decide(self, ev):
        iv, t = _interval(ev), f"{fmt(self.threshold)}{' ' + self.unit if self.unit else ''}"
        if iv is None:
            return INCONCLUSIVE, "no interval to decide from"
        if iv.low > self.threshold:
            return HOLDS, f"{_span(iv)} lies above {t}"
        if iv.high < self.threshold:
            return FAILS, f"{_span(iv)} lies below {t}"
        return INCONCLUSIVE, f"{_span(iv)} contains {t}"


@dataclass(frozen=True)
class Below(Rule):
    """holds when the whole interval lies below `threshold`, fails when it lies wholly
    above, inconclusive when it contains it."""
    threshold: float = 0.0
    unit: str = ""

    def _decide(self, ev):
        iv, t = _interval(ev), f"{fmt(self.threshold)}{' ' + self.unit if self.unit else ''}"
        if iv is None:
            return INCONCLUSIVE, "no interval to decide from"
        if iv.high < self.threshold:
            return HOLDS, f"{_span(iv)} lies below {t}"
        if iv.low > self.threshold:
            return FAILS, f"{_span(iv)} lies above {t}"
        return INCONCLUSIVE, f"{_span(iv)} contains {t}"


@dataclass(frozen=True)
class Band(Rule):
    """holds when the whole interval lies inside [low, high]. An interval wholly above the
    band gets `above` (fails by default), one wholly below it gets `below` (fails by
    default; e.g. inconclusive for a rate that is still pre-asymptotic), each with its own
    reason; an interval that crosses an edge is inconclusive ("too wide" when it is wider
    than the band, else "crosses the edge")."""
    low: float
    high: float
    above: str = FAILS
    below: str = FAILS
    above_why: str = "above the band"
    below_why: str = "below the band"

    def _decide(self, ev):
        iv = _interval(ev)
        band = f"[{fmt(self.low)}, {fmt(self.high)}]"
        if iv is None:
            return INCONCLUSIVE, "no interval to decide from"
        if self.low <= iv.low and iv.high <= self.high:
            return HOLDS, f"{_span(iv)} lies inside {band}"
        if iv.low > self.high:
            return self.above, f"{_span(iv)} lies above {band}: {self.above_why}"
        if iv.high < self.low:
            return self.below, f"{_span(iv)} lies below {band}: {self.below_why}"
        if iv.high - iv.low > self.high - self.low:
            return INCONCLUSIVE, f"{_span(iv)} is too wide to lie inside {band}"
        edge = fmt(self.low) if iv.low < self.low else fmt(self.high)
        return INCONCLUSIVE, f"{_span(iv)} crosses the edge {edge} of {band}"


@dataclass(frozen=True)
class AllCases(Rule):
    """Cases that must all hold (each decided by `rule`): holds when every case holds, fails
    when any case fails, not_measured when none was measured, else inconclusive."""
    rule: Rule

    def _decide(self, ev):
        if not ev.cases:
            return NOT_MEASURED, "no cases measured"
        decided = [(label, *self.rule.decide(case)) for label, case in ev.cases]
        failed = [f"{label}: {why}" for label, v, why in decided if v == FAILS]
        if failed:
            return FAILS, f"{len(failed)} of {len(decided)} cases fail ({'; '.join(failed)})"
        if all(v == HOLDS for _, v, _ in decided):
            return HOLDS, f"all {len(decided)} cases hold"
        if all(v == NOT_MEASURED for _, v, _ in decided):
            return NOT_MEASURED, "; ".join(f"{label}: {why}" for label, _, why in decided)
        open_ = [f"{label}: {why}" for label, v, why in decided if v != HOLDS]
        held = sum(v == HOLDS for _, v, _ in decided)
        return INCONCLUSIVE, f"{held} of {len(decided)} cases hold; undecided: {'; '.join(open_)}"


@dataclass(frozen=True)
class EachCase(Rule):
    """Cases each decided by their own rule (in order): fails when any case fails, else
    not_measured when any case was not measured (a comparison needs both sides), holds when
    every case holds, else inconclusive."""
    rules: Tuple[Rule, ...]

    def _decide(self, ev):
        if len(ev.cases) != len(self.rules):
            return NOT_MEASURED, f"{len(ev.cases)} cases measured, {len(self.rules)} needed"
        decided = [(label, *rule.decide(case)) for rule, (label, case) in zip(self.rules, ev.cases)]
        failed = [f"{label}: {why}" for label, v, why in decided if v == FAILS]
        if failed:
            return FAILS, "; ".join(failed)
        if any(v == NOT_MEASURED for _, v, _ in decided):
            return NOT_MEASURED, "; ".join(f"{label}: {why}" for label, v, why in decided
                                           if v == NOT_MEASURED)
        if all(v == HOLDS for _, v, _ in decided):
            return HOLDS, "; ".join(f"{label}: {why}" for label, _, why in decided)
        return INCONCLUSIVE, "; ".join(f"{label}: {why}" for label, v, why in decided)


@dataclass(frozen=True)
class FewerEvents(Rule):
    """Fewer events (collapses, failures) than the reference: one-sided Fisher exact tests
    at `level`. holds when the rate is significantly lower, fails when significantly
    higher, inconclusive otherwise (with 'no events to prevent' when the reference had
    none). `more=True` turns it around: holds when significantly MORE events."""
    level: float = 0.05
    more: bool = False
    what: str = "events"
    reference: str = "the reference"

    def _decide(self, ev):
        if ev.counts is None:
            return NOT_MEASURED, "no counts"
        k, n, k0, n0 = ev.counts
        if not n or not n0:
            return NOT_MEASURED, "no runs on a side"
        p_less, p_more = fisher_one_sided(k, n, k0, n0)
        good, bad = (p_more, p_less) if self.more else (p_less, p_more)
        edge = self.level * (1 + 1e-9)      # 1/20 computed as 0.05000000000000001
        word = "more" if self.more else "fewer"
        other = "fewer" if self.more else "more"
        if good <= edge:
            return HOLDS, f"significantly {word} {self.what} than {self.reference} (p = {fmt(good)})"
        if bad <= edge:
            return FAILS, f"significantly {other} {self.what} than {self.reference} (p = {fmt(bad)})"
        if not self.more and k0 == 0:
            return INCONCLUSIVE, f"{self.reference} had no {self.what}, so there were none to prevent"
        return INCONCLUSIVE, (f"the counts do not differ at the {fmt(self.level)} level "
                              f"(p {word} = {fmt(good)})")


@dataclass(frozen=True)
class Exact(Rule):
    """An exact number (no noise: an iteration count or a ratio of counts, deterministic
    given the seed; +inf for a target never reached) against two bounds. Not strict:
    holds when it is at most `holds`, fails when it is above `fails`; strict: holds when it
    is below `holds`, fails when it is at least `fails`. `fails` defaults to `holds`;
    between them, inconclusive."""
    holds: float
    fails: Optional[float] = None
    strict: bool = False
    unit: str = ""

    def _decide(self, ev):
        if ev.interval is None or ev.interval.estimate is None:
            return INCONCLUSIVE, "no value to decide from"
        v = float(ev.interval.estimate)
        hi = self.holds if self.fails is None else self.fails
        unit = ("" if self.unit.startswith("x") else " ") + self.unit if self.unit else ""
        if math.isinf(v):
            unit = " (a target never reached)"
        if (v < self.holds) if self.strict else (v <= self.holds):
            word = "below" if self.strict else "at most"
            return HOLDS, f"{fmt(v)}{unit} is {word} {fmt(self.holds)}"
        if (v >= hi) if self.strict else (v > hi):
            return FAILS, f"{fmt(v)}{unit} is {'at least' if self.strict else 'above'} {fmt(hi)}"
        return INCONCLUSIVE, f"{fmt(v)}{unit} lies between {fmt(self.holds)} and {fmt(hi)}"




# -- claims ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """One claim, declared once: the paper's words and the rule that decides it.

    setup      the choices the measurement rests on that are ours, not the paper's
               (dataset, architecture, target, control); shown with `measured`
    extension  True for a claim of quadrun's own (labelled so in every table), not the
               paper's
    """
    id: str
    statement: str
    source: str
    target: str
    rule: Rule
    setup: str = ""
    extension: bool = False

    def decide(self, ev: Optional[Evidence]) -> dict:
        if ev is None:
            ev = missing("no records measure it in this run")
        verdict, why = self.rule.decide(ev)
        if verdict == INCONCLUSIVE and ev.next:
            why = f"{why}; {ev.next}"
        follow = None
        if verdict in (INCONCLUSIVE, NOT_MEASURED) and ev.command:
            follow = {"command": ev.command, "jobs": ev.jobs}
        if verdict not in VERDICTS:
            raise ValueError(f"{self.id}: verdict must be one of {VERDICTS}, not {verdict!r}")
        measured = ev.measured
        if self.setup:
            measured = f"{measured} [setup: {self.setup}]"
        return {"id": self.id, "statement": self.statement, "source": self.source,
                "setup": self.setup, "extension": self.extension, "measured": measured,
                "target": self.target, "verdict": verdict, "why": why,
                "values": dict(ev.values), "next": follow}


def decide(claims: Iterable[Claim], evidence: Dict[str, Evidence]) -> List[dict]:
    """Every declared claim decided on its evidence (no evidence: not_measured). Evidence
    for an id that no claim declares is a bug and raises."""
    claims = list(claims)
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"claim ids declared twice: {sorted({i for i in ids if ids.count(i) > 1})}")
    stray = set(evidence) - set(ids)
    if stray:
        raise ValueError(f"evidence for undeclared claims: {sorted(stray)}")
    return [c.decide(evidence.get(c.id)) for c in claims]

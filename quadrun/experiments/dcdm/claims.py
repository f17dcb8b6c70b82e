"""dcdm's claims (Kaneda et al. 2023, abstract and results), declared once, and the
evidence for them from records. Torch-free.

An iteration count is deterministic given the seed, so the iteration claims carry no
interval: each case is an exact number decided against its bound (`Exact`); the seeds a
sweep pools are combined by their median, a solve that did not reach the tolerance
counting as +inf. A timing within TIME_NOISE of its bound is undecided (inconclusive).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from quadrun.claims import (FAILS, HOLDS, INCONCLUSIVE, AllCases, Claim, Evidence, Rule,
                            decide, fmt, missing)
from quadrun.stats import Interval

UNSEEN_FACTOR = 2.0        # claim "unseen": iterations within this factor of the training scene
MG_FACTOR = 2.0            # claim "walltime": DCDM's time within this factor of MG's
TIME_NOISE = 0.1           # claim "walltime": a time ratio within 10 % of its bound is undecided
SOURCE = "Kaneda et al. 2023 (ICML), abstract and results"
TIME_SOURCE = ("Kaneda et al. 2023 (ICML), timings; the MG and AMG comparison: quadrun "
               "issue 17")
CAPS = "higher iteration caps (dcdm.maxiter, dcdm.dcdm_maxiter) would decide it"


# -- general pieces ---------------------------------------------------------------------------
# general: belongs in quadrun/claims.py
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
        unit = f" {self.unit}" if self.unit else ""
        ok = v < self.holds if self.strict else v <= self.holds
        bad = v >= hi if self.strict else v > hi
        if ok:
            return HOLDS, f"{fmt(v)}{unit} is {'below' if self.strict else 'at most'} {fmt(self.holds)}"
        if bad:
            return FAILS, f"{fmt(v)}{unit} is {'at least' if self.strict else 'above'} {fmt(hi)}"
        return INCONCLUSIVE, f"{fmt(v)}{unit} lies between {fmt(self.holds)} and {fmt(hi)}"


def exact(value: float, measured: str = "", **values) -> Evidence:
    return Evidence(measured=measured, values=values, interval=Interval(value, value, value))


# general: belongs in quadrun/stats.py
def censored_median(values) -> float:
    """The median of values where a missing or infinite one is a target never reached
    (+inf): it stays in the sample, so a median can itself be +inf."""
    x = [math.inf if v is None or not math.isfinite(v) else float(v) for v in values]
    return float(np.median(x)) if x else math.inf


# general: belongs in quadrun/stats.py
def censored_ratio(a: float, b: float) -> Optional[float]:
    """a / b for censored values: inf when only b is finite, 0 when only a is, None when
    neither is (undecided)."""
    if math.isinf(a) and math.isinf(b):
        return None
    if math.isinf(b):
        return 0.0
    return math.inf if math.isinf(a) else a / b


def _count(x: float) -> str:
    return "not converged" if math.isinf(x) else fmt(x)


def _json(x):
    return None if x is None or math.isinf(x) else x


def _span(xs, unit: str = "x") -> str:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return f"{fmt(min(xs))}-{fmt(max(xs))}{unit}" if xs else "-"


def _worst(cases: dict):
    """The case with the largest ratio (undecided ones last)."""
    return max(cases, key=lambda k: -1.0 if cases[k][0] is None else cases[k][0])


# -- the claims -------------------------------------------------------------------------------
FEWER = Claim(
    "fewer", "DCDM reduces the residual to the tolerance in fewer iterations than CG.",
    SOURCE, target="DCDM's iterations to tol below CG's on every evaluated (dim, n, scene)",
    rule=AllCases(Exact(1.0, strict=True, unit="x CG's")))
GROWTH = Claim(
    "growth", "DCDM's iteration count grows less than CG's with the problem size "
    "(the paper: independent of it).", SOURCE,
    target="its(2n)/its(n) of DCDM below CG's on every (dim, scene) evaluated at n and 2n",
    rule=AllCases(Exact(1.0, strict=True, unit="x CG's growth")))
UNSEEN = Claim(
    "unseen", "DCDM generalises to systems not seen in training.", SOURCE,
    target=f"DCDM's iterations on every unseen scene <= {fmt(UNSEEN_FACTOR)}x those on "
           "the training scene at the same dim and n",
    rule=AllCases(Exact(UNSEEN_FACTOR, unit="x the training scene's")))
WALLTIME = Claim(
    "walltime", "DCDM reaches the tolerance in less wall time than CG, and within "
    f"{fmt(MG_FACTOR)}x of geometric multigrid (MG), with AMG beside them.", TIME_SOURCE,
    target=f"DCDM's set-up + solve time below CG's and <= {fmt(MG_FACTOR)}x MG's on every "
           f"scene at the largest n of each dim (ratios within {fmt(100 * TIME_NOISE)} % "
           "of a bound: undecided); on the run's device",
    rule=AllCases(Exact(1 - TIME_NOISE, 1 + TIME_NOISE, strict=True, unit="x its bound")))
CLAIMS = (FEWER, GROWTH, UNSEEN, WALLTIME)


def claims(records, c) -> list:
    its = _pooled(records, _iterations)
    seeds = max((len(v) for v in its.values()), default=0)
    pooled = f"; median over {seeds} seeds" if seeds > 1 else ""
    protocols = sorted({r.get("protocol", "quadrun") for r in records if r.get("part") == "solve"})
    if protocols != ["quadrun"] and protocols:
        pooled += f"; protocol {'+'.join(protocols)}" + (
            " (CG and deflated PCG to an absolute tol)" if "authors" in protocols else "")
    med = {k: censored_median(v) for k, v in its.items()}
    times = {k: censored_median(v) for k, v in _pooled(records, _time).items()}
    device = _devices(records)
    return decide(CLAIMS, {"fewer": _fewer(med, pooled), "growth": _growth(med, pooled),
                           "unseen": _unseen(med, c, pooled),
                           "walltime": _walltime(times, pooled, device)})


def summarize(records, c) -> dict:
    """`targets`: DCDM vs CG on `target_scene` per dim (iteration ratio at train_n, growth
    n -> 2n); status diverged when a training diverged."""
    solves = [r for r in records if r.get("part") == "solve"]
    out = {"targets": {f"{dim}d": _targets(c, solves, dim) for dim in c.dims}}
    if any(r.get("part") == "train" and r.get("status") == "diverged" for r in records):
        out["status"] = "diverged"
    return out


# -- evidence ---------------------------------------------------------------------------------
def _iterations(r) -> float:
    its = r.get("iterations")
    ok = r.get("converged") is True and isinstance(its, (int, float)) and math.isfinite(its)
    return float(its) if ok else math.inf


def _time(r) -> float:
    t = [r.get("setup_s"), r.get("solve_s")]
    ok = r.get("converged") is True and all(
        isinstance(x, (int, float)) and math.isfinite(x) for x in t)
    return float(sum(t)) if ok else math.inf


def _pooled(records, value) -> dict:
    """(dim, n, scene, solver) -> value(record) of each pooled solve record (inf where
    the solve did not converge or did not run)."""
    out: dict = {}
    for r in records:
        if r.get("part") == "solve":
            out.setdefault((r["dim"], r["n"], r["scene"], r["solver"]), []).append(value(r))
    return out


def _devices(records) -> str:
    names = sorted({str(r.get("device")) for r in records
                    if r.get("part") == "solve" and r.get("device")})
    return ", ".join(names) or "unknown device"


def _cases(ratios: dict, undecided: str) -> list:
    return [(k, exact(v) if v is not None else Evidence(undecided=undecided, next=CAPS))
            for k, (v, *_) in ratios.items()]


def _fewer(its: dict, pooled: str) -> Evidence:
    cases = {}
    for (dim, n, name, solver), d in its.items():
        if solver == "dcdm" and (dim, n, name, "cg") in its:
            g = its[(dim, n, name, "cg")]
            cases[f"{dim}D n={n} {name}"] = (censored_ratio(d, g), d, g)
    if not cases:
        return missing("needs both dcdm and cg in dcdm.solvers",
                       "no DCDM and CG solves of one scene")
    worst = _worst(cases)
    _, d, g = cases[worst]
    ratios = [d / g for _, d, g in cases.values() if math.isfinite(d) and math.isfinite(g)]
    span = f"DCDM/CG {fmt(min(ratios))}-{fmt(max(ratios))}x; " if ratios else ""
    fewer = sum(r is not None and r < 1 for r, *_ in cases.values())
    return Evidence(
        measured=f"fewer on {fewer}/{len(cases)}; {span}worst {worst}: DCDM {_count(d)} vs "
                 f"CG {_count(g)}{pooled}",
        values={k: {"dcdm": _json(d), "cg": _json(g)} for k, (_, d, g) in cases.items()},
        cases=_cases(cases, "neither solve reached the tolerance"), next=CAPS)


def _doubling(its: dict, dim: int, n: int, name: str, solver: str) -> Optional[float]:
    """its(2n) / its(n); inf when only n converged; None when n did not."""
    a, b = its[(dim, n, name, solver)], its[(dim, 2 * n, name, solver)]
    return None if math.isinf(a) else b / a


def _growth(its: dict, pooled: str) -> Evidence:
    cases = {}
    for (dim, n, name, solver) in its:
        if solver == "dcdm" and all(k in its for k in [(dim, 2 * n, name, "dcdm"),
                                                       (dim, n, name, "cg"),
                                                       (dim, 2 * n, name, "cg")]):
            gd, gc = _doubling(its, dim, n, name, "dcdm"), _doubling(its, dim, n, name, "cg")
            ratio = None if gd is None or gc is None else censored_ratio(gd, gc)
            cases[f"{dim}D {name} {n}->{2 * n}"] = (ratio, gd, gc)
    if not cases:
        why = ("needs both dcdm and cg in dcdm.solvers" if not any(
            k[3] == "dcdm" for k in its) or not any(k[3] == "cg" for k in its)
            else "needs sizes n and 2n (dcdm.eval_factors with a factor and its double)")
        return missing(why, "no scene solved at n and 2n by DCDM and CG")
    below = sum(r is not None and r < 1 for r, *_ in cases.values())
    return Evidence(
        measured=f"DCDM {_span(g for _, g, _ in cases.values())} vs CG "
                 f"{_span(g for _, _, g in cases.values())} per doubling; below CG's on "
                 f"{below}/{len(cases)}{pooled}",
        values={k: {"dcdm": _json(g), "cg": _json(h)} for k, (_, g, h) in cases.items()},
        cases=_cases(cases, "a solve at n did not reach the tolerance"), next=CAPS)


def _unseen(its: dict, c, pooled: str) -> Evidence:
    cases = {}
    for (dim, n, name, solver), s in its.items():
        t = its.get((dim, n, c.train_scene, "dcdm"))
        if solver == "dcdm" and name != c.train_scene and t is not None:
            cases[f"{dim}D n={n} {name}"] = (censored_ratio(s, t), s, t)
    if not cases:
        why = ("needs dcdm in dcdm.solvers" if not any(k[3] == "dcdm" for k in its) else
               f"needs the training scene ({c.train_scene}) and another among dcdm.eval_scenes")
        return missing(why, "no DCDM solve of the training scene beside an unseen one")
    worst = _worst(cases)
    _, s, t = cases[worst]
    ratios = [s / t for _, s, t in cases.values() if math.isfinite(s) and math.isfinite(t)]
    span = f"unseen/training {fmt(min(ratios))}-{fmt(max(ratios))}x; " if ratios else ""
    return Evidence(
        measured=f"{span}worst {worst}: {_count(s)} vs {_count(t)} on {c.train_scene}{pooled}",
        values={k: {"unseen": _json(s), "training": _json(t)} for k, (_, s, t) in cases.items()},
        cases=_cases(cases, "neither solve reached the tolerance"), next=CAPS)


def _walltime(times: dict, pooled: str, device: str) -> Evidence:
    largest = {}
    for (dim, n, _, solver) in times:
        if solver == "dcdm":
            largest[dim] = max(n, largest.get(dim, n))
    found, cases = {}, []
    for (dim, n, name, solver), d in times.items():
        if solver != "dcdm" or n != largest[dim] or not all(
                (dim, n, name, s) in times for s in ("cg", "mg")):
            continue
        g, m = times[(dim, n, name, "cg")], times[(dim, n, name, "mg")]
        a = times.get((dim, n, name, "amg"))
        key = f"{dim}D n={n} {name}"
        found[key] = (d, g, m, a)
        # each scene: DCDM/CG against 1 and DCDM/MG against MG_FACTOR, as a fraction of
        # the bound; a solver that did not converge loses its side
        for other, bound, label in ((g, 1.0, "CG"), (m, MG_FACTOR, "MG")):
            r = censored_ratio(d, other)
            cases.append((f"{key} vs {label}", exact(math.inf if r is None else r / bound)))
    if not found:
        return missing("needs dcdm, cg and mg in dcdm.solvers",
                       "no DCDM, CG and MG solves of one scene")

    def ratio(x, y):
        return "-" if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)) \
            else f"{fmt(x / y)}x"

    parts = []
    for key, (d, g, m, a) in found.items():
        amg = f", AMG {ratio(d, a)}" if a is not None else ""
        parts.append(f"{key}: DCDM {fmt(d) if math.isfinite(d) else 'not converged'} s = "
                     f"CG {ratio(d, g)}, MG {ratio(d, m)}{amg}")
    return Evidence(
        measured="; ".join(parts) + f" (set-up + solve; {device}{pooled})",
        values={k: {"dcdm_s": _json(d), "cg_s": _json(g), "mg_s": _json(m), "amg_s": _json(a)}
                for k, (d, g, m, a) in found.items()},
        cases=cases, next="repeated timings on an unloaded device would decide them")


def _targets(c, records: list, dim: int) -> dict:
    """DCDM vs CG on the target scene: iteration ratio at train_n, growth n -> 2n."""
    n0 = c.train_n[list(c.dims).index(dim)]
    its = {(r["solver"], r["n"]): r["iterations"] for r in records
           if r["dim"] == dim and r["scene"] == c.target_scene and r["converged"]}
    out = {"scene": c.target_scene, "n": n0}
    if ("dcdm", n0) in its and ("cg", n0) in its:
        out["dcdm_over_cg"] = its[("dcdm", n0)] / max(its[("cg", n0)], 1)
        out["dcdm_over_cg_ok"] = out["dcdm_over_cg"] <= 1 / 3
    for s in ("dcdm", "cg"):
        if (s, n0) in its and (s, 2 * n0) in its:
            out[f"{s}_growth_2n"] = its[(s, 2 * n0)] / max(its[(s, n0)], 1)
    if "dcdm_growth_2n" in out:
        out["dcdm_growth_ok"] = out["dcdm_growth_2n"] <= 1.5
    return out

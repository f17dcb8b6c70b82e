"""The evidence the records give hierpoly's claims: a learner's rate (one bootstrap each),
its numbers as text and values, and what each rule reads. Torch-free."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from quadrun import stats
from quadrun.claims import Evidence, fmt, fmt_interval, missing
from quadrun.experiments.hierpoly import curves

RECOVERY = 0.9      # c: the corr(feature, p) that counts as p recovered


def _reference(k: int):
    return lambda d: math.comb(d + k, k)


def study(records, regime: str, learner: str, r, c, quantity: str = "error",
          against: Optional[int] = None) -> Optional[dict]:
    """One learner's rate in one regime (one bootstrap): n* (quantity "error") or n_c
    ("corr") against d, or against C(d + against, against) when `against` is given."""
    key = curves.QUANTITIES[quantity][0]
    per_d = curves.curves(records, regime, learner, key)
    if not per_d:
        return None
    x_of = _reference(against) if against else (lambda d: d)
    level = r.target_error if quantity == "error" else RECOVERY
    out = curves.rate(per_d, quantity, level, x_of, c.bootstrap)
    out.update(learner=learner, quantity=quantity, level=level, against=against,
               reference_k=against or r.k, reference=curves.secant(_reference(against or r.k), out["dims"]))
    return out


def _word(s) -> str:
    return "n*" if s["quantity"] == "error" else f"n_c (corr {fmt(RECOVERY)})"


def describe(s: dict) -> str:
    """The numbers of one study as text."""
    iv = s["crossing_interval"]
    parts = []
    for d in s["dims"]:
        v = s["crossing"][d]
        if v is None:
            n, e = s["last"][d]
            what = "median error" if s["quantity"] == "error" else "median corr"
            parts.append(f"d={d}: not reached ({what} {fmt(e)} at the largest n = {fmt(n)})")
        else:
            i = iv.get(d)
            parts.append(f"d={d}: {fmt_interval(v, i.low, i.high) if i and i.has_interval else fmt(v)}")
    text = f"{s['learner']}: {_word(s)} " + ", ".join(parts)
    if s["slope"].estimate is not None:
        x = "log d" if not s["against"] else f"log C(d+{s['against']},{s['against']})"
        text += f"; slope on {x} {fmt_interval(s['slope'])}"
        local = [v for v in s["local"] if v is not None]
        if len(local) > 1:
            text += " (between consecutive d: " + ", ".join(fmt(v, 2) for v in local) + ")"
        if s["censored"]:
            text += f"; {s['censored']} resamples miss the level at some d"
    if s["reference"] is not None:
        k = s["reference_k"]
        text += (f"; secant slope of C(d+{k},{k}) on log d over d = {min(s['dims'])}-"
                 f"{max(s['dims'])}: {fmt(s['reference'])}")
    return text


def values(s: Optional[dict]) -> dict:
    if s is None:
        return {}
    sl = s["slope"]
    name = "n_star" if s["quantity"] == "error" else "n_c"
    return {"learner": s["learner"], "dims": s["dims"],
            name: {str(d): v for d, v in s["crossing"].items()},
            "interval": {str(d): [i.low, i.high] for d, i in s["crossing_interval"].items()},
            "slope": {"value": sl.estimate, "low": sl.low, "high": sl.high,
                      "censored": s["censored"], "local": s["local"]},
            "reference_slope": s["reference"]}


def rate_evidence(s: Optional[dict], regime: str, learner: str, band: Optional[tuple] = None) -> Evidence:
    """What a rate rule reads: the slope's interval, or why there is none."""
    if s is None:
        return missing(f"no {learner} records; add {learner} to hierpoly.{regime}.learners")
    measured, vals = describe(s), values(s)
    if len(s["dims"]) < 2:
        return missing(f"only d = {s['dims'][0]} measured: a slope needs at least 2 dimensions "
                       "(pool a sweep over d with quadrun-report)", measured, **vals)
    unreached = [d for d in s["dims"] if s["crossing"][d] is None]
    if unreached:
        return missing("not reached inside the grid at d = " + ", ".join(map(str, unreached))
                       + f": extend hierpoly.{regime}.ratios (or the learner's max_n)", measured, **vals)
    problems = []
    if s["edge"]:
        problems.append("reached at the grid's first n (an upper bound) at d = "
                        + ", ".join(map(str, s["edge"])) + f": start hierpoly.{regime}.ratios lower")
    one = [d for d in s["dims"] if s["seeds"][d] < 2]
    if one:
        problems.append("one seed at d = " + ", ".join(map(str, one))
                        + f": no spread for an interval (raise hierpoly.{regime}.seeds)")
    if not s["slope"].has_interval and not problems:
        problems.append("no bootstrap interval (hierpoly.bootstrap = 0)")
    if problems:
        return Evidence(measured=measured, values=vals, undecided="; ".join(problems))
    iv = s["slope"]
    nxt = ""
    if band is not None:
        if iv.high < band[0]:
            nxt = "larger d would leave the pre-asymptotic range (scale=gpu: d = 64, 128, 256)"
        else:
            nxt = f"more seeds would narrow the interval (width {fmt(iv.width)}; the band is {fmt(band[1] - band[0])} wide)"
    return Evidence(measured=measured, values=vals, interval=iv, next=nxt)


def pair_evidence(net: Optional[dict], other: Optional[dict], regime: str, three: str,
                  learner: str) -> Evidence:
    """Two slopes on either side of a midpoint: the network's and the other learner's."""
    cases = [(f"{three} slope", rate_evidence(net, regime, three)),
             (f"{learner} slope", rate_evidence(other, regime, learner))]
    measured = " | ".join(ev.measured for _, ev in cases)
    return Evidence(measured=measured, cases=cases,
                    values={"learners": [three, learner], three: values(net), learner: values(other)},
                    next="more seeds or a wider d range would separate the intervals")




def control_evidence(records, regime: str, learner: str, bootstrap: int) -> Evidence:
    """The negative control: at each d, the median |corr(feature, p)| over seeds at the
    largest n every seed has, with its bootstrap interval (one call for every d), as the
    cases of an AllCases rule; the largest median over the whole grid beside it."""
    per_d = curves.curves(records, regime, learner, "corr")
    if not per_d:
        return missing(f"no {learner} records; add {learner} to hierpoly.{regime}.learners")
    dims = sorted(per_d)
    tables = {d: curves.table(per_d[d], 0.0) for d in dims}

    def statistic(sample) -> dict:
        return {d: float(stats.column_medians(tables[d][1][sample[d]])[-1]) for d in dims
                if tables[d][0]}

    ivs = stats.bootstrap_groups({d: list(range(len(per_d[d]))) for d in dims}, statistic,
                                 n=bootstrap)
    cases, parts = [], []
    for d in dims:
        ns, vals = tables[d]
        if not ns:
            continue
        iv, peak = ivs[d], float(np.max(stats.column_medians(vals)))
        parts.append(f"d={d}: {fmt_interval(iv)} at n = {fmt(ns[-1])} ({fmt(ns[-1] / d ** 2, 2)} d^2; "
                     f"highest median {fmt(peak)})")
        undecided = None if iv.has_interval else "no interval (one seed, or hierpoly.bootstrap = 0)"
        cases.append((f"d={d}", Evidence(interval=iv, undecided=undecided)))
    measured = f"{learner}: median |corr(feature, p)| at the largest n: " + "; ".join(parts)
    return Evidence(measured=measured, cases=cases,
                    values={"learner": learner, "corr": {str(d): [ivs[d].estimate, ivs[d].low, ivs[d].high]
                                                         for d in dims if d in ivs}},
                    next=f"more seeds (hierpoly.{regime}.seeds)")

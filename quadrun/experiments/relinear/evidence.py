"""The evidence for relinear's claims from the records of one study: event counts
(collapsed, failed) with Fisher tests and Clopper-Pearson intervals, accuracy differences
with Welch intervals and their detectable difference, Holm's adjustment, and the command
that would decide an open claim. Torch-free."""
from __future__ import annotations

import numpy as np

from quadrun.claims import Evidence, fmt, fmt_interval, missing, seeds_command
from quadrun.experiments.relinear.config import ABLATION_FIRST_SEED, ABLATION_RUNS, STRATEGIES
from quadrun.stats import (clopper_pearson, detectable_difference, finite, fisher_one_sided,
                           fisher_runs_needed, holm, mean, runs_needed, welch_interval, welch_p)

ABLATION = "quadrun -m experiment=relinear sweep=relinear_ablation cluster=local threads=1"
LEVEL = 0.05            # the claims' significance level (95 % intervals)
RESOLVE = 3.0           # points: the accuracy difference the ablation is sized to detect
EVENTS = {"collapse": "collapses", "failed": "failed trainings"}


def by_strategy(records) -> dict:
    """strategy -> its records, in STRATEGIES order (unknown strategies last)."""
    out: dict = {}
    for r in records:
        out.setdefault(r.get("strategy"), []).append(r)
    order = {s: i for i, s in enumerate(STRATEGIES)}
    return {s: out[s] for s in sorted(out, key=lambda s: (order.get(s, len(order)), str(s)))}


def collapse_counts(records) -> tuple:
    """(collapsed, judged) over the records whose `collapsed` is true or false."""
    flags = [r.get("collapsed") for r in records if isinstance(r.get("collapsed"), bool)]
    return sum(flags), len(flags)


def failure_threshold(by: dict):
    """Half the conventional ResNet's mean final eval-mode test accuracy (None: no runs)."""
    m = mean(r.get("test/acc") for r in by.get("conventional", []))
    return None if m is None else m / 2


def failed_counts(records, threshold: float) -> tuple:
    """(failed, runs): final test/acc below `threshold` or not a finite number."""
    accs = [r.get("test/acc") for r in records]
    return sum(not finite([a]) or a < threshold for a in accs), len(accs)


def _rate(name: str, k: int, n: int, unjudged: int = 0) -> str:
    lo, hi = clopper_pearson(k, n)
    extra = f", {unjudged} not judged" if unjudged else ""
    return f"{name} {k}/{n} [{fmt(lo, 2)}, {fmt(hi, 2)}]{extra}"


def event_evidence(event: str, strategy: str, reference: str, by: dict, threshold) -> Evidence:
    mine, ref = by.get(strategy, []), by.get(reference, [])
    more = strategy == "plain"
    if event == "collapse":
        (k, n), (k0, n0) = collapse_counts(mine), collapse_counts(ref)
        u = sum(r.get("collapsed") is None for r in mine)
        u0 = sum(r.get("collapsed") is None for r in ref)
        rule = ""
    else:
        if threshold is None:
            return missing(f"no conventional runs set the failure threshold; run the "
                           f"ablation: {ABLATION}", f"{len(mine)} {strategy} runs",
                           command=ABLATION, jobs=ABLATION_JOBS)
        (k, n), (k0, n0) = failed_counts(mine, threshold), failed_counts(ref, threshold)
        u = u0 = 0
        rule = f" (test/acc below {fmt(threshold)} %)"
    rates = (f"{EVENTS[event]}{rule} (95 % interval): {_rate(strategy, k, n, u)}; "
             f"{_rate(reference, k0, n0, u0)}")
    if not n or not n0:
        gone = " and ".join(f"{s} ({'no runs' if not runs else 'none judged'})"
                            for s, m, runs in ((strategy, n, mine), (reference, n0, ref)) if not m)
        short = any(r.get("collapsed") is None for r in mine + ref)
        hint = ("runs shorter than relinear.collapse_epochs are not judged; train longer "
                f"and run the ablation: {ABLATION}" if short else f"run the ablation: {ABLATION}")
        return missing(f"no judged runs of {gone}; {hint}", rates, command=ABLATION,
                       jobs=ABLATION_JOBS)
    p_fewer, p_more = fisher_one_sided(k, n, k0, n0)
    lo, hi = clopper_pearson(k, n)
    lo0, hi0 = clopper_pearson(k0, n0)
    values = {"events": k, "runs": n, "not_judged": u, "rate_low": lo, "rate_high": hi,
              "reference": reference, "reference_events": k0, "reference_runs": n0,
              "reference_not_judged": u0, "reference_rate_low": lo0,
              "reference_rate_high": hi0, "p_fewer": p_fewer, "p_more": p_more,
              "p": p_more if more else p_fewer}
    if threshold is not None and event == "failed":
        values["threshold"] = threshold
    decided = min(p_fewer, p_more) <= LEVEL
    needed = None if decided else fisher_runs_needed(k, n, k0, n0, more, level=LEVEL)
    command, jobs = more_seeds(needed, min(n, n0), by) if needed else (None, None)
    nxt = (f"at these rates about {needed} seeds per strategy would decide" if needed else
           "the rates are too close for any affordable number of seeds")
    return Evidence(measured=f"{rates}; p(fewer) {fmt(p_fewer)}, p(more) {fmt(p_more)}",
                    values=values, counts=(k, n, k0, n0), next=nxt, command=command,
                    jobs=jobs)


ABLATION_JOBS = sum(ABLATION_RUNS.values())


def more_seeds(needed: int, have: int, by: dict) -> tuple:
    """(command, jobs) extending the study's sweep to `needed` seeds per strategy, counted
    on from its first seed (the ablation's when no record has one): the sweep skips the
    jobs it has, so only new seeds run."""
    seeds = [r["seed"] for rs in by.values() for r in rs
             if isinstance(r.get("seed"), int) and not isinstance(r.get("seed"), bool)]
    return seeds_command(needed, have, len(by), start=min(seeds, default=ABLATION_FIRST_SEED))


def accuracy_evidence(strategy: str, control: str, by: dict) -> Evidence:
    acc = finite(r.get("test/acc") for r in by.get(strategy, []))
    ref = finite(r.get("test/acc") for r in by.get(control, []))
    if not acc or not ref:
        gone = " and ".join(s for s, v in ((strategy, acc), (control, ref)) if not v)
        return missing(f"no runs of {gone} here; run the ablation: {ABLATION}",
                       f"{len(acc)} {strategy} and {len(ref)} {control} runs with an accuracy",
                       command=ABLATION, jobs=ABLATION_JOBS)
    diff = welch_interval(acc, ref, level=1 - LEVEL)
    best = welch_interval(finite(r.get("test/acc_best") for r in by.get(strategy, [])),
                          finite(r.get("test/acc_best") for r in by.get(control, [])),
                          level=1 - LEVEL)
    sd = float(np.std(acc, ddof=1)) if len(acc) > 1 else None
    sd0 = float(np.std(ref, ddof=1)) if len(ref) > 1 else None
    mdd = detectable_difference(sd, len(acc), sd0, len(ref), level=1 - LEVEL)
    needed = (runs_needed(sd, sd0, RESOLVE, level=1 - LEVEL)
              if sd is not None and sd0 is not None else None)
    values = {"mean": mean(acc), "sd": sd, "n": len(acc), "control": control,
              "control_mean": mean(ref), "control_sd": sd0, "control_n": len(ref),
              "difference": diff.estimate, "low": diff.low, "high": diff.high,
              "best_difference": best.estimate, "best_low": best.low, "best_high": best.high,
              "detectable": mdd, f"runs_for_{RESOLVE:g}_points": needed,
              "p": welch_p(acc, ref)}
    enough = mdd is not None and mdd <= RESOLVE   # the arms' own counts, equal or not
    detect = (f"; detectable difference at 80 % power {fmt(mdd)} points" +
              ("" if enough else f" ({needed if needed else 'over 1000'} seeds per arm would "
                                 f"detect {RESOLVE:g})")
              if mdd is not None else "")
    measured = (f"final test/acc {strategy} {fmt(mean(acc))} (sd {fmt(sd)}, n={len(acc)}) vs "
                f"{control} {fmt(mean(ref))} (sd {fmt(sd0)}, n={len(ref)}): difference "
                f"{fmt_interval(diff)} points{detect}; best epoch: {fmt_interval(best)}")
    have = min(len(acc), len(ref))
    command, jobs = None, None
    if not diff.has_interval:
        nxt = f"run several seeds of both: {ABLATION}"
        command, jobs = ABLATION, ABLATION_JOBS
    elif enough:
        seeds = (f"{have} seeds per arm" if len(acc) == len(ref) else
                 f"{len(acc)} and {len(ref)} seeds")
        nxt = (f"these {seeds} already detect {fmt(mdd)} points at 80 % power: "
               f"a true difference of {RESOLVE:g} points would very likely have shown")
    elif needed:
        nxt = (f"the difference is within the seed-to-seed noise; about {needed} seeds per "
               f"arm would resolve {RESOLVE:g} points")
        command, jobs = more_seeds(needed, have, by)
    else:
        nxt = "the difference is within the seed-to-seed noise; more seeds would narrow it"
    return Evidence(measured=measured, values=values, interval=diff, next=nxt, command=command,
                    jobs=jobs)


def adjust(evidence: dict) -> None:
    """Holm's step-down adjustment across every claim with a p-value, into its values
    (`p_holm`, `holm_family`) and its measured text."""
    ids = [cid for cid, ev in evidence.items() if ev.values.get("p") is not None]
    adjusted = holm([evidence[cid].values["p"] for cid in ids])
    for cid, p in zip(ids, adjusted):
        ev = evidence[cid]
        ev.values.update(p_holm=p, holm_family=len(ids))
        ev.measured += (f"; p {fmt(ev.values['p'])}, Holm-adjusted over {len(ids)} claims "
                        f"{fmt(p)}")

"""The paper's claims about training quadratic ResNets, declared once, and the evidence for
them from the records of one study (one depth, form and data; strategies and seeds pooled).
Torch-free.

Two events per run, both fixed before the confirmatory ablation was run:
- collapsed (the record's flag, lab.collapse): the training loss went non-finite, or an
  eval-mode test accuracy from epoch collapse_epochs on was within collapse_margin points
  of chance;
- failed (secondary, decided here on the pooled records): the final eval-mode test
  accuracy is below half the conventional ResNet's mean final accuracy (non-finite: failed).

Claims (each a 95 % statement; `values` carries its p-value `p` and `p_holm`, Holm's
step-down adjustment over every claim of the study that has one):
- collapse.plain, failed.plain: plain training has MORE events than the conventional net
  (the abstract's "higher risk of collapse than the conventional counterpart");
- collapse.<s>, failed.<s> for the ReLinear strategies: FEWER events than plain training
  (one-sided Fisher exact tests; Clopper-Pearson intervals beside them);
- accuracy.<s>: final eval-mode test accuracy minus its control's, a Welch t interval over
  seeds above 0, with the minimum difference the seeds could detect (80 % power):
  relinear_sg and relinear_sw against conventional, relinear_rezero against
  conventional_rezero (both with ReZero scalars), and relinear_sg against
  conventional_matched (the conventional net with as many parameters; quadrun's own).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from quadrun.claims import Above, Claim, Evidence, FewerEvents, decide, fmt, fmt_interval, missing
from quadrun.experiments.relinear.config import STRATEGIES, gamma_note
from quadrun.stats import (clopper_pearson, detectable_difference, finite, fisher_one_sided,
                           holm, mean, runs_needed, welch_interval)

ABLATION = "quadrun -m experiment=relinear sweep=relinear_ablation"
SOURCE = "Fan et al., TNNLS 2023 (arXiv 2110.06081): ReLinear, CIFAR-10 experiments"
ABSTRACT = "Fan et al., TNNLS 2023 (arXiv 2110.06081), abstract"
LEVEL = 0.05            # the claims' significance level (95 % intervals)
RESOLVE = 3.0           # points: the accuracy difference the ablation is sized to detect
DESCRIBED = {"relinear_sg": "shrunk gradients", "relinear_sw": "shrunk weights",
             "relinear_rezero": "shrunk gradients and ReZero"}
EVENTS = {"collapse": "collapses", "failed": "failed trainings"}
FAILED_RULE = ("failed: final eval-mode test accuracy below half the conventional ResNet's "
               "mean (ours)")
RELINEAR = ("relinear_sg", "relinear_sw", "relinear_rezero")
# accuracy claim id -> (strategy, its control)
ACCURACY_PAIRS = {"accuracy.relinear_sg": ("relinear_sg", "conventional"),
                  "accuracy.relinear_sg_matched": ("relinear_sg", "conventional_matched"),
                  "accuracy.relinear_rezero": ("relinear_rezero", "conventional_rezero"),
                  "accuracy.relinear_sw": ("relinear_sw", "conventional")}

HIGHER_RISK = ("Although a quadratic network can be trained via generic backpropagation, it "
               "can be subject to a higher risk of collapse than the conventional counterpart.")


def _event_claim(event: str, strategy: str) -> Claim:
    what = EVENTS[event]
    if strategy == "plain":
        return Claim(f"{event}.plain", statement=HIGHER_RISK, source=ABSTRACT,
                     target=f"one-sided Fisher exact test of more {what} in plain than in "
                            f"conventional: p <= {LEVEL}",
                     rule=FewerEvents(LEVEL, more=True, what=what,
                                      reference="the conventional ResNet"))
    return Claim(f"{event}.{strategy}",
                 statement=(f"Quadratic ResNets trained with ReLinear ({DESCRIBED[strategy]}) "
                            "collapse less often than with plain training."),
                 source=SOURCE,
                 target=(f"one-sided Fisher exact test of fewer {what} in {strategy} than in "
                         f"plain: p <= {LEVEL}"),
                 rule=FewerEvents(LEVEL, what=what, reference="plain training"))


def _accuracy_claim(cid: str, strategy: str, control: str) -> Claim:
    matched = control == "conventional_matched"
    than = ("a conventional ResNet with as many parameters (quadrun's control: the paper "
            "compares the same structure)" if matched else
            "the conventional ResNet of the same structure" +
            (" (both with ReZero scalars)" if control == "conventional_rezero" else ""))
    return Claim(cid,
                 statement=(f"A quadratic ResNet trained with ReLinear ({DESCRIBED[strategy]}) "
                            f"is more accurate than {than}."),
                 source=SOURCE,
                 target=(f"95 % Welch t interval over seeds of the final eval-mode test "
                         f"accuracy (test/acc), {strategy} minus {control}, above 0; the "
                         f"minimum difference detectable at 80 % power is stated"),
                 rule=Above(0.0, "points"), extension=matched)


CLAIMS = ([_event_claim(e, s) for e in EVENTS for s in ("plain", *RELINEAR)]
          + [_accuracy_claim(cid, *pair) for cid, pair in ACCURACY_PAIRS.items()])


def setup(c) -> str:
    """The choices of this run that are ours, not the paper's (CIFAR-10, all 50k training
    images, width 16, 200 epochs, batch 128, 4-px crop and flips)."""
    ours = []
    if c.dataset != "cifar10":
        ours.append(f"dataset {c.dataset}")
    if c.train_size:
        ours.append(f"{c.train_size} training images")
    if c.val_size:
        ours.append(f"{c.val_size} validation images held out")
    if c.width != 16:
        ours.append(f"width {c.width}")
    tc = c.train
    if (tc.epochs, tc.batch_size) != (200, 128):
        ours.append(f"{tc.epochs} epochs of batch {tc.batch_size}")
    if (c.pad, c.flip) != (4, True):
        ours.append(f"augmentation pad {c.pad}, flip {c.flip}")
    return ", ".join(ours)


def claims(records, c) -> list:
    """Every claim decided on the study's records; p-values Holm-adjusted across them."""
    by = by_strategy(records)
    threshold = failure_threshold(by)
    evidence = {}
    for claim in CLAIMS:
        kind, _, name = claim.id.partition(".")
        if kind in EVENTS:
            reference = "conventional" if name == "plain" else "plain"
            evidence[claim.id] = event_evidence(kind, name, reference, by, threshold)
        else:
            evidence[claim.id] = accuracy_evidence(*ACCURACY_PAIRS[claim.id], by)
    adjust(evidence)
    return decide([replace(claim, setup=claim_setup(claim, c, by)) for claim in CLAIMS],
                  evidence)


def claim_setup(claim: Claim, c, by: dict) -> str:
    kind, _, name = claim.id.partition(".")
    parts = [setup(c)]
    if kind == "failed":
        parts.append(FAILED_RULE)
    if kind == "accuracy":
        strategy, control = ACCURACY_PAIRS[claim.id]
        widths, params = _seen(by, control, "width"), _seen(by, control, "params")
        desc = ", ".join(d for d in (widths and f"width {widths}",
                                     params and f"{params} parameters") if d)
        if desc and _seen(by, strategy, "params"):
            desc += f"; {strategy}: {_seen(by, strategy, 'params')} parameters"
        parts.append(f"control {control}" + (f" ({desc})" if desc else ""))
        name = strategy
    if name in ("relinear_sg", "relinear_rezero"):
        parts.append(gamma_note(c))
    return "; ".join(p for p in parts if p)


def _seen(by: dict, strategy: str, key: str) -> str:
    """The values of `key` among a strategy's records, as text ('' when none)."""
    return ", ".join(map(str, sorted({r.get(key) for r in by.get(strategy, []) if r.get(key)})))


def summarize(records, c) -> dict:
    """The run's status (its training's) and headline numbers at the top of summary.json."""
    r = records[0]
    return {k: v for k, v in r.items() if k != "history"}


# -- evidence ------------------------------------------------------------------------------------
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
                           f"ablation: {ABLATION}", f"{len(mine)} {strategy} runs")
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
        return missing(f"no judged runs of {gone}; {hint}", rates)
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
    return Evidence(measured=f"{rates}; p(fewer) {fmt(p_fewer)}, p(more) {fmt(p_more)}",
                    values=values, counts=(k, n, k0, n0),
                    next=f"more seeds per strategy would decide: {ABLATION}")


def welch_p(a, b):
    """The p-value in the direction mean(a) > mean(b) that matches a two-sided Welch
    interval: 2 P(T >= t), capped at 1 (the 95 % interval lies above 0 exactly when it is
    below 0.05). None below 2 values a side."""
    # general: belongs in quadrun/stats.py
    from scipy.stats import t as student

    x, y = np.asarray(finite(a)), np.asarray(finite(b))
    if len(x) < 2 or len(y) < 2:
        return None
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = float(x.mean() - y.mean())
    if vx + vy == 0:
        return 0.0 if diff > 0 else 1.0
    dof = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    return min(1.0, 2 * float(student.sf(diff / np.sqrt(vx + vy), dof)))


def accuracy_evidence(strategy: str, control: str, by: dict) -> Evidence:
    acc = finite(r.get("test/acc") for r in by.get(strategy, []))
    ref = finite(r.get("test/acc") for r in by.get(control, []))
    if not acc or not ref:
        gone = " and ".join(s for s, v in ((strategy, acc), (control, ref)) if not v)
        return missing(f"no runs of {gone} here; run the ablation: {ABLATION}",
                       f"{len(acc)} {strategy} and {len(ref)} {control} runs with an accuracy")
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
    detect = (f"; detectable difference at 80 % power {fmt(mdd)} points"
              f" ({needed if needed else 'over 1000'} seeds per arm would detect {RESOLVE:g})"
              if mdd is not None else "")
    measured = (f"final test/acc {strategy} {fmt(mean(acc))} (sd {fmt(sd)}, n={len(acc)}) vs "
                f"{control} {fmt(mean(ref))} (sd {fmt(sd0)}, n={len(ref)}): difference "
                f"{fmt_interval(diff)} points{detect}; best epoch: {fmt_interval(best)}")
    nxt = (f"run several seeds of both: {ABLATION}" if not diff.has_interval else
           "the difference is within the seed-to-seed noise; "
           + (f"about {needed} seeds per arm would resolve {RESOLVE:g} points" if needed
              else "more seeds would narrow it"))
    return Evidence(measured=measured, values=values, interval=diff, next=nxt)


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

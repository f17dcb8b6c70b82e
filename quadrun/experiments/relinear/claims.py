"""The paper's claims about training quadratic ResNets, declared once, and the evidence for
them from the records of one study (one depth, form and data; strategies and seeds pooled).
Torch-free.

- collapse.<strategy>: a ReLinear strategy collapses less often than plain training
  (one-sided Fisher exact test on the judged runs; Clopper-Pearson intervals beside it).
- accuracy.<strategy>: the final eval-mode test accuracy of a shrink-gradient strategy
  minus the conventional net's, a Welch t interval over seeds, above 0 (the best epoch's,
  which the authors log, beside it).
"""
from __future__ import annotations

from dataclasses import replace

from quadrun.claims import Above, Claim, Evidence, FewerEvents, decide, fmt, fmt_interval, missing
from quadrun.experiments.relinear.config import STRATEGIES
from quadrun.stats import clopper_pearson, finite, fisher_one_sided, mean, welch_interval

ABLATION = "quadrun -m experiment=relinear sweep=relinear_ablation"
SOURCE = "Fan et al., TNNLS 2023 (arXiv 2110.06081): ReLinear, CIFAR-10 experiments"
LEVEL = 0.05            # the claims' significance level (95 % intervals)
DESCRIBED = {"relinear_sg": "shrunk gradients", "relinear_sw": "shrunk weights",
             "relinear_rezero": "shrunk gradients and ReZero"}
# The ReLinear strategies (init + regularised quadratic terms) whose collapse rate is
# compared with plain training's, and those whose accuracy is compared with the
# conventional net's (the reference recipe's two shrink-gradient variants).
COLLAPSE_STRATEGIES = ("relinear_sg", "relinear_sw", "relinear_rezero")
ACCURACY_STRATEGIES = ("relinear_sg", "relinear_rezero")

COLLAPSE = {s: Claim(
    f"collapse.{s}",
    statement=(f"Quadratic ResNets trained with ReLinear ({DESCRIBED[s]}) collapse less often "
               "than with plain training."),
    source=SOURCE,
    target=f"one-sided Fisher exact test of fewer collapses in {s} than in plain: p <= {LEVEL}",
    rule=FewerEvents(LEVEL, what="collapses", reference="plain training"))
    for s in COLLAPSE_STRATEGIES}
ACCURACY = {s: Claim(
    f"accuracy.{s}",
    statement=(f"A quadratic ResNet trained with ReLinear ({DESCRIBED[s]}) is more accurate "
               "than the conventional ResNet of the same structure."),
    source=SOURCE,
    target=(f"95 % Welch t interval over seeds of the final eval-mode test accuracy "
            f"(test/acc, the ranking metric), {s} minus conventional, above 0; the best "
            "epoch's (test/acc_best, which the authors log) is reported beside it"),
    rule=Above(0.0, "points"))
    for s in ACCURACY_STRATEGIES}
CLAIMS = [*COLLAPSE.values(), *ACCURACY.values()]


def setup(c) -> str:
    """The choices of this run that are ours, not the paper's (CIFAR-10, all 50k training
    images, width 16, 200 epochs, batch 128, 4-px crop and flips)."""
    ours = []
    if c.dataset != "cifar10":
        ours.append(f"dataset {c.dataset}")
    if c.train_size:
        ours.append(f"{c.train_size} training images")
    if c.width != 16:
        ours.append(f"width {c.width}")
    tc = c.train
    if (tc.epochs, tc.batch_size) != (200, 128):
        ours.append(f"{tc.epochs} epochs of batch {tc.batch_size}")
    if (c.pad, c.flip) != (4, True):
        ours.append(f"augmentation pad {c.pad}, flip {c.flip}")
    return ", ".join(ours)


def claims(records, c) -> list:
    """Collapse rate of each ReLinear strategy vs plain training's; final accuracy of
    relinear_sg / relinear_rezero minus the conventional net's."""
    by = by_strategy(records)
    evidence = {**{f"collapse.{s}": collapse_evidence(s, by) for s in COLLAPSE_STRATEGIES},
                **{f"accuracy.{s}": accuracy_evidence(s, by) for s in ACCURACY_STRATEGIES}}
    note = setup(c)
    return decide([replace(claim, setup=note) for claim in CLAIMS], evidence)


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


def _rate(name: str, k: int, n: int, unjudged: int) -> str:
    lo, hi = clopper_pearson(k, n)
    extra = f", {unjudged} not judged" if unjudged else ""
    return f"{name} {k}/{n} [{fmt(lo, 2)}, {fmt(hi, 2)}]{extra}"


def collapse_evidence(strategy: str, by: dict) -> Evidence:
    mine, plain = by.get(strategy, []), by.get("plain", [])
    k, n = collapse_counts(mine)
    k0, n0 = collapse_counts(plain)
    u = sum(r.get("collapsed") is None for r in mine)
    u0 = sum(r.get("collapsed") is None for r in plain)
    rates = f"collapsed (95 % interval): {_rate(strategy, k, n, u)}; {_rate('plain', k0, n0, u0)}"
    if not n or not n0:
        gone = " and ".join(f"{s} ({'no runs' if not runs else 'none judged'})"
                            for s, m, runs in ((strategy, n, mine), ("plain", n0, plain)) if not m)
        short = any(r.get("collapsed") is None for r in mine + plain)
        hint = ("runs shorter than relinear.collapse_epochs are not judged; train longer "
                f"and run the ablation: {ABLATION}" if short else f"run the ablation: {ABLATION}")
        return missing(f"no judged runs of {gone}; {hint}", rates)
    p_fewer, p_more = fisher_one_sided(k, n, k0, n0)
    lo, hi = clopper_pearson(k, n)
    lo0, hi0 = clopper_pearson(k0, n0)
    values = {"collapsed": k, "runs": n, "not_judged": u, "rate_low": lo, "rate_high": hi,
              "plain_collapsed": k0, "plain_runs": n0, "plain_not_judged": u0,
              "plain_rate_low": lo0, "plain_rate_high": hi0,
              "p_fewer": p_fewer, "p_more": p_more}
    return Evidence(measured=f"{rates}; p(fewer) {fmt(p_fewer)}, p(more) {fmt(p_more)}",
                    values=values, counts=(k, n, k0, n0),
                    next=f"more seeds per strategy would decide: {ABLATION}")


def accuracy_evidence(strategy: str, by: dict) -> Evidence:
    acc = finite(r.get("test/acc") for r in by.get(strategy, []))
    ref = finite(r.get("test/acc") for r in by.get("conventional", []))
    if not acc or not ref:
        gone = " and ".join(s for s, v in ((strategy, acc), ("conventional", ref)) if not v)
        return missing(f"no runs of {gone} here; run the ablation: {ABLATION}",
                       f"{len(acc)} {strategy} and {len(ref)} conventional runs with an accuracy")
    diff = welch_interval(acc, ref, level=1 - LEVEL)
    best_acc = finite(r.get("test/acc_best") for r in by.get(strategy, []))
    best_ref = finite(r.get("test/acc_best") for r in by.get("conventional", []))
    best = welch_interval(best_acc, best_ref, level=1 - LEVEL)
    m, m0, bm, bm0 = mean(acc), mean(ref), mean(best_acc), mean(best_ref)
    values = {"mean": m, "n": len(acc), "conventional_mean": m0, "conventional_n": len(ref),
              "difference": diff.estimate, "low": diff.low, "high": diff.high,
              "best_mean": bm, "best_conventional_mean": bm0,
              "best_difference": best.estimate, "best_low": best.low, "best_high": best.high}
    measured = (f"final test/acc {strategy} {fmt(m)} (n={len(acc)}) vs conventional {fmt(m0)} "
                f"(n={len(ref)}): difference {fmt_interval(diff)} points; best epoch "
                f"{fmt(bm)} vs {fmt(bm0)}: {fmt_interval(best)}")
    nxt = (f"run several seeds of both: {ABLATION}" if not diff.has_interval else
           "the difference is within the seed-to-seed noise; more seeds would narrow it")
    return Evidence(measured=measured, values=values, interval=diff, next=nxt)

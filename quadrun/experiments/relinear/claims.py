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

from quadrun.claims import Above, Claim, FewerEvents, decide
from quadrun.experiments.relinear.config import gamma_note
from quadrun.experiments.relinear.evidence import (ABLATION, EVENTS, LEVEL, RESOLVE,
                                                   accuracy_evidence, adjust, by_strategy,
                                                   collapse_counts, event_evidence,
                                                   failure_threshold)

__all__ = ["CLAIMS", "claims", "summarize", "ABLATION", "RESOLVE", "by_strategy",
           "collapse_counts", "accuracy_evidence", "event_evidence"]

SOURCE = "Fan et al., TNNLS 2023 (arXiv 2110.06081): ReLinear, CIFAR-10 experiments"
ABSTRACT = "Fan et al., TNNLS 2023 (arXiv 2110.06081), abstract"
DESCRIBED = {"relinear_sg": "shrunk gradients", "relinear_sw": "shrunk weights",
             "relinear_rezero": "shrunk gradients and ReZero"}
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

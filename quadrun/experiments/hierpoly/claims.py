"""The paper's claims, declared once, and the evidence the records give them. Torch-free.

The rules (fixed before any run that decides them; tests/test_hierpoly.py makes each hold,
fail and stay inconclusive, and simulates their error rates):
- a learner's rate: the slope of log n*(d) on log d with its 95 % bootstrap interval (seeds
  resampled within each d), printed beside the secant slope of the reference count
  C(d + k, k) over the same d. holds iff the interval lies inside [k - 0.5, k + 0.5]; fails
  iff its lower end is above k + 0.5; inconclusive otherwise: "pre-asymptotic" when its
  upper end is below k - 0.5 (a quadratic p needs ~d^2 samples to be identified, so a
  slower growth can only be the small-d range), inconclusive when it crosses an edge;
- a kernel's rate against its reference count C(d + kq, kq): the slope of log n* on log C
  inside [1 - 0.5 / s, 1 + 0.5 / s], s the secant slope of log C on log d over the kernel's
  d (the same +-0.5 in the exponent of d, carried to the log-C scale); wholly above fails;
  wholly below is pre-asymptotic (inconclusive: at small d the degree-kq part of h carries
  less of its variance, so the target error needs fewer of those features);
- separation: the network's interval lies below (k + kq) / 2 and the kernel's above it
  (holds); either wholly on the wrong side fails; otherwise inconclusive;
- feature recovery: n_c(d), the n at which the median corr(feature, p) first reaches
  c = 0.9, its slope decided by the rate rule.
"""
from __future__ import annotations

import math
from typing import List, Optional

from quadrun import stats
from quadrun.claims import (FAILS, INCONCLUSIVE, Above, AllCases, Band, Below, Claim, EachCase,
                            decide, fmt)
from quadrun.experiments.hierpoly import curves
from quadrun.experiments.hierpoly.config import (KERNELS, LEARNERS, PAPER, REGIMES, THREE_LAYER,
                                                 learner_dims)
from quadrun.experiments.hierpoly.evidence import (RECOVERY, control_evidence, pair_evidence,
                                                   rate_evidence, study)

BAND = 0.5          # half-width of the rate band, in the exponent of d
CONTROL = 0.5       # the |corr(feature, p)| the negative control must stay below


def rate_rule(k: float) -> Band:
    return Band(k - BAND, k + BAND, above=FAILS, below=INCONCLUSIVE,
                above_why=f"grows faster than d^{fmt(k)} (the O~(d^k) rate)",
                below_why=(f"pre-asymptotic (a quadratic p needs ~d^2 samples to be identified, "
                           f"so growth slower than d^{fmt(k)} is the small-d range)"))


def _setup(regime: str, r, learner: str, c) -> str:
    target = (f"p {r.inner}" + (f" ({r.spectrum} spectrum)" if r.inner == "quadratic" else "")
              + f", g {r.outer} of degree {r.q}, normalised")
    how = {"layerwise": (f"stage 1 ridge on the Hermite features of degree <= k (the span of an "
                         f"infinitely wide first layer; leave-one-out ridge strength), stage 2 "
                         f"{c.layerwise.width2} random ReLU units on {fmt(c.layerwise.stage2_fraction)} "
                         f"of n, fresh"),
           "joint": f"all layers with Adam from a muP start, m2 = {c.joint.width2}",
           "hermite_kernel": "ridge on the Hermite features of degree <= kq",
           "kernel": "ReLU NTK ridge", "relu2": f"two-layer ReLU net, width {c.relu2.width}, Adam"}
    dims = learner_dims(c, r, learner) if learner in LEARNERS else r.dims
    most = getattr(getattr(c, learner, None), "max_seeds", 0)
    seeds = min(r.seeds, most) if most else r.seeds
    return (f"{target}; {learner}: {how.get(learner, learner)}; n* at median test MSE / Var h "
            f"= {fmt(r.target_error)} over {seeds} seeds; d = {', '.join(map(str, dims))}")


# ---- the claims, declared once ---------------------------------------------------------------

def claim_dk(regime: str, r, learner: str, c) -> Claim:
    return Claim(
        f"{regime}.layerwise_dk",
        statement=(f"A three-layer network trained layerwise learns h = g(p(x)) (k = {r.k}, q = "
                   f"{r.q}) with O~(d^k) samples: n*(d) grows like d^{r.k} up to log factors, "
                   f"not like d^{r.k * r.q}."),
        source=f"{PAPER}: main result (abstract); the experiment of Figure 2",
        target=(f"95 % bootstrap interval of the slope of log n* on log d inside "
                f"[{fmt(r.k - BAND)}, {fmt(r.k + BAND)}]; wholly above fails; wholly below is "
                "pre-asymptotic (inconclusive)"),
        rule=rate_rule(r.k), setup=_setup(regime, r, learner, c))


def claim_recovery(regime: str, r, learner: str, c) -> Claim:
    return Claim(
        f"{regime}.feature_recovery",
        statement=(f"The initial stage recovers the feature p with O~(d^k) samples: n_c(d), the n "
                   f"at which corr(learned feature, p) reaches {fmt(RECOVERY)}, grows like "
                   f"d^{r.k}."),
        source=f"{PAPER}: abstract (the initial layerwise stage recovers p with O~(d^k) samples)",
        target=(f"95 % bootstrap interval of the slope of log n_c on log d (n_c where the median "
                f"|corr| reaches {fmt(RECOVERY)}) inside [{fmt(r.k - BAND)}, {fmt(r.k + BAND)}]"),
        rule=rate_rule(r.k), setup=_setup(regime, r, learner, c))


def claim_kernel_rate(regime: str, r, learner: str, c, secant: Optional[float]) -> Claim:
    kq = r.k * r.q
    half = BAND / secant if secant and secant > 0 else BAND
    return Claim(
        f"{regime}.kernel_rate[{learner}]",
        statement=(f"Kernel methods need Theta~(d^kq) = Theta~(d^{kq}) samples: the kernel's n*(d) "
                   f"grows like the number of polynomials of degree <= kq, C(d + {kq}, {kq})."),
        source=f"{PAPER}: abstract (kernel methods require Theta~(d^kq) samples)",
        target=(f"95 % bootstrap interval of the slope of log n* on log C(d + {kq}, {kq}) inside "
                f"[{fmt(1 - half)}, {fmt(1 + half)}] (+-{fmt(BAND)} in the exponent of d over the "
                f"secant slope {fmt(secant)} of log C on log d); wholly above fails; wholly "
                "below is pre-asymptotic (inconclusive)"),
        rule=Band(1 - half, 1 + half, above=FAILS, below=INCONCLUSIVE,
                  above_why="it needs more samples than the count of its features grows",
                  below_why=("pre-asymptotic (fewer samples than the count grows: at small d the "
                             "degree-kq part carries less of Var h, so the target error is "
                             "reached with fewer of those features)")),
        setup=_setup(regime, r, learner, c))


def claim_separation(regime: str, r, learner: str, c) -> Claim:
    mid = (r.k + r.k * r.q) / 2
    return Claim(
        f"{regime}.separation[{learner}]",
        statement=(f"The three-layer network is a strict improvement over kernel methods: its "
                   f"n*(d) grows like d^{r.k}, the kernel's like d^{r.k * r.q}."),
        source=f"{PAPER}: abstract (a strict improvement over kernel methods)",
        target=(f"the network's slope interval lies below (k + kq)/2 = {fmt(mid)} and the "
                f"{learner} slope interval above it"),
        rule=EachCase((Below(mid), Above(mid))), setup=_setup(regime, r, learner, c))


def claim_two_layer(regime: str, r, c) -> Claim:
    mid = (r.k + r.k * r.q) / 2
    return Claim(
        f"{regime}.two_layer",
        statement=("A two-layer ReLU network trained end to end needs more samples than the "
                   "three-layer network (the paper's improvement is over existing guarantees "
                   "for two-layer networks: a two-layer network that learns h with ~d^k "
                   "samples here does not contradict the paper)."),
        source=f"{PAPER}: abstract (a strict improvement over existing guarantees for two-layer networks)",
        target=(f"the three-layer slope interval lies below (k + kq)/2 = {fmt(mid)} and relu2's "
                "above it"),
        rule=EachCase((Below(mid), Above(mid))), setup=_setup(regime, r, "relu2", c),
        extension=True)


def claim_control(regime: str, r, c) -> Claim:
    return Claim(
        f"{regime}.no_recovery",
        statement=(f"Negative control: with g = He_{r.q} (E[g'(p)] = 0: no linear Hermite "
                   "coefficient) the initial stage has nothing to recover, and corr(learned "
                   "feature, p) stays low at every n. This is why the separation regime uses "
                   "g = He_1 + He_2/sqrt 2 (a linear coefficient) with a projection spectrum "
                   "(A^2 ~ A, so the degree-2 part of g(p) is a multiple of p at every d)."),
        source=(f"{PAPER}: the theorem's assumption on g (the initial stage learns the "
                "degree-k part of h, which is p only when g has a linear Hermite coefficient)"),
        target=(f"at every d, the 95 % bootstrap interval of the median |corr(feature, p)| at "
                f"the largest n lies below {fmt(CONTROL)} (recovery is {fmt(RECOVERY)})"),
        rule=AllCases(Below(CONTROL)), setup=_setup(regime, r, "layerwise", c), extension=True)


# ---- from records to decided claims -------------------------------------------------------------

def regimes(records, c) -> list:
    """The configured regimes, then any other regime the records hold (pooled runs)."""
    found = [r.get("regime") for r in records if r.get("regime") in REGIMES]
    return list(dict.fromkeys(list(c.regimes) + found))


def learners(records, regime: str, c) -> list:
    """The learners of a regime: in its config (when chosen) or in its records."""
    listed = set(getattr(c, regime).learners) if regime in c.regimes else set()
    listed |= {r.get("learner") for r in records if r.get("regime") == regime}
    return [l for l in LEARNERS if l in listed]


def regime_claims(records, regime: str, r, c) -> List[dict]:
    """The claims of one regime, decided (one bootstrap per rate)."""
    mine = [x for x in records if x.get("regime") == regime]
    if regime == "control":
        declared = claim_control(regime, r, c)
        return decide([declared], {declared.id: control_evidence(mine, regime, "layerwise", c.bootstrap)})
    present = learners(records, regime, c)
    measured = {x.get("learner") for x in mine}
    three = next((l for l in THREE_LAYER if l in measured),
                 next((l for l in THREE_LAYER if l in present), "layerwise"))
    net = study(mine, regime, three, r, c)
    rate_band = (r.k - BAND, r.k + BAND)
    declared = [claim_dk(regime, r, three, c)]
    evidence = {declared[-1].id: rate_evidence(net, regime, three, rate_band)}
    kernels = [l for l in KERNELS if l in present or (regime == "separation" and l == "hermite_kernel")]
    for kernel in kernels:
        vs_d = study(mine, regime, kernel, r, c)
        vs_count = study(mine, regime, kernel, r, c, against=r.k * r.q)
        declared.append(claim_kernel_rate(regime, r, kernel, c, vs_count and vs_count["reference"]))
        band = (declared[-1].rule.low, declared[-1].rule.high)
        evidence[declared[-1].id] = rate_evidence(vs_count, regime, kernel, band)
        declared.append(claim_separation(regime, r, kernel, c))
        evidence[declared[-1].id] = pair_evidence(net, vs_d, regime, three, kernel)
    if "relu2" in present:
        declared.append(claim_two_layer(regime, r, c))
        evidence[declared[-1].id] = pair_evidence(net, study(mine, regime, "relu2", r, c),
                                                  regime, three, "relu2")
    declared.append(claim_recovery(regime, r, three, c))
    evidence[declared[-1].id] = rate_evidence(study(mine, regime, three, r, c, quantity="corr"),
                                              regime, three, rate_band)
    return decide(declared, evidence)


def claims(records, c) -> list:
    """Per regime of hierpoly.regimes (and any regime the records hold): layerwise_dk,
    kernel_rate[..] and separation[..] per kernel learner (always hermite_kernel in the
    separation regime), two_layer where relu2 ran, feature_recovery; the control regime
    has no_recovery alone. The three-layer learner is layerwise, else joint (the paper's
    Figure 2 trains jointly)."""
    out = []
    for regime in regimes(records, c):
        out += regime_claims(records, regime, getattr(c, regime), c)
    return out


def summarize(records, c) -> dict:
    """Derived results (no bootstrap: the intervals are the claims' values): per regime and
    learner n*(d) on the median error curve, and the polynomial time: seconds per replicate
    (summed over its n, median over replicates) against d, with the fitted exponent of
    log seconds on log d and its t interval (a reported result, not a verdict)."""
    out: dict = {"target_error": {}, "n_star": {}, "time": {}}
    for regime in regimes(records, c):
        r = getattr(c, regime)
        mine = [x for x in records if x.get("regime") == regime]
        out["target_error"][regime] = r.target_error
        for learner in learners(mine, regime, c):
            per_d = curves.curves(mine, regime, learner)
            if not per_d:
                continue
            out["n_star"].setdefault(regime, {})[learner] = {
                d: curves.n_star(*curves.median_curve(per_d[d]), r.target_error) for d in sorted(per_d)}
            out["time"].setdefault(regime, {})[learner] = seconds_vs_d(mine, learner)
    return out


def seconds_vs_d(records, learner: str) -> dict:
    """{"seconds": {d: median over replicates of the seconds summed over n}, "exponent":
    {"value", "low", "high"} of log seconds on log d}."""
    per: dict = {}
    for x in records:
        if x.get("learner") == learner and stats.is_number(x.get("seconds")):
            key = (x["d"], x["stream_seed"])
            per[key] = per.get(key, 0.0) + x["seconds"]
    dims = sorted({d for d, _ in per})
    secs = {d: stats.median([v for (dd, _), v in per.items() if dd == d]) for d in dims}
    fit = stats.line_fit([math.log(d) for d in dims], [math.log(secs[d]) if secs[d] else None for d in dims])
    exponent = {"value": fit.slope, "low": fit.low, "high": fit.high} if fit else None
    return {"seconds": secs, "exponent": exponent}

"""expressivity's claims, declared once, and their evidence from records (torch-free)."""
from __future__ import annotations

import math

from quadrun.claims import Above, AllCases, Below, Claim, Evidence, decide, fmt, missing
from quadrun.experiments.expressivity.config import CONVENTIONAL, QUADRATIC
from quadrun.stats import Interval, finite, mean, welch_interval

SOURCE_DIM = ("Fan et al. 2023 (arXiv 2110.06081), expressivity theorem via the dimension "
              "of the functional variety (algebraic geometry)")
SOURCE_FIT = ("Fan et al. 2023 (arXiv 2110.06081), expressivity theorem via spline theory "
              "(quadratic ReLU networks are piecewise polynomial)")
CLAIMED_TARGETS = ("spline", "radial")  # the targets of the fit claims


def _dimension_claim(bias: bool) -> Claim:
    label = "with bias" if bias else "without bias"
    return Claim(
        "dimension_bias" if bias else "dimension_no_bias",
        statement="A quadratic network has a functional variety of larger dimension than the "
                  f"conventional network of the same widths (both with x^2 activation), {label}.",
        source=SOURCE_DIM,
        target="exact dim(quadratic) > dim(conventional) for every architecture in "
               "expressivity.widths (integer dimensions: the difference is at least 1)",
        # dimensions are exact integers: a difference above 0.5 is one of at least 1
        rule=AllCases(Above(0.5, "dimensions")),
        setup="x^2 activation; the architectures of expressivity.widths; exact generic rank "
              "of the parameter Jacobian mod two primes at a random point")


def _fit_claim(target: str, quad: str) -> Claim:
    form = "full" if quad == "quad_relu" else "compact"
    return Claim(
        f"fit_{target}_{quad}",
        statement=f"At an equal parameter budget, the {form} quadratic ReLU network ({quad}) "
                  f"fits the {target} target with a lower test MSE than the best conventional "
                  "network.",
        source=SOURCE_FIT,
        target=f"test MSE ratio {quad} / best conventional < 1, its 95 % interval over seeds "
               "(Welch, log10 MSE) below 1",
        rule=Below(0.0, "(log10 MSE ratio)"),
        setup=f"synthetic {target} target on [-1, 1]^d; budget, depth, training and the "
              "conventional models (the best one by mean log10 MSE) from the config")


DIMENSION = {bias: _dimension_claim(bias) for bias in (False, True)}
FIT = {(t, q): _fit_claim(t, q) for t in CLAIMED_TARGETS for q in QUADRATIC}
CLAIMS = list(DIMENSION.values()) + list(FIT.values())


def claims(records, c) -> list:
    evidence = {DIMENSION[bias].id: dimension_evidence(records, c, bias) for bias in DIMENSION}
    evidence.update({FIT[t, q].id: fit_evidence(records, c, t, q) for t, q in FIT})
    return decide(CLAIMS, evidence)


# -- the dimension claims ------------------------------------------------------------------------
def _resolved(dims) -> "int | None":
    """The one dimension all records of a row agree on; None if any is unresolved or missing,
    or if they disagree."""
    if not dims or any(d is None for d in dims) or len(set(dims)) != 1:
        return None
    return int(dims[0])


def _dim_text(dims) -> str:
    if not dims:
        return "missing"
    return "|".join("?" if d is None else str(d) for d in dict.fromkeys(dims))


def _name(widths) -> str:
    return "[" + ",".join(map(str, widths)) + "]"


def dimension_evidence(records, c, bias: bool) -> Evidence:
    """One case per listed architecture: dim(quadratic) - dim(conventional), exact."""
    label = "with bias" if bias else "without bias"
    listed = [tuple(int(w) for w in widths) for widths in c.widths]
    kinds = [k for k in ("quadratic", "conventional") if k not in c.dimension_kinds]
    if kinds:
        return missing("expressivity.dimension_kinds lacks " + " and ".join(kinds),
                       "no dimension cells")
    if bias not in [bool(b) for b in c.biases] or not listed:
        return missing(f"expressivity.biases or expressivity.widths has no {label} "
                       "architecture", "no dimension cells")
    dims: dict = {}  # (widths, kind) -> [dim or None], over the pooled records
    for r in records:
        if r.get("part") == "dimension" and bool(r.get("bias")) == bias:
            # a row whose primes disagree is unresolved (a rank mod p can only be too small)
            dim = r.get("dim") if r.get("primes_agree", True) is not False else None
            dims.setdefault((tuple(r["widths"]), r["kind"]), []).append(dim)
    if not dims:
        return missing(f"no dimension record {label}", "no dimension records")
    rows, texts, cases = [], [], []
    for widths in listed:
        quad, conv = (_resolved(dims.get((widths, k))) for k in ("quadratic", "conventional"))
        name = _name(widths)
        ratio = quad / conv if quad is not None and conv is not None and conv > 0 else None
        rows.append({"widths": list(widths), "quadratic": quad, "conventional": conv,
                     "ratio": ratio})
        if quad is None or conv is None:
            texts.append(f"{name} {_dim_text(dims.get((widths, 'quadratic')))}/"
                         f"{_dim_text(dims.get((widths, 'conventional')))}")
            cases.append((name, Evidence(undecided=(
                "dimension missing, or ranks that differ between the primes or between "
                "pooled runs"), next="rerunning this row with another seed would decide")))
            continue
        texts.append(f"{name} {quad}/{conv} = {fmt(ratio)}")
        diff = float(quad - conv)
        cases.append((name, Evidence(measured=f"{quad} - {conv}",
                                     interval=Interval(diff, diff, diff))))
    ratios = [row["ratio"] for row in rows if row["ratio"] is not None]
    measured = "quad/conv dim: " + "; ".join(texts) \
        + (f" (ratio {fmt(min(ratios))} to {fmt(max(ratios))})" if ratios else "")
    return Evidence(measured=measured, cases=cases,
                    values={"rows": rows, "min_ratio": min(ratios) if ratios else None})


# -- the fit claims ------------------------------------------------------------------------------
def _log_mses(fits, model: str) -> tuple:
    """(log10 test MSE of the completed fits of `model`, number of its fits)."""
    mine = [r for r in fits if r.get("model") == model]
    done = finite(r.get("test_mse") for r in mine if r.get("status", "completed") == "completed")
    return [math.log10(m) for m in done if m > 0], len(mine)


def _geo(logs) -> str:
    """The geometric mean MSE of a list of log10 MSEs, as text."""
    return fmt(10 ** mean(logs)) if logs else "-"


def fit_evidence(records, c, target: str, quad: str) -> Evidence:
    """The Welch interval of mean log10 test MSE, quad minus the best conventional model
    (fewest failed fits, then the lowest mean log10 MSE)."""
    conventional = [m for m in c.models if m in CONVENTIONAL]
    gaps = ([f"target {target!r} (expressivity.targets)"] if target not in c.targets else []) \
        + ([f"model {quad!r} (expressivity.models)"] if quad not in c.models else []) \
        + (["a conventional model (expressivity.models)"] if not conventional else [])
    if gaps:
        return missing("the config has no " + " and no ".join(gaps), "not in this run's config")
    fits = [r for r in records if r.get("part") == "fit" and r.get("target") == target]
    by_model = {m: _log_mses(fits, m) for m in [quad] + conventional}
    have = [m for m in conventional if by_model[m][1]]
    if not by_model[quad][1] or not have:
        return missing(f"no records of {quad} or of a conventional model on {target}",
                       "no fit records")
    best = min(have, key=lambda m: (by_model[m][1] - len(by_model[m][0]),
                                    mean(by_model[m][0]) if by_model[m][0] else math.inf))
    (q_logs, q_n), (b_logs, b_n) = by_model[quad], by_model[best]
    q_bad, b_bad = q_n - len(q_logs), b_n - len(b_logs)
    iv = welch_interval(q_logs, b_logs)
    ratio = [None if v is None else 10 ** v for v in iv]
    measured = (f"{quad} {_geo(q_logs)} ({len(q_logs)}/{q_n} fits) vs {best} {_geo(b_logs)} "
                f"({len(b_logs)}/{b_n}); ratio {fmt(ratio[0])} "
                + (f"[{fmt(ratio[1])}, {fmt(ratio[2])}]" if iv.has_interval else "(no interval)"))
    values = {"quadratic": quad, "best_conventional": best, "log10_ratio": iv.estimate,
              "log10_ratio_low": iv.low, "log10_ratio_high": iv.high, "quadratic_fits": q_n,
              "quadratic_not_completed": q_bad, "conventional_fits": b_n,
              "conventional_not_completed": b_bad}
    if not q_logs and b_logs:   # every quadratic fit diverged: an infinite MSE ratio
        return Evidence(measured=measured + f"; every {quad} fit diverged", values=values,
                        interval=Interval(math.inf, math.inf, math.inf))
    if not iv.has_interval:
        return Evidence(measured=measured, values=values, undecided=(
            "fewer than 2 completed fits on a side"),
            next="more replicates (expressivity.replicates) would decide")
    if iv.high < 0 and q_bad:
        return Evidence(measured=measured, values=values, undecided=(
            f"{quad} is lower on its completed fits, but {q_bad} of {q_n} diverged"),
            next="fits that do not diverge (a lower lr) would decide")
    return Evidence(measured=measured, values=values, interval=iv,
                    next="more replicates or longer training would decide")

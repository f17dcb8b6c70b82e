"""expressivity's claims, declared once, and their evidence from records (torch-free).

Decided before the confirmatory runs (issue 25): every fit target is claimed, for both
quadratic models; each replicate redraws the training and test data and the
initialisation; the extension compares dimensions at an equal parameter count."""
from __future__ import annotations

import math

import numpy as np

from quadrun.claims import Above, AllCases, Below, Claim, Evidence, decide, fmt, missing
from quadrun.data.targets import DIMS
from quadrun.experiments.expressivity.config import CONVENTIONAL, QUADRATIC
from quadrun.stats import Interval, detectable_difference, finite, mean, welch_interval

SOURCE_DIM = ("Fan et al. 2023 (arXiv 2110.06081), expressivity theorem via the dimension "
              "of the functional variety (algebraic geometry)")
SOURCE_FIT = ("Fan et al. 2023 (arXiv 2110.06081), expressivity theorem via spline theory "
              "(quadratic ReLU networks are piecewise polynomial)")
CLAIMED_TARGETS = tuple(DIMS)  # every fit target is claimed (spline, radial, product, oscillatory)
FORMULAS = {"radial": "cos(pi ||x||^2)", "product": "x1 x2 x3",
            "spline": "a C^1 piecewise quadratic with 4 knots", "oscillatory": "sin(pi x1) cos(pi x2)"}
# dimensions are exact integers: a difference above 0.5 is one of at least 1
LARGER = AllCases(Above(0.5, "dimensions"))
DIM_SETUP = ("x^2 activation; the architectures of expressivity.widths; exact generic rank of "
             "the parameter Jacobian mod two primes at a random point")


def _label(bias: bool) -> str:
    return "with bias" if bias else "without bias"


def _dimension_claim(bias: bool) -> Claim:
    return Claim(
        "dimension_bias" if bias else "dimension_no_bias",
        statement="A quadratic network has a functional variety of larger dimension than the "
                  f"conventional network of the same widths (both with x^2 activation), "
                  f"{_label(bias)}.",
        source=SOURCE_DIM,
        target="exact dim(quadratic) > dim(conventional) for every architecture in "
               "expressivity.widths (integer dimensions: the difference is at least 1)",
        rule=LARGER, setup=DIM_SETUP)


def _matched_claim(bias: bool) -> Claim:
    return Claim(
        "dimension_equal_params_bias" if bias else "dimension_equal_params_no_bias",
        statement="At an equal parameter count, a quadratic network still has a functional "
                  "variety of larger dimension than a conventional network of the same depth "
                  f"(both with x^2 activation), {_label(bias)}: its advantage is not only "
                  "that it has more parameters.",
        source="quadrun's extension of " + SOURCE_DIM,
        target="exact dim(quadratic) > dim(widened conventional) for every architecture in "
               "expressivity.widths with a hidden layer",
        rule=LARGER, extension=True,
        setup=DIM_SETUP + "; control: the conventional net of the same depth, input and output "
              "with its hidden layers widened to at least the quadratic net's parameter "
              "count (quadrun.nn.budget.widened)")


def _fit_claim(target: str, quad: str) -> Claim:
    form = "full" if quad == "quad_relu" else "compact"
    return Claim(
        f"fit_{target}_{quad}",
        statement=f"At an equal parameter budget, the {form} quadratic ReLU network ({quad}) "
                  f"fits the {target} target with a lower test MSE than the best conventional "
                  "network, over initialisations and data draws.",
        source=SOURCE_FIT,
        target=f"test MSE ratio {quad} / best conventional < 1: its 95 % Welch interval over "
               "replicates (each its own initialisation and data draw; log10 MSE) below 1",
        rule=Below(0.0, "(log10 MSE ratio)"),
        setup=f"synthetic {target} target {FORMULAS[target]} on [-1, 1]^{DIMS[target]}, "
              "uniform noise-free samples; MLPs of depth expressivity.depth at "
              "expressivity.budget parameters (within 5 %); control: the best conventional "
              "model of expressivity.models by mean log10 MSE (fewest diverged fits first)")


DIMENSION = {bias: _dimension_claim(bias) for bias in (False, True)}
MATCHED = {bias: _matched_claim(bias) for bias in (False, True)}
FIT = {(t, q): _fit_claim(t, q) for t in CLAIMED_TARGETS for q in QUADRATIC}
CLAIMS = list(DIMENSION.values()) + list(FIT.values()) + list(MATCHED.values())


def claims(records, c) -> list:
    evidence = {DIMENSION[b].id: dimension_evidence(records, c, b) for b in DIMENSION}
    evidence.update({MATCHED[b].id: matched_evidence(records, c, b) for b in MATCHED})
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


def _dims(records, part: str, bias: bool, key) -> dict:
    """key(record) -> [dim or None] over the pooled records of `part` with this bias; a
    record whose primes disagree is unresolved (a rank mod p can only be too small)."""
    out: dict = {}
    for r in records:
        if r.get("part") == part and bool(r.get("bias")) == bias:
            dim = r.get("dim") if r.get("primes_agree", True) is not False else None
            out.setdefault(key(r), []).append(dim)
    return out


def _case(quad, conv) -> Evidence:
    if quad is None or conv is None:
        return Evidence(undecided="dimension missing, or ranks that differ between the primes "
                                  "or between pooled runs",
                        next="rerunning this row with another seed would decide")
    diff = float(quad - conv)
    return Evidence(measured=f"{quad} - {conv}", interval=Interval(diff, diff, diff))


def _unmeasurable(c, bias: bool) -> "str | None":
    kinds = [k for k in ("quadratic", "conventional") if k not in c.dimension_kinds]
    if kinds:
        return "expressivity.dimension_kinds lacks " + " and ".join(kinds)
    if bias not in [bool(b) for b in c.biases] or not c.widths:
        return f"expressivity.biases or expressivity.widths has no {_label(bias)} architecture"
    return None


def dimension_evidence(records, c, bias: bool) -> Evidence:
    """One case per listed architecture: dim(quadratic) - dim(conventional), exact."""
    why = _unmeasurable(c, bias)
    if why:
        return missing(why, "no dimension cells")
    dims = _dims(records, "dimension", bias, lambda r: (tuple(r["widths"]), r["kind"]))
    if not dims:
        return missing(f"no dimension record {_label(bias)}", "no dimension records")
    rows, texts, cases = [], [], []
    for widths in [tuple(int(w) for w in ws) for ws in c.widths]:
        quad, conv = (_resolved(dims.get((widths, k))) for k in ("quadratic", "conventional"))
        ratio = quad / conv if quad is not None and conv is not None and conv > 0 else None
        rows.append({"widths": list(widths), "quadratic": quad, "conventional": conv,
                     "ratio": ratio})
        texts.append(f"{_name(widths)} {quad}/{conv} = {fmt(ratio)}" if ratio is not None else
                     f"{_name(widths)} {_dim_text(dims.get((widths, 'quadratic')))}/"
                     f"{_dim_text(dims.get((widths, 'conventional')))}")
        cases.append((_name(widths), _case(quad, conv)))
    ratios = [row["ratio"] for row in rows if row["ratio"] is not None]
    measured = "quad/conv dim: " + "; ".join(texts) \
        + (f" (ratio {fmt(min(ratios))} to {fmt(max(ratios))})" if ratios else "")
    return Evidence(measured=measured, cases=cases,
                    values={"rows": rows, "min_ratio": min(ratios) if ratios else None})


def matched_evidence(records, c, bias: bool) -> Evidence:
    """One case per listed architecture with a hidden layer: dim(quadratic) minus the dim of
    the conventional net widened to the quadratic net's parameter count (part=matched)."""
    why = _unmeasurable(c, bias) or (None if c.equal_params else
                                     "expressivity.equal_params is false")
    if why:
        return missing(why, "no equal-parameter cells")
    quads = _dims(records, "dimension", bias, lambda r: (tuple(r["widths"]), r["kind"]))
    convs = _dims(records, "matched", bias, lambda r: tuple(r["matches"]))
    if not convs:
        return missing(f"no equal-parameter record {_label(bias)}", "no equal-parameter records")
    info = {tuple(r["matches"]): r for r in records
            if r.get("part") == "matched" and bool(r.get("bias")) == bias}
    rows, texts, cases, full = [], [], [], 0
    for widths in [tuple(int(w) for w in ws) for ws in c.widths if len(ws) > 2]:
        quad, conv = _resolved(quads.get((widths, "quadratic"))), _resolved(convs.get(widths))
        r = info.get(widths, {})
        at_ambient = conv is not None and conv == r.get("ambient")
        full += at_ambient
        rows.append({"widths": list(widths), "conventional_widths": r.get("widths"),
                     "quadratic": quad, "conventional": conv,
                     "quadratic_params": r.get("quadratic_params"),
                     "conventional_params": r.get("params"), "at_ambient": at_ambient})
        texts.append(f"{_name(widths)} {_dim_text(quads.get((widths, 'quadratic')))}/"
                     f"{_dim_text(convs.get(widths))}" + (
                         f" vs {_name(r['widths'])} ({r.get('quadratic_params')}/"
                         f"{r.get('params')} params)" if r else ""))
        cases.append((_name(widths), _case(quad, conv)))
    measured = ("quad/widened conv dim: " + "; ".join(texts)
                + f"; the widened conventional net fills its ambient space (dim = ambient) in "
                  f"{full} of {len(rows)} rows")
    return Evidence(measured=measured, cases=cases, values={"rows": rows, "at_ambient": full})


# -- the fit claims ------------------------------------------------------------------------------
def _log_mses(fits, model: str) -> tuple:
    """(log10 test MSE of the completed fits of `model`, number of its fits)."""
    mine = [r for r in fits if r.get("model") == model]
    done = finite(r.get("test_mse") for r in mine if r.get("status", "completed") == "completed")
    return [math.log10(m) for m in done if m > 0], len(mine)


def _geo(logs) -> str:
    """The geometric mean MSE of a list of log10 MSEs, as text."""
    return fmt(10 ** mean(logs)) if logs else "-"


def _sd(logs) -> "float | None":
    return float(np.std(logs, ddof=1)) if len(logs) > 1 else None


def _protocol(c) -> str:
    """The config's non-paper choices a fit claim rests on, as text."""
    t = c.train
    return (f"budget {c.budget} params, depth {c.depth}, {c.n_train} training and {c.n_test} "
            f"test points per replicate, {t.epochs} epochs of {t.optimizer} (lr {fmt(t.lr)}, "
            f"batch {t.batch_size}, {t.schedule}), quadratic init {c.quad_init}, "
            f"quadratic lr x{fmt(c.quad_lr_factor)}")


def fit_evidence(records, c, target: str, quad: str) -> Evidence:
    """The Welch interval of mean log10 test MSE, quad minus the best conventional model
    (fewest failed fits, then the lowest mean log10 MSE), over replicates."""
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
    detectable = detectable_difference(_sd(q_logs), len(q_logs), _sd(b_logs), len(b_logs))
    measured = (f"{quad} {_geo(q_logs)} ({len(q_logs)}/{q_n} fits) vs {best} {_geo(b_logs)} "
                f"({len(b_logs)}/{b_n}); ratio {fmt(ratio[0])} "
                + (f"[{fmt(ratio[1])}, {fmt(ratio[2])}]" if iv.has_interval else "(no interval)")
                + (f"; detects a ratio of {fmt(10 ** -detectable)} (or {fmt(10 ** detectable)})"
                   " at 80 % power" if detectable is not None else "")
                + f"; {_protocol(c)}")
    values = {"quadratic": quad, "best_conventional": best, "log10_ratio": iv.estimate,
              "log10_ratio_low": iv.low, "log10_ratio_high": iv.high, "quadratic_fits": q_n,
              "quadratic_not_completed": q_bad, "conventional_fits": b_n,
              "conventional_not_completed": b_bad, "detectable_log10_ratio": detectable,
              "conventional_geo_mse": {m: (10 ** mean(by_model[m][0]) if by_model[m][0]
                                           else None) for m in have}}
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

"""Claims: a paper's statement decided from records, and the statistics that decide them.

An experiment's `claims(records, cfg)` returns a list of `claim(...)` dicts:

    {"id", "statement", "source", "measured", "target", "verdict", "why", "values"}

- `statement`: one sentence, as the paper puts it; `source`: paper and section/figure.
- `measured`: the numbers that decide it, as text (with intervals where there is noise);
  `values`: the same numbers for programs.
- `target`: what would count as reproduced.
- `verdict`: holds | fails | inconclusive (noise or range too small to decide) |
  not_measured (this scale or this run does not reach it); `why`: one sentence.

Every verdict is computed from records; the helpers below turn an interval into one.
Torch-free (numpy; scipy for the t quantile), so `quadrun-report` needs no torch.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from quadrun.vocab import VERDICTS

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = VERDICTS


def claim(id: str, statement: str, source: str, *, measured: str, target: str,
          verdict: str, why: str, values: Optional[dict] = None) -> dict:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, not {verdict!r}")
    return {"id": id, "statement": statement, "source": source, "measured": measured,
            "target": target, "verdict": verdict, "why": why, "values": values or {}}


def finite(values: Iterable) -> list:
    """The finite numbers among `values` (None, NaN, inf and non-numbers dropped)."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out.append(float(v))
    return out


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple:
    """(mean, low, high): Student-t interval of the mean; (mean, None, None) for n < 2."""
    x = np.asarray(finite(values), dtype=float)
    if len(x) == 0:
        return None, None, None
    mean = float(x.mean())
    if len(x) < 2:
        return mean, None, None
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple:
    """(mean(a) - mean(b), low, high): Welch's t interval of the difference of means;
    (difference, None, None) when either side has fewer than 2 values."""
    x, y = np.asarray(finite(a), float), np.asarray(finite(b), float)
    if len(x) == 0 or len(y) == 0:
        return None, None, None
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return diff, None, None
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0:
        return diff, diff, diff
    dof = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, dof) * se)
    return diff, diff - half, diff + half


def bootstrap_interval(values: Sequence[float], stat: Callable = np.median, n: int = 2000,
                       seed: int = 0, level: float = 0.95) -> tuple:
    """(stat(values), low, high): percentile bootstrap over resamples of `values`."""
    x = np.asarray(finite(values), float)
    if len(x) == 0:
        return None, None, None
    est = float(stat(x))
    if len(x) < 2 or n <= 0:
        return est, None, None
    rng = np.random.default_rng(seed)
    draws = [float(stat(x[rng.integers(0, len(x), len(x))])) for _ in range(n)]
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return est, float(lo), float(hi)


def above(low: Optional[float], high: Optional[float], threshold: float = 0.0) -> str:
    """holds when the whole interval is above `threshold`, fails when it is wholly below,
    inconclusive when it straddles it or is missing."""
    if low is None or high is None:
        return INCONCLUSIVE
    if low > threshold:
        return HOLDS
    if high < threshold:
        return FAILS
    return INCONCLUSIVE


def contains(low: Optional[float], high: Optional[float], value: float) -> bool:
    return low is not None and high is not None and low <= value <= high


def fmt(x, digits: int = 3) -> str:
    """A number for a claim's text: 3 significant digits, '-' for a missing one."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    return f"{x:.{digits}g}"


def fmt_interval(est, low, high, digits: int = 3, level: float = 0.95) -> str:
    """'1.23 [0.98, 1.51]' (95 % interval), or just the estimate when there is none."""
    if low is None or high is None:
        return f"{fmt(est, digits)} (no interval)"
    return f"{fmt(est, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"

"""Figures per regime, drawn from the records (no resampling: the intervals are the
claims'): the median test error and the median corr(feature, p) against n/d^k, one curve
per d with the seeds' interquartile range as a band, and n*(d) against d (log-log) with
the fitted line and the reference slopes k and kq."""
from __future__ import annotations

import numpy as np

from quadrun.experiments.hierpoly import curves
from quadrun.experiments.hierpoly.claims import RECOVERY, learners, regimes
from quadrun.experiments.hierpoly.config import THREE_LAYER
from quadrun.plotting import plain_log

FLOOR = 1e-3        # the error axes' bottom: an interpolating kernel reaches ~1e-14


def _panel(ax, per_d: dict, k: int, quantity: str, colours: dict) -> dict:
    """Median over seeds against n/d^k, one curve per d, the interquartile range as a band;
    returns {d: seeds}."""
    missing = curves.QUANTITIES[quantity][1]
    seeds = {}
    for d in sorted(per_d):
        ns, vals = curves.table(per_d[d], missing)
        if not ns:
            continue
        seeds[d] = len(vals)
        xs = [n / d ** k for n in ns]
        low, mid, high = np.percentile(vals, [25, 50, 75], axis=0)
        ax.plot(xs, mid, "o-", ms=3, color=colours[d], label=f"d={d}")
        finite = np.isfinite(low) & np.isfinite(high)
        ax.fill_between(np.array(xs)[finite], low[finite], high[finite], color=colours[d],
                        alpha=0.15, lw=0)
    return seeds


def _seeds(seeds: dict) -> str:
    counts = set(seeds.values())
    if len(counts) == 1:
        n = counts.pop()
        return f"{n} seed{'s' if n > 1 else ''} per d"
    return "seeds " + ", ".join(f"d={d}: {n}" for d, n in seeds.items())


def _curves_figure(plt, mine, name, present, k, quantity, level, level_label, colours):
    """One panel per learner, a shared legend beside them."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    key = "test_mse" if quantity == "error" else "corr"
    fig, axes = plt.subplots(1, len(present), figsize=(3.6 * len(present) + 1.6, 3.7),
                             squeeze=False, layout="constrained")
    for i, (ax, learner) in enumerate(zip(axes[0], present)):
        seeds = _panel(ax, curves.curves(mine, name, learner, key), k, quantity, colours)
        ax.axhline(level, color="grey", ls=":", lw=1)
        title = f"{learner} ({_seeds(seeds)})"
        if quantity == "error":
            ax.set(xscale="log", yscale="log")
            lowest = min((np.nanmin(l.get_ydata()) for l in ax.lines[:-1]), default=1.0)
            ax.set_ylim(bottom=max(FLOOR, ax.get_ylim()[0]))
            if lowest < FLOOR:
                title += f"\nbelow {FLOOR:g}: off the axis"
        else:
            ax.set(xscale="log", ylim=(0, 1.02))
        plain_log(ax)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"n / d^{k}")
        if i == 0:
            ax.set_ylabel("test MSE / Var h" if quantity == "error" else "|corr(feature, p)|")
    handles = [Line2D([], [], color=colours[d], marker="o", ms=3, label=f"d={d}")
               for d in sorted(colours)]
    handles += [Patch(color="0.5", alpha=0.3, label="interquartile range\nover seeds"),
                Line2D([], [], color="grey", ls=":", lw=1, label=level_label)]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    what = "test MSE / Var h" if quantity == "error" else "|corr(learned feature, p)|"
    fig.suptitle(f"hierpoly {name}: {what} against n / d^{k}\n"
                 "line: median over seeds, band: interquartile range", fontsize=10)
    return fig


def figures(records, c, save) -> None:
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    for name in regimes(records, c):
        r = getattr(c, name)
        mine = [x for x in records if x.get("regime") == name]
        present = [l for l in learners(mine, name, c) if curves.curves(mine, name, l)]
        if not present:
            continue
        k, target = r.k, r.target_error
        dims = sorted({x["d"] for x in mine})
        colours = {d: f"C{i % 10}" for i, d in enumerate(dims)}
        save(_curves_figure(plt, mine, name, present, k, "error", target,
                            f"target error {target:g}\n(defines n*)", colours),
             f"{name}_error_vs_n_over_dk")

        featured = [l for l in present if l in THREE_LAYER]
        if featured:
            save(_curves_figure(plt, mine, name, featured, k, "corr", RECOVERY,
                                f"recovery threshold {RECOVERY:g}", colours),
                 f"{name}_corr_vs_n_over_dk")

        save(_nstar_figure(plt, matplotlib.ticker, mine, name, present, r, dims),
             f"{name}_nstar_vs_d")


def _nstar_figure(plt, ticker, mine, name, present, r, dims):
    """n* per d and learner (log-log) with each learner's least-squares line, and the
    reference slopes k and kq through the first fitted learner's points."""
    k, target = r.k, r.target_error
    fig, ax = plt.subplots(figsize=(7.2, 3.9), layout="constrained")
    anchor = None
    for i, learner in enumerate(present):
        per_d = curves.curves(mine, name, learner)
        stars = {d: curves.n_star(*curves.median_curve(per_d[d]), target) for d in per_d}
        ds = sorted(d for d, s in stars.items() if s is not None)
        missed = sorted(d for d, s in stars.items() if s is None)
        if not ds:
            continue
        ys = [stars[d] for d in ds]
        note = f" (unresolved at d={', '.join(map(str, missed))})" if missed else ""
        ax.plot(ds, ys, "o", color=f"C{i % 10}", label=f"{learner}: n*{note}")
        slope = curves.slope(ds, ys)
        if slope is not None:
            fit = np.polyfit(np.log(ds), np.log(ys), 1)
            xs = np.array([min(ds), max(ds)], float)
            ax.plot(xs, np.exp(np.polyval(fit, np.log(xs))), "-", color=f"C{i % 10}",
                    label=f"{learner}: least-squares fit, slope {slope:.2f}")
            if anchor is None:
                anchor = (float(np.exp(np.mean(np.log(ds)))),
                          float(np.exp(np.mean(np.log(ys)))), ds)
    if anchor is not None:
        x0, y0, ds = anchor
        xs = np.array([min(ds), max(ds)], float)
        for slope, style, what in ((k, "--", "k"), (k * r.q, ":", "kq")):
            ax.plot(xs, y0 * (xs / x0) ** slope, style, color="grey", lw=1,
                    label=f"reference slope {slope} (d^{what})")
    ax.set(xscale="log", yscale="log", xlabel="input dimension d",
           ylabel=f"n*: samples where the median\ntest MSE / Var h reaches {target:g}")
    ax.set_title(f"hierpoly {name}: samples needed against dimension (log-log)", fontsize=10)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    plain_log(ax, "y")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        ax.set_xlim(min(dims) / 1.3, max(dims) * 1.3)
        ax.yaxis.set_major_locator(ticker.NullLocator())
        ax.yaxis.set_minor_locator(ticker.NullLocator())
        ax.text(0.5, 0.5, f"no learner's median error reached {target:g}\n"
                f"at any d: n* is unresolved (more n needed)", ha="center", va="center",
                transform=ax.transAxes, fontsize=9)
    return fig

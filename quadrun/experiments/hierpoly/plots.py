"""Figures per regime, drawn from the records (no resampling: the intervals are the
claims'): the median test error and the median corr(feature, p) against n/d^k, one curve
per d with the seeds' interquartile range as a band, and n*(d) against d (log-log) with
the fitted line and the reference slopes k and kq."""
from __future__ import annotations

import numpy as np

from quadrun.experiments.hierpoly import curves
from quadrun.experiments.hierpoly.claims import RECOVERY, learners, regimes
from quadrun.experiments.hierpoly.config import THREE_LAYER


def _panel(ax, per_d: dict, k: int, quantity: str) -> None:
    """Median over seeds against n/d^k, one curve per d, the interquartile range as a band."""
    missing = curves.QUANTITIES[quantity][1]
    for d in sorted(per_d):
        ns, vals = curves.table(per_d[d], missing)
        if not ns:
            continue
        xs = [n / d ** k for n in ns]
        low, mid, high = np.percentile(vals, [25, 50, 75], axis=0)
        line, = ax.plot(xs, mid, "o-", ms=3, label=f"d={d} ({len(vals)} seeds)")
        finite = np.isfinite(low) & np.isfinite(high)
        ax.fill_between(np.array(xs)[finite], low[finite], high[finite], color=line.get_color(),
                        alpha=0.15, lw=0)
    if per_d:
        ax.legend(fontsize=7)


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
        fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.6), squeeze=False)
        for ax, learner in zip(axes[0], present):
            _panel(ax, curves.curves(mine, name, learner), k, "error")
            ax.axhline(target, color="grey", ls=":", lw=1)
            ax.set(xscale="log", yscale="log", title=f"{name}: {learner}", xlabel=f"n / d^{k}",
                   ylabel="test MSE / Var h (median, IQR)")
            ax.set_ylim(bottom=max(1e-3, ax.get_ylim()[0]))    # an interpolating kernel: ~1e-14
        save(fig, f"{name}_error_vs_n_over_dk")

        featured = [l for l in present if l in THREE_LAYER]
        if featured:
            fig, axes = plt.subplots(1, len(featured), figsize=(4.2 * len(featured), 3.6), squeeze=False)
            for ax, learner in zip(axes[0], featured):
                _panel(ax, curves.curves(mine, name, learner, "corr"), k, "corr")
                ax.axhline(RECOVERY, color="grey", ls=":", lw=1)
                ax.set(xscale="log", title=f"{name}: {learner}", xlabel=f"n / d^{k}",
                       ylabel="|corr(feature, p)| (median, IQR)", ylim=(0, 1.02))
            save(fig, f"{name}_corr_vs_n_over_dk")

        fig, ax = plt.subplots(figsize=(4.8, 3.8))
        anchor = None
        for learner in present:
            per_d = curves.curves(mine, name, learner)
            stars = {d: curves.n_star(*curves.median_curve(per_d[d]), target) for d in per_d}
            ds = sorted(d for d, s in stars.items() if s is not None)
            if not ds:
                continue
            ys = [stars[d] for d in ds]
            line, = ax.plot(ds, ys, "o", label=f"{learner} n*")
            slope = curves.slope(ds, ys)
            if slope is not None:
                fit = np.polyfit(np.log(ds), np.log(ys), 1)
                xs = np.array([min(ds), max(ds)], float)
                ax.plot(xs, np.exp(np.polyval(fit, np.log(xs))), "-", color=line.get_color(),
                        label=f"{learner} fit: slope {slope:.2f}")
            if anchor is None:
                anchor = (float(np.exp(np.mean(np.log(ds)))), float(np.exp(np.mean(np.log(ys)))), ds)
        if anchor is not None:
            x0, y0, ds = anchor
            xs = np.array([min(ds), max(ds)], float)
            for slope, style in ((k, "--"), (k * r.q, ":")):
                ax.plot(xs, y0 * (xs / x0) ** slope, style, color="grey", lw=1,
                        label=f"reference d^{slope}")
        ax.set(xscale="log", yscale="log", xlabel="d", ylabel=f"n* (median error {target})",
               title=f"{name}: samples needed vs dimension")
        dims = sorted({x["d"] for x in mine})
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        save(fig, f"{name}_nstar_vs_d")

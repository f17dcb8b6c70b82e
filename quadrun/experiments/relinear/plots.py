"""Figures drawn from records: training curves per strategy, and the strategies compared."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from quadrun.experiments.relinear.config import RANKED_BY
from quadrun.experiments.relinear.evidence import by_strategy, collapse_counts
from quadrun.plotting import plain_log
from quadrun.stats import clopper_pearson, finite, is_number, mean, t_interval

CHANCE = 100.0 / 10      # test accuracy (%) of a guess among the 10 classes


def figures(records, c, save) -> None:
    """Every run: `loss`, `accuracy` (eval mode and with batch statistics) and `norms`
    (W_g, W_b) against epoch, one panel per strategy and one line per run, one legend beside
    the panels. With several strategies, `strategies`: accuracy by strategy (ranked by mean
    final accuracy, 95 % t intervals; best epoch and batch statistics beside it) and the
    collapse rate per strategy (95 % Clopper-Pearson intervals), in the same order."""
    curves = by_strategy([r for r in records if r.get("history")])
    if curves:
        seeds = sorted({r.get("seed") for runs in curves.values() for r in runs},
                       key=lambda s: _seed_order({"seed": s}))
        colours = {s: f"C{i % 10}" for i, s in enumerate(seeds)}
        for name, draw in (("loss", _draw_loss), ("accuracy", _draw_accuracy),
                           ("norms", _draw_norms)):
            fig, axes = _panels(len(curves))
            for i, (ax, (strategy, runs)) in enumerate(zip(axes, curves.items())):
                title, styles = draw(ax, strategy, sorted(runs, key=_seed_order), c, colours)
                ax.set_title(f"{strategy} ({_runs(runs)})", fontsize=9)
                if i % 3:                                     # the row's first panel says it
                    ax.set_ylabel("")
                if i + 3 < len(curves):                       # the panel below says it
                    ax.set_xlabel("")
            handles = [Line2D([], [], color=colours[s], label=f"seed {s}") for s in seeds]
            fig.legend(handles=handles + styles, loc="outside right center", fontsize=7)
            first = next(iter(curves.values()))[0]
            fig.suptitle(f"relinear: {title}\nResNet depth {first.get('depth')}, "
                         f"{first.get('form')} quadratic layers, {first.get('dataset')}",
                         fontsize=9)
            save(fig, name)

    by = by_strategy(records)
    if len(by) < 2:
        return
    ranked = sorted(by, key=lambda s: -(mean(r.get(RANKED_BY) for r in by[s])
                                        if finite(r.get(RANKED_BY) for r in by[s]) else -math.inf))
    save(_strategies(by, ranked), "strategies")


def _runs(runs: list) -> str:
    """'3 runs, 1 collapsed, 1 not judged'."""
    n = len(runs)
    out = f"{n} run{'s' if n > 1 else ''}"
    collapsed = sum(r.get("collapsed") is True for r in runs)
    unjudged = sum(r.get("collapsed") is None for r in runs)
    return out + (f", {collapsed} collapsed" if collapsed else "") + \
        (f", {unjudged} not judged" if unjudged else "")


def _strategies(by: dict, ranked: list):
    labels = [f"{s}\n({len(by[s])} runs)" for s in ranked]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained",
                                      width_ratios=(3, 2))
    cut = False
    for i, s in enumerate(ranked):
        accs = finite(r.get("test/acc") for r in by[s])
        left.scatter(i - 0.12 + np.linspace(-0.04, 0.04, len(accs)), accs, s=10, color="0.6",
                     zorder=2, label="final, each run" if i == 0 else None)
        for offset, key, colour, label in ((-0.12, "test/acc", "C0", "final (ranked by)"),
                                           (0.12, "test/acc_best", "C2", "best epoch")):
            m, lo, hi = t_interval([r.get(key) for r in by[s]])
            if m is None:
                continue
            err = [[m - lo], [hi - m]] if lo is not None else None
            cut |= lo is not None and (lo < 0 or hi > 100)
            left.errorbar([i + offset], [m], yerr=err, fmt="o", color=colour, capsize=4,
                          zorder=3, label=f"{label}: mean, 95 % t interval" if i == 0 else None)
        stats_mean = mean(r.get("test/acc_batchstats") for r in by[s])
        if stats_mean is not None:
            left.scatter([i + 0.3], [stats_mean], marker="x", color="C1", zorder=3,
                         label="final, batch statistics: mean" if i == 0 else None)
    left.axhline(CHANCE, color="0.5", ls=":", lw=1, label=f"chance ({CHANCE:g} %)")
    # many strategies: one-line labels, tilted, so that neighbours do not overlap
    tilt = {"rotation": 35, "ha": "right", "rotation_mode": "anchor"} if len(ranked) > 4 else {}
    sep = " " if tilt else "\n"
    left.set_xticks(range(len(ranked)), [label.replace("\n", sep) for label in labels],
                    fontsize=8, **tilt)
    left.set_xlim(-0.6, len(ranked) - 0.4)
    left.set_ylim(0, 100)
    left.set(xlabel="strategy, ranked by mean final accuracy",
             ylabel="test accuracy (%), eval mode unless marked")
    left.set_title("test accuracy by strategy (mean over runs, 95 % t interval"
                   + ("; intervals cut at 0 and 100 %)" if cut else ")"), fontsize=9)
    judged = []
    for i, s in enumerate(ranked):
        k, n = collapse_counts(by[s])
        judged.append(f"{s}{sep}({n} of {len(by[s])} judged)")
        rate = k / n if n else 0.0
        lo, hi = clopper_pearson(k, n)
        if n:
            right.bar(i, rate, color="C3", alpha=0.8)
            right.errorbar([i], [rate], yerr=[[rate - lo], [hi - rate]], color="k", capsize=4)
        right.text(i, (hi if n else 0) + 0.03, f"{k}/{n}", ha="center", va="bottom", fontsize=8)
    right.set_xticks(range(len(ranked)), judged, fontsize=8, **tilt)
    right.set_xlim(-0.6, len(ranked) - 0.4)
    right.set_ylim(0, 1.22)
    right.set_yticks(np.linspace(0, 1, 6))
    right.set(xlabel="strategy (same order)", ylabel="collapse rate (collapsed / judged runs)")
    right.set_title("collapsed runs per strategy (rate, 95 % Clopper-Pearson interval;\n"
                    "text: collapsed / judged runs)", fontsize=9)
    fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncols=3,
               fontsize=8)
    fig.suptitle("relinear: strategies compared", fontsize=10)
    return fig


def _nan(v) -> float:
    return float(v) if is_number(v) else float("nan")


def _seed_order(r) -> tuple:
    s = r.get("seed")
    return (0, s) if isinstance(s, int) else (1, str(s))


def _panels(n: int):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols + 1.4, 3.0 * rows + 0.7),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    for ax in flat[max(0, n - cols):n]:     # no panel below: its own epoch ticks
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, flat[:n]


def _series(h: list, key: str) -> tuple:
    return [e["epoch"] for e in h], [_nan(e.get(key)) for e in h]


def _finish(ax, ylabel: str) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    plain_log(ax)


def _draw_loss(ax, strategy, runs, c, colours) -> tuple:
    for r in runs:
        ax.plot(*_series(r["history"], "train/loss"), color=colours[r.get("seed")])
    ax.set_yscale("log")
    _finish(ax, "training loss (cross-entropy)")
    return ("training loss, the mean over each epoch's batches (relinear_sw: its penalty "
            "included)"), []


def _draw_accuracy(ax, strategy, runs, c, colours) -> tuple:
    for r in runs:
        colour, h = colours[r.get("seed")], r["history"]
        ax.plot(*_series(h, "test/acc"), color=colour)
        if any("test/acc_batchstats" in e for e in h):
            ax.plot(*_series(h, "test/acc_batchstats"), "--", color=colour, lw=1)
        if r.get("collapsed") and r.get("collapse_epoch") is not None:
            at = [e for e in h if e["epoch"] == r["collapse_epoch"]]
            if at:
                ax.plot([at[0]["epoch"]], [_nan(at[0].get("test/acc"))], "x", color="k", ms=7)
    last = max((e["epoch"] for r in runs for e in r["history"]), default=1)
    ax.axvspan(0, min(c.collapse_epochs, last + 1) - 0.5, color="0.92", zorder=0)
    ax.axhline(CHANCE + c.collapse_margin, color="0.5", ls=":", lw=1)
    ax.set_ylim(0, 100)
    _finish(ax, "test accuracy (%)")
    return "test accuracy per epoch", [
        Line2D([], [], color="k", label="eval mode"),
        Line2D([], [], color="k", ls="--", lw=1, label="batch statistics"),
        Line2D([], [], color="k", marker="x", ls="", label="collapse"),
        Patch(color="0.92", label=f"epochs < collapse_epochs\n({c.collapse_epochs}: not judged)"),
        Line2D([], [], color="0.5", ls=":", lw=1,
               label=f"chance + {c.collapse_margin:g} points")]


def _draw_norms(ax, strategy, runs, c, colours) -> tuple:
    drawn = False
    for r in runs:
        for key, style in (("norm/W_g", "-"), ("norm/W_b", ":")):
            epochs, values = _series(r["history"], key)
            if any(math.isfinite(v) and v > 0 for v in values):
                ax.plot(epochs, values, style, color=colours[r.get("seed")])
                drawn = True
    if drawn:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no quadratic weights" if strategy == "conventional" else
                "quadratic weights stayed 0", ha="center", transform=ax.transAxes)
    _finish(ax, "L2 norm over all layers")
    return ("L2 norms of the quadratic weights W_g and W_b per epoch (biases left out)",
            [Line2D([], [], color="k", label="W_g"),
             Line2D([], [], color="k", ls=":", label="W_b")])

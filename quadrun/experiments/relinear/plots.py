"""Figures drawn from records: training curves per strategy, and the strategies compared."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from quadrun.experiments.relinear.evidence import by_strategy, collapse_counts
from quadrun.experiments.relinear.config import RANKED_BY
from quadrun.stats import clopper_pearson, finite, is_number, mean, t_interval


def figures(records, c, save) -> None:
    """Every run: `loss`, `accuracy` (eval mode and with batch statistics) and `norms`
    (W_g, W_b) against epoch, one panel per strategy and one line per run. With several
    strategies, `strategies`: accuracy by strategy (ranked by mean final accuracy, 95 % t
    intervals; best epoch and batch statistics beside it) and the collapse rate per
    strategy (95 % Clopper-Pearson intervals)."""
    curves = by_strategy([r for r in records if r.get("history")])
    if curves:
        for name, draw in (("loss", _draw_loss), ("accuracy", _draw_accuracy),
                           ("norms", _draw_norms)):
            fig, axes = _panels(len(curves))
            for ax, (strategy, runs) in zip(axes, curves.items()):
                caption = draw(ax, strategy, sorted(runs, key=_seed_order), c)
                ax.set_title(f"{strategy} ({len(runs)} run{'s' if len(runs) > 1 else ''})",
                             fontsize=9)
            first = next(iter(curves.values()))[0]
            fig.suptitle(f"relinear {name}: depth {first.get('depth')}, {first.get('form')}, "
                         f"{first.get('dataset')}\n{caption}", fontsize=9)
            fig.tight_layout()
            save(fig, name)

    by = by_strategy(records)
    if len(by) < 2:
        return
    ranked = sorted(by, key=lambda s: -(mean(r.get(RANKED_BY) for r in by[s])
                                        if finite(r.get(RANKED_BY) for r in by[s]) else -math.inf))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, s in enumerate(ranked):
        accs = finite(r.get("test/acc") for r in by[s])
        left.scatter([i - 0.12] * len(accs), accs, s=10, color="0.65", zorder=2)
        for offset, key, colour, label in ((-0.12, "test/acc", "C0", "final (ranked by)"),
                                           (0.12, "test/acc_best", "C2", "best epoch")):
            m, lo, hi = t_interval([r.get(key) for r in by[s]])
            if m is None:
                continue
            err = [[m - lo], [hi - m]] if lo is not None else None
            left.errorbar([i + offset], [m], yerr=err, fmt="o", color=colour, capsize=4,
                          zorder=3, label=f"{label}, mean and 95 % interval" if i == 0 else None)
        stats_mean = mean(r.get("test/acc_batchstats") for r in by[s])
        if stats_mean is not None:
            left.scatter([i + 0.3], [stats_mean], marker="x", color="C1", zorder=3,
                         label="final, batch statistics (mean)" if i == 0 else None)
    left.axhline(100.0 / 10, color="0.5", ls=":", lw=1)
    left.set_xticks(range(len(ranked)), ranked, rotation=20, ha="right")
    left.set(ylabel="test accuracy (%), eval mode",
             title="accuracy by strategy, ranked by mean final accuracy")
    left.legend(fontsize=7, loc="lower left")
    names = list(by)
    for i, s in enumerate(names):
        k, n = collapse_counts(by[s])
        unjudged = sum(r.get("collapsed") is None for r in by[s])
        rate = k / n if n else 0.0
        lo, hi = clopper_pearson(k, n)
        right.bar(i, rate, color="C3", alpha=0.8)
        if n:
            right.errorbar([i], [rate], yerr=[[rate - lo], [hi - rate]], color="k", capsize=4)
        note = f"{k}/{n}" + (f"\n+{unjudged} not judged" if unjudged else "")
        right.text(i, min(1.05, (hi if n else 0) + 0.03), note, ha="center", fontsize=8)
    right.set_xticks(range(len(names)), names, rotation=20, ha="right")
    right.set(ylabel="collapse rate", ylim=(0, 1.2),
              title="collapsed runs per strategy (95 % Clopper-Pearson)")
    fig.tight_layout()
    save(fig, "strategies")


def _nan(v) -> float:
    return float(v) if is_number(v) else float("nan")


def _seed_order(r) -> tuple:
    s = r.get("seed")
    return (0, s) if isinstance(s, int) else (1, str(s))


def _panels(n: int):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.3 * rows), squeeze=False,
                             sharex=True, sharey=True)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _label(r) -> str:
    mark = {True: " collapsed", None: " not judged"}.get(r.get("collapsed"), "")
    return f"seed {r.get('seed')}{mark}"


def _series(h: list, key: str) -> tuple:
    return [e["epoch"] for e in h], [_nan(e.get(key)) for e in h]


def _finish(ax, ylabel: str) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)


def _draw_loss(ax, strategy, runs, c) -> str:
    for i, r in enumerate(runs):
        ax.plot(*_series(r["history"], "train/loss"), color=f"C{i % 10}", label=_label(r))
    ax.set_yscale("log")
    _finish(ax, "training loss (epoch mean)")
    return "mean training loss of each epoch (the penalty of relinear_sw included)"


def _draw_accuracy(ax, strategy, runs, c) -> str:
    for i, r in enumerate(runs):
        colour, h = f"C{i % 10}", r["history"]
        ax.plot(*_series(h, "test/acc"), color=colour, label=_label(r))
        if any("test/acc_batchstats" in e for e in h):
            ax.plot(*_series(h, "test/acc_batchstats"), "--", color=colour, lw=1)
        if r.get("collapsed") and r.get("collapse_epoch") is not None:
            at = [e for e in h if e["epoch"] == r["collapse_epoch"]]
            if at:
                ax.plot([at[0]["epoch"]], [_nan(at[0].get("test/acc"))], "x", color="k", ms=7)
    ax.axvspan(0, c.collapse_epochs - 0.5, color="0.92", zorder=0)   # epochs not judged
    ax.axhline(10.0 + c.collapse_margin, color="0.5", ls=":", lw=1)
    ax.set_ylim(0, 100)
    _finish(ax, "test accuracy (%)")
    return ("solid: eval mode, dashed: batch statistics, x: collapse; shaded: epochs before "
            f"collapse_epochs={c.collapse_epochs} (not judged); dotted: chance + "
            f"{c.collapse_margin:g} points")


def _draw_norms(ax, strategy, runs, c) -> str:
    drawn = False
    for i, r in enumerate(runs):
        for key, style in (("norm/W_g", "-"), ("norm/W_b", ":")):
            epochs, values = _series(r["history"], key)
            if any(math.isfinite(v) and v > 0 for v in values):
                ax.plot(epochs, values, style, color=f"C{i % 10}",
                        label=_label(r) if key == "norm/W_g" else None)
                drawn = True
    if drawn:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no quadratic weights" if strategy == "conventional" else
                "quadratic weights stayed 0", ha="center", transform=ax.transAxes)
    _finish(ax, "L2 norm")
    return "L2 norms of the quadratic weights: solid W_g, dotted W_b (biases left out)"

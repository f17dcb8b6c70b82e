"""expressivity's figures, drawn from records: dimension (the variety dimension of each
architecture: conventional, conventional at the quadratic net's parameter count, quadratic),
fit_mse (test MSE per target and model: the geometric mean over replicates with the spread of
log10 MSE, an interval that stays above zero on the log axis) and fit_<target> (replicate 0's
fits against the target)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from quadrun.data.targets import DIMS, TARGETS, plot_inputs
from quadrun.plotting import plain_log
from quadrun.stats import finite


def figures(records, c, save) -> None:
    _dimension(records, save)
    fits = [r for r in records if r.get("part") == "fit"]
    if not fits:
        return
    targets = _ordered([r["target"] for r in fits], c.targets)
    models = _ordered([r["model"] for r in fits], c.models)
    save(_fit_mse(fits, targets, models, c), "fit_mse")

    for target in targets:
        plots, mses = {}, {}
        for r in fits:  # the first replicate-0 record of each model (a sweep pools several)
            if r["target"] == target and isinstance(r.get("plot"), list) \
                    and r["model"] not in plots:
                plots[r["model"]] = np.asarray(r["plot"], dtype=float)
                mses[r["model"]] = r.get("test_mse")
        if plots:
            _plot_fit(target, [m for m in models if m in plots], plots, mses, save)


def geometric_interval(mses) -> tuple:
    """(geometric mean, low, high, n) of positive MSEs: 10^(m - s), 10^m, 10^(m + s) with m
    and s the mean and the standard deviation (ddof 1) of log10 MSE; low = high = the mean
    for one value; Nones for none."""
    logs = np.log10([m for m in mses if m > 0])
    if not len(logs):
        return None, None, None, 0
    m = float(np.mean(logs))
    s = float(np.std(logs, ddof=1)) if len(logs) > 1 else 0.0
    return 10 ** m, 10 ** (m - s), 10 ** (m + s), len(logs)


def _fit_mse(fits, targets: list, models: list, c):
    """A marker per (target, model) at the geometric mean test MSE over the completed
    replicates, its bar one standard deviation of log10 MSE either side (x/÷ the geometric
    standard deviation: asymmetric, always above zero), the replicates as dots."""
    fig, ax = plt.subplots(figsize=(9, 4.4), layout="constrained")
    width = 0.8 / len(models)
    counts = set()
    for j, name in enumerate(models):
        failed = sum(r.get("status") != "completed" for r in fits if r["model"] == name)
        colour = f"C{j}"
        for i, t in enumerate(targets):
            mses = finite(r.get("test_mse") for r in fits if r["target"] == t
                          and r["model"] == name and r.get("status") == "completed")
            mid, low, high, n = geometric_interval(mses)
            if mid is None:
                continue
            counts.add(n)
            x = i - 0.4 + (j + 0.5) * width
            ax.scatter(x + np.linspace(-0.25, 0.25, n) * width, [m for m in mses if m > 0],
                       s=6, color=colour, alpha=0.35, lw=0, zorder=2)
            ax.errorbar([x], [mid], yerr=[[mid - low], [high - mid]], fmt="o", ms=5,
                        color=colour, capsize=3, zorder=3,
                        label=None if i else name + (f" ({failed} diverged fits left out)"
                                                     if failed else ""))
    ax.set_xticks(range(len(targets)), [f"{t} ({DIMS[t]}-D)" for t in targets])
    ax.set_xlim(-0.5, len(targets) - 0.5)
    ax.set_yscale("log")
    plain_log(ax)
    ax.set_xlabel("target function on [-1, 1]^d (input dimension d)")
    ax.set_ylabel("test MSE (log scale)")
    n = (f"{min(counts)}" if len(counts) == 1 else f"{min(counts)}-{max(counts)}") \
        if counts else "0"
    ax.set_title(f"expressivity: test MSE per target and model, {c.budget} parameters each\n"
                 f"marker: geometric mean over {n} replicates; bar: ×/÷ one std of log10 MSE "
                 "(geometric std); dots: the replicates", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="model",
              title_fontsize=8)
    return fig


def _dimension(records, save) -> None:
    """One panel per bias setting: for each architecture the dimension of the conventional
    net of the same widths, of the conventional net widened to the quadratic net's parameter
    count, and of the quadratic net (the first record of each, a sweep pools several)."""
    rows: dict = {}
    for r in records:
        if r.get("part") in ("dimension", "matched") and isinstance(r.get("dim"), int):
            name = ("conventional, equal params" if r["part"] == "matched" else r.get("kind"))
            widths = r["matches"] if r["part"] == "matched" else r["widths"]
            rows.setdefault(bool(r.get("bias")), {}).setdefault(
                "[" + ",".join(map(str, widths)) + "]", {}).setdefault(name, r["dim"])
    if not rows:
        return
    series = ["conventional", "conventional, equal params", "quadratic", "compact"]
    drawn = [s for s in series if any(s in a for b in rows.values() for a in b.values())]
    archs = max(len(b) for b in rows.values())
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(8.0, 0.25 * archs * len(drawn) + 2),
                                                     2.9 * len(rows) + 0.8),
                             squeeze=False, layout="constrained")
    for ax, bias in zip(axes[:, 0], sorted(rows)):
        archs = list(rows[bias])
        width = 0.8 / len(drawn)
        top = max(v for a in archs for v in rows[bias][a].values())
        for j, s in enumerate(drawn):
            xs = np.arange(len(archs)) - 0.4 + (j + 0.5) * width
            dims = [rows[bias][a].get(s, np.nan) for a in archs]
            ax.bar(xs, dims, width, color=f"C{j}", label=s)
            for x, v in zip(xs, dims):
                if np.isfinite(v):
                    ax.text(x, v + 0.01 * top, f"{v:g}", ha="center", va="bottom", fontsize=6)
        ax.set_xticks(range(len(archs)), archs, fontsize=8)
        ax.set_ylim(0, 1.12 * top)
        ax.set_xlabel("architecture: layer widths [d_0, ..., d_L]")
        ax.set_ylabel("dimension of the variety")
        ax.set_title("with bias" if bias else "without bias", fontsize=9)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center",
               ncols=len(drawn), fontsize=8, title="network (activation x^2)", title_fontsize=8)
    fig.suptitle("expressivity: dimension of the functional variety per architecture\n"
                 "(the exact generic rank of the parameters-to-outputs Jacobian)", fontsize=10)
    save(fig, "dimension")


def _plot_fit(target: str, models: list, plots: dict, mses: dict, save) -> None:
    d = DIMS[target]
    n = int(round(np.sqrt(len(next(iter(plots.values()))))))  # plot_grid: n^2 values
    x = plot_inputs(target, n)
    truth = TARGETS[target](x).numpy()

    def mse(name):
        v = mses.get(name)
        return f"test MSE {v:.3g}" if isinstance(v, (int, float)) else "test MSE -"

    if d == 1:
        fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
        ax.plot(x[:, 0].numpy(), truth, "k-", lw=3, alpha=0.4, label="target")
        for name in models:
            ax.plot(x[:, 0].numpy(), plots[name], label=f"{name} ({mse(name)})")
        ax.set_xlabel("x")
        ax.set_ylabel("f(x)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.suptitle(f"expressivity: {target} on [-1, 1], the target and each model's fit "
                     "(replicate 0; test MSE over its whole test set)", fontsize=10)
    else:
        panels = [("target", truth)] + [(f"{m}\n{mse(m)}", plots[m]) for m in models]
        fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels) + 1.2, 3.2),
                                 layout="constrained", sharey=True)
        fig.get_layout_engine().set(wspace=0.06)
        lo, hi = float(truth.min()), float(truth.max())
        for i, (ax, (title, values)) in enumerate(zip(np.atleast_1d(axes), panels)):
            image = ax.imshow(np.asarray(values, dtype=float).reshape(n, n), origin="lower",
                              extent=(-1, 1, -1, 1), vmin=lo, vmax=hi, cmap="viridis")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([-1, 0, 1], ["-1", "0", "1"])
            ax.set_yticks([-1, 0, 1], ["-1", "0", "1"])
            ax.set_xlabel("x1")
            if i == 0:
                ax.set_ylabel("x2")
        fig.colorbar(image, ax=list(np.atleast_1d(axes)), shrink=0.8, pad=0.01, label="f(x)")
        where = "the slice x3 = 0.5 of [-1, 1]^3" if d > 2 else "[-1, 1]^2"
        fig.suptitle(f"expressivity: {target} on {where}, the target and each model's fit "
                     "(replicate 0; test MSE over its whole test set)\n"
                     "colour: f(x) on the target's scale (values outside it are clipped)",
                     fontsize=10)
    save(fig, f"fit_{target}")


def _ordered(seen: list, preferred: list) -> list:
    """The distinct values of `seen`, in the config's order first."""
    seen = list(dict.fromkeys(seen))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]

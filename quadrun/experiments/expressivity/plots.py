"""expressivity's figures, drawn from records: dimension (the variety dimension of each
architecture: conventional, conventional at the quadratic net's parameter count, quadratic),
fit_mse (test MSE per target and model) and fit_<target> (replicate 0's fits against the
target)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from quadrun.data.targets import DIMS, TARGETS, plot_inputs
from quadrun.stats import finite


def figures(records, c, save) -> None:
    _dimension(records, save)
    fits = [r for r in records if r.get("part") == "fit"]
    if not fits:
        return
    targets = _ordered([r["target"] for r in fits], c.targets)
    models = _ordered([r["model"] for r in fits], c.models)

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(models)
    for j, name in enumerate(models):
        means, stds = [], []
        for t in targets:
            mses = finite(r.get("test_mse") for r in fits if r["target"] == t
                          and r["model"] == name and r.get("status") == "completed")
            means.append(float(np.mean(mses)) if mses else np.nan)
            stds.append(float(np.std(mses, ddof=1)) if len(mses) > 1 else 0.0)
        ax.bar(np.arange(len(targets)) + j * width, means, width, yerr=stds, label=name)
    ax.set_xticks(np.arange(len(targets)) + 0.4 - width / 2, targets)
    ax.set_yscale("log")
    ax.set_ylabel("test MSE")
    ax.legend()
    save(fig, "fit_mse")

    for target in targets:
        plots = {}
        for r in fits:  # the first replicate-0 record of each model (a sweep pools several)
            if r["target"] == target and isinstance(r.get("plot"), list):
                plots.setdefault(r["model"], np.asarray(r["plot"], dtype=float))
        if plots:
            _plot_fit(target, [m for m in models if m in plots], plots, save)


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
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 3.2 * len(rows)), squeeze=False)
    for ax, bias in zip(axes[:, 0], sorted(rows)):
        archs = list(rows[bias])
        present = [s for s in series if any(s in rows[bias][a] for a in archs)]
        width = 0.8 / len(present)
        for j, s in enumerate(present):
            ax.bar(np.arange(len(archs)) + j * width,
                   [rows[bias][a].get(s, np.nan) for a in archs], width, label=s)
        ax.set_xticks(np.arange(len(archs)) + 0.4 - width / 2, archs, fontsize=8)
        ax.set_ylabel("dim of the variety")
        ax.set_title("with bias" if bias else "without bias")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, "dimension")


def _plot_fit(target: str, models: list, plots: dict, save) -> None:
    d = DIMS[target]
    n = int(round(np.sqrt(len(next(iter(plots.values()))))))  # plot_grid: n^2 values
    x = plot_inputs(target, n)
    truth = TARGETS[target](x).numpy()
    if d == 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(x[:, 0].numpy(), truth, "k-", lw=3, alpha=0.4, label="target")
        for name in models:
            ax.plot(x[:, 0].numpy(), plots[name], label=name)
        ax.set_xlabel("x")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    else:
        panels = [("target", truth)] + [(m, plots[m]) for m in models]
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3))
        lo, hi = float(truth.min()), float(truth.max())
        for ax, (title, values) in zip(np.atleast_1d(axes), panels):
            ax.imshow(np.asarray(values, dtype=float).reshape(n, n), origin="lower",
                      extent=(-1, 1, -1, 1), vmin=lo, vmax=hi, cmap="viridis")
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{target} (replicate 0)" + (", slice x3 = 0.5" if d > 2 else ""))
    save(fig, f"fit_{target}")


def _ordered(seen: list, preferred: list) -> list:
    """The distinct values of `seen`, in the config's order first."""
    seen = list(dict.fromkeys(seen))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]

"""dcdm's figures, drawn from records: the residual histories, and iterations against the
grid size (size independence at a glance)."""
from __future__ import annotations

import matplotlib.pyplot as plt

from quadrun.experiments.dcdm.config import kept


def figures(records, c, save) -> None:
    solves = [r for r in records if r.get("part") == "solve" and r.get("residuals")]
    for dim in dict.fromkeys(r["dim"] for r in solves):
        save(histories(solves, dim, c.tol), f"residuals_{dim}d")
        if len({r["n"] for r in solves if r["dim"] == dim}) > 1:
            save(growth(solves, dim), f"iterations_{dim}d")


def _name(r) -> str:
    """A curve's label: the solver, and for DCDM its arch (its nets share a colour)."""
    return f"dcdm {r['arch']}" if r["solver"] == "dcdm" and r.get("arch") else r["solver"]


def _panels(recs, rows: list, scenes: list, height: float = 3.0):
    return plt.subplots(len(rows), len(scenes), squeeze=False,
                        figsize=(3.6 * len(scenes), height * len(rows)))


def histories(records: list, dim: int, tol: float):
    """||r_k|| / ||b|| against k, one panel per (n, scene), one curve per solver (and net,
    and seed)."""
    recs = [r for r in records if r["dim"] == dim]
    scenes = list(dict.fromkeys(r["scene"] for r in recs))
    sizes = sorted({r["n"] for r in recs})
    names = list(dict.fromkeys(_name(r) for r in recs))
    colours = {s: f"C{i}" for i, s in enumerate(names)}
    fig, axes = _panels(recs, sizes, scenes)
    labelled = set()
    for r in recs:
        ax = axes[sizes.index(r["n"])][scenes.index(r["scene"])]
        first = (id(ax), _name(r)) not in labelled
        labelled.add((id(ax), _name(r)))
        ax.semilogy(kept(r["iterations"]), r["residuals"], color=colours[_name(r)], lw=0.8,
                    label=_name(r) if first else None)
        ax.set_title(f"{r['scene']} {r['n']}^{dim}", fontsize=9)
    for ax in axes.ravel():
        ax.axhline(tol, color="k", lw=0.5, ls=":")
        ax.set_xlabel("iteration", fontsize=8)
    axes[0][0].set_ylabel("||r|| / ||b||")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def growth(records: list, dim: int):
    """Iterations to the tolerance against n (log-log), one panel per scene, one line per
    solver and network; unconverged solves are left out."""
    recs = [r for r in records if r["dim"] == dim and r.get("converged")]
    scenes = list(dict.fromkeys(r["scene"] for r in recs))
    names = list(dict.fromkeys(_name(r) for r in recs))
    colours = {s: f"C{i}" for i, s in enumerate(names)}
    fig, axes = _panels(recs, [0], scenes, height=3.4)
    for j, scene in enumerate(scenes):
        ax = axes[0][j]
        lines: dict = {}
        for r in recs:
            if r["scene"] == scene:
                key = (_name(r), r.get("train_seed"))
                lines.setdefault(key, []).append((r["n"], r["iterations"]))
        shown = set()
        for (name, _), pts in lines.items():
            pts.sort()
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, lw=0.8,
                      color=colours[name], label=None if name in shown else name)
            shown.add(name)
        ax.set_title(f"{scene} ({dim}-D)", fontsize=9)
        ax.set_xlabel("n", fontsize=8)
    axes[0][0].set_ylabel("iterations to tol")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig

"""dcdm's figures, drawn from records: the residual histories."""
from __future__ import annotations

import matplotlib.pyplot as plt

from quadrun.experiments.dcdm.config import kept


def figures(records, c, save) -> None:
    solves = [r for r in records if r.get("part") == "solve" and r.get("residuals")]
    for dim in dict.fromkeys(r["dim"] for r in solves):
        save(histories(solves, dim, c.tol), f"residuals_{dim}d")


def histories(records: list, dim: int, tol: float):
    """||r_k|| / ||b|| against k, one panel per (n, scene), one curve per solver (and seed)."""
    recs = [r for r in records if r["dim"] == dim]
    scenes = list(dict.fromkeys(r["scene"] for r in recs))
    sizes = sorted({r["n"] for r in recs})
    solvers = list(dict.fromkeys(r["solver"] for r in recs))
    colours = {s: f"C{i}" for i, s in enumerate(solvers)}
    fig, axes = plt.subplots(len(sizes), len(scenes), squeeze=False,
                             figsize=(3.6 * len(scenes), 3.0 * len(sizes)))
    labelled = set()
    for r in recs:
        ax = axes[sizes.index(r["n"])][scenes.index(r["scene"])]
        first = (id(ax), r["solver"]) not in labelled
        labelled.add((id(ax), r["solver"]))
        ax.semilogy(kept(r["iterations"]), r["residuals"], color=colours[r["solver"]],
                    label=r["solver"] if first else None)
        ax.set_title(f"{r['scene']} {r['n']}^{dim}", fontsize=9)
    for ax in axes.ravel():
        ax.axhline(tol, color="k", lw=0.5, ls=":")
        ax.set_xlabel("iteration", fontsize=8)
    axes[0][0].set_ylabel("||r|| / ||b||")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig

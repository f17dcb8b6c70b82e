"""dcdm's figures, drawn from records: the residual histories, and iterations against the
grid size (size independence at a glance)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker

from quadrun.experiments.dcdm.config import kept
from quadrun.plotting import plain_log


def figures(records, c, save) -> None:
    solves = [r for r in records if r.get("part") == "solve" and r.get("residuals")]
    for dim in dict.fromkeys(r["dim"] for r in solves):
        save(histories(solves, dim, c.tol), f"residuals_{dim}d")
        if len({r["n"] for r in solves if r["dim"] == dim and r.get("converged")}) > 1:
            save(growth(solves, dim), f"iterations_{dim}d")


def _name(r) -> str:
    """A curve's label: the solver, and for DCDM its arch (its nets share a colour)."""
    return f"dcdm {r['arch']}" if r["solver"] == "dcdm" and r.get("arch") else r["solver"]


def _panels(rows: list, scenes: list, height: float = 3.0):
    return plt.subplots(len(rows), len(scenes), squeeze=False, layout="constrained",
                        figsize=(3.6 * len(scenes) + 1.8, height * len(rows) + 0.6))


def _legend(fig, names: list, colours: dict, extra: list = ()) -> None:
    """One legend beside the panels: a line per solver (DCDM: per network kind)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[n], label=n) for n in names] + list(extra)
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="solver",
               title_fontsize=8)


def _nets(recs) -> str:
    """'' or 'DCDM: a line per trained net, 3 additive and 3 paper'."""
    nets: dict = {}
    for r in recs:
        if r["solver"] == "dcdm":
            nets.setdefault(r.get("arch"), set()).add(r.get("train_seed"))
    if not nets or all(len(s) < 2 for s in nets.values()):
        return ""
    return "DCDM: a line per trained net, " + " and ".join(
        f"{len(s)} {a}" for a, s in nets.items())


def histories(records: list, dim: int, tol: float):
    """||r_k|| / ||b|| against k, one panel per (n, scene), one curve per solver (and net,
    and seed)."""
    from matplotlib.lines import Line2D

    recs = [r for r in records if r["dim"] == dim]
    scenes = list(dict.fromkeys(r["scene"] for r in recs))
    sizes = sorted({r["n"] for r in recs})
    names = list(dict.fromkeys(_name(r) for r in recs))
    colours = {s: f"C{i % 10}" for i, s in enumerate(names)}
    fig, axes = _panels(sizes, scenes)
    for r in recs:
        ax = axes[sizes.index(r["n"])][scenes.index(r["scene"])]
        ax.semilogy(kept(r["iterations"]), r["residuals"], color=colours[_name(r)], lw=0.8)
        ax.set_title(f"{r['scene']}, {r['n']}^{dim} grid", fontsize=9)
    for i, row in enumerate(axes):
        for j, ax in enumerate(row):
            ax.axhline(tol, color="k", lw=0.5, ls=":")
            ax.set_xlabel("PCG iteration k", fontsize=8)
            plain_log(ax)
            if j == 0:
                ax.set_ylabel("||r_k|| / ||b||")
    _legend(fig, names, colours, [Line2D([], [], color="k", lw=0.5, ls=":",
                                         label=f"tolerance {tol:g}")])
    nets = _nets(recs)
    fig.suptitle(f"dcdm {dim}-D: relative residual per iteration, a panel per grid and "
                 f"scene\na line per solver" + (f"; {nets}" if nets else ""), fontsize=10)
    return fig


def growth(records: list, dim: int):
    """Iterations to the tolerance against n (log-log), one panel per scene, one line per
    solver and network; unconverged solves are left out (the title names them)."""
    mine = [r for r in records if r["dim"] == dim]
    recs = [r for r in mine if r.get("converged")]
    left_out: dict = {}
    for r in mine:
        if not r.get("converged"):
            left_out[_name(r)] = left_out.get(_name(r), 0) + 1
    scenes = list(dict.fromkeys(r["scene"] for r in recs))
    names = list(dict.fromkeys(_name(r) for r in recs))
    colours = {s: f"C{i % 10}" for i, s in enumerate(names)}
    sizes = sorted({r["n"] for r in recs})
    fig, axes = _panels([0], scenes, height=3.4)
    for j, scene in enumerate(scenes):
        ax = axes[0][j]
        lines: dict = {}
        for r in recs:
            if r["scene"] == scene:
                key = (_name(r), r.get("train_seed"))
                lines.setdefault(key, []).append((r["n"], r["iterations"]))
        for (name, _), pts in lines.items():
            pts.sort()
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, lw=0.8,
                      color=colours[name])
        ax.set_title(f"{scene} ({dim}-D)", fontsize=9)
        ax.set_xlabel(f"grid size n (n^{dim} cells)", fontsize=8)
        plain_log(ax)
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[0][0].set_ylabel("PCG iterations to the tolerance")
    _legend(fig, names, colours)
    notes = [_nets(recs)] + ["left out, not converged: " + ", ".join(
        f"{n} ({k} solves)" for n, k in left_out.items())] * bool(left_out)
    fig.suptitle(f"dcdm {dim}-D: iterations to the tolerance against grid size (log-log)\n"
                 + "; ".join(n for n in notes if n), fontsize=10)
    return fig

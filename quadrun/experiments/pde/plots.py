"""pde's figures, drawn from records: error vs width with the measured floors, the width a
target error needs, the reference's energy gap per PGD step and the Barron norm of the
iterates."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import matplotlib.ticker

from quadrun.experiments.pde.config import SOLVERS
from quadrun.experiments.pde.networks import _medians, curves, width_for_target
from quadrun.experiments.pde.reference import label, references
from quadrun.plotting import plain_log

STYLES = {"random_features": ("-", "o"), "deep_ritz": ("--", "s")}
PHI_STYLES = {"none": ":", "logcosh": "-", "quartic": "--"}
FLOOR = 1e-17       # energy gaps at or below it (round-off, or exactly 0) are drawn at it


def figures(records, c, save) -> None:
    nets = {p: curves(records, p) for p in SOLVERS}
    if any(nets.values()):
        save(_error_vs_width(nets, c), "error_vs_width")
        save(_width_for_target(records, c), "width_for_target")
    refs = references(records)
    if refs:
        save(_energy_gaps(refs), "reference_energy_gap")
        if any(r.get("barron") for r in refs):
            save(_barron(refs), "barron_growth")


def _colours(dims):
    dims = sorted(dims)
    return {d: plt.cm.viridis(0.85 * i / max(1, len(dims) - 1)) for i, d in enumerate(dims)}


def _error_vs_width(nets, c):
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    colours = _colours({d for by_d in nets.values() for d in by_d})
    replicates, widths = set(), set()
    for part, by_d in nets.items():
        for d, by_w in by_d.items():
            errs, floors = _medians(by_w)
            replicates |= {len(units) for units in by_w.values()}
            widths |= set(by_w)
            pts = [(w, e) for w, e in errs.items() if e is not None and math.isfinite(e)]
            ls, mk = STYLES[part]
            if pts:
                ax.loglog(*zip(*pts), ls, marker=mk, color=colours[d],
                          label=f"{part.replace('_', ' ')}, d={d}")
            fl = [(w, f) for w, f in floors.items() if f is not None and f > 0]
            if fl:
                ax.loglog(*zip(*fl), ls, color=colours[d], lw=0.7, alpha=0.5)
    ax.axhline(c.target_error, color="grey", lw=0.8, ls=":")
    _width_ticks(ax, widths)
    ax.set_xlabel("width m (neurons)")
    ax.set_ylabel("relative L2 error")
    n = "-".join(map(str, sorted({min(replicates), max(replicates)}))) if replicates else "0"
    ax.set_title(f"pde: relative L2 error against width, the median over {n} replicates",
                 fontsize=10)
    handles = ax.get_legend_handles_labels()[0] + [
        Line2D([], [], color="0.4", lw=0.7, alpha=0.5, label="thin: the measured floor\n"
               "(quadrature and solver)"),
        Line2D([], [], color="grey", lw=0.8, ls=":", label=f"target {c.target_error:g}")]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def _width_ticks(ax, widths) -> None:
    """Ticks at the measured widths (or dimensions) when there are few of them."""
    plain_log(ax)
    if 0 < len(widths) <= 8:
        import matplotlib.ticker

        ax.set_xticks(sorted(widths), [f"{w:g}" for w in sorted(widths)])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _width_for_target(records, c):
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    drawn, missed, dims = False, set(), set()
    for part, by_d in width_for_target(records, c.target_error, SOLVERS).items():
        dims |= {int(d) for d in by_d}
        pts = sorted((int(d), w) for d, w in by_d.items() if w is not None)
        if pts:
            drawn = True
            ax.loglog(*zip(*pts), STYLES[part][0], marker=STYLES[part][1],
                      label=part.replace("_", " "))
        missed |= {int(d) for d, w in by_d.items() if w is None}
    for d in sorted(missed):
        ax.axvline(d, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    if drawn:
        ax.set_yscale("log")
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, f"no width reached rel. L2 error {c.target_error:g}\n"
                "at any d: w* is unresolved (wider nets needed)", ha="center", va="center",
                transform=ax.transAxes, fontsize=9)
    if dims:
        ax.set_xlim(min(dims) / 1.25, max(dims) * 1.25)
    _width_ticks(ax, dims)
    ax.set_xlabel("dimension d")
    ax.set_ylabel(f"w*: width where the median\nrel. L2 error reaches {c.target_error:g}")
    ax.set_title("pde: width needed against dimension (log-log)", fontsize=10)
    handles = ax.get_legend_handles_labels()[0]
    if missed:
        handles.append(Line2D([], [], color="grey", lw=0.5, ls=":",
                              label="dotted: d where w* is unresolved"))
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def _energy_gaps(refs):
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    colours = _colours({r["d"] for r in refs})
    for ref in refs:
        gaps = ref.get("energy_gaps") or []
        y = [max(g, FLOOR) if isinstance(g, (int, float)) else math.nan for g in gaps]
        ax.semilogy(range(len(y)), y, PHI_STYLES.get(ref.get("phi"), "-"), marker=".",
                    color=colours[ref["d"]], label=label(ref))
    ax.set_xlabel("PGD iteration t")
    ax.set_ylabel("energy gap E_h(u_t) - E_h(u_h)")
    ax.set_title(f"pde: energy gap of preconditioned gradient descent on the "
                 f"{refs[0]['grid']}^d grid\n(gaps at or below {FLOOR:g}, round-off, drawn "
                 f"at {FLOOR:g})", fontsize=10)
    plain_log(ax)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="phi, d",
              title_fontsize=7, handlelength=3.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return fig


def _barron(refs):
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    colours = _colours({r["d"] for r in refs})
    for ref in refs:
        b, top = ref.get("barron") or [], ref.get("barron_solution")
        if len(b) > 1 and top:
            ax.plot(range(1, len(b)), [v / top for v in b[1:]], PHI_STYLES.get(ref.get("phi"), "-"),
                    marker=".", color=colours[ref["d"]], label=label(ref))
    ax.set_xlabel("PGD iteration t")
    ax.set_ylabel("B(u_t) / B(u_h)")
    ax.set_title("pde: Barron norm of the PGD iterates, relative to the grid solution's",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="phi, d",
              title_fontsize=7, handlelength=3.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return fig

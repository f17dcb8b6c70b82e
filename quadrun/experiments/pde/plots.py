"""pde's figures, drawn from records: error vs width with the measured floors, the width a
target error needs, the reference's energy gap per PGD step and the Barron norm of the
iterates."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt

from quadrun.experiments.pde.config import SOLVERS
from quadrun.experiments.pde.networks import _medians, curves, width_for_target
from quadrun.experiments.pde.reference import label, references

STYLES = {"random_features": ("-", "o"), "deep_ritz": ("--", "s")}
PHI_STYLES = {"none": ":", "logcosh": "-", "quartic": "--"}


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
    return {d: plt.cm.viridis(i / max(1, len(dims) - 1)) for i, d in enumerate(dims)}


def _error_vs_width(nets, c):
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colours = _colours({d for by_d in nets.values() for d in by_d})
    for part, by_d in nets.items():
        for d, by_w in by_d.items():
            errs, floors = _medians(by_w)
            pts = [(w, e) for w, e in errs.items() if e is not None and math.isfinite(e)]
            ls, mk = STYLES[part]
            if pts:
                ax.loglog(*zip(*pts), ls, marker=mk, color=colours[d],
                          label=f"{part.replace('_', ' ')}, d={d}")
            fl = [(w, f) for w, f in floors.items() if f is not None and f > 0]
            if fl:
                ax.loglog(*zip(*fl), ls, color=colours[d], lw=0.7, alpha=0.5)
    ax.axhline(c.target_error, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("width m")
    ax.set_ylabel("relative L2 error (median over replicates)")
    ax.set_title("error vs width (thin: the measured floor)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def _width_for_target(records, c):
    fig, ax = plt.subplots(figsize=(5, 4))
    drawn = False
    for part, by_d in width_for_target(records, c.target_error, SOLVERS).items():
        pts = sorted((int(d), w) for d, w in by_d.items() if w is not None)
        if pts:
            drawn = True
            ax.loglog(*zip(*pts), STYLES[part][0], marker=STYLES[part][1],
                      label=part.replace("_", " "))
        missed = sorted(int(d) for d, w in by_d.items() if w is None)
        for d in missed:
            ax.axvline(d, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("dimension d")
    ax.set_ylabel(f"w*: width with rel. L2 = {c.target_error:g}")
    ax.set_title("width needed (dotted: d where w* is unresolved)", fontsize=9)
    if drawn:
        ax.legend()
    return fig


def _energy_gaps(refs):
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colours = _colours({r["d"] for r in refs})
    for ref in refs:
        gaps = ref.get("energy_gaps") or []
        y = [max(g, 1e-17) if isinstance(g, (int, float)) else math.nan for g in gaps]
        ax.semilogy(range(len(y)), y, PHI_STYLES.get(ref.get("phi"), "-"), marker=".",
                    color=colours[ref["d"]], label=label(ref))
    ax.set_xlabel("iteration")
    ax.set_ylabel("energy gap E_h(u_t) - E_h(u_h)")
    ax.set_title(f"preconditioned gradient descent ({refs[0]['grid']}^d grid)")
    ax.legend(fontsize=7)
    return fig


def _barron(refs):
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colours = _colours({r["d"] for r in refs})
    for ref in refs:
        b, top = ref.get("barron") or [], ref.get("barron_solution")
        if len(b) > 1 and top:
            ax.plot(range(1, len(b)), [v / top for v in b[1:]], PHI_STYLES.get(ref.get("phi"), "-"),
                    marker=".", color=colours[ref["d"]], label=label(ref))
    ax.set_xlabel("iteration t")
    ax.set_ylabel("B(u_t) / B(u_h)")
    ax.set_title("Barron norm of the PGD iterates")
    ax.legend(fontsize=7)
    return fig

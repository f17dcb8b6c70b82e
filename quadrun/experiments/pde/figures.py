"""pde's figures, drawn from records: error vs width, the width a target error needs, and
the reference's energy gap per PGD step."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt

from quadrun.claims import fmt
from quadrun.experiments.pde.evidence import median_errors, references, width_for_target
from quadrun.experiments.pde.config import SOLVERS

STYLES = {"random_features": ("-", "o"), "deep_ritz": ("--", "s")}


def figures(records, c, save) -> None:
    nets = [r for r in records if r.get("part") in SOLVERS]
    med = median_errors(nets)
    if med:
        widths = sorted({w for _, _, w in med})
        save(_error_vs_width(med, widths, c), "error_vs_width")
        save(_width_for_target(nets, widths, c), "width_for_target")
    refs = references(records)
    if refs:
        save(_energy_gaps(refs), "reference_energy_gap")


def _error_vs_width(med, all_widths, c):
    fig, ax = plt.subplots(figsize=(6, 4.5))
    dims = sorted({d for _, d, _ in med})
    colours = {d: plt.cm.viridis(i / max(1, len(dims) - 1)) for i, d in enumerate(dims)}
    for part in SOLVERS:
        for d in dims:
            pts = sorted((w, e) for (s, dd, w), e in med.items()
                         if s == part and dd == d and math.isfinite(e))
            if pts:
                ls, mk = STYLES[part]
                ax.loglog(*zip(*pts), ls, marker=mk, color=colours[d],
                          label=f"{part.replace('_', ' ')}, d={d}")
    ax.axhline(c.target_error, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("width m")
    ax.set_ylabel("relative L2 error (median over replicates)")
    ax.set_title("two-layer networks: error vs width")
    ax.set_xticks(all_widths, [str(w) for w in all_widths])
    ax.minorticks_off()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def _width_for_target(nets, all_widths, c):
    fig, ax = plt.subplots(figsize=(5, 4))
    for part, by_d in width_for_target(nets, c.target_error).items():
        pts = sorted((int(d), w) for d, w in by_d.items() if w is not None)
        missed = sorted(int(d) for d, w in by_d.items() if w is None)
        line = None
        if pts:
            (line,) = ax.semilogy(*zip(*pts), STYLES[part][0], marker=STYLES[part][1],
                                  label=part.replace("_", " "))
        if missed:  # the target was not reached at any width tried: drawn above the top
            ax.semilogy(missed, [2 * all_widths[-1]] * len(missed), "x", ms=9,
                        color=line.get_color() if line else None,
                        label=f"{part.replace('_', ' ')}: not reached")
    ax.set_yticks(all_widths, [str(w) for w in all_widths])
    ax.minorticks_off()
    ax.set_xlabel("dimension d")
    ax.set_ylabel(f"smallest width with rel. L2 <= {c.target_error:g}")
    ax.set_title("width needed for the target error")
    if ax.lines:
        ax.legend()
    return fig


def _energy_gaps(refs):
    fig, ax = plt.subplots(figsize=(5, 4))
    for ref in refs:
        gaps = ref.get("energy_gaps") or []
        floor = 1e-17 * max(1.0, abs(gaps[0])) if gaps and gaps[0] is not None else 1e-17
        y = [max(g, floor) if isinstance(g, (int, float)) else math.nan for g in gaps]
        ax.semilogy(range(len(y)), y, marker=".",
                    label=f"d={ref['d']}, {ref['grid']}^{ref['d']} grid "
                          f"(rate {fmt(ref.get('pgd_rate'))})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("energy gap E_h(u_t) - E_h(u_h)")
    ax.set_title("preconditioned gradient descent")
    ax.legend(fontsize=8)
    return fig

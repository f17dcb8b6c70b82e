"""What every experiment's figures share (matplotlib): log axes that read plainly."""
from __future__ import annotations

import numpy as np


def plain_log(ax, which: str = "xy") -> None:
    """Log axes labelled 0.2, 3, 40 rather than 2x10^-1, the labels between decades thinned
    as the axis spans more of them (long labels collide)."""
    import matplotlib.ticker

    class Plain(matplotlib.ticker.Formatter):
        def __call__(self, x, pos=None):
            lo, hi = sorted(self.axis.get_view_interval())
            if x <= 0 or lo <= 0:
                return ""
            e = int(np.floor(np.log10(x) + 1e-9))
            spans, m = np.log10(hi / lo), round(x / 10.0 ** e, 6)
            shown = (m == 1 or spans <= 0.5 or (spans <= 1.2 and m in (1.5, 2, 3, 5, 7))
                     or (spans <= 2.5 and m in (2, 5)))
            return "" if not shown else f"{x:g}" if -4 <= e <= 4 else f"{m:g}e{e}"

    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log" and axis.axis_name in which:
            axis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(1.5, 2, 3, 4, 5, 6, 7, 8, 9)))
            axis.set_major_formatter(Plain())
            axis.set_minor_formatter(Plain())

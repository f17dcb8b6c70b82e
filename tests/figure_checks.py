"""Checks that a figure reads on its own, for the experiments' figure tests (not pixels: the
drawn artists): a title, labelled axes, legends that cover no data, legend entries that are
drawn, tick labels, panels and titles that do not overlap, error bars on log axes that stay
above zero and inside the axes."""
from __future__ import annotations

import itertools

import numpy as np
from matplotlib.container import ErrorbarContainer


def panels(fig) -> list:
    """The figure's visible axes, colorbars left out."""
    return [ax for ax in fig.axes
            if ax.get_visible() and ax.axison and ax.get_label() != "<colorbar>"]


def _name(ax) -> str:
    return repr(ax.get_title() or ax.get_ylabel() or "axes")


def _dense(points: np.ndarray, step: float = 2.0) -> np.ndarray:
    """Display points along a polyline every `step` pixels (a horizontal reference line has
    only its two ends)."""
    points = np.asarray(points, float).reshape(-1, 2)
    out = [points[np.all(np.isfinite(points), axis=1)]]
    for a, b in zip(points[:-1], points[1:]):
        if np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
            n = min(2000, max(1, int(np.hypot(*(b - a)) / step)))
            out.append(a + (b - a) * np.linspace(0, 1, n + 1)[:, None])
    return np.concatenate(out)


def _data(ax, renderer) -> tuple:
    """(display points of the drawn data inside the axes, display boxes of bars and texts).
    Background patches (zorder below 1, e.g. a shaded span) are not data."""
    from matplotlib.collections import LineCollection, PathCollection

    pts = []
    for line in ax.lines:
        if line.get_visible():
            pts.append(_dense(line.get_transform().transform(line.get_xydata())))
    for c in ax.collections:
        if not c.get_visible():
            continue
        if isinstance(c, LineCollection):
            for seg in c.get_segments():
                pts.append(_dense(c.get_transform().transform(seg)))
        elif isinstance(c, PathCollection):
            pts.append(c.get_offset_transform().transform(c.get_offsets()))
        else:                                        # a band: its outline
            for path in c.get_paths():
                pts.append(_dense(c.get_transform().transform(path.vertices)))
    box = ax.get_window_extent(renderer)
    pts = np.concatenate(pts) if pts else np.zeros((0, 2))
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    inside = ((pts[:, 0] >= box.x0 - 0.5) & (pts[:, 0] <= box.x1 + 0.5)
              & (pts[:, 1] >= box.y0 - 0.5) & (pts[:, 1] <= box.y1 + 0.5))
    boxes = [p.get_window_extent(renderer) for p in ax.patches
             if p.get_visible() and p.get_zorder() >= 1]
    boxes += [t.get_window_extent(renderer) for t in ax.texts if t.get_visible() and t.get_text()]
    return pts[inside], boxes


def _overlap(a, b, slack: float = 1.0) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > slack
            and min(a.y1, b.y1) - max(a.y0, b.y0) > slack)


def _legends(fig) -> list:
    found = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [leg for leg in found + list(fig.legends) if leg.get_visible()]


def _tick_labels(axis) -> list:
    return [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]


def problems(fig) -> list:
    """What keeps `fig` from reading on its own; empty when nothing does."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    axes = panels(fig)
    if not axes:
        return ["no visible axes"]
    if not fig.get_suptitle() and not all(ax.get_title() for ax in axes):
        found.append("no title: neither a suptitle nor a title on every panel")

    for ax in axes:
        box = ax.get_window_extent(renderer)
        if _tick_labels(ax.xaxis) and not ax.get_xlabel():
            found.append(f"{_name(ax)}: x axis without a label")
        below = any(o is not ax and o.get_window_extent(renderer).y1 <= box.y0
                    and _overlap_columns(o.get_window_extent(renderer), box) for o in axes)
        if ax.lines and ax.get_xticks().size and not _tick_labels(ax.xaxis) and not below:
            found.append(f"{_name(ax)}: x ticks without labels and no panel below to read them")
        leftmost = not any(o is not ax and o.get_window_extent(renderer).x1 <= box.x0
                           and _overlap_rows(o.get_window_extent(renderer), box) for o in axes)
        if leftmost and _tick_labels(ax.yaxis) and not ax.get_ylabel():
            found.append(f"{_name(ax)}: y axis without a label")
        for axis in (ax.xaxis, ax.yaxis):
            labels = _tick_labels(axis)
            extents = [t.get_window_extent(renderer) for t in labels]
            for (ta, a), (tb, b) in itertools.combinations(zip(labels, extents), 2):
                if _overlap(a, b):
                    found.append(f"{_name(ax)}: tick labels {ta.get_text()!r} and "
                                 f"{tb.get_text()!r} overlap")
        handles, names = ax.get_legend_handles_labels()
        for handle, label in zip(handles, names):
            if hasattr(handle, "get_xydata") and not _drawn(handle, box):
                found.append(f"{_name(ax)}: legend entry {label!r} is not drawn in the axes")
        if ax.get_yscale() == "log":
            bottom = min(ax.get_ylim())
            for container in ax.containers:
                if not isinstance(container, ErrorbarContainer):
                    continue
                for col in container.lines[2]:
                    ys = np.concatenate([np.asarray(s)[:, 1] for s in col.get_segments()] or [[]])
                    if len(ys) and (np.any(ys <= 0) or np.nanmin(ys) < bottom * (1 - 1e-9)):
                        found.append(f"{_name(ax)}: an error bar on a log axis reaches "
                                     "zero or the axis floor")

    points = {id(ax): _data(ax, renderer) for ax in axes}
    for ax in axes:
        pts, boxes = points[id(ax)]
        if not len(pts) and not boxes and not ax.images:
            found.append(f"{_name(ax)}: an empty panel that says nothing")
    for leg in _legends(fig):
        lbox = leg.get_window_extent(renderer)
        for ax in axes:
            pts, boxes = points[id(ax)]
            inside = ((pts[:, 0] > lbox.x0) & (pts[:, 0] < lbox.x1)
                      & (pts[:, 1] > lbox.y0) & (pts[:, 1] < lbox.y1))
            if inside.any() or any(_overlap(lbox, b) for b in boxes):
                found.append(f"a legend covers data of {_name(ax)}")
    tight = [(ax, ax.get_tightbbox(renderer)) for ax in fig.axes if ax.get_visible()]
    for (a, ba), (b, bb) in itertools.combinations(tight, 2):
        if _overlap(ba, bb, slack=2.0):
            found.append(f"panels {_name(a)} and {_name(b)} overlap (with their labels)")
    for leg in fig.legends:
        lbox = leg.get_window_extent(renderer)
        for ax, bb in tight:
            if _overlap(lbox, bb):
                found.append(f"the figure's legend lies on {_name(ax)}")
    title = getattr(fig, "_suptitle", None)
    if title is not None and title.get_text():
        tbox = title.get_window_extent(renderer)
        boxes = [bb for _, bb in tight] + [l.get_window_extent(renderer) for l in fig.legends]
        span = max(bb.x1 for bb in boxes) - min(bb.x0 for bb in boxes)
        if tbox.width > 1.15 * span:
            found.append("the suptitle is wider than the panels (the canvas is mostly empty)")
        for ax, bb in tight:
            if _overlap(tbox, bb):
                found.append(f"the suptitle overlaps {_name(ax)}")
        for leg in fig.legends:
            if _overlap(tbox, leg.get_window_extent(renderer)):
                found.append("the suptitle overlaps the figure's legend")
    return found


def _overlap_columns(a, b) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 * min(a.width, b.width)


def _overlap_rows(a, b) -> bool:
    return min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5 * min(a.height, b.height)


def _drawn(line, box) -> bool:
    """A line with two distinct points, or a marker, inside the axes."""
    if not line.get_visible():
        return False
    pts = line.get_transform().transform(line.get_xydata())
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    pts = pts[(pts[:, 0] >= box.x0 - 1) & (pts[:, 0] <= box.x1 + 1)
              & (pts[:, 1] >= box.y0 - 1) & (pts[:, 1] <= box.y1 + 1)]
    if not len(pts):
        return False
    marker = line.get_marker() not in (None, "None", "", " ")
    spread = np.ptp(pts, axis=0).max() if len(pts) > 1 else 0.0
    return marker or (line.get_linestyle() not in ("None", "") and spread > 3.0)

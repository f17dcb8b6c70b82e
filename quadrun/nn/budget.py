"""Parameter counts of quadrun.nn.mlp's networks, and widths for a parameter budget, without
building a network (torch-free: configs are checked with it before torch is imported).

    param_count([2, 16, 16, 1], "quadratic")                  # 641
    widths_for_budget("compact", d_in=2, d_out=1, depth=2, budget=300)
"""
from __future__ import annotations

import math
from typing import Sequence

KINDS = ("conventional", "quadratic", "compact")


def param_count(widths: Sequence[int], kind: str, bias: bool = True) -> int:
    """Parameters of `mlp(widths, kind, bias=bias)` without building it.

    Per layer of shape (a -> b): conventional a*b (+ b); compact 2*a*b (+ 2*b for b_r, c);
    full quadratic 3*a*b + b (b_g) (+ 2*b)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    weights = {"conventional": 1, "compact": 2, "quadratic": 3}[kind]
    biases = {"conventional": 1, "compact": 2, "quadratic": 2}[kind] if bias else 0
    biases += 1 if kind == "quadratic" else 0  # b_g, always there
    return sum(weights * a * b + biases * b for a, b in zip(widths[:-1], widths[1:]))


def widths_for_budget(kind: str, d_in: int, d_out: int, depth: int, budget: int,
                      bias: bool = True, tol: float = 0.05) -> list:
    """Widths [d_in, w, ..., w, w_last, d_out] (`depth` hidden layers, w_last <= w) for a
    parameter count near `budget`. The last hidden width may differ from the others so
    that coarse kinds (3 weights per connection) still land close.

    Rule: the most uniform widths (smallest w - w_last, then closest count) among those
    within tol/2 of the budget; if there are none, the closest count (then the most
    uniform); ties go to the smallest w, then the smallest w_last. w runs up to the first
    w whose uniform net has more than 2 budget + 10 parameters. ValueError when even the
    closest count is further than `tol` (relative) from the budget.

    The count is affine in w_last for a fixed w, so each w is solved in O(1) (a large
    budget is checked in milliseconds, not by listing every (w, w_last) pair)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    band = tol / 2 * budget
    if depth == 1:  # [d_in, w, d_out]: the count is affine in w; the nearest w wins
        base = param_count([d_in, 0, d_out], kind, bias)
        step = param_count([d_in, 1, d_out], kind, bias) - base
        guess = max(1, math.floor((budget - base) / step))
        w = min((guess, guess + 1), key=lambda v: abs(base + step * v - budget))
        return _within([d_in, w, d_out], base + step * w, kind, depth, budget, tol)
    near = far = None            # (key, widths, count): the best so far of each rule
    w = 1
    while True:
        def widths(last, w=w):
            return [d_in] + [w] * (depth - 1) + [last] + [d_out]

        lasts = range(1, w + 1)
        base = param_count(widths(0), kind, bias)
        step = param_count(widths(1), kind, bias) - base       # > 0: count = base + step * last
        # within the band: the largest last (most uniform) whose count is within tol/2
        top = min(lasts[-1], math.floor((budget + band - base) / step) + 1)
        low = max(lasts[0], math.ceil((budget - band - base) / step) - 1)
        for last in range(top, low - 1, -1):
            n = base + step * last
            if abs(n - budget) <= band:
                key = (w - last, abs(n - budget))
                if near is None or key < near[0]:
                    near = (key, widths(last), n)
                break
        # closest count: the last nearest the real solution, clamped to this w's range
        guess = (budget - base) / step
        for last in {min(max(lasts[0], math.floor(guess) + k), lasts[-1]) for k in (0, 1)}:
            n = base + step * last
            key = (abs(n - budget), w - last)
            if far is None or key < far[0]:
                far = (key, widths(last), n)
        if param_count([d_in] + [w] * depth + [d_out], kind, bias) > 2 * budget + 10:
            break
        w += 1
    _, widths, n = near if near is not None else far
    return _within(widths, n, kind, depth, budget, tol)


def _within(widths: list, n: int, kind: str, depth: int, budget: int, tol: float) -> list:
    if abs(n - budget) > tol * budget:
        raise ValueError(f"no {kind} network of depth {depth} has {budget} parameters within "
                         f"{tol:.0%} (closest: {widths} with {n})")
    return widths



def widened(widths: Sequence[int], kind: str, count: int, bias: bool = True) -> list:
    """`widths` with its hidden layers widened until the network has at least `count`
    parameters: the smallest w for which [d0, w, ..., w, dL] (as many hidden layers) has
    `count`, then the last hidden width cut to the smallest that keeps `count` (so never a
    bottleneck narrower than needed). E.g. a conventional network with as many parameters
    as a quadratic network of the same widths."""
    d_in, d_out, depth = widths[0], widths[-1], len(widths) - 2
    if depth < 1:
        raise ValueError(f"widths {list(widths)} has no hidden layer to widen")

    def net(w, last):
        return [d_in] + [w] * (depth - 1) + [last] + [d_out]

    w = 1
    while param_count(net(w, w), kind, bias) < count:
        w += 1
    last = w
    while last > 1 and param_count(net(w, last - 1), kind, bias) >= count:
        last -= 1
    return net(w, last)

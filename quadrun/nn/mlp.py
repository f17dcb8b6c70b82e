"""Fully connected networks built from conventional or quadratic layers.

    model = mlp([2, 16, 16, 1], kind="quadratic", activation="relu")
    widths = widths_for_budget("compact", d_in=2, d_out=1, depth=2, budget=300)

`kind` picks the layer: ``conventional`` (nn.Linear), ``quadratic`` (the full quadratic
neuron) or ``compact`` (the compact one), see quadrun.nn.quadratic. The activation follows
every layer but the last. ``bias=False`` drops the additive biases (b of nn.Linear; b_r and
c of a quadratic layer). A full quadratic layer keeps its gate offset b_g either way: it is
what makes the ReLinear start (w_g = 0, b_g = 1) reproduce the conventional layer.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from quadrun.nn.quadratic import QuadraticLinear

KINDS = ("conventional", "quadratic", "compact")


class Square(nn.Module):
    """The polynomial activation x -> x^2 (the networks of Kileel, Trager and Bruna)."""

    def forward(self, x):
        return x * x


ACTIVATIONS = {
    "relu": nn.ReLU,
    "square": Square,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def layer(kind: str, d_in: int, d_out: int, bias: bool = True, init: str = "relinear") -> nn.Module:
    """One dense layer of the given kind (`init` applies to the quadratic kinds only)."""
    if kind == "conventional":
        return nn.Linear(d_in, d_out, bias=bias)
    if kind in ("quadratic", "compact"):
        form = "full" if kind == "quadratic" else "compact"
        return QuadraticLinear(d_in, d_out, bias=bias, form=form, init=init)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


class MLP(nn.Sequential):
    """Layers widths[0] -> widths[1] -> ... -> widths[-1], activation between them."""

    def __init__(self, widths: Sequence[int], kind: str = "conventional",
                 activation: str = "relu", bias: bool = True, init: str = "relinear"):
        if len(widths) < 2:
            raise ValueError(f"widths needs at least an input and an output, got {list(widths)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        mods = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            mods.append(layer(kind, a, b, bias, init))
            if i < len(widths) - 2:
                mods.append(ACTIVATIONS[activation]())
        super().__init__(*mods)
        self.widths, self.kind, self.activation, self.bias = list(widths), kind, activation, bias


def mlp(widths: Sequence[int], kind: str = "conventional", activation: str = "relu",
        bias: bool = True, init: str = "relinear") -> MLP:
    return MLP(widths, kind, activation, bias, init)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
    within tol/2 of the budget; if there are none, the closest count. ValueError when
    even that is further than `tol` (relative) from the budget."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    candidates = []
    w = 1
    while True:
        for last in (range(1, w + 1) if depth > 1 else [w]):
            widths = [d_in] + [w] * (depth - 1) + [last] + [d_out]
            candidates.append((widths, param_count(widths, kind, bias), w - last))
        if param_count([d_in] + [w] * depth + [d_out], kind, bias) > 2 * budget + 10:
            break
        w += 1
    near = [c for c in candidates if abs(c[1] - budget) <= tol / 2 * budget]
    if near:
        widths, n, _ = min(near, key=lambda c: (c[2], abs(c[1] - budget)))
    else:
        widths, n, _ = min(candidates, key=lambda c: (abs(c[1] - budget), c[2]))
    if abs(n - budget) > tol * budget:
        raise ValueError(f"no {kind} network of depth {depth} has {budget} parameters within "
                         f"{tol:.0%} (closest: {widths} with {n})")
    return widths

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

from quadrun.nn.budget import KINDS, param_count, widths_for_budget  # noqa: F401 (torch-free)
from quadrun.nn.quadratic import QuadraticLinear


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

"""Dimension of the functional variety of a polynomial network (Kileel, Trager, Bruna 2019).

With the activation x -> x^2, a network with widths [d0, ..., dL] is a polynomial map
theta -> f_theta, and its functional variety is the closure of the image of that map in
the space of polynomials of degree <= D (the output degree). Its dimension is the generic
rank of the Jacobian of theta -> f_theta. We measure it as the rank of the Jacobian of
theta -> (f_theta(x_1), ..., f_theta(x_N)) at one random theta and N random inputs:

- The span of the partial derivatives d f / d theta_k (polynomials) has dimension
  <= P (the parameter count), and N generic points separate a space of dimension <= N;
  so N >= P points in total (rows: N * dL) are enough, and we take `points_factor` (2) times
  that as a margin.
- Everything is float64 (torch.func.jacrev of a functional_call). Rows (points) and
  columns (parameters) are scaled to unit norm before the SVD: scaling changes no rank
  but keeps parameters of very different magnitudes (a degree-32 output's first layer
  against its last bias) from hiding each other.
- Gap rule (`numerical_rank`): with s_1 >= s_2 >= ... the singular values of the scaled
  matrix, the rank is r such that s_r / s_{r+1} is the largest ratio among the positions
  where s_{r+1} < rtol * s_1 (rtol 1e-8); when every s_i >= rtol * s_1 the matrix has full
  column rank. The gap s_r / s_{r+1} is returned so a caller can see how clear the cut was
  (float64 noise sits near 1e-15 * s_1; a clear gap is many orders of magnitude).
  `variety_dimension` reports dim None ("unresolved") when that gap is below `min_gap`
  (1e6): then float64 cannot tell the rank. This happens for very high output degrees,
  e.g. quadratic networks with three or more x^2 activations (degree >= 128).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.func import functional_call, jacrev

from quadrun.nn.mlp import count_params, mlp


def output_degree(widths: Sequence[int], kind: str, activation_degree: int = 2) -> int:
    """Degree of the network's output as a polynomial in its input: each conventional layer
    has degree 1, each quadratic (full or compact) layer degree 2, and the activation
    x^a after every hidden layer multiplies the degree by a."""
    layer_degree = 1 if kind == "conventional" else 2
    n_layers = len(widths) - 1
    return layer_degree ** n_layers * activation_degree ** (n_layers - 1)


def ambient_dimension(n_inputs: int, degree: int, n_outputs: int = 1) -> int:
    """Number of monomials of degree <= `degree` in `n_inputs` variables, times the outputs:
    the dimension of the space the network's output polynomials live in."""
    return n_outputs * math.comb(n_inputs + degree, degree)


def jacobian(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d model(x) / d theta as a float64 matrix [N * d_out, P], columns in the order of
    model.named_parameters() (each parameter flattened)."""
    model = model.double()  # in place: the caller's model becomes float64
    x = x.double()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def outputs(p):
        return functional_call(model, p, (x,)).reshape(-1)

    jac = jacrev(outputs)(params)
    rows = x.shape[0] * (outputs(params).numel() // x.shape[0])
    return torch.cat([jac[k].reshape(rows, -1) for k in params], dim=1)


def scale_columns(a: torch.Tensor) -> torch.Tensor:
    """Each nonzero column divided by its Euclidean norm (zero columns stay zero)."""
    norms = a.norm(dim=0)
    return a / torch.where(norms > 0, norms, torch.ones_like(norms))


def scale_rows(a: torch.Tensor) -> torch.Tensor:
    return scale_columns(a.T).T


@dataclass
class Rank:
    rank: int
    gap: float        # s_r / s_{r+1}; inf for full column rank with nothing below rtol
    singular_values: list


def numerical_rank(a: torch.Tensor, rtol: float = 1e-8) -> Rank:
    """Rank of `a` by the gap rule in the module docstring (columns and rows scaled first)."""
    a = scale_rows(scale_columns(a.double()))
    s = torch.linalg.svdvals(a)
    if s.numel() == 0 or s[0] == 0:
        return Rank(0, math.inf, s.tolist())
    s = s / s[0]
    small = (s < rtol).nonzero().flatten()
    if small.numel() == 0:
        return Rank(int(s.numel()), math.inf, s.tolist())
    # candidates: cut after position r (1-based) with s_{r+1} below rtol
    tiny = torch.finfo(torch.float64).tiny
    ratios = s[:-1] / s[1:].clamp_min(tiny)
    first = int(small[0])  # 0-based index of the first s below rtol: cut r >= first
    cand = ratios[max(first - 1, 0):]
    r = int(torch.argmax(cand)) + max(first - 1, 0) + 1
    return Rank(r, float(ratios[r - 1]), s.tolist())


def random_parameters_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Overwrite every parameter with N(0, 1/fan_in) entries (fan_in of its layer), so
    hidden values stay of order one: a generic point of parameter space."""
    with torch.no_grad():
        for module in model.modules():
            for _, p in module.named_parameters(recurse=False):
                fan_in = getattr(module, "in_features", None) or p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) / math.sqrt(fan_in))


def variety_dimension(widths: Sequence[int], kind: str = "conventional", bias: bool = True,
                      activation_degree: int = 2, points_factor: float = 2.0,
                      seed: int = 0, rtol: float = 1e-8, min_gap: float = 1e6) -> dict:
    """{"params", "dim", "ambient", "degree", "gap", "points"} for the network with
    activation x^activation_degree (see the module docstring for the method); dim is
    None when the rank gap is below `min_gap` (not resolvable in float64)."""
    if activation_degree != 2:
        raise ValueError("only the activation x^2 is implemented")
    gen = torch.Generator().manual_seed(seed)
    model = mlp(widths, kind=kind, activation="square", bias=bias).double()
    random_parameters_(model, gen)
    n_params = count_params(model)
    n_points = max(1, math.ceil(points_factor * n_params / widths[-1]))
    x = torch.rand(n_points, widths[0], generator=gen, dtype=torch.float64) * 2 - 1
    rank = numerical_rank(jacobian(model, x), rtol)
    degree = output_degree(widths, kind, activation_degree)
    return {"params": n_params, "dim": rank.rank if rank.gap >= min_gap else None,
            "ambient": ambient_dimension(widths[0], degree, widths[-1]),
            "degree": degree, "gap": rank.gap, "points": n_points}

"""Dimension of the functional variety of a polynomial network (Kileel, Trager, Bruna 2019).

With the activation x -> x^2, a network with widths [d0, ..., dL] is a polynomial map
theta -> f_theta, and its functional variety is the closure of the image of that map in
the space of polynomials the outputs can be. Its dimension is the generic rank of the
Jacobian of theta -> f_theta, measured as the rank of the Jacobian J of
theta -> (f_theta(x_1), ..., f_theta(x_N)) at one random theta and N random inputs. The
partial derivatives d f / d theta_k span a space of dimension <= P (the parameter count),
and N >= P generic points separate any such space, so N = max(P, points_factor * P / dL)
points are enough.

Exact rank (the reported `dim`). J's entries are polynomials with integer coefficients in
(theta, x_1, ..., x_N), so we evaluate J exactly in Z/pZ for a prime p < 2^31
(quadrun.nn.modular: forward-mode derivatives in numpy int64, Gaussian elimination mod p)
at theta and x drawn uniformly from Z/pZ, and repeat with a second prime and a fresh draw.
- The rank mod p of an integer matrix never exceeds its rank over Q, which never exceeds
  the generic rank: an error can only make `dim` too small. The reported `dim` is the
  larger of the two ranks; `primes_agree` says whether they were equal.
- Schwartz-Zippel: if r is the generic rank, some r x r minor of J is a nonzero
  polynomial of degree <= r (D - 1), D the total degree of the output in (theta, x)
  (`total_degree`). Provided it does not vanish identically mod p (p dividing every
  coefficient of every such minor; two different primes would both have to), a uniform
  random point of (Z/pZ)^(P + N d0) makes it vanish with probability <= r (D - 1) / p,
  reported per prime as `error_bound` (below 1e-5 for every default architecture). So
  `dim` equals the generic rank with probability >= 1 - r (D - 1) / p per prime.

Float cross-check (`float_dim`, `gap`, `agrees`): the same Jacobian in float64 (torch.func
jacrev) at a float theta (N(0, 1/fan_in)) and inputs uniform in [-1, 1]^d0, rows and
columns scaled to unit norm (no rank changes, parameters of very different magnitudes no
longer hide each other), then the gap rule (`numerical_rank`): with s_1 >= s_2 >= ... the
singular values of the scaled matrix divided by s_1, the rank is the cut r with the largest
ratio s_r / s_{r+1} among the cuts with s_{r+1} < rtol (1e-8) and s_r above float64's noise
floor max(rows, cols) * eps (numpy's matrix_rank tolerance): a cut between two values that
are both rounding noise is no evidence of a rank. Full column rank when nothing is below
rtol. `float_dim` is None when the best gap is below `min_gap` (1e6). For high output
degrees (quadratic networks with three x^2 activations, degree 128) float64 cannot
resolve the rank, and at degree 512 it can even cut wrongly behind a large gap
([2,2,2,2,2,1] quadratic with bias: rank 5 at gap 6e9, exact 46). `agrees` is float_dim == dim (None when float_dim is None: unresolved);
a float rank is never the answer.

`ambient` is the number of monomials of the degrees the outputs can have
(`output_degrees`, times the outputs): homogeneous polynomials of the output degree for a
conventional network without bias, every degree up to it with bias, and for a quadratic
network without bias (its gate offset b_g is always there) the degrees from 2^(L-1) to
the output degree. `symmetries` counts the known continuous symmetries of the
parameters (`known_symmetries`: hidden-neuron rescalings, each neuron's own redundancy,
the orthogonal group of a one-output conventional net's last layer), so dim <= bound =
min(params - symmetries, ambient). The bound is not always reached (a network may have
further symmetries or a defective variety), but it is for every architecture of the
default table: the exact dimension equals it there.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.func import functional_call, jacrev

from quadrun.nn import modular
from quadrun.nn.mlp import mlp
from quadrun.vocab import derive_seed


def output_degree(widths: Sequence[int], kind: str, activation_degree: int = 2) -> int:
    """Degree of the network's output as a polynomial in its input: each conventional layer
    has degree 1, each quadratic (full or compact) layer degree 2, and the activation
    x^a after every hidden layer multiplies the degree by a."""
    layer_degree = 1 if kind == "conventional" else 2
    n_layers = len(widths) - 1
    return layer_degree ** n_layers * activation_degree ** (n_layers - 1)


def output_degrees(widths: Sequence[int], kind: str, bias: bool) -> frozenset:
    """The degrees (in the input x) of the monomials the x^2-activated network's outputs can
    contain, by bookkeeping on degree sets: a layer's bias adds degree 0; x^2 (activation,
    or a quadratic neuron's product and square terms) gives the sums of two degrees.
    A full quadratic layer's gate g = W_g x + b_g always has degree 0 in it (b_g)."""
    def plus(a, b):
        return frozenset(i + j for i in a for j in b)

    zero = frozenset({0})
    degrees = frozenset({1})
    n_layers = len(widths) - 1
    for i in range(n_layers):
        linear = degrees | zero if bias else degrees
        if kind == "conventional":
            degrees = linear
        elif kind in ("quadratic", "compact"):
            square = plus(degrees, degrees) | (zero if bias else frozenset())
            if kind == "quadratic":
                degrees = plus(linear, degrees | zero) | square
            else:
                degrees = linear | square
        else:
            raise ValueError(f"kind must be one of {modular.KINDS}, got {kind!r}")
        if i < n_layers - 1:
            degrees = plus(degrees, degrees)
    return degrees


def ambient_dimension(n_inputs: int, degree: int, n_outputs: int = 1,
                      degrees: "Sequence[int] | None" = None) -> int:
    """Number of monomials in `n_inputs` variables, times the outputs: of degree <= `degree`
    (every polynomial up to it), or of exactly the degrees in `degrees` when given (e.g.
    [degree] for homogeneous polynomials). The dimension of the space the network's output
    polynomials live in."""
    if degrees is None:
        return n_outputs * math.comb(n_inputs + degree, degree)
    return n_outputs * sum(math.comb(n_inputs + k - 1, k) for k in set(degrees))


def network_ambient(widths: Sequence[int], kind: str, bias: bool) -> int:
    """`ambient_dimension` for the degrees `output_degrees` allows."""
    return ambient_dimension(widths[0], output_degree(widths, kind), widths[-1],
                             output_degrees(widths, kind, bias))


def total_degree(widths: Sequence[int], kind: str) -> int:
    """Degree of an output in all variables at once (parameters and input): each layer maps
    degree d to d + 1 (conventional, compact's linear part) or 2 (d + 1) (quadratic, as
    (W_r x)(W_g x)), and compact's W_b (x*x) has degree 2 d + 1; the activation doubles it."""
    d = 1
    n_layers = len(widths) - 1
    for i in range(n_layers):
        d = {"conventional": d + 1, "quadratic": 2 * (d + 1), "compact": 2 * d + 1}[kind]
        if i < n_layers - 1:
            d *= 2
    return d


def neuron_redundancy(kind: str, n: int, bias: bool) -> int:
    """Dimensions of one neuron's parameters that do not change its function of its n
    inputs (a polynomial of degree <= 2 in them):

    - conventional w.x + b: none;
    - compact W_r.x + b_r + W_b.(x*x) + c: b_r and c enter only as b_r + c (1 with bias);
    - full quadratic (r.x + b_r)(g.x + b_g) + W_b.(x*x) + c: r by t and g by 1/t, plus
      the directions in which sym(r g^T) meets the diagonal W_b. Without bias (b_g kept)
      that is one more for n <= 2 (g = s (r_1, -r_2) for n = 2); with bias, in the
      homogeneous coordinates (x, 1) of N = n + 1 variables, max(0, 2N - 1 - N(N-1)/2)
      more (2 for n <= 2, 1 for n = 3, none above).
    tests/test_expressivity.py checks these against the exact rank of one neuron."""
    if kind == "conventional":
        return 0
    if kind == "compact":
        return 1 if bias else 0
    if kind != "quadratic":
        raise ValueError(f"kind must be one of {modular.KINDS}, got {kind!r}")
    if not bias:
        return 2 if n <= 2 else 1
    big_n = n + 1
    return 1 + max(0, 2 * big_n - 1 - big_n * (big_n - 1) // 2)


def known_symmetries(widths: Sequence[int], kind: str, bias: bool) -> int:
    """Dimensions of the known continuous symmetries of the parameters, directions along
    which the network function does not change (so dim <= params - this):

    - every neuron's own redundancy (`neuron_redundancy`, for its fan-in);
    - every hidden neuron: its output scaled by t (a conventional neuron's incoming
      weights and bias by t, so its x^2 scales by t^2; a quadratic neuron's function by
      t) and the next layer's weights on it by t^-2 (the quadratic kinds' W_b by t^-4);
    - a conventional network with one output: sum_j a_j u_j^2 (u the last hidden layer's
      pre-activations) is kept by every u -> Q u with Q^T diag(a) Q = diag(a), an
      orthogonal group O(k) of dimension k (k - 1) / 2 (k = d_{L-1}), less the part that
      fixes the weights when k exceeds the fan-in m of that layer ((k-m)(k-m-1)/2).
    These are a lower bound on the fibre dimension: a network may have more."""
    n_layers = len(widths) - 1
    out = sum(widths[1:-1])                              # hidden rescalings
    out += sum(b * neuron_redundancy(kind, a, bias) for a, b in zip(widths[:-1], widths[1:]))
    if kind == "conventional" and n_layers >= 2 and widths[-1] == 1:
        k, m = widths[-2], min(widths[-2], widths[-3] + int(bias))
        out += k * (k - 1) // 2 - (k - m) * (k - m - 1) // 2
    return out


def n_points(widths: Sequence[int], kind: str, bias: bool, points_factor: float = 2.0) -> int:
    """Random inputs: max(P, points_factor * P / dL), at least P so any span of P partial
    derivatives is separated (see the module docstring)."""
    n_params = modular.param_count(widths, kind, bias)
    return max(n_params, math.ceil(points_factor * n_params / widths[-1]), 1)


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
    """Rank of `a` by the gap rule in the module docstring (columns and rows scaled first).
    A Jacobian that overflowed float64 (very deep nets: output degree 2^L) has no float
    rank: gap 0, so the caller reports it unresolved."""
    if not bool(torch.isfinite(a).all()):
        return Rank(0, 0.0, [])
    a = scale_rows(scale_columns(a.double()))
    s = torch.linalg.svdvals(a)
    if s.numel() == 0 or s[0] == 0:
        return Rank(0, math.inf, s.tolist())
    s = (s / s[0]).tolist()
    rank, gap = gap_cut(s, rtol, max(a.shape) * torch.finfo(torch.float64).eps)
    return Rank(rank, gap, s)


def gap_cut(s: Sequence[float], rtol: float, floor: float) -> tuple:
    """(rank, gap) from singular values s_1 = 1 >= s_2 >= ... (relative to s_1): the cut r
    with the largest s_r / s_{r+1} among those with s_{r+1} < rtol and s_r >= floor (the
    noise floor; a cut between two values below it is rounding noise); (len(s), inf) when
    no value is below rtol."""
    n = len(s)
    small = [i for i, v in enumerate(s) if v < rtol]
    if not small:
        return n, math.inf
    first = max(small[0], 1)                       # cut r >= first: s_{r+1} < rtol
    above = sum(1 for v in s if v >= floor)        # cut r <= above: s_r >= floor
    last = max(min(above, n - 1), first)
    tiny = 1e-300

    def ratio(r):                                  # s_r / s_{r+1}, r 1-based
        return s[r - 1] / max(s[r], tiny)

    r = max(range(first, last + 1), key=ratio)
    return r, ratio(r)


def random_parameters_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Overwrite every parameter with N(0, 1/fan_in) entries (fan_in of its layer), so
    hidden values stay of order one: a generic point of parameter space."""
    with torch.no_grad():
        for module in model.modules():
            for _, p in module.named_parameters(recurse=False):
                fan_in = getattr(module, "in_features", None) or p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) / math.sqrt(fan_in))


def exact_rank(widths: Sequence[int], kind: str, bias: bool, points: int, seed: int,
               p: int) -> int:
    """Rank mod p of the Jacobian at a uniform random point of Z/pZ (parameters and
    `points` inputs, drawn from `seed`)."""
    params, x = modular.random_point(widths, kind, bias, points, p, seed)
    _, jac = modular.jacobian(widths, kind, bias, params, x, p)
    return modular.rank(jac, p)


def float_rank(widths: Sequence[int], kind: str, bias: bool, points: int, seed: int,
               rtol: float = 1e-8) -> Rank:
    """The float64 gap-rule rank at a random float point (module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    model = mlp(widths, kind=kind, activation="square", bias=bias).double()
    random_parameters_(model, gen)
    x = torch.rand(points, widths[0], generator=gen, dtype=torch.float64) * 2 - 1
    return numerical_rank(jacobian(model, x), rtol)


def variety_dimension(widths: Sequence[int], kind: str = "conventional", bias: bool = True,
                      activation_degree: int = 2, points_factor: float = 2.0,
                      seed: int = 0, rtol: float = 1e-8, min_gap: float = 1e6,
                      primes: Sequence[int] = modular.PRIMES,
                      float_check: bool = True) -> dict:
    """The dimension of the functional variety of mlp(widths, kind, activation x^2, bias)
    and its cross-checks (method: module docstring):

    params, dim (exact: the larger rank over `primes`), ranks (one per prime),
    primes_agree, error_bound (Schwartz-Zippel, per prime), float_dim (None when
    unresolved or float_check is False), gap, agrees (float_dim == dim; None when there is
    no float rank), ambient, degree, symmetries, bound = min(params - symmetries,
    ambient), points, exact_s and float_s (seconds)."""
    if activation_degree != 2:
        raise ValueError("only the activation x^2 is implemented")
    widths = [int(w) for w in widths]
    primes = [modular.check_prime(p) for p in primes]
    if not primes:
        raise ValueError("at least one prime is needed")
    n_params = modular.param_count(widths, kind, bias)
    points = n_points(widths, kind, bias, points_factor)
    t0 = time.perf_counter()
    ranks = [exact_rank(widths, kind, bias, points, derive_seed(seed, "exact", p), p)
             for p in primes]
    exact_s = time.perf_counter() - t0
    dim = max(ranks)
    out = {"params": n_params, "dim": dim, "ranks": ranks,
           "primes_agree": len(set(ranks)) == 1,
           "error_bound": dim * (total_degree(widths, kind) - 1) / min(primes)}
    float_dim, gap, float_s = None, None, None
    if float_check:
        t0 = time.perf_counter()
        res = float_rank(widths, kind, bias, points, seed, rtol)
        float_s = time.perf_counter() - t0
        gap = res.gap
        float_dim = res.rank if gap >= min_gap else None
    degree = output_degree(widths, kind, activation_degree)
    ambient = network_ambient(widths, kind, bias)
    symmetries = known_symmetries(widths, kind, bias)
    out.update({"float_dim": float_dim, "gap": gap,
                "agrees": None if float_dim is None else float_dim == dim,
                "ambient": ambient, "degree": degree, "symmetries": symmetries,
                "bound": min(n_params - symmetries, ambient), "points": points,
                "exact_s": exact_s, "float_s": float_s})
    return out

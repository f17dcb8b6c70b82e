"""Polynomial networks evaluated exactly, modulo a prime (numpy int64, no torch).

With the activation x -> x^2 a network of conventional layers (W x + b) or quadratic
neurons (full: (W_r x + b_r) (W_g x + b_g) + W_b (x*x) + c; compact: W_r x + b_r + W_b (x*x)
+ c) is a polynomial in its parameters and inputs with integer coefficients, so it can be
evaluated in the field Z/pZ without rounding. `jacobian` evaluates the network and its
parameter Jacobian by forward-mode differentiation (every value carries its derivative
with respect to every parameter) and `rank` is Gaussian elimination mod p; together they
give the exact rank of the Jacobian at a point of (Z/pZ)^P x (Z/pZ)^(N d0), which is what
quadrun.nn.variety uses as the dimension of the functional variety.

Arithmetic: every entry is kept in [0, p) with p < 2^31, so the product of two entries is
below 2^62 and fits in int64; it is reduced before anything is added to it (so a sum of
up to 2^32 reduced products stays below 2^63). `matmul` splits one factor into 16-bit
halves instead, so numpy's integer matmul can sum up to 2^15 products unreduced.

Parameters are one flat vector in the order of `quadrun.nn.mlp.mlp(widths, kind,
activation="square", bias=bias).named_parameters()` (each tensor flattened row-major):
`parameter_layout` lists them. The full quadratic layer keeps its gate offset b_g without
bias, as quadrun.nn.mlp does.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

# 2^31 - 1 and the largest prime below it: products of two residues stay below 2^62.
PRIMES = (2_147_483_647, 2_147_483_629)
KINDS = ("conventional", "quadratic", "compact")


def check_prime(p: int) -> int:
    """p itself if it is a prime in (2, 2^31) (trial division: p < 2^31 has small factors
    below 46341); ValueError otherwise."""
    p = int(p)
    if not 2 < p < 2 ** 31:
        raise ValueError(f"the prime must lie in (2, 2^31) so products fit in int64, got {p}")
    if p % 2 == 0 or any(p % q == 0 for q in range(3, math.isqrt(p) + 1, 2)):
        raise ValueError(f"{p} is not a prime")
    return p


def layer_layout(kind: str, d_in: int, d_out: int, bias: bool) -> list:
    """[(name, shape)] of one layer's parameters, in torch's registration order."""
    w, b = (d_out, d_in), (d_out,)
    if kind == "conventional":
        return [("weight", w)] + ([("bias", b)] if bias else [])
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out = [("weight_r", w)] + ([("bias_r", b)] if bias else [])
    if kind == "quadratic":
        out += [("weight_g", w), ("bias_g", b)]
    return out + [("weight_b", w)] + ([("bias_b", b)] if bias else [])


def parameter_layout(widths: Sequence[int], kind: str, bias: bool) -> list:
    """[(layer index, name, shape, offset)] of every parameter of the network; `offset` is
    its first column in the flat parameter vector (and in the Jacobian)."""
    out, offset = [], 0
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        for name, shape in layer_layout(kind, a, b, bias):
            out.append((i, name, shape, offset))
            offset += math.prod(shape)
    return out


def param_count(widths: Sequence[int], kind: str, bias: bool) -> int:
    return sum(math.prod(shape) for _, _, shape, _ in parameter_layout(widths, kind, bias))


def matmul(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """a @ b mod p for residues a [m, k], b [k, n] (k <= 2^15): b is split into 16-bit
    halves so no partial sum leaves int64."""
    if a.shape[-1] > 2 ** 15:
        raise ValueError(f"inner dimension {a.shape[-1]} > 2^15: the sums could overflow")
    lo, hi = b & 0xFFFF, b >> 16
    return ((a @ hi) % p * 65536 + (a @ lo) % p) % p


class _Dual:
    """Values v [N, w] and their derivatives t [N, w, P] with respect to the P parameters."""

    def __init__(self, v: np.ndarray, t: np.ndarray):
        self.v, self.t = v, t

    def mul(self, other: "_Dual", p: int) -> "_Dual":
        v = self.v * other.v % p
        t = (self.t * other.v[:, :, None] % p + self.v[:, :, None] * other.t % p) % p
        return _Dual(v, t)

    def add(self, other: "_Dual", p: int) -> "_Dual":
        return _Dual((self.v + other.v) % p, (self.t + other.t) % p)


def _affine(x: _Dual, params: np.ndarray, w_off: int, shape: tuple, b_off: Optional[int],
            p: int) -> _Dual:
    """W x + b with W = params[w_off:...].reshape(shape) and b = params[b_off:...] (None: no
    bias), with the derivatives with respect to W and b added in their columns."""
    d_out, d_in = shape
    n, _, n_params = x.t.shape
    weight = params[w_off:w_off + d_out * d_in].reshape(d_out, d_in)
    v = matmul(x.v, weight.T.copy(), p)
    # chain rule: sum_i W[o, i] dx_i, each product reduced before it is added (the sum of
    # d_in residues stays below 2^63 for d_in < 2^32)
    t = np.zeros((n, d_out, n_params), dtype=np.int64)
    for i in range(d_in):
        t += weight[None, :, i, None] * x.t[:, None, i, :] % p
    t %= p
    # d(W x)_o / dW[o, i] = x_i
    cols = w_off + np.arange(d_out * d_in).reshape(d_out, d_in)
    t[:, np.arange(d_out)[:, None], cols] = (t[:, np.arange(d_out)[:, None], cols]
                                             + x.v[:, None, :]) % p
    if b_off is not None:
        bias = params[b_off:b_off + d_out]
        v = (v + bias[None, :]) % p
        t[:, np.arange(d_out), b_off + np.arange(d_out)] += 1
        t %= p
    return _Dual(v, t)


def jacobian(widths: Sequence[int], kind: str, bias: bool, params: np.ndarray,
             x: np.ndarray, p: int) -> tuple:
    """(outputs [N, dL], Jacobian [N * dL, P]) of the x^2-activated network at the flat
    parameter vector `params` and inputs `x` [N, d0], all residues mod p (int64). Rows are
    point-major (row n * dL + o is output o at point n), columns in `parameter_layout`
    order: the layout of quadrun.nn.variety.jacobian."""
    p = int(p)
    layout = parameter_layout(widths, kind, bias)
    n_params = param_count(widths, kind, bias)
    params = np.asarray(params, dtype=np.int64) % p
    x = np.asarray(x, dtype=np.int64) % p
    if params.shape != (n_params,):
        raise ValueError(f"expected {n_params} parameters, got shape {params.shape}")
    if x.ndim != 2 or x.shape[1] != widths[0]:
        raise ValueError(f"inputs must be [N, {widths[0]}], got shape {x.shape}")
    h = _Dual(x, np.zeros((x.shape[0], widths[0], n_params), dtype=np.int64))
    n_layers = len(widths) - 1
    for i in range(n_layers):
        spec = {name: (offset, shape) for j, name, shape, offset in layout if j == i}

        def affine(w_name, b_name, inp):
            w_off, shape = spec[w_name]
            b_off = spec[b_name][0] if b_name in spec else None
            return _affine(inp, params, w_off, shape, b_off, p)

        if kind == "conventional":
            h_next = affine("weight", "bias", h)
        else:
            out = affine("weight_b", "bias_b", h.mul(h, p))
            r = affine("weight_r", "bias_r", h)
            out = out.add(r.mul(affine("weight_g", "bias_g", h), p) if kind == "quadratic"
                          else r, p)
            h_next = out
        h = h_next.mul(h_next, p) if i < n_layers - 1 else h_next
    n, d_out = h.v.shape
    return h.v, h.t.reshape(n * d_out, n_params)


def rank(a: np.ndarray, p: int) -> int:
    """Rank of the integer matrix `a` over Z/pZ (Gaussian elimination, int64 residues)."""
    p = int(p)
    a = np.array(a, dtype=np.int64) % p
    if a.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {a.shape}")
    if a.shape[0] < a.shape[1]:
        a = a.T.copy()          # loop over the shorter side
    m, n = a.shape
    r = 0
    for c in range(n):
        if r == m:
            break
        nz = np.flatnonzero(a[r:, c])
        if nz.size == 0:
            continue
        piv = r + int(nz[0])
        if piv != r:
            a[[r, piv]] = a[[piv, r]]
        inv = pow(int(a[r, c]), p - 2, p)
        a[r, c:] = a[r, c:] * inv % p
        rows = r + 1 + np.flatnonzero(a[r + 1:, c])
        if rows.size:
            a[rows, c:] = (a[rows, c:] - a[rows, c:c + 1] * a[r, c:][None, :] % p) % p
        r += 1
    return r


def random_point(widths: Sequence[int], kind: str, bias: bool, n_points: int, p: int,
                 seed: int) -> tuple:
    """(parameters [P], inputs [n_points, d0]) uniform in Z/pZ from a numpy generator
    seeded with `seed`."""
    gen = np.random.default_rng(seed)
    params = gen.integers(0, p, size=param_count(widths, kind, bias), dtype=np.int64)
    x = gen.integers(0, p, size=(n_points, widths[0]), dtype=np.int64)
    return params, x

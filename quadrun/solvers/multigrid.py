"""Geometric multigrid on the MAC grid, in torch: a V-cycle that preconditions CG.

    mg = Multigrid(system, device, torch.float64)      # set-up: the level hierarchy
    z = mg(r)                                          # one V-cycle on a fluid-cell vector

Level 0 is the system's grid: the fluid mask, and per axis the face weights w (1 between
two fluid cells, 0 on a face that touches a solid cell or a wall), so that

    (A x)_c = sum over the faces of c of  w_face (x_c - x_neighbour)

is the system's matrix on the fluid cells, applied without assembling it (a test checks it
against the assembled one). Each coarser level halves every axis (a grid of odd width gets
one solid layer first). The obstacle mask is carried down: a coarse cell is fluid when any
of its 2^d children is, and a coarse face's weight is the sum of the fine face weights on
it divided by 2, i.e. the face's open fraction times 2^(d-2). That is the Laplacian
rediscretised on the coarse grid with each obstacle as an open-area fraction, and equally
the Galerkin operator P0^T A P0 of piecewise-constant interpolation halved (the classical
correction of its twice too large coarse energy). A coarse cell left without an open face
is made solid.

Transfers (restriction R = P^T always): `interpolation="constant"` (the default), P
piecewise constant on the fluid children; or "linear", P interpolating (bi/tri)linearly
from the 2^d nearest coarse cells (weights 3/4 and 1/4 per axis) renormalised over the
coarse cells that are fluid, so constants are reproduced next to obstacles and walls.
Linear transfers couple the two sides of a one-cell wall (the `cavities` scene), and their
iterations grow with n there; the constant ones stay flat on every gallery scene
(benchmarks/results/dcdm_notes.md). Smoother: red-black Gauss-Seidel (the default; red then
black before the coarse correction, black then red after) or weighted Jacobi (omega 4/5 in
2-D, 6/7 in 3-D), `sweeps` (default 2) of each before and after. The
coarsest grid (at most `coarsest` cells across) is solved by a dense pseudo-inverse:
closed fluid regions make every level singular. The V-cycle is therefore a symmetric
positive semi-definite map that is definite on the range of A: a valid CG preconditioner
for these consistent singular systems.

Every operation is a slice, a pointwise product or a strided (transposed) convolution on
(1, 1, *grid) tensors, so the cycle runs on the GPU as it does on the CPU, with static
shapes (it can be captured as a CUDA graph, see krylov.GraphedMap).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

SMOOTHERS = ("rbgs", "jacobi")
INTERPOLATIONS = ("linear", "constant")
OMEGA = {2: 4 / 5, 3: 6 / 7}       # weighted-Jacobi smoothing factor, per dimension


@dataclass(eq=False)
class Level:
    """One grid of the hierarchy (tensors (1, 1, *shape) unless said otherwise)."""
    shape: tuple
    fluid: torch.Tensor              # 1 on fluid cells
    weights: List[torch.Tensor]      # per axis: face weights, one fewer along that axis
    diag: torch.Tensor               # sum of the weights of a cell's faces
    inv_diag: torch.Tensor           # 1 / diag on fluid cells, 0 elsewhere
    red: torch.Tensor                # fluid cells with an even coordinate sum
    black: torch.Tensor
    # transfer to the next coarser level (None on the coarsest)
    pad: Optional[tuple] = None      # F.pad spec that makes every axis even
    inv_den: Optional[torch.Tensor] = None   # fluid / sum of interpolation weights
    pinv: Optional[torch.Tensor] = field(default=None, repr=False)  # coarsest: (N, N)


def _face_weights(fluid: np.ndarray) -> list:
    """Level 0: 1 between two fluid cells along each axis (shape n-1 along that axis)."""
    out = []
    for axis in range(fluid.ndim):
        n = fluid.shape[axis]
        lo = np.take(fluid, np.arange(n - 1), axis=axis)
        hi = np.take(fluid, np.arange(1, n), axis=axis)
        out.append((lo & hi).astype(np.float64))
    return out


def _diag(weights: list, shape: tuple) -> np.ndarray:
    d = np.zeros(shape)
    for axis, w in enumerate(weights):
        index = [slice(None)] * len(shape)
        index[axis] = slice(0, shape[axis] - 1)
        d[tuple(index)] += w
        index[axis] = slice(1, shape[axis])
        d[tuple(index)] += w
    return d


def _even(shape: tuple) -> tuple:
    return tuple(n + n % 2 for n in shape)


def _pad_to(a: np.ndarray, shape: tuple) -> np.ndarray:
    return np.pad(a, [(0, s - n) for n, s in zip(a.shape, shape)])


def _coarsen(fluid: np.ndarray, weights: list) -> tuple:
    """(coarse fluid mask, coarse face weights) of a fine level (even shape)."""
    d = fluid.ndim
    shape = fluid.shape
    blocks = [x for n in shape for x in (n // 2, 2)]
    cfluid = fluid.reshape(blocks).any(axis=tuple(range(1, 2 * d, 2)))
    cweights = []
    for axis, w in enumerate(weights):
        full = _pad_to(w, shape)                    # face i between cells i, i+1
        faces = np.take(full, np.arange(1, shape[axis], 2), axis=axis)  # odd: coarse faces
        others = tuple(2 * a + 1 for a in range(d) if a != axis)
        fblocks = [x for a, n in enumerate(faces.shape)
                   for x in ((n, 1) if a == axis else (n // 2, 2))]
        summed = faces.reshape(fblocks).sum(axis=others).reshape(
            [n if a == axis else n // 2 for a, n in enumerate(faces.shape)])
        # drop the last face along the axis (between the last coarse cell and beyond)
        cweights.append(np.take(summed, np.arange(cfluid.shape[axis] - 1), axis=axis) / 2)
    return cfluid, cweights


def _colours(shape: tuple) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (sum(grids) % 2) == 0


def _dense(weights: list, shape: tuple) -> np.ndarray:
    """The level's matrix on all its cells (zero rows on solid cells), dense."""
    size = int(np.prod(shape))
    index = np.arange(size).reshape(shape)
    A = np.diag(_diag(weights, shape).ravel())
    for axis, w in enumerate(weights):
        lo = np.take(index, np.arange(shape[axis] - 1), axis=axis).ravel()
        hi = np.take(index, np.arange(1, shape[axis]), axis=axis).ravel()
        A[lo, hi] -= w.ravel()
        A[hi, lo] -= w.ravel()
    return A


class Multigrid:
    """A symmetric V-cycle on the system's grid hierarchy (module docstring)."""

    def __init__(self, system, device="cpu", dtype=torch.float64, smoother: str = "rbgs",
                 sweeps: int = 2, coarsest: int = 4, interpolation: str = "constant",
                 omega: Optional[float] = None):
        if smoother not in SMOOTHERS:
            raise ValueError(f"unknown smoother {smoother!r}; must be one of: "
                             f"{', '.join(SMOOTHERS)}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {interpolation!r}; must be one of: "
                             f"{', '.join(INTERPOLATIONS)}")
        if sweeps < 1 or coarsest < 2:
            raise ValueError("sweeps must be >= 1 and coarsest >= 2")
        self.system, self.dim = system, system.dim
        self.smoother, self.sweeps, self.interpolation = smoother, sweeps, interpolation
        self.omega = OMEGA[self.dim] if omega is None else omega
        self.device, self.dtype = torch.device(device), dtype
        w1 = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=dtype)
        w = w1
        for _ in range(self.dim - 1):
            w = w[..., None] * w1
        self.stencil = w[None, None].to(self.device)  # (1, 1, 4, ...): kept on the device
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype,
                                      device=self.device)[None, None]
        fluid = ~system.solid
        weights = _face_weights(fluid)
        self.levels: List[Level] = []
        while True:
            shape = fluid.shape
            diag = _diag(weights, shape)
            fluid = fluid & (diag > 0)
            colour = _colours(shape)
            inv = np.where(fluid, 1.0 / np.where(diag > 0, diag, 1.0), 0.0)
            level = Level(shape, t(fluid), [t(w) for w in weights], t(diag),
                          t(inv), t(fluid & colour), t(fluid & ~colour))
            self.levels.append(level)
            even = _even(shape)
            if max(shape) > coarsest and min(shape) >= 2:
                cfluid, cweights = _coarsen(_pad_to(fluid, even), [_pad_to(w, tuple(
                    s - 1 if a == axis else s for a, s in enumerate(even)))
                    for axis, w in enumerate(weights)])
                cfluid &= _diag(cweights, cfluid.shape) > 0
            if max(shape) <= coarsest or min(shape) < 2 or not cfluid.any():
                # the coarsest level (also where the fluid would collapse into cells
                # without an open face: its correction would be a constant only)
                pinv = np.linalg.pinv(_dense(weights, shape), rcond=1e-10, hermitian=True)
                level.pinv = torch.as_tensor(pinv, dtype=dtype, device=self.device)
                break
            level.pad = tuple(x for n, s in reversed(list(zip(shape, even))) for x in (0, s - n))
            if self.interpolation == "linear":
                den = self._interp(t(cfluid.astype(np.float64)), even)
                den = den[(0, 0) + tuple(slice(0, n) for n in shape)]
                level.inv_den = torch.where(level.fluid > 0, 1.0 / den.clamp_min(1e-300),
                                            torch.zeros_like(den))
            fluid, weights = cfluid, cweights
        self._index = torch.from_numpy(system.fluid).to(self.device)

    # -- operators on (1, 1, *shape) grids ------------------------------------------------
    def apply(self, level: Level, x: torch.Tensor) -> torch.Tensor:
        """A x on one level (matrix-free)."""
        y = level.diag * x
        for axis, w in enumerate(level.weights):
            ax, n = 2 + axis, x.shape[2 + axis]
            y.narrow(ax, 0, n - 1).sub_(w * x.narrow(ax, 1, n - 1))
            y.narrow(ax, 1, n - 1).sub_(w * x.narrow(ax, 0, n - 1))
        return y

    def _interp(self, coarse: torch.Tensor, even: tuple) -> torch.Tensor:
        """Linear interpolation weights applied to a coarse grid: shape `even`."""
        adj = F.conv_transpose2d if self.dim == 2 else F.conv_transpose3d
        return adj(coarse, self.stencil, stride=2, padding=1)

    def prolong(self, depth: int, e: torch.Tensor) -> torch.Tensor:
        """P e: a correction on level depth + 1 to the grid of level `depth`."""
        level, coarse = self.levels[depth], self.levels[depth + 1]
        crop = (0, 0) + tuple(slice(0, n) for n in level.shape)
        if self.interpolation == "constant":
            fine = e
            for axis in range(self.dim):
                fine = fine.repeat_interleave(2, dim=2 + axis)
            return fine[crop] * level.fluid
        return self._interp(e * coarse.fluid, _even(level.shape))[crop] * level.inv_den

    def restrict(self, depth: int, r: torch.Tensor) -> torch.Tensor:
        """R r = P^T r: a residual on level `depth` to level depth + 1."""
        level, coarse = self.levels[depth], self.levels[depth + 1]
        if self.interpolation == "constant":
            pool = F.avg_pool2d if self.dim == 2 else F.avg_pool3d
            return pool(F.pad(r * level.fluid, level.pad), 2) * 2 ** self.dim * coarse.fluid
        conv = F.conv2d if self.dim == 2 else F.conv3d
        x = F.pad(r * level.inv_den, level.pad)
        return conv(x, self.stencil, stride=2, padding=1) * coarse.fluid

    def _sweep(self, level: Level, x, b, order) -> torch.Tensor:
        """One smoothing sweep; x None means a zero start."""
        if self.smoother == "jacobi":
            if x is None:
                return self.omega * level.inv_diag * b
            return x + self.omega * level.inv_diag * (b - self.apply(level, x))
        for colour in order:
            mask = level.red if colour == 0 else level.black
            if x is None:
                x = mask * level.inv_diag * b
            else:
                x = x + mask * level.inv_diag * (b - self.apply(level, x))
        return x

    def cycle(self, b: torch.Tensor, depth: int = 0) -> torch.Tensor:
        """One V-cycle for A x = b on level `depth`, from x = 0."""
        level = self.levels[depth]
        if level.pinv is not None:
            return (level.pinv @ b.reshape(-1)).reshape(b.shape)
        x = None
        for _ in range(self.sweeps):
            x = self._sweep(level, x, b, (0, 1))
        coarse_b = self.restrict(depth, b - self.apply(level, x))
        x = x + self.prolong(depth, self.cycle(coarse_b, depth + 1))
        for _ in range(self.sweeps):
            x = self._sweep(level, x, b, (1, 0))
        return x

    # -- fluid-cell vectors ----------------------------------------------------------------
    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        """One V-cycle on a fluid-cell vector r (the preconditioner M r)."""
        grid = r.new_zeros(self.system.solid.size)
        grid[self._index] = r
        z = self.cycle(grid.reshape((1, 1) + self.system.shape))
        return z.reshape(-1)[self._index]

    def describe(self) -> str:
        return (f"{len(self.levels)} levels {self.levels[0].shape[0]}->"
                f"{self.levels[-1].shape[0]}, {self.smoother} x{self.sweeps}, "
                f"{self.interpolation} interpolation")

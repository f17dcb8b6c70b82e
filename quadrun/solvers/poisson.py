"""Pressure Poisson systems on a MAC grid, and a gallery of scenes chosen by name.

A grid of n^d cells (d = 2 or 3), each cell fluid or solid. The domain walls are the
outermost layer of cells, always solid. For a fluid cell the row of A has

    A_cc = number of non-solid neighbours,   A_cj = -1 for each fluid neighbour j,

and the unknowns are the fluid cells only (solid cells carry no unknown). A closed fluid
region gives A a null space: the constants on that region. A right-hand side is
compatible when it has zero mean on every fluid region; the scenes build it as the
divergence of a velocity field whose normal component vanishes at every solid face, which
sums to zero over each region exactly, and the per-region mean is removed to round-off.

    system, b = scene("sphere", n=64, dim=2, seed=0)
    A = system.matrix(device, torch.float64)      # torch sparse CSR on the fluid cells
    g = system.to_grid(b)                         # (n, n) with zeros on solid cells

Fluid cells with no fluid neighbour (possible with random solids) are made solid: their
row would be zero and they cannot hold pressure.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import torch


@dataclass
class PoissonSystem:
    """The MAC-grid Poisson matrix of one solid mask, on its fluid cells."""
    solid: np.ndarray                    # bool grid, shape (n,)*dim
    fluid: np.ndarray = field(init=False)        # flat grid indices of the fluid cells
    labels: np.ndarray = field(init=False)       # fluid region (0..regions-1) of each cell
    regions: int = field(init=False)
    scipy: sp.csr_matrix = field(init=False)     # float64 CSR, fluid x fluid
    _torch: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self):
        solid = np.array(self.solid, dtype=bool)
        _set_walls(solid)
        while True:  # isolated fluid cells become solid (their row would be zero)
            lonely = ~solid & (_fluid_neighbours(solid) == 0)
            if not lonely.any():
                break
            solid |= lonely
        self.solid = solid
        self.fluid = np.flatnonzero(~solid.ravel())
        grid_labels, self.regions = ndi.label(~solid)
        self.labels = grid_labels.ravel()[self.fluid] - 1
        self.scipy = _assemble(solid, self.fluid)

    # -- shape -----------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.solid.shape

    @property
    def dim(self) -> int:
        return self.solid.ndim

    @property
    def n(self) -> int:
        return self.solid.shape[0]

    @property
    def size(self) -> int:
        """Number of unknowns (fluid cells)."""
        return len(self.fluid)

    def digest(self) -> str:
        """Content hash of the solid mask: equal digests mean equal matrices."""
        h = hashlib.sha256(np.packbits(self.solid.ravel()).tobytes())
        h.update(str(self.shape).encode())
        return h.hexdigest()[:16]

    # -- torch side -------------------------------------------------------------------
    def matrix(self, device="cpu", dtype=torch.float64) -> torch.Tensor:
        """A as a torch sparse CSR tensor on `device` (cached per device and dtype)."""
        key = (str(device), dtype)
        if key not in self._torch:
            A = self.scipy
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore")
                self._torch[key] = torch.sparse_csr_tensor(
                    torch.from_numpy(A.indptr.astype(np.int32)),   # int32: ~1.5x faster
                    torch.from_numpy(A.indices.astype(np.int32)),  # matvec on CPU
                    torch.from_numpy(A.data), size=A.shape, dtype=dtype, device=device,
                    check_invariants=False)
        return self._torch[key]

    def _index(self, device) -> torch.Tensor:
        key = ("index", str(device))
        if key not in self._torch:
            self._torch[key] = torch.from_numpy(self.fluid).to(device)
        return self._torch[key]

    def to_grid(self, v: torch.Tensor) -> torch.Tensor:
        """(..., fluid cells) -> (..., *shape), zeros on solid cells."""
        flat = v.new_zeros(v.shape[:-1] + (self.solid.size,))
        flat[..., self._index(v.device)] = v
        return flat.reshape(v.shape[:-1] + self.shape)

    def from_grid(self, g: torch.Tensor) -> torch.Tensor:
        """(..., *shape) -> (..., fluid cells)."""
        flat = g.reshape(g.shape[:g.dim() - self.dim] + (-1,))
        return flat[..., self._index(g.device)]

    def project(self, b: np.ndarray) -> np.ndarray:
        """b with its mean removed on every fluid region (a compatible right-hand side)."""
        b = np.asarray(b, dtype=np.float64)
        counts = np.bincount(self.labels, minlength=self.regions)
        sums = np.bincount(self.labels, weights=b, minlength=self.regions)
        return b - (sums / np.maximum(counts, 1))[self.labels]

    def null_space(self) -> np.ndarray:
        """(fluid cells, regions): the indicator of each fluid region, an orthogonal basis
        of A's null space."""
        Z = np.zeros((self.size, self.regions))
        Z[np.arange(self.size), self.labels] = 1.0
        return Z


def _set_walls(solid: np.ndarray) -> None:
    for axis in range(solid.ndim):
        index = [slice(None)] * solid.ndim
        for end in (0, -1):
            index[axis] = end
            solid[tuple(index)] = True


def _shifted(mask: np.ndarray, axis: int, step: int) -> np.ndarray:
    """mask of the neighbour at +step along axis; False beyond the grid."""
    out = np.zeros_like(mask)
    src = [slice(None)] * mask.ndim
    dst = [slice(None)] * mask.ndim
    if step > 0:
        src[axis], dst[axis] = slice(step, None), slice(None, -step)
    else:
        src[axis], dst[axis] = slice(None, step), slice(-step, None)
    out[tuple(dst)] = mask[tuple(src)]
    return out


def _fluid_neighbours(solid: np.ndarray) -> np.ndarray:
    fluid = ~solid
    return sum(_shifted(fluid, a, s).astype(np.int64)
               for a in range(solid.ndim) for s in (-1, 1))


def _assemble(solid: np.ndarray, fluid_flat: np.ndarray) -> sp.csr_matrix:
    """The fluid-cell rows: degree on the diagonal, -1 per fluid neighbour."""
    index = np.full(solid.size, -1, dtype=np.int64)
    index[fluid_flat] = np.arange(len(fluid_flat))
    index = index.reshape(solid.shape)
    fluid = ~solid
    rows, cols = [], []
    for axis in range(solid.ndim):
        for step in (-1, 1):
            both = fluid & _shifted(fluid, axis, step)
            rows.append(index[both])
            cols.append(np.roll(index, -step, axis=axis)[both])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    m = len(fluid_flat)
    off = sp.csr_matrix((-np.ones(len(rows)), (rows, cols)), shape=(m, m))
    degree = np.bincount(rows, minlength=m).astype(np.float64)
    A = (off + sp.diags(degree)).tocsr()
    A.sort_indices()
    return A


# -- geometry --------------------------------------------------------------------------
def _coords(n: int, dim: int) -> list:
    """Cell-centre coordinates in [0, 1] along each axis (axis 0 is 'up')."""
    c = (np.arange(n) + 0.5) / n
    return np.meshgrid(*([c] * dim), indexing="ij")


def box_obstacle(n: int, dim: int, lo, hi) -> np.ndarray:
    """Solid axis-aligned box with corners lo, hi (fractions of the domain)."""
    X = _coords(n, dim)
    inside = np.ones((n,) * dim, dtype=bool)
    for x, a, b in zip(X, lo, hi):
        inside &= (x >= a) & (x <= b)
    return inside


def sphere_obstacle(n: int, dim: int, centre, radius: float) -> np.ndarray:
    """Solid ball (a disk in 2-D); centre and radius as fractions of the domain."""
    X = _coords(n, dim)
    return sum((x - c) ** 2 for x, c in zip(X, centre)) <= radius ** 2


def random_solids(n: int, dim: int, fraction: float, seed: int) -> np.ndarray:
    """Scattered small solid blobs covering about `fraction` of the cells."""
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.standard_normal((n,) * dim), sigma=max(n / 32, 0.7))
    return noise > np.quantile(noise, 1 - fraction)


# -- right-hand sides --------------------------------------------------------------------
def divergence(system: PoissonSystem, velocity: list) -> np.ndarray:
    """-div u on the fluid cells for cell-centred velocity components `velocity[axis]`:
    face values are the mean of the two cells, zero on every face touching a solid cell
    (or the grid's edge), so the result sums to zero on each closed fluid region."""
    solid = system.solid
    fluid = ~solid
    div = np.zeros(solid.shape)
    for axis, u in enumerate(velocity):
        up_fluid = _shifted(fluid, axis, 1)
        face = 0.5 * (u + np.roll(u, -1, axis=axis)) * (fluid & up_fluid)  # face c+1/2
        div += face - np.roll(face, 1, axis=axis)   # the last face along an axis is zero
    return system.project(-div.ravel()[system.fluid])


def smooth_rhs(system: PoissonSystem, seed: int) -> np.ndarray:
    """Divergence of a smooth random velocity field (Gaussian-filtered noise)."""
    rng = np.random.default_rng(seed)
    sigma = max(system.n / 16, 1.0)
    velocity = [ndi.gaussian_filter(rng.standard_normal(system.shape), sigma, mode="wrap")
                for _ in range(system.dim)]
    return divergence(system, velocity)


def plume_rhs(system: PoissonSystem, seed: int) -> np.ndarray:
    """A small buoyant smoke source near the floor: an upward velocity blob (axis 0 up)."""
    rng = np.random.default_rng(seed)
    X = _coords(system.n, system.dim)
    centre = [0.15] + [0.5 + 0.05 * rng.uniform(-1, 1) for _ in range(system.dim - 1)]
    blob = np.exp(-sum((x - c) ** 2 for x, c in zip(X, centre)) / (2 * 0.06 ** 2))
    velocity = [blob] + [np.zeros(system.shape)] * (system.dim - 1)
    return divergence(system, velocity)


RHS: Dict[str, Callable] = {"smooth": smooth_rhs, "plume": plume_rhs}


# -- the scene gallery ---------------------------------------------------------------------
def _empty(n, dim, seed):
    return np.zeros((n,) * dim, dtype=bool)


def _box(n, dim, seed):
    return box_obstacle(n, dim, [0.35] + [0.4] * (dim - 1), [0.6] + [0.65] * (dim - 1))


def _sphere(n, dim, seed):
    return sphere_obstacle(n, dim, [0.55] + [0.5] * (dim - 1), 0.18)


def _two(n, dim, seed):
    return (box_obstacle(n, dim, [0.25] + [0.15] * (dim - 1), [0.45] + [0.4] * (dim - 1))
            | sphere_obstacle(n, dim, [0.65] + [0.65] * (dim - 1), 0.15))


def _random(n, dim, seed):
    return random_solids(n, dim, 0.12, seed)


def _cavities(n, dim, seed):
    """A one-cell wall across the middle with no opening: two closed fluid regions."""
    solid = np.zeros((n,) * dim, dtype=bool)
    solid[n // 2] = True
    return solid


# name -> (solid mask builder, right-hand side). Obstacles scale with n.
SCENES: Dict[str, tuple] = {
    "box": (_empty, "smooth"),               # empty closed box
    "box_obstacle": (_box, "smooth"),        # a box obstacle in the middle
    "sphere": (_sphere, "smooth"),           # a sphere (disk in 2-D) obstacle
    "two_obstacles": (_two, "smooth"),       # a box and a sphere
    "random_solids": (_random, "smooth"),    # scattered solid blobs
    "cavities": (_cavities, "smooth"),       # two closed regions
    "plume": (_empty, "plume"),              # smoke plume in an empty box
    "plume_sphere": (_sphere, "plume"),      # smoke plume rising onto a sphere
}


def build_system(name: str, n: int, dim: int, seed: int = 0) -> PoissonSystem:
    """The system of scene `name` (its domain only)."""
    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; must be one of: {', '.join(SCENES)}")
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    return PoissonSystem(SCENES[name][0](n, dim, seed))


def scene(name: str, n: int, dim: int, seed: int = 0, rhs: Optional[str] = None):
    """(system, b): the scene's domain and a compatible right-hand side (numpy, float64).
    `rhs` overrides the scene's own kind ("smooth" or "plume")."""
    system = build_system(name, n, dim, seed)
    kind = rhs or SCENES[name][1]
    if kind not in RHS:
        raise ValueError(f"unknown rhs {kind!r}; must be one of: {', '.join(RHS)}")
    return system, RHS[kind](system, seed)

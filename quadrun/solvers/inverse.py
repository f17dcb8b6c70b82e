"""A preconditioner as an approximate inverse: how well its direction q = M(r) points
along the exact correction A^-1 r.

    a_cosine(A, q, r, z)   the cosine between q and z = A^+ r in the A inner product,
                           <q, z>_A / (||q||_A ||z||_A) = q.r / sqrt((q.A q)(r.z))
                           (A z = r gives <q, z>_A = q.r and ||z||_A^2 = r.z). It is +-1
                           exactly when q is a multiple of A^+ r (anything in A's null
                           space, the constants of a closed domain, does not count), so
                           |cos| measures "the action of A^-1 up to a constant", of either
                           sign: one step along q at the best step t (its sign included,
                           as DCDM's (q.r)/(q.A q)) leaves ||e - t q||_A^2 =
                           (1 - cos^2) ||e||_A^2 of the A-norm error e = A^+ r.
    test_residuals(...)    the residuals a solver meets on a scene: b, and CG's residuals
                           at evenly spaced fractions of its iterations to the tolerance
                           (smoother and smoother), each with its exact correction A^+ r
                           from multigrid-preconditioned CG to 1e-10 in float64.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch

from quadrun.solvers import krylov
from quadrun.solvers.poisson import PoissonSystem

EXACT_TOL = 1e-10          # the relative residual of the exact corrections


def a_cosine(A, q: torch.Tensor, r: torch.Tensor, z: torch.Tensor) -> Optional[float]:
    """cos_A(q, A^+ r) for A z = r, signed (None when q has no A-energy: q in A's null
    space)."""
    qAq = float(q.double().dot((A @ q.to(A.dtype)).double()))
    rz = float(r.double().dot(z.double()))
    if not (qAq > 0 and rz > 0):
        return None
    return float(q.double().dot(r.double())) / math.sqrt(qAq * rz)


def test_residuals(system: PoissonSystem, b, count: int, device="cpu", tol: float = 1e-4,
                   dtype=torch.float64) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """`count` pairs (r, z = A^+ r), r of unit norm: b and the residuals of CG (to `tol`)
    at iterations k * its / count, k = 1 .. count - 1."""
    A = system.matrix(device, dtype)
    bt = torch.as_tensor(b, dtype=dtype).to(device)
    norms: list = []
    krylov.cg(A, bt, tol=tol, residuals=norms)
    its = len(norms) - 1
    wanted = sorted({max(1, round(k * its / count)) for k in range(1, count)}) if its else []
    xs = {}
    step = [0]

    def keep(x):
        step[0] += 1
        if step[0] in wanted:
            xs[step[0]] = x.clone()

    if wanted:
        krylov.cg(A, bt, tol=0.0, maxiter=max(wanted), callback=keep)
    rs = [bt] + [bt - A @ xs[k] for k in wanted]
    mg = krylov.mg_setup(system, A)["M"]
    out = []
    for r in rs:
        r = r / r.norm()
        z, info = krylov.cg(A, r, tol=EXACT_TOL, maxiter=1000, M=mg)
        if info != 0:
            raise RuntimeError(f"the exact correction did not reach {EXACT_TOL} "
                               f"({info} iterations)")
        out.append((r, z))
    return out


def cosines(A, M: Optional[Callable], pairs) -> List[Optional[float]]:
    """a_cosine (signed) of the map M (None: the identity, CG's direction) on each test
    pair; M gets r / ||r||, as DCDM's network does."""
    out = []
    for r, z in pairs:
        with torch.no_grad():
            q = r if M is None else M(r)
        out.append(a_cosine(A, q, r, z))
    return out

"""Solver benchmark: quadrun's CG vs scipy.sparse.linalg.cg, and DCDM vs CG, same process.

    python benchmarks/solvers.py                       # CPU, 3-D 64^3
    python benchmarks/solvers.py --device cuda --n 128
    python benchmarks/solvers.py --checkpoint outputs/dcdm/<run>/checkpoints/model_3d.pt

Prints time per iteration, iterations and time to the relative tolerance, and peak memory
(CPU: the process's peak resident set above the level before the solve, reset between
solvers through /proc/self/clear_refs; CUDA: torch's peak allocation), then the ratios.
DCDM's time to tolerance needs a trained network (--checkpoint, a `model_3d.pt` of a dcdm
run, with the run's --arch/--blocks/--coarsest); without one, an untrained network of the
same shape gives the time per iteration only.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import scipy.sparse.linalg as spla
import torch

from quadrun.nn.dcdm_net import ARCHS, build
from quadrun.solvers import krylov
from quadrun.solvers.poisson import scene


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory (MiB) used by the block above what was in use when it started."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            try:  # "5" resets the peak resident set size (Linux >= 4.0)
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
            self.base = _rss_kib("VmRSS:") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _rss_kib("VmHWM:") * 1024
        self.mib = max(peak - self.base, 0) / 2**20


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def scipy_cg(system, b, tol, maxiter):
    count = []
    t = time.perf_counter()
    x, _ = spla.cg(system.scipy, b, rtol=tol, atol=0.0, maxiter=maxiter,
                   callback=lambda xk: count.append(1))
    return x, len(count), time.perf_counter() - t


def quadrun_solve(solver, A, bt, device, tol, maxiter, check_every, **extra):
    residuals = []
    _sync(device)
    t = time.perf_counter()
    x, info = solver(A, bt, tol=tol, maxiter=maxiter, residuals=residuals,
                     check_every=check_every, **extra)
    _sync(device)
    return x, len(residuals) - 1, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--dim", type=int, default=3, choices=[2, 3])
    ap.add_argument("--scene", default="box_obstacle")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--maxiter", type=int, default=5000)
    ap.add_argument("--check-every", type=int, default=None,
                    help="host convergence check interval (default 1 on CPU, 10 on CUDA)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (scipy uses 1)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--checkpoint", default=None, help="a dcdm run's model_<dim>d.pt")
    ap.add_argument("--arch", default="paper", choices=list(ARCHS))
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--coarsest", type=int, default=8)
    ap.add_argument("--dcdm-iters", type=int, default=10,
                    help="iterations timed for DCDM's per-iteration cost without a checkpoint")
    ap.add_argument("--dcdm-maxiter", type=int, default=300,
                    help="DCDM's iteration cap with a checkpoint (the paper: 100)")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    check = args.check_every or (10 if device.type == "cuda" else 1)
    system, b = scene(args.scene, args.n, args.dim, seed=0)
    A = system.matrix(device, torch.float64)
    bt = torch.from_numpy(b).to(device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu, %d torch thread(s)' % args.threads}); "
          f"{args.dim}-D {args.n}^{args.dim} {args.scene}: {system.size} fluid cells; "
          f"relative tol {args.tol:g}; host check every {check} iteration(s)")

    rows = {}

    def record(name, its, seconds, mib, note=""):
        rows[name] = (its, seconds, mib)
        per = seconds / max(its, 1) * 1e3
        print(f"  {name:<28} {its:>6} it  {per:9.3f} ms/it  {seconds:8.3f} s  "
              f"peak {mib:8.1f} MiB  {note}")

    print(f"  {'solver':<28} {'iters':>9}  {'per iteration':>15}  {'to tol':>10}  {'memory':>13}")
    # scipy on the host, float64, single-threaded sparse matvec
    best = None
    for _ in range(args.repeats):
        with PeakMemory(torch.device("cpu")) as mem:
            x, its, s = scipy_cg(system, b, args.tol, args.maxiter)
        best = min(best or (its, s, mem.mib), (its, s, mem.mib), key=lambda r: r[1])
    rel = krylov.relative_residual(system, b, x)
    record("scipy.sparse.linalg.cg", *best, f"rel.res {rel:.2e} (host)")

    best = None
    for _ in range(args.repeats):
        with PeakMemory(device) as mem:
            x, its, s = quadrun_solve(krylov.cg, A, bt, device, args.tol, args.maxiter, check)
        best = min(best or (its, s, mem.mib), (its, s, mem.mib), key=lambda r: r[1])
    rel = krylov.relative_residual(system, b, x.cpu().numpy())
    record("quadrun cg", *best, f"rel.res {rel:.2e}")

    # DCDM: network (float32) on the device, system in float64
    net = build(args.arch, args.dim, 16, args.blocks, args.coarsest)
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
    net.to(device)
    M = krylov.network_setup(system, A, model=net)["M"]
    maxiter = args.dcdm_maxiter if args.checkpoint else args.dcdm_iters
    M(bt)  # warm-up (cuDNN autotuning, allocator)
    with PeakMemory(device) as mem:
        x, its, s = quadrun_solve(krylov.dcdm, A, bt, device, args.tol, maxiter, check, M=M)
    rel = krylov.relative_residual(system, b, x.cpu().numpy())
    record("quadrun dcdm" + ("" if args.checkpoint else " (untrained)"), its, s, mem.mib,
           f"rel.res {rel:.2e}")

    sc, qc, dc = rows["scipy.sparse.linalg.cg"], rows["quadrun cg"], rows[next(k for k in rows if k.startswith("quadrun dcdm"))]
    per = lambda r: r[1] / max(r[0], 1)
    print("ratios:")
    print(f"  quadrun cg / scipy cg, time per iteration: {per(qc) / per(sc):6.2f}x"
          f"   (time to tol {qc[1] / sc[1]:.2f}x; iterations {qc[0]} vs {sc[0]})")
    print(f"  dcdm / cg (quadrun), time per iteration:   {per(dc) / per(qc):6.2f}x")
    if args.checkpoint:
        print(f"  dcdm / cg (quadrun), time to tolerance:    {dc[1] / qc[1]:6.2f}x"
              f"   (iterations {dc[0]} vs {qc[0]})")
    print(f"  peak memory dcdm / cg: {dc[2] / max(qc[2], 1e-9):.2f}x; "
          f"quadrun cg / scipy cg: {qc[2] / max(sc[2], 1e-9):.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

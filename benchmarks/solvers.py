"""Solver benchmark: every Poisson solver side by side, one run, on the current device.

    python benchmarks/solvers.py                        # 3-D 64^3 and 128^3, every solver
    python benchmarks/solvers.py --n 64 --solvers cg,mg,amg,dcdm
    python benchmarks/solvers.py --device cuda --precision bf16
    python benchmarks/solvers.py --arch additive --coarsest 4 \\
        --checkpoint outputs/dcdm/<run>/checkpoints/model_3d_additive_0.pt   # time to tol

For each grid size and solver (CG, IC(0)-PCG, deflated PCG, AMG-PCG with pyamg on the host,
geometric-multigrid PCG in torch, DCDM), one solve of the same scene to the same relative
tolerance through quadrun.solvers.krylov.solve: iterations (exact, whatever --check-every
is), set-up and solve seconds, time per iteration, peak memory (CPU: the process's peak
resident set above the level before the solver, freed heap returned first (malloc_trim)
and the peak reset through /proc/self/clear_refs; CUDA:
torch's peak allocation above the allocation before it) and the ratios to CG measured in
the same run. DCDM's time to the tolerance needs a trained network (--checkpoint, a
dcdm run's model_3d_<arch>_<net>.pt with its --arch/--blocks/--coarsest); without one the
authors' N=64 network (--arch paper) runs untrained for --dcdm-iters iterations, which
gives its time per iteration only. The header prints the load average: timings on a
shared machine are inflated by the other processes.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from quadrun.nn.dcdm_net import ARCHS, build
from quadrun.solvers import krylov
from quadrun.solvers.poisson import SCENES, scene

DEFAULT_SOLVERS = ["cg", "ic", "deflated", "amg", "mg", "dcdm"]


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
            try:  # give freed heap back to the system, so the peak counts new memory
                import ctypes

                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except (OSError, AttributeError):
                pass
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


def _network(args, device):
    net = build(args.arch, args.dim, 16, args.blocks, args.coarsest)
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
    return net.to(device)


def _device_line(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu, {threads} torch thread(s), {os.cpu_count()} cores"


def run_one(name, system, b, args, device, net):
    """Best of --repeats solves (by total time) of solver `name`: a result row."""
    options = dict(device=device, dtype=getattr(torch, args.dtype), tol=args.tol,
                   check_every=args.check_every, protocol=args.protocol, seed=0,
                   deflate=args.deflate, precision=args.precision, graphs=not args.no_graphs)
    if name == "dcdm":
        trained = bool(args.checkpoint)
        options.update(model=net, maxiter=args.dcdm_maxiter if trained else args.dcdm_iters)
    else:
        options.update(maxiter=args.maxiter)
    best = None
    for _ in range(args.repeats):
        with PeakMemory(device) as mem:
            rec = krylov.solve(name, system, b, **options)
        rec["peak_mib"] = mem.mib
        rec.pop("x")
        if best is None or rec["setup_s"] + rec["solve_s"] < best["setup_s"] + best["solve_s"]:
            best = rec
    best["to_tol"] = name != "dcdm" or bool(args.checkpoint)
    return best


def print_table(n, rows, args):
    cg = rows.get("cg")
    per = lambda r: r["solve_s"] / max(r["iterations_run"], 1)
    head = (f"  {'solver':<16} {'iters':>6} {'run':>5} {'set-up s':>9} {'solve s':>9} "
            f"{'total s':>9} {'ms/it':>9} {'peak MiB':>9} {'rel.res':>9}   "
            f"{'total/CG':>8} {'solve/CG':>8} {'ms/it/CG':>8}")
    print(head)
    for name, r in rows.items():
        total = r["setup_s"] + r["solve_s"]
        its = str(r["iterations"]) if r["converged"] else (
            "-" if not r["to_tol"] else f">{r['iterations_run']}")
        ratio = lambda a, b: f"{a / b:7.3f}x" if b else "       -"
        if cg is not None and r["to_tol"] and r["converged"]:
            cg_total = cg["setup_s"] + cg["solve_s"]
            rt, rs = ratio(total, cg_total), ratio(r["solve_s"], cg["solve_s"])
        else:
            rt = rs = "     n/a"
        rp = ratio(per(r), per(cg)) if cg is not None else "       -"
        where = " (host)" if name == "amg" else ""
        label = name + where + ("" if r["to_tol"] else " (untrained)")
        tot = f"{total:9.3f}" if r["to_tol"] else f"{'n/a':>9}"
        print(f"  {label:<16} {its:>6} {r['iterations_run']:>5} {r['setup_s']:9.3f} "
              f"{r['solve_s']:9.3f} {tot} {per(r) * 1e3:9.2f} {r['peak_mib']:9.1f} "
              f"{r['rel_residual']:9.2e}   {rt} {rs} {rp}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, nargs="+", default=[64, 128], help="grid sizes")
    ap.add_argument("--dim", type=int, default=3, choices=[2, 3])
    ap.add_argument("--scene", default="box_obstacle", choices=list(SCENES))
    ap.add_argument("--solvers", default=",".join(DEFAULT_SOLVERS),
                    help=f"comma-separated, from: {', '.join(krylov.SOLVERS)}")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--protocol", default="quadrun", choices=list(krylov.PROTOCOLS))
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                    help="the Krylov vectors' dtype (the network runs in float32)")
    ap.add_argument("--maxiter", type=int, default=5000)
    ap.add_argument("--check-every", type=int, default=None,
                    help="host convergence check interval (default 1 on CPU, 10 on CUDA)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=1, help="solves per solver; the fastest kept")
    ap.add_argument("--deflate", type=int, default=16)
    ap.add_argument("--checkpoint", default=None, help="a dcdm run's model_<dim>d_<arch>_<net>.pt")
    ap.add_argument("--arch", default="paper", choices=list(ARCHS))
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--coarsest", type=int, default=4)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="DCDM's network on CUDA")
    ap.add_argument("--no-graphs", action="store_true",
                    help="no CUDA graphs for the network and the multigrid cycle")
    ap.add_argument("--dcdm-iters", type=int, default=None,
                    help="iterations timed for an untrained DCDM (default 10 on CUDA, 3 on CPU)")
    ap.add_argument("--dcdm-maxiter", type=int, default=300,
                    help="DCDM's iteration cap with a checkpoint (the paper: 100)")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    args.check_every = args.check_every or (10 if device.type == "cuda" else 1)
    args.dcdm_iters = args.dcdm_iters or (10 if device.type == "cuda" else 3)
    names = [s.strip() for s in args.solvers.split(",") if s.strip()]
    for s in names:
        krylov.get(s)
    net = _network(args, device) if "dcdm" in names else None
    print(f"device {_device_line(device, args.threads)}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.dim}-D {args.scene}; "
          f"tol {args.tol:g} ({args.protocol} protocol); vectors {args.dtype}; host check "
          f"every {args.check_every}; DCDM net {args.arch}"
          f"{' ' + args.checkpoint if args.checkpoint else ' (untrained)'}, "
          f"{args.precision}{'' if args.no_graphs else ', CUDA graphs on CUDA'}")
    for n in args.n:
        t0 = time.perf_counter()
        system, b = scene(args.scene, n, args.dim, seed=0)
        print(f"\n{n}^{args.dim}: {system.size} fluid cells (scene built in "
              f"{time.perf_counter() - t0:.1f} s)", flush=True)
        rows = {}
        for name in names:
            t = time.perf_counter()
            rows[name] = run_one(name, system, b, args, device, net)
            print(f"    {name}: done in {time.perf_counter() - t:.1f} s", flush=True)
        print_table(n, rows, args)
        print(f"  load average after {n}^{args.dim}: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

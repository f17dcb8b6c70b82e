"""hierpoly stage 1 at scale: the streamed ridge on the degree-<=2 Hermite features, with
the new stage-1 solve (a walk of Cholesky factorisations along the ridge grid) timed
against the old one (one eigendecomposition per grid point) on the same normal equations.

    python benchmarks/hierpoly_stage1.py --d 128               # n = d^2, 2 d^2 (F = 8,385)
    python benchmarks/hierpoly_stage1.py --d 64 --ratio 256 --gram-dtype float32
    python benchmarks/hierpoly_stage1.py --device cuda --d 256 --gram-dtype float32 --skip-old

One pass over n = ratio * d^2 samples of the headline target (quadratic p, g = z^3)
through quadrun.nn.ridge.NormalEquations, accumulated in chunks as a cell of the hierpoly
experiment does; at every grid point 1, 2, 4, ..., ratio d^2 both solves run on the same
sums (timed separately from the stream) and must pick the same strength. Prints one line
per grid point and the benchmark line: stream seconds, old and new solve seconds and their
ratio, the peak resident memory, and what the dense n x F design matrix would need.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--ratio", type=float, default=2, help="largest n / d^2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gram-dtype", default="float32", choices=["float64", "float32"])
    ap.add_argument("--loo-rows", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-old", action="store_true", help="time the new solve only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from quadrun.data.polynomials import HermiteFeatures, make_target
    from quadrun.nn.ridge import NormalEquations

    d, dtype = args.d, getattr(torch, args.gram_dtype)
    target = make_target("quadratic", d, 2, 3, seed=0)
    phi = HermiteFeatures(d, 2)
    top = int(round(args.ratio * d * d))
    grid, r = [], 1.0
    while r * d * d < top:
        grid.append(int(round(r * d * d)))
        r *= 2
    grid.append(top)
    ne = NormalEquations(phi.count, args.device, dtype)
    keep_x, keep_y, start = [], [], 0
    stream = old = new = 0.0
    begin = None
    for n in grid:
        t0 = time.perf_counter()
        for x, _, h in target.stream(1, start, n, args.chunk):
            f = phi(x.to(args.device))
            ne.add(f, h)
            if sum(map(len, keep_y)) < args.loo_rows:
                keep_x.append(f[:args.loo_rows].to(torch.float64))
                keep_y.append(h[:args.loo_rows].to(args.device, torch.float64))
        sync(args.device)
        stream += time.perf_counter() - t0
        start = n
        rows = min(n, args.loo_rows)
        P, y = torch.cat(keep_x)[:rows], torch.cat(keep_y)[:rows]
        t0 = time.perf_counter()
        fit = ne.solve(loo_phi=P, loo_y=y, method="cholesky", start=begin)
        sync(args.device)
        t_new = time.perf_counter() - t0
        new += t_new
        begin = fit.index
        line = f"  n = {n:>9,d} ({n / d ** 2:g} d^2): new solve {t_new:7.1f} s, lambda {fit.lam:g}"
        if not args.skip_old:
            t0 = time.perf_counter()
            ref = ne.solve(loo_phi=P, loo_y=y, method="eigh")
            sync(args.device)
            t_old = time.perf_counter() - t0
            old += t_old
            diff = float((ref.weights - fit.weights).abs().max() / ref.weights.abs().max())
            line += (f"; old solve {t_old:7.1f} s, lambda {ref.lam:g}; weights differ by "
                     f"{diff:.1e} (relative)")
        print(line, flush=True)
    gpu = ""
    if args.device.startswith("cuda"):
        gpu = f", GPU peak {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MB"
    ratio = f" = {old / new:.1f}x faster" if old else ""
    print(f"hierpoly stage 1: d = {d}, F = {phi.count} features, n = {top:,d} ({args.ratio:g} d^2), "
          f"{len(grid)} grid points, {args.device} {args.gram_dtype} {args.threads} thread(s): "
          f"stream {stream:.1f} s; solves: new (Cholesky walk) {new:.1f} s"
          + (f", old (eigendecomposition) {old:.1f} s{ratio}" if old else "")
          + f"; peak RSS {peak_rss_mb():.0f} MB{gpu}; a dense design matrix would need "
          f"{top * phi.count * 8 / 1e9:.1f} GB")


if __name__ == "__main__":
    main()

"""hierpoly stage 1 at scale: the streamed ridge on the degree-<=2 Hermite features.

    python benchmarks/hierpoly_stage1.py                      # d = 64, n = 256 d^2 (1,048,576)
    python benchmarks/hierpoly_stage1.py --d 32 --ratio 64 --gram-dtype float32
    python benchmarks/hierpoly_stage1.py --device cuda

One pass over n = ratio * d^2 samples of the headline target (quadratic p, g = z^3) through
quadrun.nn.ridge.ridge_path, solved at every n of the nested grid 1, 2, 4, ..., ratio d^2
(as a cell of the hierpoly experiment does), so the per-point solves are counted too.
Prints one line per grid point (n, seconds, the chosen ridge strength) and the benchmark
line: total seconds, samples per second, peak resident memory of this process, and what
the dense n x F design matrix would have needed instead. The reference in the same run is
the dense memory (the design matrix in float64); the time has no dense reference because
the dense matrix does not fit.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--ratio", type=float, default=256, help="largest n / d^2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gram-dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--loo-rows", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from quadrun.data.polynomials import HermiteFeatures, make_target
    from quadrun.nn.ridge import ridge_path

    d = args.d
    target = make_target("quadratic", d, 2, 3, seed=0)
    phi = HermiteFeatures(d, 2)
    top = int(round(args.ratio * d * d))
    grid, r = [], 1.0
    while r * d * d < top:
        grid.append(int(round(r * d * d)))
        r *= 2
    grid.append(top)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    path = ridge_path(phi, lambda i, j: ((x, h) for x, _, h in target.stream(1, i, j, args.chunk)),
                      grid, phi.count, loo_rows=args.loo_rows, device=args.device,
                      compute_dtype=getattr(torch, args.gram_dtype))
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    for pt in path:
        print(f"  n = {pt.n:>9,d} ({pt.n / d ** 2:g} d^2): {pt.seconds:7.1f} s, lambda {pt.fit.lam:g}")
    dense_gb = top * phi.count * 8 / 1e9
    gpu = ""
    if args.device.startswith("cuda"):
        gpu = f", GPU peak {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MB"
    print(f"hierpoly stage 1: d = {d}, F = {phi.count} features, n = {top:,d} ({args.ratio:g} d^2), "
          f"{len(grid)} grid points, {args.device} {args.gram_dtype} {args.threads} thread(s): "
          f"{total:.1f} s ({top / total:,.0f} samples/s), peak RSS {peak_rss_mb():.0f} MB "
          f"(before the pass {base:.0f} MB){gpu}; a dense design matrix would need {dense_gb:.1f} GB")


if __name__ == "__main__":
    main()

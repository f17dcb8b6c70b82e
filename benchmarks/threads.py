"""The CPU thread default against threads=1, on an idle machine and under load.

    python benchmarks/threads.py                  # the main job (quadrun), 3 pairs each
    python benchmarks/threads.py --pairs 5 --busy 4 -- relinear.train.epochs=10

For each condition (idle; then with --busy processes spinning on the CPU, 4 by default:
twice the cores of a 2-core machine) the main job runs with the default thread count and
with threads=1, alternately, --pairs times each. Printed: the training images/s each run
reports (summary.json `train/images_per_s`), the threads it used (meta.json), the medians
and the ratio default / threads=1 per condition, with the load average beside them.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def spin(_):
    while True:
        pass


def one(extra: list, threads: "int | None", root: Path, tag: str) -> dict:
    folder = root / tag
    args = [*extra, f"hydra.run.dir={folder}", *([f"threads={threads}"] if threads else [])]
    code = "import sys; from quadrun.cli import main; sys.argv[0] = 'quadrun'; main()"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"run failed:\n{r.stderr[-3000:]}")
    summary = json.loads((folder / "summary.json").read_text())
    meta = json.loads((folder / "meta.json").read_text())
    return {"rate": summary.get("train/images_per_s"), "threads": meta.get("threads"),
            "wall": wall}


def condition(name: str, busy: int, pairs: int, extra: list, root: Path) -> None:
    pool = mp.Pool(busy) if busy else None
    if pool:
        pool.map_async(spin, range(busy))
        time.sleep(5)                       # let the load average see them
    try:
        default, single = [], []
        for i in range(pairs):
            default.append(one(extra, None, root, f"{name}_default_{i}"))
            single.append(one(extra, 1, root, f"{name}_one_{i}"))
        load = os.getloadavg()[0]
    finally:
        if pool:
            pool.terminate()
    med = lambda rs: statistics.median(r["rate"] for r in rs)   # noqa: E731
    print(f"{name} ({busy} busy processes, load {load:.1f}):")
    for label, rs in (("default", default), ("threads=1", single)):
        rates = ", ".join(f"{r['rate']:.0f}" for r in rs)
        print(f"  {label:10s} threads {rs[0]['threads']}: images/s {rates}; median {med(rs):.0f}")
    print(f"  default / threads=1 (median images/s): {med(default) / med(single):.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--busy", type=int, default=4)
    p.add_argument("extra", nargs="*", help="overrides for every run (after --)")
    a = p.parse_args()
    print(f"{os.cpu_count()} cores; runs: quadrun {' '.join(a.extra) or '(the main job)'}")
    with tempfile.TemporaryDirectory() as tmp:
        condition("idle", 0, a.pairs, a.extra, Path(tmp))
        condition("loaded", a.busy, a.pairs, a.extra, Path(tmp))


if __name__ == "__main__":
    main()

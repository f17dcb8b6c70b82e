"""Packing small jobs onto one device: the same k jobs one at a time and N at a time.

    python benchmarks/packing.py                        # CPU: relinear, 4 jobs, N = 1, 2
    python benchmarks/packing.py --per-device 1,2,4,8 --jobs 8 -- scale=paper \\
        relinear.train.epochs=1 relinear.train_size=10000      # on a GPU

Each N is one real sweep through the CLI (`cluster=local sweep.jobs_per_device=N`, seeds
0..k-1), measured by its wall time; the aggregate throughput is the training samples of
all jobs over that wall time. Printed side by side, with the ratio to N = 1.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(experiment: str, jobs: int, per_device: int, threads: int, extra: list, root: Path) -> dict:
    folder = root / f"n{per_device}"
    args = ["-m", f"experiment={experiment}", f"seed={','.join(map(str, range(jobs)))}",
            "cluster=local", f"sweep.jobs_per_device={per_device}", f"hydra.sweep.dir={folder}",
            *([f"threads={threads}"] if threads else []), *extra]
    code = "import sys; from quadrun.cli import main; sys.argv[0] = 'quadrun'; main()"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"sweep with N={per_device} failed:\n{r.stderr[-3000:]}")
    import yaml

    samples = 0
    for summary in folder.glob("*/summary.json"):
        steps = json.loads(summary.read_text()).get("steps") or 0
        cfg = yaml.safe_load((summary.parent / "config.yaml").read_text())
        samples += steps * cfg[experiment]["train"]["batch_size"]
    return {"N": per_device, "wall_s": wall, "samples": samples, "rate": samples / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="relinear")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--per-device", default="1,2")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per job (0: the cores divided by N)")
    parser.add_argument("extra", nargs="*", help="overrides for every job (after --)")
    args = parser.parse_args()
    extra = args.extra or ["relinear.train.epochs=3"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [sweep(args.experiment, args.jobs, int(n), args.threads, extra, Path(tmp))
                for n in args.per_device.split(",")]
    base = rows[0]["rate"]
    print(f"{args.jobs} {args.experiment} jobs ({' '.join(extra)}), threads per job: "
          f"{args.threads or 'cores / N'}")
    print(f"{'N at once':>10} {'wall s':>8} {'samples':>9} {'samples/s':>10} {'vs N=1':>7}")
    for r in rows:
        print(f"{r['N']:>10} {r['wall_s']:>8.1f} {r['samples']:>9.0f} {r['rate']:>10.1f} "
              f"{r['rate'] / base:>6.2f}x")


if __name__ == "__main__":
    main()

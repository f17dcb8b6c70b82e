"""How long a command that does no work takes: `quadrun --help`, a rejected key and
`--cfg job`, side by side with `python -c "import torch"` in the same run.

    python benchmarks/cli.py [--repeats 5]

Each command runs as a fresh process; the table gives the median and fastest wall time and
the ratio of the median to torch's import alone (target: help and errors <= 0.5x).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

QUADRUN = "import sys; from quadrun.cli import main; sys.argv[0] = 'quadrun'; main()"
COMMANDS = {
    "python -c 'import torch'": ["-c", "import torch"],
    "quadrun --help": ["-c", QUADRUN, "--help"],
    "quadrun nosuchkey=1 (error)": ["-c", QUADRUN, "nosuchkey=1"],
    "quadrun relinear.train.lr=-1 (error)": ["-c", QUADRUN, "relinear.train.lr=-1"],
    "quadrun experiment=dcdm --cfg job": ["-c", QUADRUN, "experiment=dcdm", "--cfg", "job"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.repeats):          # interleaved, so load changes hit all alike
            for name, argv in COMMANDS.items():
                t0 = time.perf_counter()
                subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True)
                times[name].append(time.perf_counter() - t0)
    torch_median = statistics.median(times["python -c 'import torch'"])
    print(f"{'command':<40} {'median s':>9} {'fastest s':>10} {'vs import torch':>16}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<40} {median:>9.2f} {min(values):>10.2f} {median / torch_median:>15.2f}x")


if __name__ == "__main__":
    main()
